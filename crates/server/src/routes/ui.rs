//! The web page (`GET /ui`): documents, a question answered with reuse next
//! to full prefill, and what was recomputed. Its files are built into the
//! binary (no CDN: it works offline) and call the same API as any client,
//! with the API key the user types in.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Redirect};

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/style.css");

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}

/// The page.
pub async fn index() -> impl IntoResponse {
    file("text/html; charset=utf-8", INDEX)
}

/// Its script.
pub async fn script() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", SCRIPT)
}

/// Its style sheet.
pub async fn style() -> impl IntoResponse {
    file("text/css; charset=utf-8", STYLE)
}

/// `GET /`: the page.
pub async fn root() -> Redirect {
    Redirect::temporary("/ui")
}
