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
    /// Hidden states `(len, hidden)` entering some layers, by layer
    /// (ascending): where a recomputation may start instead of layer 0.
    hidden: Vec<(usize, Tensor)>,
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
            hidden: Vec::new(),
        })
    }

    /// The same cache keeping, too, the hidden states `(len, hidden)` that
    /// entered `layer` (replacing any kept for that layer).
    pub fn with_hidden(mut self, layer: usize, hidden: Tensor) -> Result<Self> {
        if layer == 0 || layer >= self.layers.len() || hidden.dims().first() != Some(&self.len()) {
            return Err(ModelError::Input(format!(
                "hidden states {:?} entering layer {layer} do not fit {} rows of {} layers",
                hidden.dims(),
                self.len(),
                self.layers.len()
            )));
        }
        self.hidden.retain(|(l, _)| *l != layer);
        let at = self.hidden.partition_point(|(l, _)| *l < layer);
        self.hidden.insert(at, (layer, hidden));
        Ok(self)
    }

    /// The same rows filed under `anchor`: rows computed behind more context
    /// than an anchor (a preamble standing in for the documents a request
    /// puts before them), to be placed after that anchor like any other.
    pub fn filed_under(mut self, anchor: Vec<u32>) -> Self {
        self.anchor = anchor;
        self
    }

    /// The hidden states that entered `layer`, when they were kept.
    pub fn hidden(&self, layer: usize) -> Option<&Tensor> {
        self.hidden
            .iter()
            .find_map(|(l, h)| (*l == layer).then_some(h))
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

    /// Bytes the keys, values and kept hidden states occupy in their element type.
    pub fn byte_size(&self) -> u64 {
        let kv: u64 = self
            .layers
            .iter()
            .map(|(k, v)| ((k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes()) as u64)
            .sum();
        let hidden: u64 = self
            .hidden
            .iter()
            .map(|(_, h)| (h.elem_count() * h.dtype().size_in_bytes()) as u64)
            .sum();
        kv + hidden
    }
}
