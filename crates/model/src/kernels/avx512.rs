//! AVX-512 VNNI kernels: the AVX2 row loop with the byte products summed by
//! one `vpdpbusd` instead of `maddubs` + `madd`.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::avx2::{decode, hsum, row_loop, scale, MAX_ROWS, PREFETCH_BYTES};
use super::formats::{BlockFormat, QuantizedRows, BLOCK};

/// [`super::avx2::gemv`] with VNNI dot products; same contract.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 VL and VNNI; the rest as
/// [`super::avx2::gemv`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
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

/// Sums the products of unsigned bytes `a` and signed bytes `b` into 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512vnni")]
unsafe fn dot_i32(a: __m256i, b: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b)
}
