//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::generate::{respond, Kind};
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::examples;
use crate::json::ApiJson;
use crate::openai::ChatRequest;
use crate::responses::{ChatChoice, ChatChunkChoice, Envelope};
use crate::state::AppState;

/// The assistant's reply, with the documents before the last user turn.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "generation",
    request_body(content = ChatRequest, examples(
        ("plain" = (summary = "A question", value = json!(examples::chat_plain()))),
        ("documents" = (summary = "Over inline documents, with log-probabilities", value = json!(examples::chat_documents()))),
        ("stream" = (summary = "Streamed, with a usage chunk", value = json!(examples::chat_stream()))),
        ("json_schema" = (summary = "Held to a JSON schema", value = json!(examples::chat_json_schema()))),
        ("tools" = (summary = "With a function to call", value = json!(examples::chat_tools()))),
    )),
    responses(
        (status = 200, description = "The reply; with `stream`, SSE `chat.completion.chunk` events ending in `[DONE]`", content(
            (Envelope<ChatChoice> = "application/json"),
            (Envelope<ChatChunkChoice> = "text/event-stream"),
        )),
        (status = "4XX", description = "Refused, naming the field", body = ErrorBody),
        (status = "5XX", description = "Failed inside the server", body = ErrorBody),
    ),
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    ApiJson(body): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let mapped = body.map(&state.config.defaults, &tenant.0)?;
    respond(state, mapped, Kind::Chat).await
}
