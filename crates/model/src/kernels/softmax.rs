//! Attention's softmax on the CPU, with the position mask applied inside.
//!
//! candle's CPU softmax calls libm's `expf` once per score, and the additive
//! mask costs a tensor of its own and a pass over every score. Keys ascend
//! by position, so the keys a query row sees (causal, and inside its sliding
//! window) are one contiguous range: here each row exponentiates that range
//! alone, eight lanes at a time (AVX2, chosen at run time), and writes zeros
//! elsewhere. In a causal prefill chunk about half of the scores are never
//! exponentiated. Rows that see no key get zeros.

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::isa::Isa;
use crate::Result;

/// Softmax of `scores` `(heads, rows, keys)` (f32, on the CPU), row `i` of
/// every head over the keys `visible[i]` alone.
pub(crate) fn masked_softmax_cpu(scores: &Tensor, visible: &[Range<usize>]) -> Result<Tensor> {
    let scores = scores.contiguous()?;
    Ok(scores.apply_op1_no_bwd(&MaskedSoftmax(visible))?)
}

struct MaskedSoftmax<'a>(&'a [Range<usize>]);

impl CustomOp1 for MaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(src) = storage else {
            candle_core::bail!("masked-softmax: f32 scores only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("masked-softmax: scores must be contiguous");
        };
        let dims = layout.shape().dims();
        let (rows, keys) = match dims {
            [.., rows, keys] => (*rows, *keys),
            _ => candle_core::bail!("masked-softmax: scores {dims:?} need rows and keys"),
        };
        if rows != self.0.len() || keys == 0 {
            candle_core::bail!(
                "masked-softmax: {} visible ranges for scores {dims:?}",
                self.0.len()
            );
        }
        let src = &src[start..end];
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(keys)
            .zip(src.par_chunks(keys))
            .enumerate()
            .for_each(|(t, (d, s))| masked_softmax_row(s, d, self.0[t % rows].clone()));
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// `dst = softmax(src)` over `visible`, zeros elsewhere; `src` and `dst`
/// are one row of scores each.
fn masked_softmax_row(src: &[f32], dst: &mut [f32], visible: Range<usize>) {
    masked_softmax_row_with(Isa::detect(), src, dst, visible)
}

fn masked_softmax_row_with(isa: Isa, src: &[f32], dst: &mut [f32], visible: Range<usize>) {
    let visible = visible.start.min(src.len())..visible.end.min(src.len());
    dst[..visible.start].fill(0.0);
    dst[visible.end..].fill(0.0);
    let (src, dst) = (&src[visible.clone()], &mut dst[visible]);
    if src.is_empty() {
        return;
    }
    let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut done = 0;
    let mut sum = 0f32;
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        done = src.len() / 8 * 8;
        // SAFETY: `isa` is at most what this CPU and OS support (AVX2 and FMA
        // are part of every level from Isa::Avx2 up); both slices hold at
        // least `done` values.
        sum = unsafe { avx2::exp_shifted(&src[..done], &mut dst[..done], max) };
    }
    for (d, &s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = (s - max).exp();
        sum += *d;
    }
    let scale = 1.0 / sum;
    dst.iter_mut().for_each(|d| *d *= scale);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::avx2::{exp, hsum};

    /// `dst[i] = exp(src[i] - max)`; returns their sum.
    ///
    /// # Safety
    /// AVX2 and FMA; both slices have the same length, a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shifted(src: &[f32], dst: &mut [f32], max: f32) -> f32 {
        let m = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_ps();
        for i in (0..dst.len()).step_by(8) {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(src.as_ptr().add(i)), m));
            sum = _mm256_add_ps(sum, e);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), e);
        }
        hsum(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_supported_isa_matches_a_masked_libm_softmax() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (len, visible) in [(37, 0..37), (100, 3..91), (64, 10..10), (9, 0..1)] {
            let src: Vec<f32> = (0..len).map(|_| rng.random_range(-40.0..40.0)).collect();
            let max = src[visible.clone()]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
            let total: f64 = src[visible.clone()]
                .iter()
                .map(|&s| f64::from(s - max).exp())
                .sum();
            for isa in Isa::supported() {
                let mut got = vec![f32::NAN; len];
                masked_softmax_row_with(isa, &src, &mut got, visible.clone());
                for (i, (&g, &s)) in got.iter().zip(&src).enumerate() {
                    let want = if visible.contains(&i) {
                        (f64::from(s - max).exp() / total) as f32
                    } else {
                        0.0
                    };
                    assert!(
                        (g - want).abs() <= 1e-5 * want.max(1e-6),
                        "{isa:?} {len} {visible:?} at {i}: {g} vs {want}"
                    );
                }
            }
        }
    }
}
