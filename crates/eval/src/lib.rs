//! Measuring the reuse strategies: RULER-style task generators, accuracy of
//! strategies × recompute ratios over task files (resumable, with tables and
//! plots), and time-to-first-token benchmarks side by side.

#![warn(missing_docs)]

pub mod ablate;
pub mod attention_bench;
pub mod bench;
pub mod decode_bench;
mod error;
pub mod eval;
pub mod generate;
pub mod journal;
pub mod numerics;
pub mod plot;
pub mod report;
pub mod rng;
pub mod run;
pub mod score;
pub mod stats;
pub mod task;

pub use error::{EvalError, Result};
