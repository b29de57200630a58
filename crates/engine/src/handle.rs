//! The engine's public side: a cloneable [`EngineHandle`] to a worker thread.
//!
//! The queue is bounded: `submit` fails with [`EngineError::QueueFull`] when
//! `max_queue` requests are already waiting (the HTTP layer answers 429).
//! Each request gets its own event channel; dropping the receiver cancels the
//! request at the worker's next step.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prophetkv_model::{Model, TextTokenizer};
use prophetkv_reuse::DocCache;
use prophetkv_store::DocumentStore;
use serde::Serialize;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::request::{Event, GenerateRequest, TierHits};
use crate::worker::Worker;
use crate::{EngineError, Result};

/// Limits of the worker.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// Most requests waiting for admission; more are refused.
    pub max_queue: usize,
    /// Most prefills per step (each stalls the running batch).
    pub max_prefills_per_step: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 16,
            max_queue: 64,
            max_prefills_per_step: 2,
        }
    }
}

/// What the worker is sent.
pub(crate) enum Work {
    /// A request to answer (boxed: a request is far larger than a document id).
    Generate(Box<Job>),
    /// A registered document whose cache to compute while the worker is idle.
    Precompute {
        /// Owner.
        tenant: String,
        /// Document id.
        id: String,
    },
}

/// A submitted request on its way to the worker.
pub(crate) struct Job {
    pub(crate) request: GenerateRequest,
    pub(crate) events: UnboundedSender<Event>,
    pub(crate) arrived: Instant,
}

/// Counters the worker updates and the handle reads.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) running: AtomicUsize,
    pub(crate) tokens: AtomicU64,
    requests: AtomicU64,
    decode_steps: AtomicU64,
    decode_rows: AtomicU64,
    largest_batch: AtomicUsize,
    hits: [AtomicU64; 4],
    selected_rows: AtomicU64,
    eligible_rows: AtomicU64,
}

impl Metrics {
    pub(crate) fn record_batch(&self, size: usize) {
        self.decode_steps.fetch_add(1, Ordering::Relaxed);
        self.decode_rows.fetch_add(size as u64, Ordering::Relaxed);
        self.largest_batch.fetch_max(size, Ordering::Relaxed);
    }

    pub(crate) fn record_request(&self, hits: &TierHits, selected: usize, eligible: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        for (slot, n) in self
            .hits
            .iter()
            .zip([hits.host, hits.disk, hits.remote, hits.computed])
        {
            slot.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.selected_rows
            .fetch_add(selected as u64, Ordering::Relaxed);
        self.eligible_rows
            .fetch_add(eligible as u64, Ordering::Relaxed);
    }
}

/// A point-in-time view of the engine's counters.
#[derive(Debug, Clone, Serialize)]
pub struct EngineMetrics {
    /// Requests waiting for admission.
    pub queue_depth: usize,
    /// Sequences being decoded.
    pub running: usize,
    /// Requests admitted so far.
    pub requests: u64,
    /// Tokens generated so far.
    pub tokens: u64,
    /// Decode steps run.
    pub decode_steps: u64,
    /// Sequences decoded, summed over steps (rows / steps = mean batch).
    pub decode_rows: u64,
    /// Largest decode batch so far.
    pub largest_batch: usize,
    /// Document cache hits: memory, disk, Redis, computed.
    pub hits: [u64; 4],
    /// Eligible document rows recomputed, summed over requests.
    pub selected_rows: u64,
    /// Eligible document rows, summed over requests.
    pub eligible_rows: u64,
}

pub(crate) struct Shared {
    pub(crate) queued: AtomicUsize,
    pub(crate) metrics: Metrics,
}

/// Everything the worker owns.
pub struct EngineParts {
    /// The model.
    pub model: Model,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// The document store (shared with the document endpoints).
    pub store: Arc<DocumentStore>,
    /// The instruction placed after BOS; documents are cached after it.
    pub instruction: String,
}

/// A cloneable handle to the worker.
#[derive(Clone)]
pub struct EngineHandle {
    jobs: Arc<Mutex<Option<Sender<Work>>>>,
    shared: Arc<Shared>,
    max_queue: usize,
}

impl EngineHandle {
    /// Starts the worker thread. Fails if the anchor (BOS + instruction) cannot be computed.
    pub fn spawn(parts: EngineParts, config: EngineConfig) -> Result<Self> {
        let anchor_ids = parts
            .tokenizer
            .prompt_ids(&parts.instruction)
            .map_err(EngineError::internal)?;
        if anchor_ids.is_empty() {
            return Err(EngineError::invalid(
                "instruction",
                "the model has no BOS token, so the instruction must not be empty",
            ));
        }
        let anchor = Arc::new(
            DocCache::compute(&parts.model, &[], &anchor_ids).map_err(EngineError::internal)?,
        );
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            metrics: Metrics::default(),
        });
        let (tx, rx) = channel();
        let worker = Worker {
            model: parts.model,
            tokenizer: parts.tokenizer,
            store: parts.store,
            anchor,
            config: config.clone(),
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("prophetkv-engine".into())
            .spawn(move || worker.run(rx))
            .map_err(EngineError::internal)?;
        Ok(Self {
            jobs: Arc::new(Mutex::new(Some(tx))),
            shared,
            max_queue: config.max_queue,
        })
    }

    /// Queues a validated request; its events arrive on the returned receiver.
    pub fn submit(&self, request: GenerateRequest) -> Result<UnboundedReceiver<Event>> {
        request.validate()?;
        let depth = self.shared.queued.load(Ordering::SeqCst);
        if depth >= self.max_queue {
            return Err(EngineError::QueueFull { depth });
        }
        let (events, rx) = unbounded_channel();
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = jobs.as_ref() else {
            return Err(EngineError::Unavailable);
        };
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            request,
            events,
            arrived: Instant::now(),
        };
        if sender.send(Work::Generate(Box::new(job))).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::Unavailable);
        }
        Ok(rx)
    }

    /// Asks the worker to compute a registered document's cache when it has
    /// nothing else to do, so that the first request using it finds it
    /// ready. Never refused: the backlog is not part of the request queue.
    pub fn precompute(&self, tenant: &str, id: &str) {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = jobs.as_ref() {
            let _ = sender.send(Work::Precompute {
                tenant: tenant.to_string(),
                id: id.to_string(),
            });
        }
    }

    /// Stops accepting requests; the worker finishes what it has and exits.
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// The current counters.
    pub fn metrics(&self) -> EngineMetrics {
        let m = &self.shared.metrics;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineMetrics {
            queue_depth: self.shared.queued.load(Ordering::SeqCst),
            running: m.running.load(Ordering::Relaxed),
            requests: load(&m.requests),
            tokens: load(&m.tokens),
            decode_steps: load(&m.decode_steps),
            decode_rows: load(&m.decode_rows),
            largest_batch: m.largest_batch.load(Ordering::Relaxed),
            hits: [
                load(&m.hits[0]),
                load(&m.hits[1]),
                load(&m.hits[2]),
                load(&m.hits[3]),
            ],
            selected_rows: load(&m.selected_rows),
            eligible_rows: load(&m.eligible_rows),
        }
    }
}
