//! The engine: one worker thread owns the model and serves every request.
//!
//! - [`EngineHandle`]: cloneable; [`EngineHandle::validate`] turns a
//!   [`GenerateRequest`] into a [`ValidRequest`] (every limit lives in
//!   [`validate`]), [`EngineHandle::submit`] queues it (bounded queue) and
//!   returns its [`Event`] stream, [`EngineHandle::documents`] manages
//!   registered [`Documents`].
//! - The worker admits requests a few per step ([`batching::admissions`]):
//!   document caches from the store or computed on a miss
//!   ([`DocumentCaches`], the one place a document's KV is computed),
//!   assembly, selection and recomputation (`prophetkv-reuse`), first token;
//!   then one decode step for all running sequences as one batch
//!   (continuous batching).
//! - [`sampling`]: greedy / temperature / top-k / top-p with per-request seeds.
//! - [`stop`] and [`detokenize`]: text deltas at a constant cost per token,
//!   stop strings held back and never emitted.
//!
//! Module graph, one way: `handle` → `worker` → `admit`/`sequence` →
//! `caches`, `queue`, `metrics`, `validate`. A client that drops its event
//! receiver is cancelled at the next step.

#![warn(missing_docs)]

mod admit;
pub mod batching;
mod caches;
mod config;
mod constrain;
pub mod detokenize;
mod documents;
mod error;
pub mod explain;
mod handle;
pub mod logprobs;
mod metrics;
mod queue;
mod request;
pub mod sampling;
mod sequence;
pub mod stop;
#[cfg(feature = "testing")]
pub mod testing;
pub mod validate;
mod worker;

pub use caches::DocumentCaches;
pub use config::EngineConfig;
pub use constrain::{compact_json_schema, OutputConstraint};
pub use documents::{DocumentStatus, Documents};
pub use error::{DocumentBound, EngineError, Result};
pub use handle::{EngineHandle, EngineParts};
pub use metrics::EngineMetrics;
pub use request::{
    DocumentRef, Event, FinishReason, GenerateRequest, PromptText, Segment, Summary, TextPiece,
    TierHits, Timeline, Usage,
};
pub use sampling::SamplingParams;
pub use validate::{Limits, ValidRequest, MAX_STOP_STRINGS};

/// Types of the layers below that the engine's API hands out, so that its
/// callers need not depend on those crates.
pub use prophetkv_model::ModelError;
pub use prophetkv_reuse::{ProphetOptions, ReuseConfig, ReuseError, ReuseStats, StrategyKind};
pub use prophetkv_store::{DocumentRecord, NewDocument, StoreError, StoreStats, Tier};
