//! A few activation rows times a block-quantized matrix, on every core.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use super::formats::{BlockFormat, QuantizedRows, BLOCK};
use super::isa::Isa;
use super::scalar;
use crate::Result;

/// The most activation rows one product takes (the SIMD kernels keep one
/// accumulator per row in registers and on the stack); more rows are a GEMM's work.
pub(crate) const MAX_ROWS: usize = 16;

/// Weight rows per parallel task: enough to amortise the task, small enough
/// that both cores finish together on the smallest projections.
const ROWS_PER_TASK: usize = 64;

/// A block-quantized `(out, in)` matrix in a format these kernels handle.
#[derive(Debug, Clone)]
pub(crate) struct QuantGemv {
    weights: Arc<QTensor>,
    format: BlockFormat,
    out: usize,
    cols: usize,
}

impl QuantGemv {
    /// The matrix, if it is on the CPU in a handled format with whole blocks per row.
    pub(crate) fn new(weights: Arc<QTensor>) -> Option<Self> {
        let format = BlockFormat::of(weights.dtype())?;
        let (out, cols) = weights.shape().dims2().ok()?;
        let on_cpu = matches!(weights.device(), Device::Cpu);
        (on_cpu && cols % BLOCK == 0).then_some(Self {
            weights,
            format,
            out,
            cols,
        })
    }

    /// `x W^T` for `x` of shape `(rows, in)`; `(rows, out)`. More than
    /// [`MAX_ROWS`] rows go through the kernels that many at a time (each
    /// row's result is the same whatever the rows beside it).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let values = x.flatten_all()?.to_vec1::<f32>()?;
        let isa = Isa::detect();
        if rows == 1 {
            // One row by weight row is already the output's layout.
            let y = self.product(&values, isa)?;
            return Ok(Tensor::from_vec(y, (1, self.out), x.device())?);
        }
        let mut y = vec![0f32; rows * self.out];
        for (c, chunk) in values.chunks(MAX_ROWS * self.cols).enumerate() {
            let m = chunk.len() / self.cols;
            let by_weight_row = self.product(chunk, isa)?;
            for (r, per_row) in by_weight_row.chunks_exact(m).enumerate() {
                for (i, &v) in per_row.iter().enumerate() {
                    y[(c * MAX_ROWS + i) * self.out + r] = v;
                }
            }
        }
        Ok(Tensor::from_vec(y, (rows, self.out), x.device())?)
    }

    /// The products of at most [`MAX_ROWS`] activation rows (`values`,
    /// row-major), by weight row: `[r * rows + i]`.
    fn product(&self, values: &[f32], isa: Isa) -> Result<Vec<f32>> {
        let acts = QuantizedRows::quantize(values, self.cols);
        let mut by_weight_row = vec![0f32; self.out * acts.rows()];
        self.multiply(&acts, &mut by_weight_row, isa)?;
        Ok(by_weight_row)
    }

    /// `out[r * m + i]` = weight row `r` · activation row `i`, with kernels of `isa`.
    fn multiply(&self, acts: &QuantizedRows, out: &mut [f32], isa: Isa) -> Result<()> {
        let m = acts.rows();
        if m == 0 || m > MAX_ROWS || acts.cols != self.cols || out.len() != self.out * m {
            return Err(crate::ModelError::input(format!(
                "quantized product of {m} rows of {} values with a ({}, {}) matrix into {} outputs",
                acts.cols,
                self.out,
                self.cols,
                out.len()
            )));
        }
        let data = self.weights.data()?;
        let row_bytes = self.cols / BLOCK * self.format.block_bytes();
        let format = self.format;
        let tasks = self.out.div_ceil(ROWS_PER_TASK);
        let out_addr = out.as_mut_ptr() as usize;
        // candle's spinning pool, the one its own quantized kernels use: one
        // set of worker threads for every matrix-vector product of a step.
        candle_core::utils::barrier_pool().execute_chunked(tasks, |range| {
            let rows = range.start * ROWS_PER_TASK..(range.end * ROWS_PER_TASK).min(self.out);
            let weights = &data[rows.start * row_bytes..rows.end * row_bytes];
            // SAFETY: `out` holds `self.out * m` values (checked above) and every
            // task writes only its own rows' values.
            let out = unsafe {
                std::slice::from_raw_parts_mut(
                    (out_addr as *mut f32).add(rows.start * m),
                    rows.len() * m,
                )
            };
            gemv(isa, format, weights, acts, out);
        });
        Ok(())
    }
}

/// One task's rows with the kernels of `isa` (never above [`Isa::detect`]).
fn gemv(isa: Isa, format: BlockFormat, weights: &[u8], acts: &QuantizedRows, out: &mut [f32]) {
    match isa {
        // SAFETY: `isa` is at most what `Isa::detect` found this CPU and OS to
        // support; `multiply` checked the row count and that `weights` holds
        // whole rows of `acts.cols` values with room for each in `out`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { super::avx512::gemv(format, weights, acts, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { super::avx2::gemv(format, weights, acts, out) },
        _ => {
            let m = acts.rows();
            let row_bytes = acts.cols / BLOCK * format.block_bytes();
            for (r, row) in weights.chunks_exact(row_bytes).enumerate() {
                for i in 0..m {
                    out[r * m + i] = scalar::dot(format, row, acts, i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use rand::{Rng, SeedableRng};

    /// A random `(out, cols)` matrix quantized to `dtype`, and `rows` random activation rows.
    fn case(
        dtype: GgmlDType,
        out: usize,
        cols: usize,
        rows: usize,
        seed: u64,
    ) -> (QuantGemv, Vec<f32>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let w: Vec<f32> = (0..out * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let w = Tensor::from_vec(w, (out, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let x = (0..rows * cols)
            .map(|_| rng.random_range(-3.0..3.0))
            .collect();
        (QuantGemv::new(Arc::new(q)).unwrap(), x)
    }

    #[test]
    fn every_supported_isa_matches_the_scalar_kernel_on_every_format() {
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q5_0, GgmlDType::Q4_1] {
            for (rows, out, seed) in [(1, 300, 1), (3, 129, 2), (MAX_ROWS, 70, 3)] {
                let (gemv, x) = case(dtype, out, 640, rows, seed);
                let acts = QuantizedRows::quantize(&x, 640);
                let mut reference = vec![0f32; out * rows];
                gemv.multiply(&acts, &mut reference, Isa::Scalar).unwrap();
                for isa in Isa::supported() {
                    let mut got = vec![0f32; out * rows];
                    gemv.multiply(&acts, &mut got, isa).unwrap();
                    for (g, r) in got.iter().zip(&reference) {
                        assert!(
                            (g - r).abs() <= 1e-4 * r.abs().max(1.0),
                            "{dtype:?} {isa:?}: {g} vs {r}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_scalar_kernel_matches_candles_dequantized_product() {
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q5_0, GgmlDType::Q4_1] {
            let (gemv, x) = case(dtype, 96, 256, 2, 7);
            let dense = gemv.weights.dequantize(&Device::Cpu).unwrap();
            let xt = Tensor::from_vec(x.clone(), (2, 256), &Device::Cpu).unwrap();
            let want: Vec<f32> = xt
                .matmul(&dense.t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let got: Vec<f32> = gemv
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // The activations are rounded to 8 bits: ~0.4% of each block's largest value.
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 0.02 * scale, "{dtype:?}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn many_rows_give_each_row_what_it_gets_alone() {
        let rows = 2 * MAX_ROWS + 5;
        for dtype in [GgmlDType::Q5_0, GgmlDType::Q4_1] {
            let (gemv, x) = case(dtype, 70, 64, rows, 13);
            let xt = Tensor::from_vec(x, (rows, 64), &Device::Cpu).unwrap();
            let all: Vec<Vec<f32>> = gemv.forward(&xt).unwrap().to_vec2().unwrap();
            for (i, got) in all.iter().enumerate() {
                let alone = gemv.forward(&xt.narrow(0, i, 1).unwrap()).unwrap();
                assert_eq!(
                    got,
                    &alone.to_vec2::<f32>().unwrap()[0],
                    "{dtype:?} row {i}"
                );
            }
        }
    }

    /// A measurement, not a check: one thread of each kernel over a Q8_0
    /// matrix larger than the caches, next to a plain read of the same bytes
    /// (the memory's limit), then every core (docs/RESULTS.md).
    /// `cargo test --release -p prophetkv-model kernel_bandwidth -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing, run by hand"]
    fn kernel_bandwidth_against_a_plain_read() {
        let (out, cols) = (131_072, 640);
        let (matrix, x) = case(GgmlDType::Q8_0, out, cols, 1, 11);
        let acts = QuantizedRows::quantize(&x, cols);
        let data = matrix.weights.data().unwrap();
        let mut y = vec![0f32; out];
        let best_secs = |run: &mut dyn FnMut()| {
            (0..7)
                .map(|_| {
                    let start = std::time::Instant::now();
                    run();
                    start.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        let report = |what: &str, secs: f64| {
            let gbps = data.len() as f64 / secs / 1e9;
            println!("{what:>28}: {:6.2} ms {gbps:5.1} GB/s", secs * 1e3);
        };
        let read = best_secs(&mut || {
            let first_words = data.chunks(64).map(|line| line[0] as u64);
            std::hint::black_box(first_words.fold(0, |a, b| a ^ b));
        });
        println!(
            "{} MB of Q8_0 weights ({out} x {cols})",
            data.len() / 1_000_000
        );
        report("plain read, one thread", read);
        for isa in Isa::supported() {
            let secs = best_secs(&mut || gemv(isa, BlockFormat::Q8_0, &data, &acts, &mut y));
            report(&format!("{isa:?}, one thread"), secs);
        }
        let secs = best_secs(&mut || matrix.multiply(&acts, &mut y, Isa::detect()).unwrap());
        report("detected, every core", secs);
    }

    #[test]
    fn too_many_rows_or_wrong_width_is_an_error_not_a_panic() {
        let (gemv, _) = case(GgmlDType::Q8_0, 8, 64, 1, 9);
        let acts = QuantizedRows::quantize(&[0.5; (MAX_ROWS + 1) * 64], 64);
        assert!(gemv
            .multiply(&acts, &mut [0.0; 8 * (MAX_ROWS + 1)], Isa::Scalar)
            .is_err());
        let acts = QuantizedRows::quantize(&[0.5; 32], 32);
        assert!(gemv.multiply(&acts, &mut [0.0; 8], Isa::Scalar).is_err());
    }
}
