//! Errors of the engine, each mapping to one kind of client-visible failure.

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The queue is full: try again later.
    #[error("the request queue is full ({depth} waiting); retry later")]
    QueueFull {
        /// Requests waiting.
        depth: usize,
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
    /// Anything else inside the worker (model, store, tensors).
    #[error("internal error: {0}")]
    Internal(String),
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

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}
