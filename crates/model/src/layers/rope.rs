//! Rotary position embedding at explicit positions.
//!
//! Keys are cached before rotation, so a cached key can be rotated to any
//! position later ([`Rope::apply`] with other positions) with no error beyond
//! float rounding. Angles are computed in f64 and rounded once to the model's
//! element type, into a table per layer kind that lives on the model's device
//! and grows with the largest position seen: a pass looks its rows' angles up
//! with one gather instead of computing (and, on a GPU, uploading) them.

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Tensor};

use crate::config::{RopeConfig, RopeScaling, RopeStyle};
use crate::Result;

/// Positions the angle table first covers; it doubles past that.
const MIN_TABLE_ROWS: usize = 4096;

/// The frequency ladder of one layer kind, the pairing style, and the table
/// of angles computed so far.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    inv_freq: Vec<f64>,
    style: RopeStyle,
    dtype: DType,
    device: Device,
    table: Arc<Mutex<Option<AngleTable>>>,
}

/// Cosines and sines of positions `0..rows`, each `(rows, head_dim / 2)`.
#[derive(Debug)]
struct AngleTable {
    cos: Tensor,
    sin: Tensor,
    rows: usize,
}

/// Cosines and sines for a set of rows, shaped `(rows, 1, head_dim / 2)`.
#[derive(Debug, Clone)]
pub(crate) struct RopeAngles {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub(crate) fn new(
        config: &RopeConfig,
        head_dim: usize,
        style: RopeStyle,
        dtype: DType,
        device: &Device,
    ) -> Self {
        let half = head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| {
                let base = 1.0 / config.base.powf((2 * i) as f64 / head_dim as f64);
                scale_frequency(base, i, &config.scaling)
            })
            .collect();
        Self {
            inv_freq,
            style,
            dtype,
            device: device.clone(),
            table: Arc::new(Mutex::new(None)),
        }
    }

    /// The angles of rows at `positions`.
    pub(crate) fn angles(&self, positions: &[u32]) -> Result<RopeAngles> {
        let needed = positions.iter().max().map_or(0, |&p| p as usize + 1);
        let (cos, sin) = self.table(needed)?;
        let ids = Tensor::new(positions, &self.device)?;
        let shape = (positions.len(), 1, self.inv_freq.len());
        Ok(RopeAngles {
            cos: cos.index_select(&ids, 0)?.reshape(shape)?,
            sin: sin.index_select(&ids, 0)?.reshape(shape)?,
        })
    }

    /// The table's cosines and sines, grown to cover positions `0..rows`.
    fn table(&self, rows: usize) -> Result<(Tensor, Tensor)> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = table.as_ref().filter(|t| t.rows >= rows) {
            return Ok((t.cos.clone(), t.sin.clone()));
        }
        let rows = rows.next_power_of_two().max(MIN_TABLE_ROWS);
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(rows * half);
        let mut sin = Vec::with_capacity(rows * half);
        for p in 0..rows {
            for &f in &self.inv_freq {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        let make = |v: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (rows, half), &self.device)?.to_dtype(self.dtype)?)
        };
        let grown = AngleTable {
            cos: make(cos)?,
            sin: make(sin)?,
            rows,
        };
        let out = (grown.cos.clone(), grown.sin.clone());
        *table = Some(grown);
        Ok(out)
    }

    /// Rotates `x` `(rows, heads, head_dim)` by the rows' angles.
    pub(crate) fn apply(&self, x: &Tensor, angles: &RopeAngles) -> Result<Tensor> {
        let (rows, heads, dim) = x.dims3()?;
        let x = x
            .to_dtype(self.dtype)?
            .reshape((rows, heads, 1, dim))?
            .contiguous()?;
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
