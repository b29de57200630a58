//! Errors of the document store.

use std::path::PathBuf;

/// Everything that can go wrong registering, storing or loading documents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The registry database failed.
    #[error("registry: {0}")]
    Registry(String),
    /// A file of the disk tier could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The Redis tier failed (connection, command).
    #[error("redis: {0}")]
    Redis(String),
    /// A stored blob failed its checks; it is never served.
    #[error("blob {key} failed integrity checks: {reason}")]
    Integrity {
        /// The blob's storage key (hex).
        key: String,
        /// Which check failed.
        reason: String,
    },
    /// No document with this id in this tenant.
    #[error("document {id:?} not found")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// An invalid value, naming the field.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A tensor operation failed.
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn registry(e: impl std::fmt::Display) -> Self {
        Self::Registry(e.to_string())
    }

    pub(crate) fn redis(e: impl std::fmt::Display) -> Self {
        Self::Redis(e.to_string())
    }
}
