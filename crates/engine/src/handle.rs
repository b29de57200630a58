//! The engine's public side: a cloneable [`EngineHandle`] to a worker thread.
//!
//! The queue is bounded: `submit` fails with [`EngineError::QueueFull`] when
//! `max_queue` requests are already waiting (the HTTP layer answers 429).
//! Each request gets its own event channel; dropping the receiver cancels the
//! request at the worker's next step.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prophetkv_model::{Model, TextTokenizer};
use prophetkv_reuse::compute_doc_cache;
use prophetkv_store::{DocumentStore, StoreStats};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::caches::DocumentCaches;
use crate::config::EngineConfig;
use crate::constrain::Grammars;
use crate::documents::DocumentStatus;
use crate::documents::Documents;
use crate::metrics::EngineMetrics;
use crate::queue::{Job, Shared, Work};
use crate::request::{Event, GenerateRequest};
use crate::validate::{Limits, ValidRequest, MAX_PENDING_DOCUMENTS};
use crate::worker::Worker;
use crate::{EngineError, Result};

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
    limits: Limits,
    store: Arc<DocumentStore>,
    tokenizer: TextTokenizer,
}

impl EngineHandle {
    /// Starts the worker thread. Fails if the anchor (BOS + instruction)
    /// cannot be computed or is not the one the store was opened with.
    pub fn spawn(parts: EngineParts, config: EngineConfig) -> Result<Self> {
        let anchor_ids = parts.tokenizer.prompt_ids(&parts.instruction)?;
        if anchor_ids.is_empty() {
            return Err(EngineError::invalid(
                "instruction",
                "the model has no BOS token, so the instruction must not be empty",
            ));
        }
        if anchor_ids != parts.store.anchor() {
            return Err(EngineError::invalid(
                "instruction",
                "the store was opened for another instruction",
            ));
        }
        let anchor = Arc::new(compute_doc_cache(&parts.model, &[], &anchor_ids)?);
        let limits = Limits {
            num_layers: parts.model.config().num_layers(),
            vocab_size: parts.model.config().vocab_size,
            context: parts.model.config().max_position,
            anchor: anchor_ids.len(),
            max_documents: config.max_documents,
            document_tokens: config.max_document_tokens,
            first_document_exact: parts.store.preamble().is_empty(),
        };
        let shared = Arc::new(Shared::default());
        let (tx, rx) = channel();
        let grammars = Arc::new(Grammars::new(
            parts.tokenizer.clone(),
            parts.model.config().vocab_size,
        ));
        let early = grammars.clone();
        // Off the worker: a request that needs it meanwhile waits for it.
        let _ = std::thread::Builder::new()
            .name("prophetkv-grammars".into())
            .spawn(move || early.prepare());
        let worker = Worker {
            grammars,
            model: parts.model,
            tokenizer: parts.tokenizer.clone(),
            caches: DocumentCaches::new(parts.store.clone()),
            anchor,
            limits,
            config: config.clone(),
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("prophetkv-engine".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| EngineError::Worker(e.to_string()))?;
        Ok(Self {
            jobs: Arc::new(Mutex::new(Some(tx))),
            shared,
            max_queue: config.max_queue,
            limits,
            store: parts.store,
            tokenizer: parts.tokenizer,
        })
    }

    /// Checks `request` against every limit (see [`Limits`]).
    pub fn validate(&self, request: GenerateRequest) -> Result<ValidRequest> {
        self.limits.validate(request)
    }

    /// Queues a validated request; its events arrive on the returned receiver.
    pub fn submit(&self, request: ValidRequest) -> Result<UnboundedReceiver<Event>> {
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

    /// The served model's token ids of `text`, BOS first when
    /// `add_special` and the model uses one.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        Ok(if add_special {
            self.tokenizer.prompt_ids(text)?
        } else {
            self.tokenizer.encode(text)?
        })
    }

    /// The text of `ids` (special tokens dropped); ids outside the
    /// vocabulary are refused.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        self.limits.check_token_ids("tokens", ids)?;
        Ok(self.tokenizer.decode(ids)?)
    }

    /// The model's context, in tokens.
    pub fn context_length(&self) -> usize {
        self.limits.context
    }

    /// The documents of every tenant: register, list, read, delete.
    pub fn documents(&self) -> Documents {
        Documents::new(
            self.clone(),
            self.store.clone(),
            self.tokenizer.clone(),
            self.limits,
        )
    }

    /// Room in the precompute backlog for `n` more documents, or the
    /// refusal to answer (nothing is registered then).
    pub(crate) fn precompute_room(&self, n: usize) -> Result<()> {
        let pending = self.shared.precompute().pending();
        if pending + n > MAX_PENDING_DOCUMENTS {
            return Err(EngineError::PrecomputeQueueFull {
                pending,
                max: MAX_PENDING_DOCUMENTS,
            });
        }
        Ok(())
    }

    /// Asks the worker to compute a registered document's cache when it has
    /// nothing else to do, so that the first request using it finds it
    /// ready (its status is `pending` until then).
    pub(crate) fn precompute(&self, tenant: &str, id: &str) {
        self.shared
            .precompute()
            .queue((tenant.to_string(), id.to_string()));
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = jobs.as_ref() {
            let _ = sender.send(Work::Precompute {
                tenant: tenant.to_string(),
                id: id.to_string(),
            });
        }
    }

    /// Where a registered, not ready document stands.
    pub(crate) fn precompute_status(&self, tenant: &str, id: &str) -> DocumentStatus {
        let key = (tenant.to_string(), id.to_string());
        match self.shared.precompute().failure(&key) {
            Some(error) => DocumentStatus::Failed(error.clone()),
            None => DocumentStatus::Pending,
        }
    }

    /// Stops accepting requests; the worker finishes what it has and exits.
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// The current counters.
    pub fn metrics(&self) -> EngineMetrics {
        self.shared
            .metrics
            .snapshot(self.shared.queued.load(Ordering::SeqCst))
    }

    /// The document store's lookup counters.
    pub fn store_stats(&self) -> StoreStats {
        self.store.stats()
    }
}
