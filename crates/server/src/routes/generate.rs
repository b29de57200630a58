//! The generation flow shared by completions and chat: submit, then either
//! drain the events into one response or stream them as SSE chunks.
//! Non-streaming is the streaming path drained.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream, StreamExt};
use prophetkv_engine::{Event, Summary};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::error::ApiError;
use crate::openai::Valid;
use crate::state::AppState;

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
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let prefix = if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    format!(
        "{prefix}-{}",
        &blake3::hash(format!("{nanos}-{n}").as_bytes()).to_hex()[..24]
    )
}

/// The `prophetkv` object of a response: reuse statistics and the timeline.
fn prophetkv_stats(s: &Summary) -> Value {
    json!({
        "strategy": s.reuse.strategy,
        "recompute_ratio": s.reuse.ratio,
        "context_tokens": s.reuse.context_tokens,
        "eligible_tokens": s.reuse.eligible,
        "reused_tokens": s.reuse.reused,
        "recomputed_tokens": s.reuse.recomputed,
        "selected_tokens": s.reuse.selected,
        "cache_hits": s.hits,
        "timeline": s.timeline,
    })
}

fn usage(s: &Summary) -> Value {
    let u = s.usage;
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.prompt_tokens + u.completion_tokens})
}

fn record(state: &AppState, s: &Summary) {
    let m = &state.metrics;
    m.ttft.observe(s.timeline.first_token_ms / 1e3);
    m.e2e.observe(s.timeline.finished_ms / 1e3);
    if s.reuse.eligible > 0 {
        m.recompute_ratio
            .observe(s.reuse.selected as f64 / s.reuse.eligible as f64);
    }
}

/// Submits `valid` and answers in `kind`'s shape.
pub async fn respond(state: AppState, valid: Valid, kind: Kind) -> Result<Response, ApiError> {
    let mut rx = state.engine.submit(valid.request).map_err(|e| {
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
    if valid.stream {
        Ok(stream_response(state, rx, kind, model, valid.include_usage).into_response())
    } else {
        collect_response(state, rx, kind, model).await
    }
}

async fn collect_response(
    state: AppState,
    mut rx: UnboundedReceiver<Event>,
    kind: Kind,
    model: String,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Started { .. } => {}
            Event::Text(t) => text.push_str(&t),
            Event::Failed(e) => return Err(e.into()),
            Event::Finished(s) => {
                record(&state, &s);
                let choice = match kind {
                    Kind::Completion => {
                        json!({"index": 0, "text": text, "logprobs": null, "finish_reason": s.reason})
                    }
                    Kind::Chat => {
                        json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": s.reason})
                    }
                };
                let object = if kind == Kind::Chat {
                    "chat.completion"
                } else {
                    "text_completion"
                };
                return Ok(Json(json!({
                    "id": response_id(kind), "object": object, "created": now(), "model": model,
                    "choices": [choice], "usage": usage(&s), "prophetkv": prophetkv_stats(&s),
                }))
                .into_response());
            }
        }
    }
    Err(ApiError::Internal("the engine dropped the request".into()))
}

/// Per-stream state of the SSE conversion.
struct Chunks {
    state: AppState,
    rx: UnboundedReceiver<Event>,
    kind: Kind,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    sent_role: bool,
    done: bool,
}

impl Chunks {
    fn chunk(&self, choice: Value, extra: Option<(&str, Value)>) -> SseEvent {
        let object = if self.kind == Kind::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let mut body = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice]});
        if let Some((k, v)) = extra {
            body[k] = v;
        }
        SseEvent::default().data(body.to_string())
    }

    fn text_choice(&mut self, text: &str, finish: Value) -> Value {
        match self.kind {
            Kind::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
            Kind::Chat => {
                let mut delta = json!({});
                if !self.sent_role {
                    delta["role"] = json!("assistant");
                    self.sent_role = true;
                }
                if !text.is_empty() {
                    delta["content"] = json!(text);
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        }
    }

    /// The SSE events for one engine event.
    fn events(&mut self, event: Event) -> Vec<SseEvent> {
        match event {
            Event::Started { .. } => Vec::new(),
            Event::Text(t) => {
                let choice = self.text_choice(&t, Value::Null);
                vec![self.chunk(choice, None)]
            }
            Event::Finished(s) => {
                record(&self.state, &s);
                self.done = true;
                let choice = self.text_choice("", json!(s.reason));
                let mut out = vec![self.chunk(choice, Some(("prophetkv", prophetkv_stats(&s))))];
                if self.include_usage {
                    let object = if self.kind == Kind::Chat {
                        "chat.completion.chunk"
                    } else {
                        "text_completion"
                    };
                    let body = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [], "usage": usage(&s)});
                    out.push(SseEvent::default().data(body.to_string()));
                }
                out.push(SseEvent::default().data("[DONE]"));
                out
            }
            Event::Failed(e) => {
                self.done = true;
                vec![
                    SseEvent::default().data(ApiError::from(e).body().to_string()),
                    SseEvent::default().data("[DONE]"),
                ]
            }
        }
    }
}

fn stream_response(
    state: AppState,
    rx: UnboundedReceiver<Event>,
    kind: Kind,
    model: String,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let chunks = Chunks {
        state,
        rx,
        kind,
        id: response_id(kind),
        model,
        created: now(),
        include_usage,
        sent_role: false,
        done: false,
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
