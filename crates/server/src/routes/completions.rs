//! `POST /v1/completions`.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::generate::{respond, Kind};
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::openai::CompletionRequest;
use crate::state::AppState;

/// A completion of `prompt` after the instruction and the documents.
pub async fn completions(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    ApiJson(body): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let valid = body.validate(&state.config.defaults, &tenant.0)?;
    respond(state, valid, Kind::Completion).await
}
