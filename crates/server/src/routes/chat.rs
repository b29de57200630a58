//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::generate::{respond, Kind};
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::openai::ChatRequest;
use crate::state::AppState;

/// The assistant's reply, with the documents before the last user turn.
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    ApiJson(body): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let valid = body.validate(&state.config.defaults, &tenant.0)?;
    respond(state, valid, Kind::Chat).await
}
