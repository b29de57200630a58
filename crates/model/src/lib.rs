//! prophetkv's transformer runtime: our own layer loop on candle, with
//! explicit positions for every row.
//!
//! - [`load_model`] reads a GGUF file or a safetensors directory into a
//!   [`Model`] (Gemma 3 and the Llama family), with quantized or f32 weights
//!   ([`WeightPath`]).
//! - [`TextTokenizer`] turns text into ids (from `tokenizer.json` or GGUF metadata).
//! - [`Model::forward_rows`] is the one primitive everything else is made of:
//!   run a set of rows at given positions through all layers against a
//!   sequence's [`Kv`], writing their keys/values, optionally returning their
//!   attention mass. [`Model::prefill`], [`Model::decode`] (a batch of
//!   sequences), [`Model::rope_k`] and [`Model::kv_from_raw`] (moving cached
//!   keys to new positions) and [`Model::logits`] complete the set.
//! - [`DocCache`]: a token span's cached keys and values, the value the
//!   reuse strategies read and the store keeps.
//! - [`generate_greedy`] is the simplest driver on top.
//!
//! Nothing here knows about HTTP, async or documents.

#![warn(missing_docs)]

mod config;
mod device;
mod doc_cache;
mod error;
mod generate;
mod kernels;
mod kv;
mod layers;
mod loader;
mod model;
mod tokenizer;

#[cfg(feature = "testing")]
pub mod testing;

/// The element type of tensors (a model's compute type is one of them).
pub use candle_core::DType;
pub use config::{
    Activation, Family, LayerConfig, ModelConfig, RopeConfig, RopeScaling, RopeStyle,
};
pub use device::device_from_name;
pub use doc_cache::DocCache;
pub use error::{ModelError, Result};
pub use generate::{continue_greedy, generate_greedy, top_k, Continuation, Generation};
pub use kernels::{bf16_prompt_gemm, Isa};
pub use kv::Kv;
pub use layers::attention::{attention_by_position, Observe};
pub use loader::{load_model, load_random, random_config, random_shapes, LoadOptions, ModelFormat};
pub use model::{Forward, Model, Rows, RowsOutput, WeightPath};
pub use tokenizer::{ByteSpan, TextTokenizer, TokenPiece};
