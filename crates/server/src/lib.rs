//! prophetkv's OpenAI-compatible HTTP API on axum.
//!
//! - [`router`]: the routes — `/v1/completions`, `/v1/chat/completions`
//!   (streaming and not), `/v1/documents`, `/v1/models`, `/tokenize`,
//!   `/detokenize`, `/ui` (the web page), `/health`,
//!   `/ready`, `/metrics`, `/openapi.json` — behind bearer-key auth and a
//!   body limit; the OpenAPI document is built from the same table.
//! - [`serve`]: binds, serves each connection under header- and body-read
//!   timeouts ([`ServeOptions`]), and shuts down gracefully on SIGTERM/SIGINT.
//! - Handlers are thin: extract ([`json::ApiJson`]), map onto an engine
//!   request ([`openai`]), have the engine validate and run it, answer with
//!   a typed body ([`responses`]); every error goes through
//!   [`error::ApiError`], the one place statuses are chosen. The server sees
//!   only the engine's API.

#![warn(missing_docs)]

pub mod access_log;
pub mod auth;
pub mod chat_template;
pub mod error;
pub mod examples;
pub mod json;
pub mod metrics;
pub mod openai;
pub mod openapi;
pub mod params;
pub mod request_id;
pub mod responses;
pub mod routes;
mod serve;
pub mod state;
pub mod tools;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{middleware, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use serve::{serve, ServeOptions};
pub use state::{AppState, ServerConfig};

/// Every route, with auth on the `/v1` ones, and the OpenAPI document made
/// from the same route table.
pub fn router(state: AppState) -> Router {
    let (router, openapi) = api_router(&state).split_for_parts();
    let state = AppState {
        openapi: Arc::new(openapi::to_json(&openapi)),
        ..state
    };
    router
        .fallback(routes::ops::not_found)
        .method_not_allowed_fallback(routes::ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access_log::access_log,
        ))
        .layer(middleware::from_fn(request_id::request_id))
        .with_state(state)
}

/// The routes and their OpenAPI description, before the state is attached.
pub fn api_router(state: &AppState) -> OpenApiRouter<AppState> {
    routes::ops::start_clock();
    let v1 = OpenApiRouter::new()
        .routes(routes!(routes::completions::completions))
        .routes(routes!(routes::chat::chat_completions))
        .routes(routes!(
            routes::documents::register,
            routes::documents::list
        ))
        .routes(routes!(routes::documents::get, routes::documents::delete))
        .routes(routes!(routes::ops::models))
        .routes(routes!(routes::ops::model))
        .routes(routes!(routes::tokenize::tokenize))
        .routes(routes!(routes::tokenize::detokenize))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(v1)
        .routes(routes!(routes::ops::health))
        .routes(routes!(routes::ops::ready))
        .routes(routes!(routes::ops::metrics))
        .routes(routes!(routes::ops::openapi))
        .route("/", get(routes::ui::root))
        .route("/ui", get(routes::ui::index))
        .route("/ui/app.js", get(routes::ui::script))
        .route("/ui/style.css", get(routes::ui::style))
}
