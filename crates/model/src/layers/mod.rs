//! The building blocks of a transformer block, each defined once.
//!
//! Every layer works on rows: a `(rows, width)` hidden state where each row
//! carries its own position. Nothing here owns a KV cache.

pub(crate) mod activation;
pub(crate) mod attention;
mod attention_row;
pub(crate) mod block;
pub(crate) mod embedding;
pub(crate) mod linear;
pub(crate) mod mlp;
pub(crate) mod norm;
pub(crate) mod rope;
