//! Errors of the engine. Failures of the crates below keep their own types
//! (wrapped in `Arc` so that one failed batch step can fail every request in
//! it), so the HTTP layer can tell a bad document from a broken disk.

use std::sync::Arc;

use prophetkv_model::ModelError;
use prophetkv_reuse::ReuseError;
use prophetkv_store::StoreError;

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The queue is full: try again later.
    #[error("the request queue is full ({depth} waiting); retry later")]
    QueueFull {
        /// Requests waiting.
        depth: usize,
    },
    /// Too many registered documents are waiting for their caches. The
    /// message names the limit, not how many wait: those are every
    /// tenant's, and one tenant must not learn another's count.
    #[error("the backlog of registered documents waiting for their caches is full (at most {max}); retry later")]
    PrecomputeQueueFull {
        /// Documents waiting, of every tenant (not for clients).
        pending: usize,
        /// The backlog's capacity.
        max: usize,
    },
    /// The engine is shutting down or its worker stopped.
    #[error("the engine is not running")]
    Unavailable,
    /// A field has an invalid value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A document longer than a document may be: beyond the configured
    /// `max_document_tokens`, or too long for any request (with the
    /// instruction, one token of question and one to generate it exceeds
    /// the model's context).
    #[error("documents[{index}] has {tokens} tokens; a document may have at most {max} ({bound})")]
    DocumentTooLong {
        /// The request field it came in: `text` (registration) or `documents`.
        field: &'static str,
        /// Its place in the call.
        index: usize,
        /// Its tokens.
        tokens: usize,
        /// Most tokens a document may have.
        max: usize,
        /// What sets that.
        bound: DocumentBound,
    },
    /// A document id that the tenant does not have.
    #[error("document {0:?} not found")]
    UnknownDocument(String),
    /// The prompt does not fit the model's context.
    #[error("prompt of {len} tokens (+ {max_tokens} to generate) exceeds the model's context of {max} tokens")]
    ContextOverflow {
        /// Prompt tokens.
        len: usize,
        /// Tokens requested.
        max_tokens: usize,
        /// The model's context.
        max: usize,
    },
    /// The document store failed (registry, disk, Redis, a stored blob).
    #[error("document store: {0}")]
    Store(Arc<StoreError>),
    /// Assembly or recomputation refused an option or failed.
    #[error("kv reuse: {0}")]
    Reuse(Arc<ReuseError>),
    /// The model or its tokenizer failed.
    #[error("model: {0}")]
    Model(Arc<ModelError>),
    /// The worker thread could not be started.
    #[error("engine worker: {0}")]
    Worker(String),
}

/// What bounds a document's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentBound {
    /// The server's configured `max_document_tokens`.
    Configured,
    /// The model's context, of this many tokens.
    Context(usize),
}

impl std::fmt::Display for DocumentBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Configured => write!(f, "the server's max_document_tokens"),
            Self::Context(n) => write!(
                f,
                "the model's context is {n} tokens, less the instruction, one token of question and one to generate"
            ),
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EngineError>;

impl EngineError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { id } => Self::UnknownDocument(id),
            other => Self::Store(Arc::new(other)),
        }
    }
}

impl From<ReuseError> for EngineError {
    fn from(e: ReuseError) -> Self {
        Self::Reuse(Arc::new(e))
    }
}

impl From<ModelError> for EngineError {
    fn from(e: ModelError) -> Self {
        Self::Model(Arc::new(e))
    }
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        Self::Model(Arc::new(ModelError::from(e)))
    }
}
