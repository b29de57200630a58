//! What a reuse run reports: row counts, what was chosen, and where time went.

use serde::Serialize;

use crate::strategy::StrategyKind;

/// Wall time of each stage, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimings {
    /// Fetching or computing the document caches (set by the caller).
    pub lookup_ms: f64,
    /// Laying out the request and re-rotating cached keys.
    pub assembly_ms: f64,
    /// Stage I (ProphetKV's probe, CacheBlend's layer-0 pass and key deviation).
    pub probe_ms: f64,
    /// Stage II: the recomputation proper.
    pub recompute_ms: f64,
    /// Logits of the first answer token.
    pub first_token_ms: f64,
}

/// Statistics of one run.
#[derive(Debug, Clone, Serialize)]
pub struct ReuseStats {
    /// The strategy run.
    pub strategy: StrategyKind,
    /// The configured ratio.
    pub ratio: f64,
    /// Prompt tokens.
    pub context_tokens: usize,
    /// Document rows a strategy may recompute.
    pub eligible: usize,
    /// Eligible rows chosen for recomputation.
    pub selected: usize,
    /// Rows of fresh segments (always computed).
    pub fresh: usize,
    /// Rows of the question (always computed).
    pub query: usize,
    /// Document rows served from their caches as they were.
    pub reused: usize,
    /// Rows computed in the final pass (selected + fresh + query; every row for `full`).
    pub recomputed: usize,
    /// Eligible rows recomputed, over all eligible rows, a row that started
    /// at a middle layer counting for the share of layers it ran: the
    /// budget spent.
    pub recompute_share: f64,
    /// Positions chosen, per document, in request order.
    pub selected_positions: Vec<Vec<u32>>,
    /// Rows run through each layer, over all passes.
    pub rows_per_layer: Vec<usize>,
    /// Stage timings.
    pub timings: StageTimings,
}
