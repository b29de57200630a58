//! `POST /v1/completions`.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::generate::{respond, Kind};
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::examples;
use crate::json::ApiJson;
use crate::openai::CompletionRequest;
use crate::responses::{CompletionChoice, Envelope};
use crate::state::AppState;

/// A completion of `prompt` after the instruction and the documents.
#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "generation",
    request_body(content = CompletionRequest, examples(
        ("documents" = (summary = "After inline documents", value = json!(examples::completion_documents()))),
        ("stream" = (summary = "Streamed, with log-probabilities and a usage chunk", value = json!(examples::completion_stream()))),
        ("echo" = (summary = "Echoing the prompt", value = json!(examples::completion_echo()))),
    )),
    responses(
        (status = 200, description = "The completion; with `stream`, SSE events of the same shape ending in `[DONE]`", content(
            (Envelope<CompletionChoice> = "application/json"),
            (Envelope<CompletionChoice> = "text/event-stream"),
        )),
        (status = "4XX", description = "Refused, naming the field", body = ErrorBody),
        (status = "5XX", description = "Failed inside the server", body = ErrorBody),
    ),
)]
pub async fn completions(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    ApiJson(body): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let mapped = body.map(&state.config.defaults, &tenant.0)?;
    respond(state, mapped, Kind::Completion).await
}
