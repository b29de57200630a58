//! What every handler can reach.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use prophetkv_engine::EngineHandle;

use crate::metrics::HttpMetrics;
use crate::openai::Defaults;

/// Server settings. Its `Debug` shows how many keys there are, never
/// the keys.
#[derive(Clone)]
pub struct ServerConfig {
    /// Bearer keys; empty means no authentication.
    pub api_keys: Vec<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Request defaults.
    pub defaults: Defaults,
    /// The shape whose random weights are served (a benchmark stand-in),
    /// named in `/v1/models`; `None` for a real model.
    pub random_weights: Option<String>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("defaults", &self.defaults)
            .field("random_weights", &self.random_weights)
            .finish()
    }
}

/// Shared handler state. Handlers reach the model, the store and the
/// documents only through the engine's handle.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: EngineHandle,
    /// Settings.
    pub config: Arc<ServerConfig>,
    /// Request metrics.
    pub metrics: Arc<HttpMetrics>,
    /// False while shutting down.
    pub accepting: Arc<AtomicBool>,
    /// The OpenAPI document served at `/openapi.json` (set by [`crate::router`]).
    pub openapi: Arc<String>,
}

impl AppState {
    /// State for a server that is ready and accepting requests.
    pub fn new(engine: EngineHandle, config: ServerConfig) -> Self {
        Self {
            engine,
            config: Arc::new(config),
            metrics: Arc::default(),
            accepting: Arc::new(AtomicBool::new(true)),
            openapi: Arc::default(),
        }
    }
}
