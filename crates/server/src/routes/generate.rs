//! The generation flow shared by completions and chat: submit, then either
//! drain the events into one response or stream them as SSE chunks.
//! Non-streaming is the streaming path drained.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream, StreamExt};
use prophetkv_engine::logprobs::StepLogprobs;
use prophetkv_engine::{Event, FinishReason, Summary};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::access_log::LoggedTokens;
use crate::error::ApiError;
use crate::openai::Mapped;
use crate::request_id::unique_id;
use crate::responses::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatDelta, ChatLogprobs, CompletionChoice,
    CompletionLogprobs, Envelope, Finish, ReuseReport, ToolCallDelta, Usage,
};
use crate::state::AppState;
use crate::tools::{parse_calls, ToolCall};

/// Which OpenAI object family a response belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `text_completion`.
    Completion,
    /// `chat.completion`.
    Chat,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn response_id(kind: Kind) -> String {
    let prefix = if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    unique_id(prefix, 24)
}

/// Metrics and the log line of a finished answer.
fn record(state: &AppState, s: &Summary) {
    tracing::info!(
        prompt_tokens = s.usage.prompt_tokens,
        completion_tokens = s.usage.completion_tokens,
        finish_reason = ?s.reason,
        first_token_ms = s.timeline.first_token_ms,
        finished_ms = s.timeline.finished_ms,
        "answer finished"
    );
    let m = &state.metrics;
    m.ttft.observe(s.timeline.first_token_ms / 1e3);
    m.e2e.observe(s.timeline.finished_ms / 1e3);
    if s.reuse.eligible > 0 {
        m.recompute_ratio
            .observe(s.reuse.selected as f64 / s.reuse.eligible as f64);
    }
}

/// How the engine's text becomes the answer's: the echoed prompt first,
/// leading whitespace of a chat reply dropped, log-probabilities in the
/// API's shape when asked for.
struct Shaper {
    kind: Kind,
    echo: Option<String>,
    trim_start: bool,
    logprobs: bool,
    /// Read the answer for tool calls.
    tool_calls: bool,
    /// Characters of completion text so far (`text_offset`).
    offset: usize,
}

/// A piece of the answer in the API's shape.
enum Logprobs {
    Completion(CompletionLogprobs),
    Chat(ChatLogprobs),
}

impl Shaper {
    fn new(mapped: &Mapped, kind: Kind) -> Self {
        Self {
            kind,
            echo: mapped.echo.clone(),
            trim_start: mapped.trim_start,
            logprobs: mapped.request.sampling.logprobs.is_some(),
            tool_calls: mapped.tool_calls,
            offset: 0,
        }
    }

    /// The text to send for `text`.
    fn text(&mut self, text: &str) -> String {
        let mut out = self.echo.take().unwrap_or_default();
        self.offset += out.chars().count();
        if self.trim_start {
            let rest = text.trim_start();
            self.trim_start = rest.is_empty();
            out.push_str(rest);
        } else {
            out.push_str(text);
        }
        out
    }

    /// The calls `answer` makes (when the request has tools to call and the
    /// answer is calls), and why it ended: `tool_calls` then, else `reason`.
    fn calls(&self, answer: &str, reason: FinishReason) -> (Option<Vec<ToolCall>>, Finish) {
        match self.tool_calls.then(|| parse_calls(answer)).flatten() {
            Some(calls) => (Some(calls), Finish::ToolCalls),
            None => (None, reason.into()),
        }
    }

    /// The log-probabilities to send with `steps`; `None` when not asked for.
    fn logprobs(&mut self, steps: &[StepLogprobs]) -> Option<Logprobs> {
        if !self.logprobs {
            return None;
        }
        Some(match self.kind {
            Kind::Completion => {
                Logprobs::Completion(CompletionLogprobs::of(steps, &mut self.offset))
            }
            Kind::Chat => Logprobs::Chat(ChatLogprobs::of(steps)),
        })
    }
}

impl Logprobs {
    fn completion(this: Option<Self>) -> Option<CompletionLogprobs> {
        match this {
            Some(Logprobs::Completion(lp)) => Some(lp),
            _ => None,
        }
    }

    fn chat(this: Option<Self>) -> Option<ChatLogprobs> {
        match this {
            Some(Logprobs::Chat(lp)) => Some(lp),
            _ => None,
        }
    }
}

/// Validates and submits `mapped`, and answers in `kind`'s shape.
pub async fn respond(state: AppState, mapped: Mapped, kind: Kind) -> Result<Response, ApiError> {
    let shaper = Shaper::new(&mapped, kind);
    let valid = state.engine.validate(mapped.request)?;
    let mut rx = state.engine.submit(valid).map_err(|e| {
        let e = ApiError::from(e);
        if matches!(e, ApiError::Overloaded(_)) {
            state.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        }
        e
    })?;
    // Errors before the first token get a proper status, not a 200 stream.
    match rx.recv().await {
        Some(Event::Started { .. }) => {}
        Some(Event::Failed(e)) => return Err(e.into()),
        Some(_) | None => {
            return Err(ApiError::Internal(
                "the engine ended the request without starting it".into(),
            ))
        }
    }
    let model = state.config.defaults.model.clone();
    if mapped.stream {
        Ok(stream_response(state, rx, shaper, model, mapped.include_usage).into_response())
    } else {
        collect_response(state, rx, shaper, model).await
    }
}

async fn collect_response(
    state: AppState,
    mut rx: UnboundedReceiver<Event>,
    mut shaper: Shaper,
    model: String,
) -> Result<Response, ApiError> {
    let kind = shaper.kind;
    let mut text = shaper.text("");
    let mut steps = Vec::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Started { .. } => {}
            Event::Text { text: t, logprobs } => {
                text.push_str(&shaper.text(&t));
                steps.extend(logprobs);
            }
            Event::Failed(e) => return Err(e.into()),
            Event::Finished(s) => {
                record(&state, &s);
                let tokens = LoggedTokens {
                    prompt: s.usage.prompt_tokens,
                    completion: s.usage.completion_tokens,
                };
                let head = Head {
                    id: response_id(kind),
                    created: now(),
                    model,
                };
                let (usage, report) = (Some(Usage::from(&*s)), Some(ReuseReport::from(&*s)));
                let logprobs = shaper.logprobs(&steps);
                let mut response = match kind {
                    Kind::Completion => {
                        let choice = CompletionChoice {
                            index: 0,
                            text,
                            logprobs: Logprobs::completion(logprobs),
                            finish_reason: Some(s.reason.into()),
                        };
                        Json(head.envelope("text_completion", vec![choice], usage, report))
                            .into_response()
                    }
                    Kind::Chat => {
                        let (calls, finish_reason) = shaper.calls(&text, s.reason);
                        let choice = ChatChoice {
                            index: 0,
                            message: AssistantMessage {
                                role: "assistant",
                                content: calls.is_none().then_some(text),
                                tool_calls: calls,
                            },
                            logprobs: Logprobs::chat(logprobs),
                            finish_reason,
                        };
                        Json(head.envelope("chat.completion", vec![choice], usage, report))
                            .into_response()
                    }
                };
                response.extensions_mut().insert(tokens);
                return Ok(response);
            }
        }
    }
    Err(ApiError::Internal("the engine dropped the request".into()))
}

/// `choice` alone, or no choice at all in a stream's usage chunk.
fn choices_unless<C>(usage_only: bool, choice: C) -> Vec<C> {
    (!usage_only).then_some(choice).into_iter().collect()
}

/// What every object of one response shares.
struct Head {
    id: String,
    created: u64,
    model: String,
}

impl Head {
    fn envelope<C>(
        &self,
        object: &'static str,
        choices: Vec<C>,
        usage: Option<Usage>,
        prophetkv: Option<ReuseReport>,
    ) -> Envelope<C> {
        Envelope {
            id: self.id.clone(),
            object,
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            prophetkv,
        }
    }
}

/// What one chunk carries besides the envelope.
struct Piece<'a> {
    text: &'a str,
    steps: &'a [StepLogprobs],
    calls: Option<Vec<ToolCallDelta>>,
    finish: Option<Finish>,
}

impl<'a> Piece<'a> {
    fn text(text: &'a str, steps: &'a [StepLogprobs]) -> Self {
        Self {
            text,
            steps,
            calls: None,
            finish: None,
        }
    }
}

/// Per-stream state of the SSE conversion.
struct Chunks {
    state: AppState,
    rx: UnboundedReceiver<Event>,
    kind: Kind,
    shaper: Shaper,
    head: Head,
    include_usage: bool,
    sent_role: bool,
    done: bool,
    /// The request's span: a stream outlives the handler that opened it.
    span: tracing::Span,
    /// Text and log-probabilities held back while the answer may be calls.
    held: String,
    held_steps: Vec<StepLogprobs>,
}

fn sse(body: &impl Serialize) -> SseEvent {
    match serde_json::to_string(body) {
        Ok(json) => SseEvent::default().data(json),
        Err(e) => SseEvent::default().data(ApiError::Internal(e.to_string()).body_json()),
    }
}

impl Chunks {
    /// One chunk of `kind`'s shape: text (and the finish reason on the last),
    /// or only usage when `usage_only`.
    fn chunk(&mut self, piece: Piece<'_>, summary: Option<&Summary>, usage_only: bool) -> SseEvent {
        let Piece {
            text,
            steps,
            calls,
            finish,
        } = piece;
        let logprobs = if usage_only || (finish.is_some() && steps.is_empty()) {
            None
        } else {
            self.shaper.logprobs(steps)
        };
        let (usage, prophetkv) = match summary {
            Some(s) if usage_only => (Some(Usage::from(s)), None),
            Some(s) => (None, Some(ReuseReport::from(s))),
            None => (None, None),
        };
        match self.kind {
            Kind::Completion => {
                let choices = choices_unless(
                    usage_only,
                    CompletionChoice {
                        index: 0,
                        text: text.to_string(),
                        logprobs: Logprobs::completion(logprobs),
                        finish_reason: finish,
                    },
                );
                let envelope = self
                    .head
                    .envelope("text_completion", choices, usage, prophetkv);
                sse(&envelope)
            }
            Kind::Chat => {
                let delta = ChatDelta {
                    role: (!self.sent_role).then_some("assistant"),
                    content: (!text.is_empty()).then(|| text.to_string()),
                    tool_calls: calls,
                };
                self.sent_role = true;
                let choices = choices_unless(
                    usage_only,
                    ChatChunkChoice {
                        index: 0,
                        delta,
                        logprobs: Logprobs::chat(logprobs),
                        finish_reason: finish,
                    },
                );
                sse(&self
                    .head
                    .envelope("chat.completion.chunk", choices, usage, prophetkv))
            }
        }
    }

    /// The SSE events for one engine event.
    fn events(&mut self, event: Event) -> Vec<SseEvent> {
        match event {
            Event::Started { .. } => Vec::new(),
            Event::Text { text, logprobs } => {
                let text = self.shaper.text(&text);
                if self.shaper.tool_calls {
                    // Held until the end: the answer may be calls.
                    self.held.push_str(&text);
                    self.held_steps.extend(logprobs);
                    return Vec::new();
                }
                if text.is_empty() && logprobs.is_empty() {
                    return Vec::new();
                }
                vec![self.chunk(Piece::text(&text, &logprobs), None, false)]
            }
            Event::Finished(s) => {
                self.span.in_scope(|| record(&self.state, &s));
                self.done = true;
                let mut out = Vec::new();
                let held = std::mem::take(&mut self.held);
                let steps = std::mem::take(&mut self.held_steps);
                let (calls, finish) = self.shaper.calls(&held, s.reason);
                match calls {
                    Some(calls) => {
                        let calls = calls
                            .into_iter()
                            .enumerate()
                            .map(|(index, call)| ToolCallDelta { index, call })
                            .collect();
                        let piece = Piece {
                            calls: Some(calls),
                            ..Piece::text("", &steps)
                        };
                        out.push(self.chunk(piece, None, false));
                    }
                    None if !held.is_empty() || !steps.is_empty() => {
                        out.push(self.chunk(Piece::text(&held, &steps), None, false));
                    }
                    None => {}
                }
                // An echo not sent yet (nothing was generated) goes out now.
                let text = self.shaper.text("");
                let last = Piece {
                    finish: Some(finish),
                    ..Piece::text(&text, &[])
                };
                out.push(self.chunk(last, Some(&s), false));
                if self.include_usage {
                    out.push(self.chunk(Piece::text("", &[]), Some(&s), true));
                }
                out.push(SseEvent::default().data("[DONE]"));
                out
            }
            Event::Failed(e) => {
                self.done = true;
                vec![
                    SseEvent::default().data(ApiError::from(e).body_json()),
                    SseEvent::default().data("[DONE]"),
                ]
            }
        }
    }
}
fn stream_response(
    state: AppState,
    rx: UnboundedReceiver<Event>,
    shaper: Shaper,
    model: String,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let kind = shaper.kind;
    let chunks = Chunks {
        state,
        rx,
        kind,
        shaper,
        head: Head {
            id: response_id(kind),
            created: now(),
            model,
        },
        include_usage,
        sent_role: false,
        done: false,
        span: tracing::Span::current(),
        held: String::new(),
        held_steps: Vec::new(),
    };
    let events = stream::unfold(chunks, |mut c| async move {
        if c.done {
            return None;
        }
        match c.rx.recv().await {
            Some(event) => {
                let out = c.events(event);
                Some((stream::iter(out.into_iter().map(Ok)), c))
            }
            None => None,
        }
    })
    .flatten();
    Sse::new(events).keep_alive(KeepAlive::default())
}
