//! Rotary position embedding at explicit positions.
//!
//! Keys are cached before rotation, so a cached key can be rotated to any
//! position later ([`Rope::apply`] with other positions) with no error beyond
//! float rounding. Angles are computed in f64 and rounded once to f32.

use candle_core::{Device, Tensor};

use crate::config::{RopeConfig, RopeScaling, RopeStyle};
use crate::Result;

/// The frequency ladder of one layer kind and the pairing style.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    inv_freq: Vec<f64>,
    style: RopeStyle,
}

/// Cosines and sines for a set of rows, shaped `(rows, 1, head_dim / 2)`.
#[derive(Debug, Clone)]
pub(crate) struct RopeAngles {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub(crate) fn new(config: &RopeConfig, head_dim: usize, style: RopeStyle) -> Self {
        let half = head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| {
                let base = 1.0 / config.base.powf((2 * i) as f64 / head_dim as f64);
                scale_frequency(base, i, &config.scaling)
            })
            .collect();
        Self { inv_freq, style }
    }

    /// Angles for `positions`, ready to apply to rows at those positions.
    pub(crate) fn angles(&self, positions: &[u32], device: &Device) -> Result<RopeAngles> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        let shape = (positions.len(), 1, half);
        Ok(RopeAngles {
            cos: Tensor::from_vec(cos, shape, device)?,
            sin: Tensor::from_vec(sin, shape, device)?,
        })
    }

    /// Rotates `x` of shape `(rows, heads, head_dim)`; row `i` by angle set `i`.
    pub(crate) fn apply(&self, x: &Tensor, angles: &RopeAngles) -> Result<Tensor> {
        let (rows, heads, dim) = x.dims3()?;
        // candle's kernels take (batch, heads, seq, dim); each row is its own
        // batch entry of one step so it can carry its own position.
        let x = x.reshape((rows, heads, 1, dim))?.contiguous()?;
        let out = match self.style {
            RopeStyle::Half => candle_nn::rotary_emb::rope(&x, &angles.cos, &angles.sin)?,
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &angles.cos, &angles.sin)?,
        };
        Ok(out.reshape((rows, heads, dim))?)
    }
}

fn scale_frequency(freq: f64, i: usize, scaling: &RopeScaling) -> f64 {
    match scaling {
        RopeScaling::None => freq,
        RopeScaling::Linear { factor } => freq / factor,
        RopeScaling::Divisors(d) => freq / d.get(i).copied().unwrap_or(1.0) as f64,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        } => {
            let low_wavelen = original_max_position / low_freq_factor;
            let high_wavelen = original_max_position / high_freq_factor;
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < high_wavelen {
                freq
            } else if wavelen > low_wavelen {
                freq / factor
            } else {
                let smooth = (original_max_position / wavelen - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * freq / factor + smooth * freq
            }
        }
    }
}
