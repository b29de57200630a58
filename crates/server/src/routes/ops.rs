//! `/v1/models`, `/health`, `/ready`, `/metrics`, and the 404 fallback.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// `GET /v1/models`: the one served model.
pub async fn models(State(state): State<AppState>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": state.config.defaults.model, "object": "model", "created": 0, "owned_by": "prophetkv"}]}),
    )
}

/// `GET /health`: the process is alive.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: the model is loaded and requests are accepted.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.accepting.load(Ordering::SeqCst) {
        Ok(Json(
            json!({"status": "ready", "model": state.config.defaults.model}),
        ))
    } else {
        Err(ApiError::Unavailable("shutting down".into()))
    }
}

fn started() -> Instant {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state
        .metrics
        .render(&state.engine.metrics(), started().elapsed().as_secs_f64());
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Anything else: 404 in the API's format.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

/// Starts the uptime clock (called when the router is built).
pub fn start_clock() {
    let _ = started();
}
