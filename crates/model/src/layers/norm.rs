//! RMS norm over the last dimension.

use candle_core::Tensor;

use crate::Result;

/// `x / sqrt(mean(x^2) + eps) * weight`. Gemma's `1 + w` is folded into
/// `weight` at load time, exactly once, whatever the weight file stores.
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn new(weight: Tensor, eps: f64) -> Self {
        Self {
            weight,
            eps: eps as f32,
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        Ok(candle_nn::ops::rms_norm(&x, &self.weight, self.eps)?)
    }

    pub(crate) fn resident_bytes(&self) -> usize {
        super::linear::tensor_bytes(&self.weight)
    }
}
