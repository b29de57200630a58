//! `POST /tokenize` and `POST /detokenize` (vLLM's routes): the served
//! model's token ids of a text and back, so that clients can build
//! `logit_bias`, count tokens, or read `prompt` as token ids.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::examples;
use crate::json::ApiJson;
use crate::state::AppState;

/// Text to tokenize.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// Model name (must be the served one when given).
    pub model: Option<String>,
    /// The text.
    pub prompt: String,
    /// Put BOS first when the model uses one.
    #[serde(default)]
    pub add_special_tokens: bool,
}

/// The ids of a text.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tokenized {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// How many.
    pub count: usize,
    /// The model's context, in tokens.
    pub max_model_len: usize,
}

/// Token ids to turn into text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    /// Model name (must be the served one when given).
    pub model: Option<String>,
    /// Token ids.
    pub tokens: Vec<u32>,
}

/// The text of token ids.
#[derive(Debug, Serialize, ToSchema)]
pub struct Detokenized {
    /// The text (special tokens dropped).
    pub prompt: String,
}

/// The served model's token ids of a text.
#[utoipa::path(
    post,
    path = "/tokenize",
    tag = "tokens",
    request_body(content = TokenizeRequest, example = json!(examples::tokenize())),
    responses(
        (status = 200, description = "The ids", body = Tokenized),
        (status = "4XX", description = "Refused, naming the field", body = ErrorBody),
    ),
)]
pub async fn tokenize(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenizeRequest>,
) -> Result<Json<Tokenized>, ApiError> {
    state.config.defaults.check_model(body.model.as_deref())?;
    let tokens = state
        .engine
        .tokenize(&body.prompt, body.add_special_tokens)?;
    Ok(Json(Tokenized {
        count: tokens.len(),
        tokens,
        max_model_len: state.engine.context_length(),
    }))
}

/// The text of token ids.
#[utoipa::path(
    post,
    path = "/detokenize",
    tag = "tokens",
    request_body(content = DetokenizeRequest, example = json!(examples::detokenize())),
    responses(
        (status = 200, description = "The text", body = Detokenized),
        (status = "4XX", description = "Refused, naming the field", body = ErrorBody),
    ),
)]
pub async fn detokenize(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<DetokenizeRequest>,
) -> Result<Json<Detokenized>, ApiError> {
    state.config.defaults.check_model(body.model.as_deref())?;
    let prompt = state.engine.detokenize(&body.tokens)?;
    Ok(Json(Detokenized { prompt }))
}
