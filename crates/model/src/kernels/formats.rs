//! The block formats the kernels read, and the activations they multiply.
//!
//! Every format covers 32 values per block with one f16 scale `d`:
//! - Q8_0, 34 bytes: `d`, then 32 signed bytes; value `i` is `d * q[i]`.
//! - Q5_0, 22 bytes: `d`, a little-endian u32 of high bits, then 16 bytes of
//!   low nibbles (values 0..16 in the low halves, 16..32 in the high ones);
//!   value `i` is `d * ((nibble_i | high_bit_i << 4) - 16)`.
//! - Q4_1, 20 bytes: `d`, an f16 minimum `m`, then 16 bytes of nibbles laid
//!   out as Q5_0's; value `i` is `d * nibble_i + m`.

use candle_core::quantized::GgmlDType;

/// Values per block.
pub(crate) const BLOCK: usize = 32;

/// A block format the kernels handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockFormat {
    /// 8-bit values with one scale.
    Q8_0,
    /// 5-bit values (offset 16) with one scale.
    Q5_0,
    /// 4-bit values with a scale and a minimum.
    Q4_1,
}

impl BlockFormat {
    /// The format of a GGUF type, if the kernels handle it.
    pub(crate) fn of(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q8_0 => Some(Self::Q8_0),
            GgmlDType::Q5_0 => Some(Self::Q5_0),
            GgmlDType::Q4_1 => Some(Self::Q4_1),
            _ => None,
        }
    }

    /// Bytes per block.
    pub(crate) fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 34,
            Self::Q5_0 => 22,
            Self::Q4_1 => 20,
        }
    }

    /// Whether a block adds a minimum to its scaled values (Q4_1), which
    /// multiplies the activation block's sum ([`QuantizedRows::sums`]).
    #[inline(always)]
    pub(crate) const fn has_min(self) -> bool {
        matches!(self, Self::Q4_1)
    }
}

/// Activation rows quantized to 8 bits per value with one f32 scale per
/// 32-value block, the form every kernel multiplies weights with.
#[derive(Debug, Default)]
pub(crate) struct QuantizedRows {
    /// `rows * cols` values.
    pub(crate) values: Vec<i8>,
    /// `rows * cols / 32` scales.
    pub(crate) scales: Vec<f32>,
    /// `rows * cols / 32` block sums of the quantized values times their
    /// scale: what a weight block's minimum (Q4_1) multiplies.
    pub(crate) sums: Vec<f32>,
    /// Values per row (a multiple of 32).
    pub(crate) cols: usize,
}

impl QuantizedRows {
    /// Quantizes `x` (`rows * cols` f32, row-major); `cols` must be a multiple of 32.
    pub(crate) fn quantize(x: &[f32], cols: usize) -> Self {
        debug_assert!(cols.is_multiple_of(BLOCK) && x.len().is_multiple_of(cols));
        let mut values = vec![0i8; x.len()];
        let mut scales = Vec::with_capacity(x.len() / BLOCK);
        let mut sums = Vec::with_capacity(x.len() / BLOCK);
        for (block, out) in x.chunks_exact(BLOCK).zip(values.chunks_exact_mut(BLOCK)) {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (q, v) in out.iter_mut().zip(block) {
                *q = (v * inv).round() as i8;
            }
            scales.push(d);
            sums.push(d * out.iter().map(|&q| q as i32).sum::<i32>() as f32);
        }
        Self {
            values,
            scales,
            sums,
            cols,
        }
    }

    /// Number of rows.
    pub(crate) fn rows(&self) -> usize {
        self.values.len().checked_div(self.cols).unwrap_or(0)
    }

    /// Values of row `r`.
    pub(crate) fn row_values(&self, r: usize) -> &[i8] {
        &self.values[r * self.cols..(r + 1) * self.cols]
    }

    /// Block scales of row `r`.
    pub(crate) fn row_scales(&self, r: usize) -> &[f32] {
        let blocks = self.cols / BLOCK;
        &self.scales[r * blocks..(r + 1) * blocks]
    }

    /// Block sums of row `r` (see [`QuantizedRows::sums`]).
    pub(crate) fn row_sums(&self, r: usize) -> &[f32] {
        let blocks = self.cols / BLOCK;
        &self.sums[r * blocks..(r + 1) * blocks]
    }
}

/// The f16 scale at the start of a block, as f32.
#[inline(always)]
pub(crate) fn block_scale(block: &[u8]) -> f32 {
    half::f16::from_le_bytes([block[0], block[1]]).to_f32()
}

/// A Q4_1 block's f16 minimum, as f32.
#[inline(always)]
pub(crate) fn block_min(block: &[u8]) -> f32 {
    half::f16::from_le_bytes([block[2], block[3]]).to_f32()
}
