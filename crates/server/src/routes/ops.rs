//! `/v1/models`, `/health`, `/ready`, `/metrics`, `/openapi.json`, and the 404 and 405 fallbacks.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, Uri};
use axum::response::IntoResponse;
use axum::Json;

use crate::error::{ApiError, ErrorBody};
use crate::params::ApiPath;
use crate::responses::{ModelCard, ModelList, Status};
use crate::state::AppState;

/// The one served model.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    responses(
        (status = 200, description = "The served model", body = ModelList),
        (status = "4XX", description = "A missing or unknown API key (401)", body = ErrorBody),
    ),
)]
pub async fn models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![served_model(&state)],
    })
}

fn served_model(state: &AppState) -> ModelCard {
    ModelCard {
        id: state.config.defaults.model.clone(),
        object: "model",
        created: 0,
        owned_by: "prophetkv",
        random_weights: state.config.random_weights.clone(),
    }
}

/// The served model by its id (the SDKs' `models.retrieve`).
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    tag = "models",
    params(("model" = String, Path, description = "A model id from /v1/models")),
    responses(
        (status = 200, description = "The model", body = ModelCard),
        (status = "4XX", description = "Not served here (404), or a missing or unknown API key (401)", body = ErrorBody),
    ),
)]
pub async fn model(
    State(state): State<AppState>,
    ApiPath(model): ApiPath<String>,
) -> Result<Json<ModelCard>, ApiError> {
    state.config.defaults.check_model(Some(&model))?;
    Ok(Json(served_model(&state)))
}

/// The process is alive.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Status)),
)]
pub async fn health() -> Json<Status> {
    Json(Status {
        status: "ok",
        model: None,
    })
}

/// The model is loaded and requests are accepted.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "Shutting down", body = ErrorBody),
    ),
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    if state.accepting.load(Ordering::SeqCst) {
        Ok(Json(Status {
            status: "ready",
            model: Some(state.config.defaults.model.clone()),
        }))
    } else {
        Err(ApiError::Unavailable("shutting down".into()))
    }
}

fn started() -> Instant {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)),
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // The store's stats read each tier's bytes: a Redis round trip when
    // that tier is on, so off the async threads.
    let engine = state.engine.clone();
    let store = tokio::task::spawn_blocking(move || engine.store_stats())
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the store's stats failed");
            Default::default()
        });
    let body = state.metrics.render(
        &state.engine.metrics(),
        &store,
        started().elapsed().as_secs_f64(),
    );
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// This API's OpenAPI 3 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)),
)]
pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/json")],
        state.openapi.as_ref().clone(),
    )
}

/// Anything else: 404 in the API's format.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

/// The 405 fallback: a known path with a method it does not take.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// Starts the uptime clock (called when the router is built).
pub fn start_clock() {
    let _ = started();
}
