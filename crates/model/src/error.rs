//! Errors of the model runtime.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model path does not exist or cannot be read.
    #[error("cannot read model at {path}: {source}")]
    Io {
        /// The path that was opened.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The path is neither a GGUF file nor a directory with config.json + safetensors.
    #[error("unrecognised model path {path}: {reason}")]
    UnknownFormat {
        /// The path given.
        path: PathBuf,
        /// What was missing or unexpected.
        reason: String,
    },
    /// The file parses but is not a valid model file of its format.
    #[error("corrupt or invalid model file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What failed to parse.
        reason: String,
    },
    /// The architecture named in the file is not one this runtime implements.
    #[error("unsupported architecture {name:?} (supported: gemma3, llama, mistral, qwen2, qwen3)")]
    UnsupportedArchitecture {
        /// The architecture string as found in the file.
        name: String,
    },
    /// A hyper-parameter is missing or has an impossible value.
    #[error("invalid model config: {field} {reason}")]
    Config {
        /// The config field (GGUF key or config.json field).
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A weight tensor is missing or has the wrong shape.
    #[error("weight {name}: {reason}")]
    Weight {
        /// The tensor's name in the file.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokenizer could not be built or run.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A request to the runtime was malformed (bad rows, positions, token ids).
    #[error("invalid input: {0}")]
    Input(String),
    /// A sequence does not fit the model's context window.
    #[error("sequence of {len} tokens exceeds the model's context of {max} tokens")]
    ContextOverflow {
        /// Tokens requested.
        len: usize,
        /// The model's maximum.
        max: usize,
    },
    /// The device asked for cannot be used (unknown name, no GPU, no CUDA in this build).
    #[error("device: {0}")]
    Device(String),
    /// A tensor operation failed.
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub(crate) fn input(msg: impl Into<String>) -> Self {
        Self::Input(msg.into())
    }

    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn weight(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Weight {
            name: name.into(),
            reason: reason.into(),
        }
    }
}
