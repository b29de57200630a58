//! `x-request-id` on every response: the client's own when it sends a short
//! visible one, else a new one. The request's log lines carry it too (its
//! span), so a client's report can be matched with the server's log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header's name.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-chosen id kept.
const MAX_ID_LEN: usize = 128;

/// `prefix-` and `hex` hex digits, unique within the process and unlikely
/// to repeat across processes (response and request ids).
pub fn unique_id(prefix: &str, hex: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let hash = blake3::hash(format!("{nanos}-{n}-{}", std::process::id()).as_bytes());
    let hash = hash.to_hex();
    format!("{prefix}-{}", &hash[..hex.min(hash.len())])
}

fn new_id() -> String {
    unique_id("req", 16)
}

fn usable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Middleware: picks the id, runs the request inside a span naming it, and
/// sets the header on the response.
pub async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| usable(v))
        .map(str::to_string)
        .unwrap_or_else(new_id);
    let span = tracing::info_span!("request", id = %id);
    let mut response = next.run(req).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_short_and_visible() {
        assert!(usable("abc-123_XYZ"));
        assert!(!usable(""));
        assert!(!usable("has space"));
        assert!(!usable(&"x".repeat(MAX_ID_LEN + 1)));
    }

    #[test]
    fn fresh_ids_differ() {
        assert_ne!(new_id(), new_id());
        assert!(new_id().starts_with("req-"));
    }
}
