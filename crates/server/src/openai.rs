//! OpenAI request bodies (with prophetkv's `documents` and `kv_reuse`
//! extensions) and how they map onto the engine's [`GenerateRequest`].
//!
//! Only what is particular to OpenAI's surface is refused here (another
//! model's name, `n`, roles, content parts); every limit on values lives in
//! the engine's `validate`, which the handlers call next.

use std::sync::Arc;

use prophetkv_engine::{
    DocumentRef, GenerateRequest, PromptText, ReuseConfig, SamplingParams, Segment, StrategyKind,
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::chat_template::{ChatTemplate, TemplateMessage};
use crate::error::ApiError;

/// A string or a list of strings (`prompt`, `stop`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A document in a request: a registered id or inline text.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentInput {
    /// Id of a registered document.
    pub id: Option<String>,
    /// Inline text (cached by content).
    pub text: Option<String>,
}

/// The `kv_reuse` extension.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KvReuse {
    /// full, naive, prophetkv, cacheblend, epic, random.
    pub strategy: Option<String>,
    /// Fraction of document rows to recompute.
    pub recompute_ratio: Option<f64>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a final chunk with token usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields shared by completions and chat.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct Common {
    /// Model name (must be the served one when given).
    pub model: Option<String>,
    /// Sampling temperature (OpenAI default 1).
    pub temperature: Option<f32>,
    /// Nucleus mass.
    pub top_p: Option<f32>,
    /// Top-k (vLLM extension).
    pub top_k: Option<usize>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Option<OneOrMany>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Choices per prompt (only 1).
    pub n: Option<usize>,
    /// Documents placed before the question.
    pub documents: Option<Vec<DocumentInput>>,
    /// Reuse strategy and ratio.
    pub kv_reuse: Option<KvReuse>,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// The prompt (one string, or a list of one).
    pub prompt: OneOrMany,
    /// Most tokens to generate (OpenAI default 16).
    pub max_tokens: Option<usize>,
    /// Everything else.
    #[serde(flatten)]
    pub common: Common,
}

/// A chat message; content is text or a list of text parts.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct Message {
    /// system, user, assistant (or developer, tool).
    pub role: String,
    /// The content.
    pub content: Content,
}

/// Message content.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts; only `{"type": "text", "text"}` parts are accepted.
    Parts(Vec<ContentPart>),
}

/// One part of a message.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContentPart {
    /// Must be "text".
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: Option<String>,
}

impl Content {
    fn text(&self) -> Result<String, ApiError> {
        match self {
            Content::Text(t) => Ok(t.clone()),
            Content::Parts(parts) => parts
                .iter()
                .map(|p| match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => Ok(t.as_str()),
                    _ => Err(ApiError::bad_request(
                        format!("unsupported content part type {:?}", p.kind),
                        Some("messages"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.join("")),
        }
    }
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Most tokens to generate.
    pub max_tokens: Option<usize>,
    /// Newer name of `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    /// Everything else.
    #[serde(flatten)]
    pub common: Common,
}

/// Server-side defaults a request falls back to.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The served model's name.
    pub model: String,
    /// Strategy when a request names none.
    pub strategy: StrategyKind,
    /// Ratio when a request names none.
    pub ratio: f64,
    /// `max_tokens` for chat when a request names none.
    pub chat_max_tokens: usize,
    /// The model's chat template; `None`: the plain layout.
    pub chat_template: Option<Arc<ChatTemplate>>,
}

/// An engine request plus what the response needs.
pub struct Mapped {
    /// For the engine (validated next).
    pub request: GenerateRequest,
    /// Stream events.
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
}

fn documents(common: &Common) -> Result<Vec<Segment>, ApiError> {
    let Some(docs) = &common.documents else {
        return Ok(Vec::new());
    };
    docs.iter()
        .enumerate()
        .map(|(i, d)| match (&d.id, &d.text) {
            (Some(id), None) => Ok(Segment::Document(DocumentRef::Id(id.clone()))),
            (None, Some(text)) => Ok(Segment::Document(DocumentRef::Text(text.clone()))),
            _ => Err(ApiError::bad_request(
                format!("documents[{i}] needs exactly one of \"id\" or \"text\""),
                Some("documents"),
            )),
        })
        .collect()
}

fn map_common(
    common: &Common,
    defaults: &Defaults,
    tenant: &str,
    segments: Vec<Segment>,
    query: PromptText,
    max_tokens: usize,
    layout_stop: Option<&str>,
) -> Result<Mapped, ApiError> {
    if let Some(model) = &common.model {
        if model != &defaults.model {
            return Err(ApiError::unknown_model(model, &defaults.model));
        }
    }
    if common.n.is_some_and(|n| n != 1) {
        return Err(ApiError::unprocessable(
            "only n = 1 is supported",
            Some("n"),
        ));
    }
    let reuse = common.kv_reuse.clone().unwrap_or(KvReuse {
        strategy: None,
        recompute_ratio: None,
    });
    let strategy = match &reuse.strategy {
        Some(s) => s
            .parse::<StrategyKind>()
            .map_err(|e| ApiError::unprocessable(e.to_string(), Some("kv_reuse.strategy")))?,
        None => defaults.strategy,
    };
    let request = GenerateRequest {
        tenant: tenant.to_string(),
        segments,
        query,
        reuse: ReuseConfig {
            strategy,
            ratio: reuse.recompute_ratio.unwrap_or(defaults.ratio),
            ..ReuseConfig::default()
        },
        sampling: SamplingParams {
            temperature: common.temperature.unwrap_or(1.0),
            top_p: common.top_p.unwrap_or(1.0),
            top_k: common.top_k.unwrap_or(0),
            seed: common.seed,
        },
        max_tokens,
        stop: common
            .stop
            .clone()
            .map(OneOrMany::into_vec)
            .unwrap_or_default(),
        layout_stop: layout_stop.map(str::to_string),
    };
    Ok(Mapped {
        request,
        stream: common.stream,
        include_usage: common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
    })
}

impl CompletionRequest {
    /// Maps onto an engine request: BOS + instruction + documents + prompt.
    pub fn map(self, defaults: &Defaults, tenant: &str) -> Result<Mapped, ApiError> {
        let prompts = self.prompt.into_vec();
        let [prompt] = prompts.as_slice() else {
            return Err(ApiError::unprocessable(
                format!("exactly one prompt is supported, got {}", prompts.len()),
                Some("prompt"),
            ));
        };
        let segments = documents(&self.common)?;
        map_common(
            &self.common,
            defaults,
            tenant,
            segments,
            prompt.clone().into(),
            self.max_tokens.unwrap_or(16),
            None,
        )
    }
}

impl ChatRequest {
    /// Maps onto an engine request. With the model's chat template, the
    /// rendered conversation up to the last user turn's text is fresh, then
    /// come the documents, then that text and the generation prompt (the
    /// query). Without one, the plain layout: earlier turns as "Role: text"
    /// paragraphs, the documents, then "User: text\nAssistant:"; the answer
    /// stops before a following "\nUser:".
    pub fn map(self, defaults: &Defaults, tenant: &str) -> Result<Mapped, ApiError> {
        let Some(last) = self.messages.last() else {
            return Err(ApiError::unprocessable(
                "messages must not be empty",
                Some("messages"),
            ));
        };
        if last.role != "user" {
            return Err(ApiError::unprocessable(
                "the last message must be from the user",
                Some("messages"),
            ));
        }
        let messages = self
            .messages
            .iter()
            .map(|m| {
                Ok(TemplateMessage {
                    role: m.role.clone(),
                    content: m.content.text()?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let (before_documents, query, layout_stop) = match &defaults.chat_template {
            Some(template) => {
                let rendered = template.render(&messages)?;
                (rendered.before_documents, rendered.query, None)
            }
            None => {
                let (before, query) = plain_layout(&messages)?;
                (before.into(), query.into(), Some(PLAIN_LAYOUT_STOP))
            }
        };
        let mut segments = Vec::new();
        if !before_documents.is_empty() {
            segments.push(Segment::Fresh(before_documents));
        }
        segments.extend(documents(&self.common)?);
        let max_tokens = self
            .max_completion_tokens
            .or(self.max_tokens)
            .unwrap_or(defaults.chat_max_tokens);
        map_common(
            &self.common,
            defaults,
            tenant,
            segments,
            query,
            max_tokens,
            layout_stop,
        )
    }
}

/// Where a plain-layout answer ends: a base model goes on to write the
/// user's next turn.
const PLAIN_LAYOUT_STOP: &str = "\nUser:";

/// The layout for models without a chat template: (text before the
/// documents, query).
fn plain_layout(messages: &[TemplateMessage]) -> Result<(String, String), ApiError> {
    let Some((last, earlier)) = messages.split_last() else {
        return Err(ApiError::unprocessable(
            "messages must not be empty",
            Some("messages"),
        ));
    };
    let mut history = String::new();
    for m in earlier {
        let role = match m.role.as_str() {
            "system" | "developer" => "System",
            "user" => "User",
            "assistant" => "Assistant",
            other => {
                return Err(ApiError::unprocessable(
                    format!("unsupported role {other:?}"),
                    Some("messages"),
                ))
            }
        };
        history.push_str(&format!("{role}: {}\n\n", m.content));
    }
    Ok((history, format!("User: {}\nAssistant:", last.content)))
}
