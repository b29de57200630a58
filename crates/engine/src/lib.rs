//! The engine: one worker thread owns the model and serves every request.
//!
//! - [`EngineHandle`]: cloneable; [`EngineHandle::submit`] queues a
//!   [`GenerateRequest`] (bounded queue) and returns its [`Event`] stream.
//! - The worker admits requests a few per step ([`batching::admissions`]):
//!   document lookup in the store, assembly, selection and recomputation
//!   (`prophetkv-reuse`), first token; then one decode step for all running
//!   sequences as one batch (continuous batching).
//! - [`sampling`]: greedy / temperature / top-k / top-p with per-request seeds.
//! - [`stop`]: text deltas with stop strings held back and never emitted.
//!
//! A client that drops its event receiver is cancelled at the next step.

#![warn(missing_docs)]

pub mod batching;
mod engine;
mod error;
mod request;
pub mod sampling;
pub mod stop;
mod worker;

pub use engine::{EngineConfig, EngineHandle, EngineMetrics, EngineParts};
pub use error::{EngineError, Result};
pub use request::{
    DocumentRef, Event, FinishReason, GenerateRequest, PromptText, Segment, Summary, TextPiece,
    TierHits, Timeline, Usage, MAX_STOP_STRINGS,
};
pub use sampling::SamplingParams;
