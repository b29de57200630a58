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

impl AppState {
    /// State for a server that is ready and accepting requests.
    pub fn new(
        engine: EngineHandle,
        store: Arc<DocumentStore>,
        tokenizer: TextTokenizer,
        config: ServerConfig,
    ) -> Self {
        Self {
            engine,
            store,
            tokenizer,
            config: Arc::new(config),
            metrics: Arc::default(),
            accepting: Arc::new(AtomicBool::new(true)),
        }
    }
}
