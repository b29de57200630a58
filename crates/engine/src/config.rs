//! [`EngineConfig`]: the worker's limits.

/// Limits of the worker.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// Most requests waiting for admission; more are refused.
    pub max_queue: usize,
    /// Most prefills per step (each stalls the running batch).
    pub max_prefills_per_step: usize,
    /// Most documents in one request.
    pub max_documents: usize,
    /// Most tokens in one document (registered or inline); 0: only the
    /// model's context bounds it.
    pub max_document_tokens: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 16,
            max_queue: 64,
            max_prefills_per_step: 2,
            max_documents: crate::validate::DEFAULT_MAX_DOCUMENTS,
            max_document_tokens: 0,
        }
    }
}
