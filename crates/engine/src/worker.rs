//! The worker thread: owns the model, admits requests, decodes the batch.
//!
//! One loop: take new requests off the channel, drop sequences whose client
//! went away, admit as many waiting requests as the policy allows (document
//! lookup, assembly, selection, recompute, first token), then run one decode
//! step for every running sequence as one batch.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prophetkv_model::{Kv, Model, TextTokenizer};
use prophetkv_reuse::{DocCache, Piece, ReuseRequest, ReuseStats};
use prophetkv_store::{DocumentStore, StoreError};
use tokio::sync::mpsc::UnboundedSender;

use crate::batching::admissions;
use crate::engine::{EngineConfig, Job, Shared, Work};
use crate::request::{
    ms_since, DocumentRef, Event, FinishReason, PromptText, Segment, Summary, TextPiece, TierHits,
    Timeline, Usage,
};
use crate::sampling::Sampler;
use crate::stop::{Delta, TextStream};
use crate::{EngineError, Result};

/// A request being generated.
struct Sequence {
    events: UnboundedSender<Event>,
    kv: Kv,
    sampler: Sampler,
    stream: TextStream,
    generated: Vec<u32>,
    /// Sampled but not yet in `kv`.
    next: u32,
    max_tokens: usize,
    prompt_tokens: usize,
    arrived: Instant,
    timeline: Timeline,
    reuse: ReuseStats,
    hits: TierHits,
}

/// What a token did to its sequence.
enum Step {
    Continue,
    Done(FinishReason),
}

pub(crate) struct Worker {
    pub(crate) model: Model,
    pub(crate) tokenizer: TextTokenizer,
    pub(crate) store: Arc<DocumentStore>,
    pub(crate) anchor: Arc<DocCache>,
    pub(crate) config: EngineConfig,
    pub(crate) shared: Arc<Shared>,
}

/// Requests join the queue; documents to precompute join the idle backlog.
fn sort_work(work: Work, waiting: &mut VecDeque<Job>, backlog: &mut VecDeque<(String, String)>) {
    match work {
        Work::Generate(job) => waiting.push_back(*job),
        Work::Precompute { tenant, id } => backlog.push_back((tenant, id)),
    }
}

impl Worker {
    pub(crate) fn run(mut self, jobs: Receiver<Work>) {
        let mut waiting: VecDeque<Job> = VecDeque::new();
        let mut running: Vec<Sequence> = Vec::new();
        let mut backlog: VecDeque<(String, String)> = VecDeque::new();
        loop {
            // Block only when there is nothing at all to do; otherwise just
            // drain what arrived.
            if waiting.is_empty() && running.is_empty() && backlog.is_empty() {
                match jobs.recv_timeout(Duration::from_millis(200)) {
                    Ok(work) => sort_work(work, &mut waiting, &mut backlog),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(work) => sort_work(work, &mut waiting, &mut backlog),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        // Shutting down: requests still finish, precomputation does not.
                        backlog.clear();
                        break;
                    }
                }
            }
            if waiting.is_empty() && running.is_empty() {
                if let Some((tenant, id)) = backlog.pop_front() {
                    self.precompute(&tenant, &id);
                }
                continue;
            }
            waiting.retain(|j| {
                let alive = !j.events.is_closed();
                if !alive {
                    self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                }
                alive
            });
            running.retain(|s| !s.events.is_closed());
            let admit = admissions(
                waiting.len(),
                running.len(),
                self.config.max_batch,
                self.config.max_prefills_per_step,
            );
            for job in waiting.drain(..admit) {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                let events = job.events.clone();
                match self.admit(job) {
                    Ok(Some(seq)) => running.push(seq),
                    Ok(None) => {}
                    Err(e) => {
                        let _ = events.send(Event::Failed(e));
                    }
                }
            }
            self.shared
                .metrics
                .running
                .store(running.len(), Ordering::Relaxed);
            if !running.is_empty() {
                if let Err(e) = self.decode_step(&mut running) {
                    // A failed batch step fails its requests, not the worker.
                    for seq in running.drain(..) {
                        let _ = seq.events.send(Event::Failed(e.clone()));
                    }
                }
            }
            self.shared
                .metrics
                .running
                .store(running.len(), Ordering::Relaxed);
        }
        tracing::info!("engine worker stopped");
    }

    /// Ids of prompt text: client pieces as text, template pieces with their
    /// control tokens.
    fn encode(&self, text: &PromptText) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for piece in &text.0 {
            ids.extend(
                match piece {
                    TextPiece::Plain(t) => self.tokenizer.encode(t),
                    TextPiece::Template(t) => self.tokenizer.encode_template(t),
                }
                .map_err(EngineError::internal)?,
            );
        }
        Ok(ids)
    }

    /// Computes a registered document's cache (idle work). A document deleted
    /// in the meantime is skipped; other failures are logged, and the first
    /// request that uses the document will report them.
    fn precompute(&self, tenant: &str, id: &str) {
        match self.store.cache(&self.model, tenant, id) {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(document = id, error = %e, "precomputing a document failed"),
        }
    }

    /// Prefill with reuse and the first token; `None` when the request
    /// already finished (one token, or a stop at once).
    fn admit(&mut self, job: Job) -> Result<Option<Sequence>> {
        let req = job.request;
        let mut timeline = Timeline {
            queued_ms: ms_since(job.arrived),
            ..Timeline::default()
        };
        let lookup = Instant::now();
        let mut hits = TierHits::default();
        // Owned pieces first; the reuse request borrows them.
        enum Owned {
            Fresh(Vec<u32>),
            Doc(Arc<DocCache>),
        }
        let mut owned = Vec::with_capacity(req.segments.len());
        for seg in &req.segments {
            owned.push(match seg {
                Segment::Fresh(text) => Owned::Fresh(self.encode(text)?),
                Segment::Document(DocumentRef::Id(id)) => {
                    let (cache, tier) =
                        self.store
                            .cache(&self.model, &req.tenant, id)
                            .map_err(|e| match e {
                                StoreError::NotFound { id } => EngineError::UnknownDocument(id),
                                other => EngineError::internal(other),
                            })?;
                    hits.add(tier);
                    Owned::Doc(cache)
                }
                Segment::Document(DocumentRef::Text(text)) => {
                    let ids = self.tokenizer.encode(text).map_err(EngineError::internal)?;
                    if ids.is_empty() {
                        return Err(EngineError::invalid(
                            "documents",
                            "an inline document has no tokens",
                        ));
                    }
                    let (cache, tier) = self
                        .store
                        .inline_cache(&self.model, &req.tenant, &ids)
                        .map_err(EngineError::internal)?;
                    hits.add(tier);
                    Owned::Doc(cache)
                }
            });
        }
        let query = self.encode(&req.query)?;
        let pieces: Vec<Piece<'_>> = owned
            .iter()
            .map(|o| match o {
                Owned::Fresh(ids) => Piece::Fresh(ids),
                Owned::Doc(c) => Piece::Document(c),
            })
            .collect();
        let prompt_tokens = self.anchor.len()
            + pieces
                .iter()
                .map(|p| match p {
                    Piece::Fresh(ids) => ids.len(),
                    Piece::Document(d) => d.len(),
                })
                .sum::<usize>()
            + query.len();
        let max = self.model.config().max_position;
        if query.is_empty() || prompt_tokens + req.max_tokens > max {
            return Err(EngineError::ContextOverflow {
                len: prompt_tokens,
                max_tokens: req.max_tokens,
                max,
            });
        }
        timeline.lookup_ms = ms_since(lookup);
        let request = ReuseRequest {
            anchor: &self.anchor,
            pieces: &pieces,
            query: &query,
        };
        let out = prophetkv_reuse::run(&self.model, &request, &req.reuse, self.model.device())
            .map_err(EngineError::internal)?;
        let mut reuse = out.stats;
        reuse.timings.lookup_ms = timeline.lookup_ms;
        timeline.probe_ms = reuse.timings.probe_ms;
        timeline.recompute_ms = reuse.timings.recompute_ms;
        let logits: Vec<f32> = out
            .logits
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(EngineError::internal)?;
        self.shared
            .metrics
            .record_request(&hits, reuse.selected, reuse.eligible);
        let mut seq = Sequence {
            events: job.events,
            kv: out.kv,
            sampler: Sampler::new(req.sampling.clone()),
            stream: TextStream::new(req.stop.clone()),
            generated: Vec::new(),
            next: 0,
            max_tokens: req.max_tokens,
            prompt_tokens,
            arrived: job.arrived,
            timeline,
            reuse,
            hits,
        };
        let _ = seq.events.send(Event::Started { prompt_tokens });
        seq.timeline.first_token_ms = ms_since(seq.arrived);
        match self.accept(&mut seq, &logits) {
            Step::Continue => Ok(Some(seq)),
            Step::Done(reason) => {
                self.finish(seq, reason);
                Ok(None)
            }
        }
    }

    /// One decode step for every running sequence, as one batch.
    fn decode_step(&mut self, running: &mut Vec<Sequence>) -> Result<()> {
        let tokens: Vec<u32> = running.iter().map(|s| s.next).collect();
        let logits = {
            let mut kvs: Vec<&mut Kv> = running.iter_mut().map(|s| &mut s.kv).collect();
            self.model
                .decode(&mut kvs, &tokens)
                .map_err(EngineError::internal)?
        };
        self.shared.metrics.record_batch(running.len());
        let rows: Vec<Vec<f32>> = logits.to_vec2().map_err(EngineError::internal)?;
        let mut still = Vec::with_capacity(running.len());
        for (mut seq, row) in running.drain(..).zip(rows) {
            match self.accept(&mut seq, &row) {
                Step::Continue => still.push(seq),
                Step::Done(reason) => self.finish(seq, reason),
            }
        }
        *running = still;
        Ok(())
    }

    /// Samples from `logits`, emits the text it adds, and says whether the sequence goes on.
    fn accept(&self, seq: &mut Sequence, logits: &[f32]) -> Step {
        let (token, _) = seq.sampler.sample(logits);
        self.shared.metrics.tokens.fetch_add(1, Ordering::Relaxed);
        if self.tokenizer.eos().contains(&token) {
            return Step::Done(FinishReason::Stop);
        }
        seq.generated.push(token);
        seq.next = token;
        let text = self.tokenizer.decode(&seq.generated).unwrap_or_default();
        match seq.stream.advance(&text) {
            Delta::Stopped(last) => {
                if !last.is_empty() {
                    let _ = seq.events.send(Event::Text(last));
                }
                return Step::Done(FinishReason::Stop);
            }
            Delta::Text(delta) if !delta.is_empty() => {
                let _ = seq.events.send(Event::Text(delta));
            }
            Delta::Text(_) => {}
        }
        let at_context_end =
            seq.kv.next_position() as usize + 1 >= self.model.config().max_position;
        if seq.generated.len() >= seq.max_tokens || at_context_end {
            let text = self.tokenizer.decode(&seq.generated).unwrap_or_default();
            let rest = seq.stream.finish(&text);
            if !rest.is_empty() {
                let _ = seq.events.send(Event::Text(rest));
            }
            return Step::Done(FinishReason::Length);
        }
        Step::Continue
    }

    fn finish(&self, mut seq: Sequence, reason: FinishReason) {
        seq.timeline.finished_ms = ms_since(seq.arrived);
        let summary = Summary {
            reason,
            usage: Usage {
                prompt_tokens: seq.prompt_tokens,
                completion_tokens: seq.generated.len(),
            },
            reuse: seq.reuse,
            hits: seq.hits,
            timeline: seq.timeline,
        };
        let _ = seq.events.send(Event::Finished(Box::new(summary)));
    }
}
