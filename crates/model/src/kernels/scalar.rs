//! The reference kernels: plain Rust, one block at a time.

use super::formats::{block_min, block_scale, BlockFormat, QuantizedRows, BLOCK};

/// Dot product of one weight row (`blocks` blocks of `format`) with
/// activation row `i` of `acts`.
pub(crate) fn dot(format: BlockFormat, row: &[u8], acts: &QuantizedRows, i: usize) -> f32 {
    let (values, scales, sums) = (acts.row_values(i), acts.row_scales(i), acts.row_sums(i));
    let bytes = format.block_bytes();
    let mut sum = 0f32;
    for (b, block) in row.chunks_exact(bytes).enumerate() {
        let x = &values[b * BLOCK..(b + 1) * BLOCK];
        let mut acc = 0i32;
        for (i, &xi) in x.iter().enumerate() {
            acc += weight(format, block, i) * xi as i32;
        }
        sum += block_scale(block) * scales[b] * acc as f32;
        if format.has_min() {
            sum += block_min(block) * sums[b];
        }
    }
    sum
}

/// The integer value `i` (0..32) of a block, before its scale.
pub(crate) fn weight(format: BlockFormat, block: &[u8], i: usize) -> i32 {
    match format {
        BlockFormat::Q8_0 => block[2 + i] as i8 as i32,
        BlockFormat::Q5_0 => {
            let high_bits = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
            let packed = block[6 + i % 16];
            let nibble = if i < 16 { packed & 0x0F } else { packed >> 4 };
            let high = ((high_bits >> i) & 1) as u8;
            (nibble | high << 4) as i32 - 16
        }
        BlockFormat::Q4_1 => {
            let packed = block[4 + i % 16];
            (if i < 16 { packed & 0x0F } else { packed >> 4 }) as i32
        }
    }
}
