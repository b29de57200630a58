//! What a client asks for and what it gets back, as the engine sees it.

use std::time::Instant;

use prophetkv_reuse::{ReuseConfig, ReuseStats};
use prophetkv_store::Tier;
use serde::Serialize;

use crate::constrain::OutputConstraint;
use crate::explain::Explanation;
use crate::logprobs::StepLogprobs;
use crate::sampling::SamplingParams;
use crate::EngineError;

/// A document in a request.
#[derive(Debug, Clone, PartialEq)]
pub enum DocumentRef {
    /// A registered document of the request's tenant.
    Id(String),
    /// Inline text, cached by content.
    Text(String),
}

/// A piece of prompt text and whose text it is.
#[derive(Debug, Clone, PartialEq)]
pub enum TextPiece {
    /// Client text: special-token strings in it stay text, so a client
    /// cannot inject control tokens.
    Plain(String),
    /// Text of the model's chat template: its special-token strings are the
    /// control tokens they name.
    Template(String),
    /// Token ids a client sent instead of text (checked against the vocabulary).
    Ids(Vec<u32>),
}

impl TextPiece {
    fn is_empty(&self) -> bool {
        match self {
            TextPiece::Plain(t) | TextPiece::Template(t) => t.is_empty(),
            TextPiece::Ids(ids) => ids.is_empty(),
        }
    }
}

/// Prompt text in pieces (see [`TextPiece`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromptText(pub Vec<TextPiece>);

impl PromptText {
    /// Whether it has no text at all.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(TextPiece::is_empty)
    }
}

impl From<String> for PromptText {
    fn from(text: String) -> Self {
        Self(vec![TextPiece::Plain(text)])
    }
}

impl From<&str> for PromptText {
    fn from(text: &str) -> Self {
        text.to_string().into()
    }
}

/// One segment between the anchor (BOS + instruction) and the query.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Text computed for this request only (e.g. the rendered conversation so far).
    Fresh(PromptText),
    /// A document whose cache is reused.
    Document(DocumentRef),
}

/// A generation request as a client asked for it, before any check; the
/// engine accepts it only through [`crate::EngineHandle::validate`].
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Owner of the documents it refers to.
    pub tenant: String,
    /// Segments after the anchor, in order.
    pub segments: Vec<Segment>,
    /// The text the answer continues (last user turn + generation prompt).
    pub query: PromptText,
    /// Recomputation strategy and ratio.
    pub reuse: ReuseConfig,
    /// Sampling.
    pub sampling: SamplingParams,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// The client's strings that end generation (never emitted).
    pub stop: Vec<String>,
    /// A stop the prompt layout adds (not counted against the client's limit).
    pub layout_stop: Option<String>,
    /// What the output must be (JSON, a schema, a tool call's grammar).
    pub constraint: Option<OutputConstraint>,
    /// Report, token by token, what was recomputed and why.
    pub explain: bool,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` or the context was reached.
    Length,
}

/// Milliseconds from arrival to each milestone of a request.
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Timeline {
    /// Waiting in the queue.
    pub queued_ms: f64,
    /// Document cache lookups (and computations of missing ones).
    pub lookup_ms: f64,
    /// Selection (ProphetKV Stage I, CacheBlend's layer-0 pass).
    pub probe_ms: f64,
    /// Recomputation (Stage II).
    pub recompute_ms: f64,
    /// Arrival to the first token.
    pub first_token_ms: f64,
    /// Arrival to the end.
    pub finished_ms: f64,
}

/// Document cache hits of a request, per tier.
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TierHits {
    /// In the model's device memory (the GPU).
    pub device: usize,
    /// In host memory.
    pub host: usize,
    /// On this replica's disk.
    pub disk: usize,
    /// In Redis.
    pub remote: usize,
    /// Computed from text.
    pub computed: usize,
}

impl TierHits {
    pub(crate) fn add(&mut self, tier: Tier) {
        match tier {
            Tier::Device => self.device += 1,
            Tier::Host => self.host += 1,
            Tier::Disk => self.disk += 1,
            Tier::Remote => self.remote += 1,
            Tier::Computed => self.computed += 1,
        }
    }
}

/// Token counts, as OpenAI reports them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
}

/// What a request's stream carries, in order: `Started`, `Text`*, then `Finished` or `Failed`.
#[derive(Debug, Clone)]
pub enum Event {
    /// The prompt is processed; generation begins.
    Started {
        /// Prompt tokens.
        prompt_tokens: usize,
    },
    /// New text (stop strings and incomplete characters held back), with
    /// the log-probabilities of the tokens it releases when the request
    /// asked for them (a token's entry comes with the text it completes, so
    /// text and entries may arrive apart; the last entries may come with
    /// empty text).
    Text {
        /// The text.
        text: String,
        /// One entry per generated token, in order.
        logprobs: Vec<StepLogprobs>,
    },
    /// Generation ended.
    Finished(Box<Summary>),
    /// The request failed.
    Failed(EngineError),
}

/// The end of a request.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Why it ended.
    pub reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Reuse statistics.
    pub reuse: ReuseStats,
    /// Cache hits per tier.
    pub hits: TierHits,
    /// Milestones.
    pub timeline: Timeline,
    /// What was recomputed and why (requests that asked).
    pub explanation: Option<Box<Explanation>>,
}

pub(crate) fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
