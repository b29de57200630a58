//! Response bodies: OpenAI's shapes, plus the `prophetkv` extension, as
//! typed structs. The OpenAPI document is generated from these same types.

use prophetkv_engine::explain::Explanation;
use prophetkv_engine::logprobs::{StepLogprobs, TokenLogprob};
use prophetkv_engine::{DocumentRecord, DocumentStatus, FinishReason, Summary, TierHits, Timeline};
use serde::Serialize;
use utoipa::ToSchema;

use crate::tools::ToolCall;

/// Why generation ended: `stop` (end of sequence or a stop string) or
/// `length` (`max_tokens` or the context).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` or the end of the context.
    Length,
    /// The answer is tool calls.
    ToolCalls,
}

impl From<FinishReason> for Finish {
    fn from(r: FinishReason) -> Self {
        match r {
            FinishReason::Stop => Finish::Stop,
            FinishReason::Length => Finish::Length,
        }
    }
}

/// Token counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Usage {
    /// Prompt tokens (instruction, documents and question).
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

/// The `prophetkv` extension of a response: what was reused and recomputed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReuseReport {
    /// The strategy that ran.
    pub strategy: String,
    /// Its recompute ratio.
    pub recompute_ratio: f64,
    /// Document rows in the context.
    pub context_tokens: usize,
    /// Document rows that could be recomputed.
    pub eligible_tokens: usize,
    /// Rows served from caches.
    pub reused_tokens: usize,
    /// Rows computed for this request (chosen, fresh and question rows).
    pub recomputed_tokens: usize,
    /// Eligible rows chosen for recomputation.
    pub selected_tokens: usize,
    /// Cache lookups by tier.
    pub cache_hits: TierHits,
    /// Milestones.
    pub timeline: Timeline,
    /// Token by token, what was recomputed and why (requests that asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explanation>,
}

impl From<&Summary> for ReuseReport {
    fn from(s: &Summary) -> Self {
        Self {
            strategy: s.reuse.strategy.to_string(),
            recompute_ratio: s.reuse.ratio,
            context_tokens: s.reuse.context_tokens,
            eligible_tokens: s.reuse.eligible,
            reused_tokens: s.reuse.reused,
            recomputed_tokens: s.reuse.recomputed,
            selected_tokens: s.reuse.selected,
            cache_hits: s.hits.clone(),
            timeline: s.timeline.clone(),
            explain: s.explanation.as_deref().cloned(),
        }
    }
}

impl From<&Summary> for Usage {
    fn from(s: &Summary) -> Self {
        Self {
            prompt_tokens: s.usage.prompt_tokens,
            completion_tokens: s.usage.completion_tokens,
            total_tokens: s.usage.prompt_tokens + s.usage.completion_tokens,
        }
    }
}

/// One choice of a completion (or a streamed piece of it).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompletionChoice {
    /// Always 0 (one choice per request).
    pub index: usize,
    /// The generated text (this piece of it, when streamed).
    pub text: String,
    /// Log-probabilities of this text's tokens, when asked for.
    pub logprobs: Option<CompletionLogprobs>,
    /// Set on the last piece.
    pub finish_reason: Option<Finish>,
}

/// The completions API's log-probabilities: parallel lists, one entry per
/// generated token.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct CompletionLogprobs {
    /// Token texts.
    pub tokens: Vec<String>,
    /// Their log-probabilities.
    pub token_logprobs: Vec<f32>,
    /// The most likely tokens at each step: text to log-probability.
    #[schema(value_type = Vec<Object>)]
    pub top_logprobs: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Each token's offset in characters into the returned text.
    pub text_offset: Vec<usize>,
}

impl CompletionLogprobs {
    /// The entries of `steps`, the first at character `offset`, which
    /// moves past them.
    pub fn of(steps: &[StepLogprobs], offset: &mut usize) -> Self {
        let mut out = Self::default();
        for step in steps {
            out.tokens.push(step.chosen.token.clone());
            out.token_logprobs.push(step.chosen.logprob);
            out.top_logprobs.push(
                step.top
                    .iter()
                    .map(|t| (t.token.clone(), serde_json::Value::from(t.logprob)))
                    .collect(),
            );
            out.text_offset.push(*offset);
            *offset += step.chosen.token.chars().count();
        }
        out
    }
}

/// The chat API's log-probabilities.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Vec<ChatTokenLogprob>,
    /// Always null: no refusals.
    #[schema(value_type = Option<Vec<Object>>)]
    pub refusal: Option<()>,
}

/// A generated token's log-probability in a chat answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatTokenLogprob {
    /// Its text.
    pub token: String,
    /// Natural log of its probability (the model's, before sampling options).
    pub logprob: f32,
    /// Its UTF-8 bytes (one byte of a character split across tokens).
    pub bytes: Vec<u8>,
    /// The most likely tokens at its step, most likely first.
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative at one step.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopLogprob {
    /// Its text.
    pub token: String,
    /// Natural log of its probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
}

impl From<&TokenLogprob> for TopLogprob {
    fn from(t: &TokenLogprob) -> Self {
        Self {
            token: t.token.clone(),
            logprob: t.logprob,
            bytes: t.bytes.clone(),
        }
    }
}

impl ChatLogprobs {
    /// The entries of `steps`.
    pub fn of(steps: &[StepLogprobs]) -> Self {
        Self {
            content: steps
                .iter()
                .map(|s| ChatTokenLogprob {
                    token: s.chosen.token.clone(),
                    logprob: s.chosen.logprob,
                    bytes: s.chosen.bytes.clone(),
                    top_logprobs: s.top.iter().map(TopLogprob::from).collect(),
                })
                .collect(),
            refusal: None,
        }
    }
}

/// OpenAI's envelope around a response's choices: the shape of a
/// completion, a chat completion and each streamed chunk of either.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Envelope<C> {
    /// Response id (the same for every chunk of a stream).
    pub id: String,
    /// `text_completion`, `chat.completion` or `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model.
    pub model: String,
    /// One choice (none in a stream's usage chunk).
    pub choices: Vec<C>,
    /// Token counts (at the end; in a stream, its own chunk with
    /// `stream_options.include_usage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Reuse statistics (at the end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prophetkv: Option<ReuseReport>,
}

/// `POST /v1/completions` (`object: text_completion`); streamed, each SSE
/// event has this shape with a piece of the text.
pub type Completion = Envelope<CompletionChoice>;
/// `POST /v1/chat/completions` without streaming (`object: chat.completion`).
pub type ChatCompletion = Envelope<ChatChoice>;
/// One SSE event of a streamed chat completion (`object: chat.completion.chunk`).
pub type ChatCompletionChunk = Envelope<ChatChunkChoice>;

/// The assistant's message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// `assistant`.
    pub role: &'static str,
    /// The reply (null when it is tool calls).
    pub content: Option<String>,
    /// The calls, when the reply is tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// A tool call in a stream chunk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ToolCallDelta {
    /// Its place among the answer's calls.
    pub index: usize,
    /// The call (sent whole, in one chunk).
    #[serde(flatten)]
    pub call: ToolCall,
}

/// One choice of a chat completion.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatChoice {
    /// Always 0.
    pub index: usize,
    /// The reply.
    pub message: AssistantMessage,
    /// Log-probabilities of the reply's tokens, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// Why it ended.
    pub finish_reason: Finish,
}

/// A piece of the assistant's message in a stream.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ChatDelta {
    /// `assistant`, in the first piece only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool calls (each whole, in the last chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// One choice of a chat stream chunk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatChunkChoice {
    /// Always 0.
    pub index: usize,
    /// What this chunk adds.
    pub delta: ChatDelta,
    /// Log-probabilities of this chunk's tokens, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// Set on the last chunk.
    pub finish_reason: Option<Finish>,
}

/// A registered document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Document {
    /// Its id.
    pub id: String,
    /// `document`.
    pub object: &'static str,
    /// Display name.
    pub name: String,
    /// Tokens of its text.
    pub tokens: usize,
    /// Unix seconds of registration.
    pub created: u64,
    /// The metadata it was registered with: any JSON value, null when none
    /// was given.
    pub metadata: serde_json::Value,
    /// Whether its KV cache is computed and stored.
    pub ready: bool,
    /// `pending` (waiting for the worker's idle time or its first use),
    /// `ready`, or `failed` (see `error`; the first request using it retries).
    pub status: &'static str,
    /// Why computing its cache failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its text (`GET /v1/documents/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Document {
    /// The summary of `r`, with its text when `with_text`.
    pub fn of(r: DocumentRecord, status: DocumentStatus, with_text: bool) -> Self {
        let (status, error) = match status {
            DocumentStatus::Pending => ("pending", None),
            DocumentStatus::Ready => ("ready", None),
            DocumentStatus::Failed(e) => ("failed", Some(e)),
        };
        Self {
            status,
            error,
            id: r.id,
            object: "document",
            name: r.name,
            tokens: r.tokens,
            created: r.created,
            metadata: r.metadata,
            ready: r.ready,
            text: with_text.then_some(r.text),
        }
    }
}

/// A list of documents.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DocumentList {
    /// `list`.
    pub object: &'static str,
    /// The documents.
    pub data: Vec<Document>,
    /// The first document's id (a page of `GET /v1/documents`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_id: Option<String>,
    /// The last document's id: pass it as `after` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_id: Option<String>,
    /// Whether more documents follow this page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_more: Option<bool>,
}

/// `DELETE /v1/documents/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeletedDocument {
    /// The id.
    pub id: String,
    /// `document`.
    pub object: &'static str,
    /// Always true.
    pub deleted: bool,
}

/// A served model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelCard {
    /// Its id (the `model` of requests).
    pub id: String,
    /// `model`.
    pub object: &'static str,
    /// Unix seconds (0: unknown).
    pub created: u64,
    /// `prophetkv`.
    pub owned_by: &'static str,
    /// Present when the server runs random weights of this shape: a
    /// benchmark stand-in whose answers mean nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_weights: Option<String>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    /// The one served model.
    pub data: Vec<ModelCard>,
}

/// `GET /health` and `GET /ready`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: &'static str,
    /// The served model (`/ready` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}
