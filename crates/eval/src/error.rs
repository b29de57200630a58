//! Errors of the eval crate.

use std::path::PathBuf;

/// Why an evaluation or generation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A task file line that does not parse or is incomplete.
    #[error("{}, line {line}: {reason}", path.display())]
    TaskLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An option or input no run can use.
    #[error("{0}")]
    Invalid(String),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] prophetkv_model::ModelError),
    /// A strategy failed.
    #[error(transparent)]
    Reuse(#[from] prophetkv_reuse::ReuseError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// Drawing a plot failed.
    #[error("plot {}: {reason}", path.display())]
    Plot {
        /// The image being drawn.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, EvalError>;
