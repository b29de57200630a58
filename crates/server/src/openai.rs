//! OpenAI request bodies (with prophetkv's `documents` and `kv_reuse`
//! extensions) and how they map onto the engine's [`GenerateRequest`].
//!
//! Only what is particular to OpenAI's surface is refused here (another
//! model's name, `n`, roles, content parts, fields it does not know and
//! features not served); every limit on values lives in the engine's
//! `validate`, which the handlers call next. No field is dropped unread:
//! each is honoured, refused with a 400 naming it, or (`user`) an
//! annotation that by definition changes nothing.

use std::sync::Arc;

use std::collections::HashMap;

use prophetkv_engine::{
    DocumentRef, GenerateRequest, OutputConstraint, PromptText, ProphetOptions, ReuseConfig,
    SamplingParams, Segment, StrategyKind, TextPiece,
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::chat_template::{ChatTemplate, TemplateMessage};
use crate::error::ApiError;
use crate::tools::{tool_use, Tool, ToolCall, ToolChoice, ToolUse};

/// A string or a list of strings (`stop`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged, expecting = "a string or a list of strings")]
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

/// `prompt`: text or token ids, alone or as a list of one.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(
    untagged,
    expecting = "a string, a list of token ids, or a list holding one of either"
)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
    /// A list of texts (one is supported).
    Texts(Vec<String>),
    /// A list of token-id lists (one is supported).
    TokenLists(Vec<Vec<u32>>),
}

impl Prompt {
    /// The one prompt, as engine text, and its text when it is text.
    fn single(self) -> Result<(PromptText, Option<String>), ApiError> {
        let one = |n: usize| {
            ApiError::bad_request(
                format!("exactly one prompt is supported, got {n}"),
                Some("prompt"),
            )
        };
        match self {
            Prompt::Text(t) => Ok((t.clone().into(), Some(t))),
            Prompt::Tokens(ids) => Ok((PromptText(vec![TextPiece::Ids(ids)]), None)),
            Prompt::Texts(mut v) if v.len() == 1 => {
                let t = v.remove(0);
                Ok((t.clone().into(), Some(t)))
            }
            Prompt::TokenLists(mut v) if v.len() == 1 => {
                Ok((PromptText(vec![TextPiece::Ids(v.remove(0))]), None))
            }
            Prompt::Texts(v) => Err(one(v.len())),
            Prompt::TokenLists(v) => Err(one(v.len())),
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
#[serde(deny_unknown_fields)]
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
    /// Seed for reproducible sampling (any 64-bit integer).
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<OneOrMany>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Choices per prompt (only 1).
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<usize>,
    /// Penalty in [-2, 2] on tokens already generated, once each.
    pub presence_penalty: Option<f32>,
    /// Penalty in [-2, 2] on tokens already generated, per occurrence.
    pub frequency_penalty: Option<f32>,
    /// Token id (as a string) to a bias in [-100, 100] added to its logit.
    pub logit_bias: Option<HashMap<String, f32>>,
    /// An end-user id for the client's own tracking; no effect on the answer.
    pub user: Option<String>,
    /// OpenAI's end-user id for abuse detection; no effect on the answer.
    pub safety_identifier: Option<String>,
    /// A hint for OpenAI's prompt cache; no effect here (documents are cached).
    pub prompt_cache_key: Option<String>,
    /// Tags for stored completions; no effect here.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// `auto` or `default` (one tier here); others are refused.
    #[schema(pattern = "^(auto|default)$")]
    pub service_tier: Option<String>,
    /// Completions are not stored: `true` is refused.
    pub store: Option<bool>,
    /// Documents placed before the question.
    pub documents: Option<Vec<DocumentInput>>,
    /// Reuse strategy and ratio.
    pub kv_reuse: Option<KvReuse>,
    /// prophetkv's own options.
    pub prophetkv: Option<ProphetkvOptions>,
}

/// The `prophetkv` request extension.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProphetkvOptions {
    /// Add to the response, token by token, what was recomputed and why
    /// (`prophetkv.explain`; context of at most 16,384 tokens).
    #[serde(default)]
    pub explain: bool,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// The prompt: text or token ids (one).
    pub prompt: Prompt,
    /// Most tokens to generate (OpenAI default 16).
    #[schema(minimum = 1)]
    pub max_tokens: Option<usize>,
    /// Log-probabilities of each token with this many alternatives (0-5).
    pub logprobs: Option<usize>,
    /// Return the prompt before the completion (text prompts, without `logprobs`).
    pub echo: Option<bool>,
    /// Text after the completion (not supported: refused when not empty).
    pub suffix: Option<String>,
    /// Candidates to pick the best of (only 1).
    #[schema(minimum = 1, maximum = 1)]
    pub best_of: Option<usize>,
    /// Everything else.
    #[serde(flatten)]
    pub common: Common,
    /// Fields this API does not know: refused, as OpenAI does.
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: serde_json::Map<String, Value>,
}

/// A chat message; content is text, a list of text parts, or null.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// system, developer, user, assistant or tool.
    #[schema(pattern = "^(system|developer|user|assistant|tool)$")]
    pub role: String,
    /// The content (null in an assistant message with tool calls).
    #[serde(default)]
    pub content: Option<Content>,
    /// A participant's name, passed to the chat template.
    pub name: Option<String>,
    /// An assistant's tool calls.
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
    /// Refusal text of an earlier assistant message.
    pub refusal: Option<String>,
}

/// Message content.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged, expecting = "a string or a list of content parts")]
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
    /// The conversation; an assistant message last is continued.
    #[schema(min_items = 1)]
    pub messages: Vec<Message>,
    /// Most tokens to generate.
    #[schema(minimum = 1)]
    pub max_tokens: Option<usize>,
    /// Newer name of `max_tokens`.
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<usize>,
    /// Return each token's log-probability.
    pub logprobs: Option<bool>,
    /// Alternatives per token (0-20; needs `logprobs`).
    pub top_logprobs: Option<usize>,
    /// Text, any JSON object, or JSON under a schema (constrained decoding).
    pub response_format: Option<ResponseFormat>,
    /// Functions the model may call.
    pub tools: Option<Vec<Tool>>,
    /// `none`, `auto` (the default with tools), `required`, or a named function.
    pub tool_choice: Option<ToolChoice>,
    /// Whether one answer may hold several calls (default false, as in
    /// llama-server: a small model otherwise tends to repeat its call).
    pub parallel_tool_calls: Option<bool>,
    /// Output modalities: `["text"]` only.
    pub modalities: Option<Vec<String>>,
    /// Everything else.
    #[serde(flatten)]
    pub common: Common,
    /// Fields this API does not know or does not support: refused.
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: serde_json::Map<String, Value>,
}

/// `response_format`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid under a schema.
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchemaFormat,
    },
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    /// The schema's name.
    pub name: String,
    /// What the output is for.
    pub description: Option<String>,
    /// The JSON schema (absent: any JSON object).
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Accepted either way: the output always follows the schema.
    pub strict: Option<bool>,
}

impl ResponseFormat {
    /// The constraint it asks for (`None` for text).
    fn constraint(&self) -> Result<Option<OutputConstraint>, ApiError> {
        Ok(match self {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(OutputConstraint::JsonObject),
            ResponseFormat::JsonSchema { json_schema } => match &json_schema.schema {
                None => Some(OutputConstraint::JsonObject),
                Some(schema @ Value::Object(_)) => {
                    Some(OutputConstraint::JsonSchema(schema.clone()))
                }
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "response_format.json_schema.schema must be a JSON object",
                        Some("response_format"),
                    ))
                }
            },
        })
    }
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
    /// ProphetKV's selection options (the served model's default, or the
    /// config's).
    pub prophet: ProphetOptions,
    /// `max_tokens` for chat when a request names none.
    pub chat_max_tokens: usize,
    /// The model's chat template; `None`: the plain layout.
    pub chat_template: Option<Arc<ChatTemplate>>,
}

impl Defaults {
    /// A request's `model`, when it names one, must be the served one (404
    /// otherwise, as OpenAI answers for a model it does not have).
    pub fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(given) if given != self.model => Err(ApiError::unknown_model(given, &self.model)),
            _ => Ok(()),
        }
    }
}

/// An engine request plus what the response needs.
pub struct Mapped {
    /// For the engine (validated next).
    pub request: GenerateRequest,
    /// Stream events.
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// Text the answer starts with (`echo`: the prompt).
    pub echo: Option<String>,
    /// Drop whitespace at the start of the answer (a chat reply, unless it
    /// continues a prefilled assistant message).
    pub trim_start: bool,
    /// Read the answer for tool calls (a chat with tools to call).
    pub tool_calls: bool,
}

/// Where a request's text goes: segments after the anchor, the query, and
/// the layout's own stop.
struct Layout {
    segments: Vec<Segment>,
    query: PromptText,
    layout_stop: Option<&'static str>,
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

/// A 400 naming `param` as not supported.
fn unsupported(param: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("{param} is not supported: {why}"), Some(param))
}

/// Parameters of OpenAI's reference that this server does not serve.
const NOT_SERVED: [&str; 7] = [
    "audio",
    "functions",
    "function_call",
    "prediction",
    "reasoning_effort",
    "verbosity",
    "web_search_options",
];

/// A field that no struct field took: one of OpenAI's this server does not
/// serve, or one OpenAI does not know either (refused as OpenAI refuses it).
fn refuse_unknown(unknown: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    match unknown.keys().next() {
        Some(name) if NOT_SERVED.contains(&name.as_str()) => {
            Err(unsupported(name, "this server does not serve it"))
        }
        Some(name) => Err(ApiError::bad_request(
            format!("unrecognized request argument supplied: {name}"),
            Some(name),
        )),
        None => Ok(()),
    }
}

/// `logit_bias`'s keys as token ids.
fn logit_bias(common: &Common) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(bias) = &common.logit_bias else {
        return Ok(Vec::new());
    };
    let mut out: Vec<(u32, f32)> = bias
        .iter()
        .map(|(id, &value)| {
            id.parse::<u32>().map(|id| (id, value)).map_err(|_| {
                ApiError::bad_request(
                    format!("logit_bias keys must be token ids, got {id:?}"),
                    Some("logit_bias"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    out.sort_by_key(|&(id, _)| id);
    Ok(out)
}

fn map_common(
    common: &Common,
    defaults: &Defaults,
    tenant: &str,
    layout: Layout,
    max_tokens: usize,
    logprobs: Option<usize>,
) -> Result<Mapped, ApiError> {
    defaults.check_model(common.model.as_deref())?;
    if let Some(n) = common.n.filter(|&n| n != 1) {
        return Err(unsupported(
            "n",
            &format!("one choice per request, got {n}"),
        ));
    }
    if common.store == Some(true) {
        return Err(unsupported("store", "completions are not stored"));
    }
    if let Some(tier) = common
        .service_tier
        .as_deref()
        .filter(|t| !matches!(*t, "auto" | "default"))
    {
        return Err(unsupported(
            "service_tier",
            &format!("one tier (\"auto\" or \"default\"), got {tier:?}"),
        ));
    }
    let reuse = common.kv_reuse.clone().unwrap_or(KvReuse {
        strategy: None,
        recompute_ratio: None,
    });
    let strategy = match &reuse.strategy {
        Some(s) => s
            .parse::<StrategyKind>()
            .map_err(|e| ApiError::bad_request(e.to_string(), Some("kv_reuse.strategy")))?,
        None => defaults.strategy,
    };
    let request = GenerateRequest {
        tenant: tenant.to_string(),
        segments: layout.segments,
        query: layout.query,
        reuse: ReuseConfig {
            strategy,
            ratio: reuse.recompute_ratio.unwrap_or(defaults.ratio),
            prophet: defaults.prophet.clone(),
            ..ReuseConfig::default()
        },
        sampling: SamplingParams {
            temperature: common.temperature.unwrap_or(1.0),
            top_p: common.top_p.unwrap_or(1.0),
            top_k: common.top_k.unwrap_or(0),
            // Any 64-bit integer is a seed; negative ones wrap.
            seed: common.seed.map(|s| s as u64),
            presence_penalty: common.presence_penalty.unwrap_or(0.0),
            frequency_penalty: common.frequency_penalty.unwrap_or(0.0),
            logit_bias: logit_bias(common)?,
            logprobs,
        },
        max_tokens,
        stop: common
            .stop
            .clone()
            .map(OneOrMany::into_vec)
            .unwrap_or_default(),
        layout_stop: layout.layout_stop.map(str::to_string),
        constraint: None,
        explain: common.prophetkv.as_ref().is_some_and(|p| p.explain),
    };
    Ok(Mapped {
        request,
        stream: common.stream,
        include_usage: common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
        echo: None,
        trim_start: false,
        tool_calls: false,
    })
}

/// Most alternatives per token of the completions API (OpenAI's limit).
pub const MAX_COMPLETION_LOGPROBS: usize = 5;

impl CompletionRequest {
    /// Maps onto an engine request: BOS + instruction + documents + prompt.
    pub fn map(self, defaults: &Defaults, tenant: &str) -> Result<Mapped, ApiError> {
        refuse_unknown(&self.unknown)?;
        if let Some(n) = self.best_of.filter(|&n| n != 1) {
            return Err(unsupported(
                "best_of",
                &format!("one candidate per request, got {n}"),
            ));
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(unsupported(
                "suffix",
                "the served layout has no fill-in-the-middle",
            ));
        }
        if let Some(n) = self.logprobs.filter(|&n| n > MAX_COMPLETION_LOGPROBS) {
            return Err(ApiError::bad_request(
                format!("logprobs must be within [0, {MAX_COMPLETION_LOGPROBS}], got {n}"),
                Some("logprobs"),
            ));
        }
        let (query, text) = self.prompt.single()?;
        let echo = match (self.echo.unwrap_or(false), text) {
            (false, _) => None,
            (true, Some(_)) if self.logprobs.is_some() => {
                return Err(unsupported(
                    "echo",
                    "with logprobs it needs the prompt's log-probabilities, which reused caches do not have",
                ))
            }
            (true, Some(text)) => Some(text),
            (true, None) => return Err(unsupported("echo", "only for a text prompt")),
        };
        let layout = Layout {
            segments: documents(&self.common)?,
            query,
            layout_stop: None,
        };
        let mut mapped = map_common(
            &self.common,
            defaults,
            tenant,
            layout,
            self.max_tokens.unwrap_or(16),
            self.logprobs,
        )?;
        mapped.echo = echo;
        Ok(mapped)
    }
}

impl ChatRequest {
    /// Maps onto an engine request. With the model's chat template, the
    /// rendered conversation up to the last user turn's text is fresh, then
    /// come the documents, then that text and the generation prompt (the
    /// query). Without one, the plain layout: earlier turns as "Role: text"
    /// paragraphs, the documents, then "User: text\nAssistant:"; the answer
    /// stops before a following "\nUser:". An assistant message after the
    /// last user turn is a prefill: the answer continues its text.
    pub fn map(self, defaults: &Defaults, tenant: &str) -> Result<Mapped, ApiError> {
        refuse_unknown(&self.unknown)?;
        self.refuse_unsupported()?;
        let tools = tool_use(
            self.tools.as_deref().unwrap_or_default(),
            self.tool_choice.as_ref(),
            self.parallel_tool_calls.unwrap_or(false),
        )?;
        let format = match &self.response_format {
            Some(f) => f.constraint()?,
            None => None,
        };
        let constraint = match (&tools, format) {
            (Some(ToolUse { grammar: Some(_), .. }), Some(_)) => {
                return Err(ApiError::bad_request(
                    "response_format with tools that may be called: use tool_choice \"none\" or one of them",
                    Some("response_format"),
                ))
            }
            (Some(t), None) => t.grammar.clone().map(OutputConstraint::Lark),
            (_, format) => format,
        };
        let logprobs = match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (true, top) => Some(top.unwrap_or(0)),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(ApiError::bad_request(
                    "top_logprobs needs logprobs set to true",
                    Some("top_logprobs"),
                ))
            }
        };
        let mut messages = template_messages(&self.messages)?;
        if let Some(tools) = &tools {
            with_system_text(&mut messages, &tools.prompt);
        }
        let prefill = match messages.last() {
            None => {
                return Err(ApiError::bad_request(
                    "messages must not be empty",
                    Some("messages"),
                ))
            }
            Some(m) if m.role == "assistant" && messages.len() >= 2 => messages.pop(),
            Some(_) => None,
        };
        if messages.last().is_none_or(|m| m.role != "user") {
            return Err(ApiError::bad_request(
                "the last message must be from the user (or an assistant message to continue, right after it)",
                Some("messages"),
            ));
        }
        let (before_documents, mut query, layout_stop) = match &defaults.chat_template {
            Some(template) => {
                let rendered = template.render(&messages)?;
                (rendered.before_documents, rendered.query, None)
            }
            None => {
                let (before, query) = plain_layout(&messages)?;
                (before.into(), query.into(), Some(PLAIN_LAYOUT_STOP))
            }
        };
        if let Some(prefill) = &prefill {
            // The plain layout's "Assistant:" is followed by a space.
            let text = match layout_stop {
                Some(_) if !prefill.content.starts_with(char::is_whitespace) => {
                    format!(" {}", prefill.content)
                }
                _ => prefill.content.clone(),
            };
            query.0.push(TextPiece::Plain(text));
        }
        let mut segments = Vec::new();
        if !before_documents.is_empty() {
            segments.push(Segment::Fresh(before_documents));
        }
        segments.extend(documents(&self.common)?);
        let max_tokens = self
            .max_completion_tokens
            .or(self.max_tokens)
            .unwrap_or(defaults.chat_max_tokens);
        let layout = Layout {
            segments,
            query,
            layout_stop,
        };
        let mut mapped = map_common(&self.common, defaults, tenant, layout, max_tokens, logprobs)?;
        mapped.trim_start = prefill.is_none();
        mapped.request.constraint = constraint;
        mapped.tool_calls = tools.is_some_and(|t| t.parse_calls);
        Ok(mapped)
    }

    /// Refuses what asks for a feature not served, unless it asks for
    /// nothing (text output).
    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        if self
            .modalities
            .as_ref()
            .is_some_and(|m| m.iter().any(|m| m != "text"))
        {
            return Err(unsupported("modalities", "only \"text\""));
        }
        Ok(())
    }
}

/// Puts `text` into the conversation's system message (after its own
/// text), or a new one first.
fn with_system_text(messages: &mut Vec<TemplateMessage>, text: &str) {
    match messages.first_mut() {
        Some(m) if m.role == "system" || m.role == "developer" => {
            m.content = format!("{}\n\n{text}", m.content);
        }
        _ => messages.insert(
            0,
            TemplateMessage {
                role: "system".into(),
                content: text.to_string(),
                name: None,
            },
        ),
    }
}

/// The messages as the template sees them: an assistant's calls as the
/// model writes them, tool results as the user's turn (consecutive ones
/// merged), in the default tool format.
fn template_messages(messages: &[Message]) -> Result<Vec<TemplateMessage>, ApiError> {
    let mut out: Vec<TemplateMessage> = Vec::with_capacity(messages.len());
    let mut after_tool = false;
    for m in messages {
        if m.role == "tool" {
            let content = match &m.content {
                Some(c) => c.text()?,
                None => String::new(),
            };
            let result = crate::tools::render_result(&content);
            match out.last_mut() {
                Some(last) if after_tool => last.content = format!("{}\n{result}", last.content),
                _ => out.push(TemplateMessage {
                    role: "user".into(),
                    content: result,
                    name: None,
                }),
            }
            after_tool = true;
            continue;
        }
        after_tool = false;
        out.push(template_message(m)?);
    }
    Ok(out)
}

/// A message other than a tool result as the template sees it.
fn template_message(m: &Message) -> Result<TemplateMessage, ApiError> {
    if !matches!(
        m.role.as_str(),
        "system" | "developer" | "user" | "assistant"
    ) {
        return Err(ApiError::bad_request(
            format!(
                "unsupported role {:?} (system, developer, user or assistant)",
                m.role
            ),
            Some("messages"),
        ));
    }
    let mut content = match &m.content {
        Some(c) => c.text()?,
        None if m.role == "assistant" => m.refusal.clone().unwrap_or_default(),
        None => {
            return Err(ApiError::bad_request(
                format!("a {} message needs content", m.role),
                Some("messages"),
            ))
        }
    };
    match &m.tool_calls {
        Some(calls) if m.role == "assistant" && !calls.is_empty() => {
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&crate::tools::render_calls(calls));
        }
        Some(calls) if !calls.is_empty() => {
            return Err(ApiError::bad_request(
                format!("a {} message cannot hold tool_calls", m.role),
                Some("messages"),
            ))
        }
        _ => {}
    }
    Ok(TemplateMessage {
        role: m.role.clone(),
        content,
        name: m.name.clone(),
    })
}

/// Where a plain-layout answer ends: a base model goes on to write the
/// user's next turn.
const PLAIN_LAYOUT_STOP: &str = "\nUser:";

/// The layout for models without a chat template: (text before the
/// documents, query). `messages` ends with the user's turn.
fn plain_layout(messages: &[TemplateMessage]) -> Result<(String, String), ApiError> {
    let Some((last, earlier)) = messages.split_last() else {
        return Err(ApiError::bad_request(
            "messages must not be empty",
            Some("messages"),
        ));
    };
    let mut history = String::new();
    for m in earlier {
        let role = match m.role.as_str() {
            "system" | "developer" => "System",
            "user" => "User",
            _ => "Assistant",
        };
        history.push_str(&format!("{role}: {}\n\n", m.content));
    }
    Ok((history, format!("User: {}\nAssistant:", last.content)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(v: Value) -> Message {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn calls_and_their_results_are_rendered_in_the_default_tool_format() {
        let messages = [
            message(serde_json::json!({"role": "user", "content": "Weather in Oslo and Rome?"})),
            message(
                serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Oslo\"}"}},
                    {"id": "b", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Rome\"}"}}
                ]}),
            ),
            message(serde_json::json!({"role": "tool", "tool_call_id": "a", "content": "5C"})),
            message(serde_json::json!({"role": "tool", "tool_call_id": "b", "content": "20C"})),
        ];
        let rendered = template_messages(&messages).unwrap();
        assert_eq!(rendered.len(), 3, "the two results make one user turn");
        assert_eq!(
            rendered[1].content,
            "<tool_call>{\"name\":\"w\",\"arguments\":{\"city\":\"Oslo\"}}</tool_call>\n\
             <tool_call>{\"name\":\"w\",\"arguments\":{\"city\":\"Rome\"}}</tool_call>"
        );
        assert_eq!(rendered[2].role, "user");
        assert_eq!(
            rendered[2].content,
            "<tool_response>\n5C\n</tool_response>\n<tool_response>\n20C\n</tool_response>"
        );
    }

    #[test]
    fn the_tool_prompt_joins_the_system_message_or_opens_the_conversation() {
        let mut with_system = vec![
            TemplateMessage {
                role: "system".into(),
                content: "Be brief.".into(),
                name: None,
            },
            TemplateMessage {
                role: "user".into(),
                content: "Hi".into(),
                name: None,
            },
        ];
        with_system_text(&mut with_system, "TOOLS");
        assert_eq!(with_system.len(), 2);
        assert_eq!(with_system[0].content, "Be brief.\n\nTOOLS");
        let mut without = with_system.split_off(1);
        with_system_text(&mut without, "TOOLS");
        assert_eq!(without[0].role, "system");
        assert_eq!(without[0].content, "TOOLS");
    }
}
