//! Reusing per-document KV caches: assembly and selective recomputation.
//!
//! - [`compute_doc_cache`]: a document's pre-RoPE keys and values
//!   ([`DocCache`]), computed once after the anchor prefix (BOS +
//!   instruction) and reusable at any offset.
//! - [`Layout`] and [`assemble`]: a request's rows in order (anchor,
//!   documents, fresh pieces, question) and the cache built from the pieces.
//! - [`run`]: one request under a [`ReuseConfig`] — `full`, `naive`,
//!   `prophetkv` (two-stage, query-driven), `cacheblend`, `epic`, `random` —
//!   returning the corrected cache, the first token's logits and
//!   [`ReuseStats`].
//! - [`select`]: the pure selection policies, tested without a model.
//!
//! The model is reached only through [`Backbone`]. All of it is synchronous.

#![warn(missing_docs)]

mod backbone;
mod cache;
mod deviation;
mod error;
mod layout;
mod run;
pub mod select;
mod stats;
mod strategy;

pub use backbone::Backbone;
pub use cache::{
    compute_doc_cache, compute_doc_cache_behind, compute_doc_cache_keeping, CachedDocuments,
};
pub use error::{Result, ReuseError};
pub use layout::{assemble, Layout, Piece};
pub use prophetkv_model::DocCache;
pub use run::{run, ReuseOutput, ReuseRequest};
pub use stats::{ReuseStats, StageTimings};
pub use strategy::{
    Budget, Fusion, Granularity, Probe, ProphetOptions, Resume, ReuseConfig, Signal, StrategyKind,
    ValidReuseConfig,
};
