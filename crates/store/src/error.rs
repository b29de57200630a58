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
    /// The data directory's disk is full: the write was refused and nothing
    /// of it kept.
    #[error("no space left on the data disk writing {path}: free space there (delete documents, raise the disk) and retry")]
    DiskFull {
        /// The file that could not be written.
        path: PathBuf,
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
    /// Registering would take the tenant beyond its storage quota; deleting
    /// documents frees room.
    #[error("tenant quota exceeded: {limit} is {max} {unit}; the tenant holds {held} and this call would add {adding} (delete documents to free room)")]
    QuotaExceeded {
        /// The configuration key of the limit.
        limit: &'static str,
        /// What it counts: `documents` or `tokens`.
        unit: &'static str,
        /// The limit.
        max: u64,
        /// What the tenant holds now.
        held: u64,
        /// What the refused call would add.
        adding: u64,
    },
    /// A tensor operation failed.
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// An I/O failure on `path`; a full disk (or disk quota) is [`StoreError::DiskFull`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        let full = source.kind() == std::io::ErrorKind::StorageFull
            || matches!(source.raw_os_error(), Some(ENOSPC | EDQUOT));
        if full {
            return Self::DiskFull { path: path.into() };
        }
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
