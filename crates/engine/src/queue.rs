//! What the handle sends the worker, and the state both sides share.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;
use crate::request::Event;
use crate::validate::{ValidRequest, MAX_REMEMBERED_FAILURES};

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
    pub(crate) request: ValidRequest,
    pub(crate) events: UnboundedSender<Event>,
    pub(crate) arrived: Instant,
}

/// State the handle and the worker both touch.
#[derive(Default)]
pub(crate) struct Shared {
    /// Requests submitted and not yet admitted.
    pub(crate) queued: AtomicUsize,
    pub(crate) metrics: Metrics,
    /// Registered documents waiting for their caches, and those that failed.
    precompute: Mutex<Precompute>,
}

impl Shared {
    /// The precompute backlog, locked.
    pub(crate) fn precompute(&self) -> MutexGuard<'_, Precompute> {
        self.precompute.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A tenant's document.
pub(crate) type DocumentKey = (String, String);

/// The idle-time backlog of registered documents.
#[derive(Default)]
pub(crate) struct Precompute {
    /// Queued and not computed yet.
    queued: HashSet<DocumentKey>,
    /// Why computing one failed (kept until it is registered again).
    failed: HashMap<DocumentKey, String>,
}

impl Precompute {
    /// Documents waiting.
    pub(crate) fn pending(&self) -> usize {
        self.queued.len()
    }

    /// `key` joins the backlog (a failure before is forgotten).
    pub(crate) fn queue(&mut self, key: DocumentKey) {
        self.failed.remove(&key);
        self.queued.insert(key);
    }

    /// `key` left the backlog: computed, or failed with `error`.
    pub(crate) fn finished(&mut self, key: DocumentKey, error: Option<String>) {
        self.queued.remove(&key);
        if let Some(error) = error {
            if self.failed.len() >= MAX_REMEMBERED_FAILURES {
                let forget = self.failed.keys().next().cloned();
                if let Some(forget) = forget {
                    self.failed.remove(&forget);
                }
            }
            self.failed.insert(key, error);
        }
    }

    /// Why computing `key` failed, if it did.
    pub(crate) fn failure(&self, key: &DocumentKey) -> Option<&String> {
        self.failed.get(key)
    }
}
