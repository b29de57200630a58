//! Errors of context assembly and selective recomputation.

/// Everything that can go wrong assembling a context and recomputing it.
#[derive(Debug, thiserror::Error)]
pub enum ReuseError {
    /// The model failed (bad rows, tensor errors).
    #[error(transparent)]
    Model(#[from] prophetkv_model::ModelError),
    /// A tensor operation failed.
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
    /// The recompute ratio is not in `[0, 1]`.
    #[error("recompute_ratio must be within [0, 1], got {0}")]
    Ratio(f64),
    /// A strategy name that does not exist.
    #[error("unknown strategy {0:?} (full, naive, prophetkv, cacheblend, epic, random)")]
    UnknownStrategy(String),
    /// A document with no tokens.
    #[error("document {index} is empty")]
    EmptyDocument {
        /// Its index in the request (0-based).
        index: usize,
    },
    /// The question has no tokens, so there is no position to answer from.
    #[error("the question is empty")]
    EmptyQuery,
    /// A document cache built with another anchor prefix than the request's.
    #[error("document {index} was cached with a different anchor prefix than this request's")]
    AnchorMismatch {
        /// Its index in the request.
        index: usize,
    },
    /// The assembled prompt is longer than the model's context.
    #[error("prompt of {len} tokens exceeds the model's context of {max} tokens")]
    ContextOverflow {
        /// Prompt tokens.
        len: usize,
        /// The model's maximum.
        max: usize,
    },
    /// An option value that cannot be used (named, with the value).
    #[error("invalid option {name}: {reason}")]
    Option {
        /// The option.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ReuseError>;
