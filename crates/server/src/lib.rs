//! prophetkv's OpenAI-compatible HTTP API on axum.
//!
//! - [`router`]: the routes — `/v1/completions`, `/v1/chat/completions`
//!   (streaming and not), `/v1/documents`, `/v1/models`, `/health`,
//!   `/ready`, `/metrics` — behind bearer-key auth and a body limit.
//! - [`serve`]: binds, serves, and shuts down gracefully on SIGTERM/SIGINT.
//! - Handlers are thin: extract ([`json::ApiJson`]), validate into an engine
//!   request ([`openai`]), submit, map the result; every error goes through
//!   [`error::ApiError`], the one place statuses are chosen.

#![warn(missing_docs)]

pub mod auth;
pub mod chat_template;
pub mod error;
pub mod json;
pub mod metrics;
pub mod openai;
pub mod routes;
mod serve;
pub mod state;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{middleware, Router};

pub use serve::serve;
pub use state::{AppState, ServerConfig};

/// Every route, with auth on the `/v1` ones.
pub fn router(state: AppState) -> Router {
    routes::ops::start_clock();
    let api = Router::new()
        .route("/v1/completions", post(routes::completions::completions))
        .route("/v1/chat/completions", post(routes::chat::chat_completions))
        .route(
            "/v1/documents",
            post(routes::documents::register).get(routes::documents::list),
        )
        .route(
            "/v1/documents/{id}",
            get(routes::documents::get).delete(routes::documents::delete),
        )
        .route("/v1/models", get(routes::ops::models))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    Router::new()
        .merge(api)
        .route("/health", get(routes::ops::health))
        .route("/ready", get(routes::ops::ready))
        .route("/metrics", get(routes::ops::metrics))
        .fallback(routes::ops::not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
