//! What every handler can reach.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use prophetkv_engine::EngineHandle;
use prophetkv_model::TextTokenizer;
use prophetkv_store::DocumentStore;

use crate::metrics::HttpMetrics;
use crate::openai::Defaults;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Bearer keys; empty means no authentication.
    pub api_keys: Vec<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Request defaults.
    pub defaults: Defaults,
}

/// Shared handler state.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: EngineHandle,
    /// The document store (the engine shares it).
    pub store: Arc<DocumentStore>,
    /// Tokenizer, for registering documents.
    pub tokenizer: TextTokenizer,
    /// Settings.
    pub config: Arc<ServerConfig>,
    /// Request metrics.
    pub metrics: Arc<HttpMetrics>,
    /// False while shutting down.
    pub accepting: Arc<AtomicBool>,
}
