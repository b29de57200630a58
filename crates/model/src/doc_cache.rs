//! [`DocCache`]: the per-layer keys and values of one token span, as a value.
//!
//! The type the reuse strategies read and the store keeps, so it lives below
//! both. Computing one is the reuse crate's job; storing it is the store's.

use candle_core::Tensor;

use crate::{ModelError, Result};

/// Per-layer pre-RoPE keys and values of one token span (a document, or the
/// anchor prefix), computed after `anchor` at local positions
/// `anchor.len()..anchor.len() + tokens.len()`.
#[derive(Debug, Clone)]
pub struct DocCache {
    anchor: Vec<u32>,
    tokens: Vec<u32>,
    /// Per layer: `(k_raw, v)`, each `(len, kv_heads, head_dim)`.
    layers: Vec<(Tensor, Tensor)>,
}

impl DocCache {
    /// A cache from its parts; every layer's keys and values must have one
    /// row per token and equal shapes.
    pub fn from_parts(
        anchor: Vec<u32>,
        tokens: Vec<u32>,
        layers: Vec<(Tensor, Tensor)>,
    ) -> Result<Self> {
        for (l, (k, v)) in layers.iter().enumerate() {
            if k.dim(0)? != tokens.len() || v.dims() != k.dims() {
                return Err(ModelError::Input(format!(
                    "layer {l}: keys {:?} / values {:?} do not match {} tokens",
                    k.dims(),
                    v.dims(),
                    tokens.len()
                )));
            }
        }
        Ok(Self {
            anchor,
            tokens,
            layers,
        })
    }

    /// The anchor prefix the rows were computed after.
    pub fn anchor(&self) -> &[u32] {
        &self.anchor
    }

    /// The span's token ids.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when the span has no rows.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Per-layer `(k_raw, v)` tensors.
    pub fn layers(&self) -> &[(Tensor, Tensor)] {
        &self.layers
    }

    /// Bytes the keys and values occupy in their element type.
    pub fn byte_size(&self) -> u64 {
        self.layers
            .iter()
            .map(|(k, v)| ((k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes()) as u64)
            .sum()
    }
}
