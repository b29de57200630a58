//! AVX2 kernels (x86-64-v3): 32 weights of a block in one register, the byte
//! products summed with `maddubs`/`madd`.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::formats::{BlockFormat, QuantizedRows, BLOCK};
pub(super) use super::gemv::MAX_ROWS;

/// How far ahead of the block being multiplied the row loop asks for weights.
///
/// On a 2-core Intel Xeon (AVX-512) the hardware prefetchers alone kept the
/// Q8_0 output projection at 6.4 GB/s per core (12.1 GB/s on both), stalled on
/// the weight loads; asking 2–8 KiB ahead read it at 8.5 (25–29 on both).
pub(super) const PREFETCH_BYTES: usize = 4096;

/// `out[r * m + i] = dot(weight row r, activation row i)` for the weight rows
/// in `weights` (whole rows of `format`) and the `m` rows of `acts`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `acts.rows() <= MAX_ROWS`;
/// `weights` holds whole rows of `acts.cols` values; `out` has room for them.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv(
    format: BlockFormat,
    weights: &[u8],
    acts: &QuantizedRows,
    out: &mut [f32],
) {
    match format {
        BlockFormat::Q8_0 => row_loop!(weights, acts, out, BlockFormat::Q8_0, dot_i32),
        BlockFormat::Q5_0 => row_loop!(weights, acts, out, BlockFormat::Q5_0, dot_i32),
        BlockFormat::Q4_1 => row_loop!(weights, acts, out, BlockFormat::Q4_1, dot_i32),
    }
}

/// The row loop, instantiated per instruction set (so that its byte dot
/// product inlines) and per block format (a constant, so that decoding
/// folds to that format's). Weight rows go one at a time, in memory order: one
/// sequential stream is what the hardware prefetchers follow (four rows
/// interleaved, each with its own accumulator to hide the FMA latency, read
/// the output projection at a quarter of the speed on a Zen 4 core). With
/// several activation rows, each weight block is decoded once and multiplied
/// with every row's block. Each block asks for the weights
/// [`PREFETCH_BYTES`] ahead. `$dot` sums 32 byte products into 8 i32 lanes.
/// A Q4_1 block's minimum times the activation block's sum is added apart.
macro_rules! row_loop {
    ($weights:expr, $acts:expr, $out:expr, $format:expr, $dot:ident) => {{
        let (weights, acts, out): (&[u8], &QuantizedRows, &mut [f32]) = ($weights, $acts, $out);
        let format: BlockFormat = $format;
        let has_min = format.has_min();
        let block_bytes = format.block_bytes();
        let m = acts.rows();
        let blocks = acts.cols / BLOCK;
        let row_bytes = blocks * block_bytes;
        let n = weights.len() / row_bytes;
        if m == 1 {
            let x_values = acts.values.as_ptr();
            let x_scales = acts.scales.as_ptr();
            let x_sums = acts.sums.as_ptr();
            for r in 0..n {
                let row = weights.as_ptr().add(r * row_bytes);
                let mut acc = _mm256_setzero_ps();
                let mut mins = 0f32;
                for b in 0..blocks {
                    let x = _mm256_loadu_si256(x_values.add(b * BLOCK).cast());
                    let block = row.add(b * block_bytes);
                    _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PREFETCH_BYTES).cast());
                    let w = decode(format, block);
                    let products = $dot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
                    let d = _mm256_set1_ps(scale(block) * *x_scales.add(b));
                    acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(products), acc);
                    if has_min {
                        mins += scale(block.add(2)) * *x_sums.add(b);
                    }
                }
                *out.get_unchecked_mut(r) = hsum(acc) + mins;
            }
        } else {
            // Several activation rows: decode each weight block once for all
            // of them, one accumulator per activation row.
            for r in 0..n {
                let row = weights.as_ptr().add(r * row_bytes);
                let mut acc = [_mm256_setzero_ps(); MAX_ROWS];
                let mut mins = [0f32; MAX_ROWS];
                for b in 0..blocks {
                    let block = row.add(b * block_bytes);
                    _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PREFETCH_BYTES).cast());
                    let w = decode(format, block);
                    let w_abs = _mm256_sign_epi8(w, w);
                    let dw = scale(block);
                    let min = if has_min { scale(block.add(2)) } else { 0.0 };
                    for (i, a) in acc.iter_mut().enumerate().take(m) {
                        let x = _mm256_loadu_si256(
                            acts.values.as_ptr().add(i * acts.cols + b * BLOCK).cast(),
                        );
                        let products = $dot(w_abs, _mm256_sign_epi8(x, w));
                        let d = _mm256_set1_ps(dw * *acts.scales.get_unchecked(i * blocks + b));
                        *a = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(products), *a);
                        if has_min {
                            mins[i] += min * *acts.sums.get_unchecked(i * blocks + b);
                        }
                    }
                }
                for (i, a) in acc.iter().enumerate().take(m) {
                    *out.get_unchecked_mut(r * m + i) = hsum(*a) + mins[i];
                }
            }
        }
    }};
}
pub(super) use row_loop;

/// Sums the products of unsigned bytes `a` and signed bytes `b` into 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_i32(a: __m256i, b: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
}

/// The block's f16 scale as f32.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn scale(block: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*block, *block.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// A block's 32 integer values before its scale (and minimum), as signed bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn decode(format: BlockFormat, block: *const u8) -> __m256i {
    match format {
        BlockFormat::Q8_0 => decode_q8_0(block),
        BlockFormat::Q5_0 => decode_q5_0(block),
        BlockFormat::Q4_1 => nibbles(block.add(4)),
    }
}

/// A Q8_0 block's 32 signed values.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn decode_q8_0(block: *const u8) -> __m256i {
    _mm256_loadu_si256(block.add(2).cast())
}

/// 16 bytes of packed nibbles as 32 bytes: the low halves, then the high ones.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles(packed: *const u8) -> __m256i {
    let packed = _mm_loadu_si128(packed.cast());
    let low_mask = _mm_set1_epi8(0x0F);
    let low = _mm_and_si128(packed, low_mask);
    let high = _mm_and_si128(_mm_srli_epi16(packed, 4), low_mask);
    _mm256_set_m128i(high, low)
}

/// A Q5_0 block's 32 values minus 16, as signed bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn decode_q5_0(block: *const u8) -> __m256i {
    let nibbles = nibbles(block.add(6));
    // Byte i gets bit i of the u32: spread byte i/8 over 8 lanes, test bit i%8.
    let high_bits = std::ptr::read_unaligned(block.add(2).cast::<u32>());
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(high_bits as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    // nibble + 16 * high - 16: where the high bit is clear, set the top four
    // bits (two's complement of nibble - 16).
    _mm256_or_si256(
        nibbles,
        _mm256_andnot_si256(set, _mm256_set1_epi8(0xF0_u8 as i8)),
    )
}

/// Horizontal sum of 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `exp(x)` for 8 lanes, `x` clamped to [-87, 88] (the normal f32 range):
/// range reduction by ln 2 and a degree-6 polynomial, relative error ~1e-7.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp(x: __m256) -> __m256 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
        _mm256_set1_ps(88.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    // r = x - n ln 2, in two steps so that r keeps its low bits.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    // exp(r) on |r| <= ln2 / 2: Taylor to r^6 (error < r^7 / 7! ~ 1.2e-7).
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for coefficient in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(coefficient));
    }
    // times 2^n, built in the exponent bits (n + 127 is in 1..=254 here).
    let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(scale))
}
