//! `x Wᵀ` over dense f32 weights straight into a fresh output.
//!
//! candle's CPU matmul zero-fills its output before the GEMM overwrites it:
//! 4% of a 512-token prefill went to that `memset`. Here the same GEMM
//! (the `gemm` crate, candle's own, with the same threads) writes into
//! uninitialised memory that it fills completely.

use candle_core::{Device, Storage, Tensor};

use crate::Result;

/// `x Wᵀ` for `x` `(.., in)` and `w` `(out, in)`, both contiguous f32 on the
/// CPU; `(.., out)`. `None` for any other input (the caller falls back to
/// candle's matmul).
pub(crate) fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let (out, k) = w.dims2()?;
    let Some((&last, lead)) = x.dims().split_last() else {
        return Ok(None);
    };
    if last != k || !x.device().is_cpu() || !w.device().is_cpu() {
        return Ok(None);
    }
    let rows: usize = lead.iter().product();
    let (x_guard, x_layout) = x.storage_and_layout();
    let (w_guard, w_layout) = w.storage_and_layout();
    let (Storage::Cpu(x_cpu), Storage::Cpu(w_cpu)) = (&*x_guard, &*w_guard) else {
        return Ok(None);
    };
    let (Some((x0, x1)), Some((w0, w1))) =
        (x_layout.contiguous_offsets(), w_layout.contiguous_offsets())
    else {
        return Ok(None);
    };
    let (Ok(x_all), Ok(w_all)) = (x_cpu.as_slice::<f32>(), w_cpu.as_slice::<f32>()) else {
        return Ok(None);
    };
    let (lhs, rhs) = (&x_all[x0..x1], &w_all[w0..w1]);
    if rows == 0 || out == 0 || lhs.len() != rows * k || rhs.len() != out * k {
        return Ok(None);
    }
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let mut dst: Vec<f32> = Vec::with_capacity(rows * out);
    // SAFETY: `lhs` is `rows × k` row-major and `rhs` `out × k` row-major (so
    // `k × out` with column stride `k`), both checked above; `dst` has room for
    // `rows × out` values, and with `read_dst` false and `alpha` 0 the GEMM
    // writes every one of them without reading any, so the length may be set
    // after it.
    unsafe {
        gemm::gemm(
            rows,
            out,
            k,
            dst.as_mut_ptr(),
            1,
            out as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            k as isize,
            1,
            0f32,
            1f32,
            false,
            false,
            false,
            parallelism,
        );
        dst.set_len(rows * out);
    }
    drop((x_guard, w_guard));
    let mut shape = lead.to_vec();
    shape.push(out);
    Ok(Some(Tensor::from_vec(dst, shape, &Device::Cpu)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_candles_matmul_on_matrices_and_batches() {
        let w = Tensor::randn(0f32, 1.0, (37, 24), &Device::Cpu).unwrap();
        for shape in [vec![19, 24], vec![3, 5, 24], vec![1, 24]] {
            let x = Tensor::randn(0f32, 1.0, shape.clone(), &Device::Cpu).unwrap();
            let got = matmul_t(&x, &w).unwrap().unwrap();
            let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
            assert_eq!(got.dims(), want.dims());
            let d = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-4, "{shape:?}");
        }
    }

    #[test]
    fn strided_or_mismatched_inputs_fall_back_or_fail() {
        let w = Tensor::randn(0f32, 1.0, (8, 6), &Device::Cpu).unwrap();
        let strided = Tensor::randn(0f32, 1.0, (6, 4), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap();
        assert!(matmul_t(&strided, &w).unwrap().is_none());
        let narrow = Tensor::randn(0f32, 1.0, (4, 5), &Device::Cpu).unwrap();
        assert!(matmul_t(&narrow, &w).unwrap().is_none());
        let f16 = w.to_dtype(candle_core::DType::F16).unwrap();
        let x = Tensor::randn(0f32, 1.0, (4, 6), &Device::Cpu).unwrap();
        assert!(matmul_t(&x, &f16).unwrap().is_none());
    }
}
