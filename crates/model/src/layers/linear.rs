//! A projection `y = x W^T (+ b)` over quantized or dense weights.

use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};

use crate::Result;

/// Weights of one projection, in the representation the weight path chose.
#[derive(Debug, Clone)]
pub(crate) enum Linear {
    /// GGUF block-quantized weights, multiplied as stored.
    Quantized {
        /// The quantized `(out, in)` matrix.
        weight: QMatMul,
        /// Optional bias of length `out`.
        bias: Option<Tensor>,
    },
    /// Dense f32 `(out, in)` weights.
    Dense {
        /// The `(out, in)` matrix.
        weight: Tensor,
        /// Optional bias of length `out`.
        bias: Option<Tensor>,
    },
}

impl Linear {
    /// Applies the projection to `(rows, in)`, giving `(rows, out)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (y, bias) = match self {
            Linear::Quantized { weight, bias } => (weight.forward(x)?, bias),
            Linear::Dense { weight, bias } => (x.matmul(&weight.t()?)?, bias),
        };
        Ok(match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

impl Linear {
    /// `(out, in)` of the weight matrix.
    pub(crate) fn dims(&self) -> Vec<usize> {
        match self {
            Linear::Quantized { weight, .. } => match weight {
                QMatMul::QTensor(q) => q.shape().dims().to_vec(),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims().to_vec(),
            },
            Linear::Dense { weight, .. } => weight.dims().to_vec(),
        }
    }
}
