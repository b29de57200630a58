//! Admission: from a queued request to a running sequence with its first
//! token, in named steps — look up (or compute) the documents, encode the
//! fresh text and the question, check the context, run the reuse strategy,
//! start the sequence.

use std::sync::Arc;
use std::time::Instant;

use prophetkv_model::DocCache;
use prophetkv_reuse::{Piece, ReuseRequest};

use crate::constrain::OutputConstraint;
use crate::explain::{explain, MAX_EXPLAINED_TOKENS};
use crate::queue::Job;
use crate::request::{
    ms_since, DocumentRef, Event, PromptText, Segment, TextPiece, TierHits, Timeline,
};
use crate::sampling::Sampler;
use crate::sequence::{Sequence, Step};
use crate::stop::TextStream;
use crate::validate::{no_tokens, ValidRequest};
use crate::worker::Worker;
use crate::{EngineError, Result};

/// A segment with its ids or cache in hand; the reuse request borrows these.
enum Resolved {
    Fresh(Vec<u32>),
    Document(Arc<DocCache>),
}

impl Resolved {
    fn piece(&self) -> Piece<'_> {
        match self {
            Resolved::Fresh(ids) => Piece::Fresh(ids),
            Resolved::Document(cache) => Piece::Document(cache),
        }
    }

    fn len(&self) -> usize {
        match self {
            Resolved::Fresh(ids) => ids.len(),
            Resolved::Document(cache) => cache.len(),
        }
    }
}

impl Worker {
    /// Prefill with reuse and the first token; `None` when the request
    /// already finished (one token, or a stop at once).
    pub(crate) fn admit(&mut self, job: Job) -> Result<Option<Sequence>> {
        let req = &job.request;
        let mut timeline = Timeline {
            queued_ms: ms_since(job.arrived),
            ..Timeline::default()
        };
        let constraint = match &req.constraint {
            Some(c) => Some(self.grammars.start(c, constraint_field(c))?),
            None => None,
        };
        let lookup = Instant::now();
        let (segments, hits) = self.resolve(req)?;
        let query = self.encode(&req.query)?;
        let prompt_tokens = self.check_context(&segments, &query, req.max_tokens)?;
        if req.explain && prompt_tokens > MAX_EXPLAINED_TOKENS {
            return Err(EngineError::invalid(
                "prophetkv.explain",
                format!(
                    "explains at most {MAX_EXPLAINED_TOKENS} context tokens, the request has {prompt_tokens}"
                ),
            ));
        }
        timeline.lookup_ms = ms_since(lookup);

        let pieces: Vec<Piece<'_>> = segments.iter().map(Resolved::piece).collect();
        let request = ReuseRequest {
            anchor: &self.anchor,
            pieces: &pieces,
            query: &query,
        };
        let out = prophetkv_reuse::run(&self.model, &request, &req.reuse, self.model.device())?;
        let explanation = req
            .explain
            .then(|| Box::new(explain(&self.tokenizer, &out, req.reuse.strategy)));
        let mut reuse = out.stats;
        reuse.timings.lookup_ms = timeline.lookup_ms;
        timeline.probe_ms = reuse.timings.probe_ms;
        timeline.recompute_ms = reuse.timings.recompute_ms;
        let logits: Vec<f32> = out.logits.flatten_all()?.to_vec1()?;
        self.shared
            .metrics
            .record_request(&hits, reuse.selected, reuse.eligible);

        let Job {
            request,
            events,
            arrived,
        } = job;
        let seq = Sequence {
            events,
            kv: out.kv,
            logprobs: Vec::new(),
            constraint,
            explanation,
            sampler: Sampler::new(request.sampling),
            stream: TextStream::new(request.stop).with_layout_stop(request.layout_stop),
            text: Default::default(),
            next: 0,
            max_tokens: request.max_tokens,
            prompt_tokens,
            arrived,
            timeline,
            reuse,
            hits,
        };
        Ok(self.start(seq, &logits))
    }

    /// Each segment's ids (fresh text) or cache (documents), and where the
    /// caches came from.
    fn resolve(&self, req: &ValidRequest) -> Result<(Vec<Resolved>, TierHits)> {
        let mut hits = TierHits::default();
        let mut documents = 0;
        let mut resolved = Vec::with_capacity(req.segments.len());
        for segment in &req.segments {
            resolved.push(match segment {
                Segment::Fresh(text) => Resolved::Fresh(self.encode(text)?),
                Segment::Document(document) => {
                    let (cache, tier) = match document {
                        DocumentRef::Id(id) => {
                            self.caches.registered(&self.model, &req.tenant, id)?
                        }
                        DocumentRef::Text(text) => {
                            let ids = self.tokenizer.encode(text)?;
                            if ids.is_empty() {
                                return Err(no_tokens(documents));
                            }
                            self.limits
                                .check_inline_document_length(documents, ids.len())?;
                            self.caches.of_ids(&self.model, &req.tenant, &ids)?
                        }
                    };
                    documents += 1;
                    hits.add(tier);
                    Resolved::Document(cache)
                }
            });
        }
        Ok((resolved, hits))
    }

    /// Ids of prompt text: client pieces as text, template pieces with their
    /// control tokens.
    fn encode(&self, text: &PromptText) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for piece in &text.0 {
            ids.extend(match piece {
                TextPiece::Plain(t) => self.tokenizer.encode(t)?,
                TextPiece::Template(t) => self.tokenizer.encode_template(t)?,
                TextPiece::Ids(ids) => ids.clone(),
            });
        }
        Ok(ids)
    }

    /// The prompt's length, if it and `max_tokens` fit the context.
    fn check_context(
        &self,
        segments: &[Resolved],
        query: &[u32],
        max_tokens: usize,
    ) -> Result<usize> {
        let prompt_tokens =
            self.anchor.len() + segments.iter().map(Resolved::len).sum::<usize>() + query.len();
        let max = self.model.config().max_position;
        if query.is_empty() || prompt_tokens + max_tokens > max {
            return Err(EngineError::ContextOverflow {
                len: prompt_tokens,
                max_tokens,
                max,
            });
        }
        Ok(prompt_tokens)
    }

    /// Announces the sequence and takes its first token; `None` when that
    /// token already ended it.
    fn start(&self, mut seq: Sequence, logits: &[f32]) -> Option<Sequence> {
        let _ = seq.events.send(Event::Started {
            prompt_tokens: seq.prompt_tokens,
        });
        seq.timeline.first_token_ms = ms_since(seq.arrived);
        match seq.accept(&self.context(), logits) {
            Step::Continue => Some(seq),
            Step::Done(reason) => {
                seq.finish(reason);
                None
            }
            Step::Failed(e) => {
                let _ = seq.events.send(Event::Failed(e));
                None
            }
        }
    }
}

/// The request field a constraint came from, for its errors: tool calls
/// compile to a Lark grammar, output formats to JSON.
fn constraint_field(constraint: &OutputConstraint) -> &'static str {
    match constraint {
        OutputConstraint::Lark(_) => "tools",
        OutputConstraint::JsonObject | OutputConstraint::JsonSchema(_) => "response_format",
    }
}
