//! What the handle sends the worker, and the state both sides share.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;
use crate::request::Event;
use crate::validate::ValidRequest;

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
    pub(crate) precompute: Mutex<Precompute>,
}

/// A tenant's document.
pub(crate) type DocumentKey = (String, String);

/// The idle-time backlog of registered documents.
#[derive(Default)]
pub(crate) struct Precompute {
    /// Queued and not computed yet.
    pub(crate) queued: HashSet<DocumentKey>,
    /// Why computing one failed (kept until it is registered again).
    pub(crate) failed: HashMap<DocumentKey, String>,
}
