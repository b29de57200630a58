//! One INFO line per request, as operators expect of an HTTP server:
//! method, path, status, latency, and token counts when the response knows
//! them (a streamed answer logs its counts when it ends), and the
//! per-route, per-status response counter. Runs inside the request's span,
//! so each line carries the request id.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

/// Token counts a handler attaches to its response for the access log.
#[derive(Debug, Clone, Copy)]
pub struct LoggedTokens {
    /// Prompt tokens.
    pub prompt: usize,
    /// Generated tokens.
    pub completion: usize,
}

/// Middleware: logs the request once the response (or its head, for a
/// stream) is ready.
pub async fn access_log(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // The route's template bounds the metric's labels; unknown paths share one.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let latency_ms = start.elapsed().as_secs_f64() * 1e3;
    let status = response.status().as_u16();
    state.metrics.count_response(&route, status);
    match response.extensions().get::<LoggedTokens>() {
        Some(t) => tracing::info!(
            %method, %path, status, latency_ms, prompt_tokens = t.prompt,
            completion_tokens = t.completion, "request"
        ),
        None => tracing::info!(%method, %path, status, latency_ms, "request"),
    }
    response
}
