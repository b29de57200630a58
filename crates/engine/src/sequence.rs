//! A request being generated: its cache, sampler and text, token by token.

use std::sync::atomic::Ordering;
use std::time::Instant;

use prophetkv_model::{Kv, TextTokenizer};
use prophetkv_reuse::ReuseStats;
use tokio::sync::mpsc::UnboundedSender;

use crate::constrain::Constraint;
use crate::detokenize::IncrementalDecoder;
use crate::explain::Explanation;
use crate::logprobs::{step_logprobs, StepLogprobs};
use crate::metrics::Metrics;
use crate::request::{ms_since, Event, FinishReason, Summary, TierHits, Timeline, Usage};
use crate::sampling::Sampler;
use crate::stop::{Delta, TextStream};
use crate::EngineError;

/// A request being generated.
pub(crate) struct Sequence {
    pub(crate) events: UnboundedSender<Event>,
    pub(crate) kv: Kv,
    pub(crate) sampler: Sampler,
    pub(crate) stream: TextStream,
    pub(crate) text: IncrementalDecoder,
    /// Sampled but not yet in `kv`.
    pub(crate) next: u32,
    pub(crate) max_tokens: usize,
    pub(crate) prompt_tokens: usize,
    pub(crate) arrived: Instant,
    pub(crate) timeline: Timeline,
    pub(crate) reuse: ReuseStats,
    pub(crate) hits: TierHits,
    /// Entries of tokens whose text is not emitted yet.
    pub(crate) logprobs: Vec<StepLogprobs>,
    /// The grammar the output is held to, if any.
    pub(crate) constraint: Option<Constraint>,
    /// What was recomputed and why, when the request asked.
    pub(crate) explanation: Option<Box<Explanation>>,
}

/// What a token did to its sequence.
pub(crate) enum Step {
    Continue,
    Done(FinishReason),
    Failed(EngineError),
}

/// What accepting a token needs from the worker.
pub(crate) struct Context<'a> {
    pub(crate) tokenizer: &'a TextTokenizer,
    pub(crate) metrics: &'a Metrics,
    pub(crate) max_position: usize,
}

impl Sequence {
    /// Samples from `logits`, emits the text it adds, and says whether the
    /// sequence goes on. Costs the same at every length of the answer.
    pub(crate) fn accept(&mut self, cx: &Context<'_>, logits: &[f32]) -> Step {
        let token = match &mut self.constraint {
            Some(constraint) => {
                let mut allowed = logits.to_vec();
                if let Err(e) = constraint.mask(&mut allowed) {
                    return Step::Failed(e);
                }
                self.sampler.sample_mut(&mut allowed)
            }
            None => self.sampler.sample(logits),
        };
        cx.metrics.tokens.fetch_add(1, Ordering::Relaxed);
        if cx.tokenizer.eos().contains(&token) {
            return Step::Done(FinishReason::Stop);
        }
        if let Some(top) = self.sampler.params().logprobs {
            self.logprobs
                .push(step_logprobs(cx.tokenizer, logits, token, top));
        }
        if let Some(constraint) = &mut self.constraint {
            if let Err(e) = constraint.accept(token) {
                return Step::Failed(e);
            }
        }
        self.next = token;
        let delta = match self.text.push(cx.tokenizer, token) {
            Ok(delta) => delta,
            Err(e) => {
                tracing::warn!(error = %e, token, "a generated token could not be decoded");
                String::new()
            }
        };
        match self.stream.push(&delta) {
            Delta::Stopped(last) => {
                self.emit(last);
                return Step::Done(FinishReason::Stop);
            }
            Delta::Text(text) => self.emit(text),
        }
        if self
            .constraint
            .as_ref()
            .is_some_and(Constraint::is_finished)
        {
            // The grammar is complete: nothing may follow, not even a stop.
            let rest = self.stream.finish();
            self.emit(rest);
            return Step::Done(FinishReason::Stop);
        }
        let at_context_end = self.kv.next_position() as usize + 1 >= cx.max_position;
        if self.text.ids().len() >= self.max_tokens || at_context_end {
            // Cut off: text held back for a stop that never came is released.
            let rest = self.stream.finish();
            self.emit(rest);
            return Step::Done(FinishReason::Length);
        }
        Step::Continue
    }

    /// Sends `text`, when there is any, with the entries of the tokens whose
    /// text it completes.
    fn emit(&mut self, text: String) {
        if !text.is_empty() {
            let logprobs = std::mem::take(&mut self.logprobs);
            let _ = self.events.send(Event::Text { text, logprobs });
        }
    }

    /// Sends the summary: the last event of the stream, after the entries
    /// of tokens whose text never came (held back, or stopped).
    pub(crate) fn finish(mut self, reason: FinishReason) {
        if !self.logprobs.is_empty() {
            let logprobs = std::mem::take(&mut self.logprobs);
            let _ = self.events.send(Event::Text {
                text: String::new(),
                logprobs,
            });
        }
        self.timeline.finished_ms = ms_since(self.arrived);
        let summary = Summary {
            reason,
            usage: Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.text.ids().len(),
            },
            reuse: self.reuse,
            hits: self.hits,
            timeline: self.timeline,
            explanation: self.explanation,
        };
        let _ = self.events.send(Event::Finished(Box::new(summary)));
    }
}
