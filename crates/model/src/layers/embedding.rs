//! The token embedding table, dense or block-quantized.
//!
//! The table of a large-vocabulary model is the biggest tensor it has (262k ×
//! 640 for Gemma 3 270M: 671 MB in f32, 178 MB as stored in Q8_0). Kept
//! quantized, a lookup dequantizes only the rows it returns, and a tied
//! output projection multiplies the same stored bytes.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{QStorage, QTensor};
use candle_core::{Device, Tensor};

use super::linear::tensor_bytes;
use crate::Result;

/// A `(vocab, hidden)` embedding table.
#[derive(Debug, Clone)]
pub(crate) enum Embedding {
    /// Dense f32 rows.
    Dense(Tensor),
    /// Block-quantized rows (CPU only), dequantized on lookup.
    Quantized(Arc<QTensor>),
}

impl Embedding {
    /// The rows of `tokens` (all in range), `(tokens, hidden)` f32 on `device`.
    pub(crate) fn lookup(&self, tokens: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            Embedding::Dense(table) => {
                let ids = Tensor::new(tokens, device)?;
                Ok(table.index_select(&ids, 0)?)
            }
            Embedding::Quantized(table) => {
                let (vocab, hidden) = table.shape().dims2()?;
                let data = table.data()?;
                let row_bytes = data.len() / vocab;
                let mut rows = Vec::with_capacity(tokens.len() * row_bytes);
                for &t in tokens {
                    let start = t as usize * row_bytes;
                    rows.extend_from_slice(&data[start..start + row_bytes]);
                }
                let storage = QStorage::from_data(Cow::Owned(rows), &Device::Cpu, table.dtype())?;
                let picked = QTensor::new(storage, (tokens.len(), hidden))?;
                Ok(picked.dequantize(device)?)
            }
        }
    }

    /// `(vocab, hidden)`.
    pub(crate) fn dims(&self) -> Vec<usize> {
        match self {
            Embedding::Dense(t) => t.dims().to_vec(),
            Embedding::Quantized(q) => q.shape().dims().to_vec(),
        }
    }

    /// Bytes the table occupies.
    pub(crate) fn resident_bytes(&self) -> usize {
        match self {
            Embedding::Dense(t) => tensor_bytes(t),
            Embedding::Quantized(q) => q.storage_size_in_bytes(),
        }
    }
}
