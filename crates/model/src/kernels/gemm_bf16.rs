//! Prompt rows times a dense matrix in bf16, for CPUs with AVX-512 BF16.
//!
//! A prompt pass multiplies hundreds of rows by every projection: a GEMM,
//! bound by multiply-adds, not by reading the weights. `vdpbf16ps` does two
//! bf16 products per f32 lane where an FMA does one, and AMD's Zen 4 runs the
//! f32 GEMM at half its FMA peak besides. Here the weights are packed once at
//! load, rounded to bf16, in panels of 16 output rows whose pairs of input
//! values fill a register; each pass rounds its activation rows to bf16 and
//! sums the products in f32.
//!
//! Rounding is to nearest even on both sides (the packing's scalar rounding and
//! `vcvtneps2bf16` agree), so the scalar kernel, the test reference, reads the
//! same operands as the AVX-512 one and differs only in the order of its sums.

use candle_core::{Device, Tensor};

use crate::Result;

/// Output rows per panel: one f32 register of results.
const PANEL: usize = 16;
/// Activation rows per micro-tile (8 rows × 2 panels = 16 accumulators).
const TILE_ROWS: usize = 8;
/// Panels per micro-tile.
const TILE_PANELS: usize = 2;
/// Activation rows per parallel task.
const TASK_ROWS: usize = 64;
/// Panels per parallel task: 64 output rows, ≤ 256 KiB of packed weights at
/// 2,048 inputs, which a task rereads from L2 for each of its micro-tiles.
const TASK_PANELS: usize = 4;

/// The kernels that can run the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bf16Kernel {
    /// Portable Rust, the reference (too slow to serve with).
    #[cfg_attr(not(test), allow(dead_code))]
    Scalar,
    /// AVX-512 F with BF16 dot products.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Bf16Kernel {
    /// The AVX-512 kernel where the CPU and the OS allow it (and
    /// `PROPHETKV_CPU_KERNELS` does not ask for less than `avx512`).
    pub(crate) fn fastest() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = super::Isa::detect() == super::Isa::Avx512Vnni
                && is_x86_feature_detected!("avx512bf16");
            if avx512 {
                return Some(Self::Avx512);
            }
        }
        None
    }
}

/// A dense `(out, in)` matrix rounded to bf16 and packed for [`Bf16Gemm::forward`].
#[derive(Debug, Clone)]
pub(crate) struct Bf16Gemm {
    /// Panels of [`PANEL`] output rows, each `pairs` steps of `PANEL` × 2
    /// values (output row, then the two inputs of the pair), zero-padded to a
    /// whole micro-tile of panels.
    packed: Vec<u16>,
    out: usize,
    cols: usize,
    /// Input pairs per row (`cols` rounded up to even, halved).
    pairs: usize,
    kernel: Bf16Kernel,
}

impl Bf16Gemm {
    /// Packs the f32 `(out, in)` matrix `w`, if this CPU has a bf16 kernel.
    pub(crate) fn new(w: &Tensor) -> Result<Option<Self>> {
        let Some(kernel) = Bf16Kernel::fastest() else {
            return Ok(None);
        };
        let (out, cols) = w.dims2()?;
        let values = w.flatten_all()?.to_vec1::<f32>()?;
        Ok(Some(Self::with_kernel(&values, out, cols, kernel)))
    }

    fn with_kernel(w: &[f32], out: usize, cols: usize, kernel: Bf16Kernel) -> Self {
        debug_assert_eq!(w.len(), out * cols);
        let pairs = cols.div_ceil(2);
        let panels = out.div_ceil(PANEL * TILE_PANELS) * TILE_PANELS;
        let mut packed = vec![0u16; panels * pairs * PANEL * 2];
        for (r, row) in w.chunks_exact(cols).enumerate() {
            let (panel, lane) = (r / PANEL, r % PANEL);
            for (c, &v) in row.iter().enumerate() {
                let at = ((panel * pairs + c / 2) * PANEL + lane) * 2 + c % 2;
                packed[at] = to_bf16(v);
            }
        }
        Self {
            packed,
            out,
            cols,
            pairs,
            kernel,
        }
    }

    /// Bytes of the packed weights.
    pub(crate) fn resident_bytes(&self) -> usize {
        self.packed.len() * 2
    }

    /// `(out, in)` of the matrix.
    pub(crate) fn dims(&self) -> [usize; 2] {
        [self.out, self.cols]
    }

    /// `x W^T` for `x` of shape `(.., in)`; `(.., out)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let cols = dims.pop().unwrap_or(0);
        if cols != self.cols || !matches!(x.device(), Device::Cpu) {
            return Err(crate::ModelError::input(format!(
                "bf16 product of rows of {cols} values with a ({}, {}) matrix",
                self.out, self.cols
            )));
        }
        let rows: usize = dims.iter().product();
        let values = x.flatten_all()?.to_vec1::<f32>()?;
        let mut y = vec![0f32; rows * self.out];
        self.multiply(&values, rows, &mut y);
        dims.push(self.out);
        Ok(Tensor::from_vec(y, dims, x.device())?)
    }

    /// `y = x W^T`, `x` and `y` row-major, on every core.
    fn multiply(&self, x: &[f32], rows: usize, y: &mut [f32]) {
        let acts = self.round_rows(x, rows);
        let row_tasks = rows.div_ceil(TASK_ROWS);
        let panels = self.packed.len() / (self.pairs * PANEL * 2);
        let panel_tasks = panels.div_ceil(TASK_PANELS);
        assert_eq!(y.len(), rows * self.out);
        let y_addr = y.as_mut_ptr() as usize;
        candle_core::utils::barrier_pool().execute_chunked(row_tasks * panel_tasks, |range| {
            for task in range {
                let (rt, pt) = (task / panel_tasks, task % panel_tasks);
                let rows_here = rt * TASK_ROWS..(rt * TASK_ROWS + TASK_ROWS).min(rows);
                let panels_here = pt * TASK_PANELS..(pt * TASK_PANELS + TASK_PANELS).min(panels);
                // Tasks share `y` by its address: each writes only its own
                // rows' values for its own panels' outputs.
                self.task(&acts, rows_here, panels_here, y_addr as *mut f32);
            }
        });
    }

    /// The activation rows in bf16, `2 * pairs` values a row, padded with
    /// zero rows to whole micro-tiles.
    fn round_rows(&self, x: &[f32], rows: usize) -> Vec<u16> {
        let stride = 2 * self.pairs;
        let mut acts = vec![0u16; rows.div_ceil(TILE_ROWS) * TILE_ROWS * stride];
        for (row, out) in x.chunks_exact(self.cols).zip(acts.chunks_exact_mut(stride)) {
            round_into(row, &mut out[..self.cols], self.kernel);
        }
        acts
    }

    /// One task's outputs, into the `rows * out` values at `y`: activation
    /// rows `rows` against panels `panels`.
    fn task(
        &self,
        acts: &[u16],
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        y: *mut f32,
    ) {
        let stride = 2 * self.pairs;
        let panel_len = self.pairs * PANEL * 2;
        for first_panel in panels.step_by(TILE_PANELS) {
            let b = &self.packed[first_panel * panel_len..(first_panel + TILE_PANELS) * panel_len];
            for first_row in rows.clone().step_by(TILE_ROWS) {
                let a = &acts[first_row * stride..(first_row + TILE_ROWS) * stride];
                let tile = Tile {
                    rows: (rows.end - first_row).min(TILE_ROWS),
                    first_row,
                    first_out: first_panel * PANEL,
                    outs: self
                        .out
                        .saturating_sub(first_panel * PANEL)
                        .min(PANEL * TILE_PANELS),
                };
                if tile.outs == 0 {
                    continue;
                }
                // SAFETY (both kernels): the tile's valid rows and outputs lie
                // inside `y`'s `rows * out` values, and no other task writes
                // them; `fastest` found AVX-512 F and BF16 on this CPU and OS;
                // `a` holds a micro-tile of rows and `b` a micro-tile of
                // panels, each `pairs` long.
                match self.kernel {
                    Bf16Kernel::Scalar => unsafe {
                        tile_scalar(a, b, self.pairs, &tile, y, self.out)
                    },
                    #[cfg(target_arch = "x86_64")]
                    Bf16Kernel::Avx512 => unsafe {
                        tile_avx512(a, b, self.pairs, &tile, y, self.out)
                    },
                }
            }
        }
    }
}

/// Where a micro-tile's results go in the output.
struct Tile {
    /// Valid activation rows (the rest are padding).
    rows: usize,
    first_row: usize,
    first_out: usize,
    /// Valid outputs (the rest are padding panels).
    outs: usize,
}

/// `v` rounded to the nearest bf16, ties to even (NaN stays NaN).
fn to_bf16(v: f32) -> u16 {
    half::bf16::from_f32(v).to_bits()
}

/// `x` rounded to bf16 into `out`.
fn round_into(x: &[f32], out: &mut [u16], kernel: Bf16Kernel) {
    match kernel {
        Bf16Kernel::Scalar => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = to_bf16(v);
            }
        }
        // SAFETY: `fastest` found AVX-512 F and BF16 on this CPU and OS.
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Avx512 => unsafe { avx512::round_into(x, out) },
    }
}

fn bf16_value(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// The scalar micro-tile: each output as the sum over input pairs.
///
/// # Safety
/// `y` must be valid for writes at every output of the tile's valid rows
/// (row stride `ldy`), with no other thread writing them.
unsafe fn tile_scalar(a: &[u16], b: &[u16], pairs: usize, tile: &Tile, y: *mut f32, ldy: usize) {
    let stride = 2 * pairs;
    let panel_len = pairs * PANEL * 2;
    for i in 0..tile.rows {
        let row = &a[i * stride..(i + 1) * stride];
        for o in 0..tile.outs {
            let (panel, lane) = (o / PANEL, o % PANEL);
            let mut acc = 0f32;
            for k in 0..pairs {
                let w = &b[panel * panel_len + (k * PANEL + lane) * 2..][..2];
                acc += bf16_value(row[2 * k + 1]) * bf16_value(w[1]);
                acc += bf16_value(row[2 * k]) * bf16_value(w[0]);
            }
            *y.add((tile.first_row + i) * ldy + tile.first_out + o) = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
use avx512::tile as tile_avx512;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Tile, PANEL, TILE_PANELS, TILE_ROWS};

    /// [`super::tile_scalar`] with one `vdpbf16ps` per row, panel and pair.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and BF16; `a` must hold [`TILE_ROWS`]
    /// rows of `2 * pairs` values and `b` [`TILE_PANELS`] panels of `pairs`
    /// steps; `y` as for [`super::tile_scalar`].
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn tile(
        a: &[u16],
        b: &[u16],
        pairs: usize,
        tile: &Tile,
        y: *mut f32,
        ldy: usize,
    ) {
        let stride = 2 * pairs;
        let panel_len = pairs * PANEL * 2;
        assert!(a.len() >= TILE_ROWS * stride && b.len() >= TILE_PANELS * panel_len);
        let (a, b0, b1) = (a.as_ptr(), b.as_ptr(), b.as_ptr().add(panel_len));
        let mut acc = [[_mm512_setzero_ps(); TILE_PANELS]; TILE_ROWS];
        for k in 0..pairs {
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b0.add(k * 32).cast()));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b1.add(k * 32).cast()));
            for (i, acc) in acc.iter_mut().enumerate() {
                let pair = a.add(i * stride + 2 * k).cast::<i32>().read_unaligned();
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                acc[0] = _mm512_dpbf16_ps(acc[0], x, w0);
                acc[1] = _mm512_dpbf16_ps(acc[1], x, w1);
            }
        }
        for (i, acc) in acc.iter().enumerate().take(tile.rows) {
            let out = y.add((tile.first_row + i) * ldy + tile.first_out);
            for (p, &v) in acc.iter().enumerate() {
                let valid = tile.outs.saturating_sub(p * PANEL).min(PANEL);
                let mask: __mmask16 = ((1u32 << valid) - 1) as __mmask16;
                _mm512_mask_storeu_ps(out.add(p * PANEL), mask, v);
            }
        }
    }

    /// `x` rounded to bf16 (nearest, ties to even) into `out`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_into(x: &[f32], out: &mut [u16]) {
        let n = x.len().min(out.len());
        let whole = n / 16 * 16;
        for at in (0..whole).step_by(16) {
            let v = _mm512_loadu_ps(x.as_ptr().add(at));
            let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
            _mm256_storeu_si256(out.as_mut_ptr().add(at).cast(), h);
        }
        for at in whole..n {
            out[at] = super::to_bf16(x[at]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-2.0..2.0)).collect()
    }

    /// Every kernel this CPU has, the scalar one first.
    fn kernels() -> Vec<Bf16Kernel> {
        let mut all = vec![Bf16Kernel::Scalar];
        all.extend(Bf16Kernel::fastest());
        all
    }

    #[test]
    fn each_kernel_matches_the_f32_product_of_the_rounded_operands() {
        // Odd sizes: rows and outputs off the tile grid, an odd input count.
        for (rows, out, cols, seed) in [(1, 5, 3, 1), (13, 37, 64, 2), (70, 130, 641, 3)] {
            let (w, x) = (random(out * cols, seed), random(rows * cols, seed + 10));
            let round = |v: &[f32]| {
                v.iter()
                    .map(|&v| bf16_value(to_bf16(v)))
                    .collect::<Vec<_>>()
            };
            let (wr, xr) = (round(&w), round(&x));
            for kernel in kernels() {
                let gemm = Bf16Gemm::with_kernel(&w, out, cols, kernel);
                let mut y = vec![f32::NAN; rows * out];
                gemm.multiply(&x, rows, &mut y);
                for i in 0..rows {
                    for o in 0..out {
                        let (xs, ws) = (&xr[i * cols..][..cols], &wr[o * cols..][..cols]);
                        let want: f64 = xs.iter().zip(ws).map(|(a, b)| (a * b) as f64).sum();
                        let size: f64 = xs.iter().zip(ws).map(|(a, b)| (a * b).abs() as f64).sum();
                        let got = y[i * out + o] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * size.max(1.0),
                            "{kernel:?} ({rows}, {out}, {cols}) [{i}, {o}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rounding_is_the_same_in_every_kernel() {
        let mut x = random(1000, 5);
        x.extend([0.0, -0.0, f32::MAX, f32::MIN_POSITIVE, 1.0 + f32::EPSILON]);
        let reference: Vec<u16> = x.iter().map(|&v| to_bf16(v)).collect();
        for kernel in kernels() {
            let mut got = vec![0u16; x.len()];
            round_into(&x, &mut got, kernel);
            assert_eq!(got, reference, "{kernel:?}");
        }
    }

    #[test]
    fn forward_keeps_leading_dimensions_and_refuses_a_wrong_width() {
        let gemm = Bf16Gemm::with_kernel(&random(6 * 4, 7), 6, 4, Bf16Kernel::Scalar);
        let x = Tensor::from_vec(random(2 * 3 * 4, 8), (2, 3, 4), &Device::Cpu).unwrap();
        assert_eq!(gemm.forward(&x).unwrap().dims(), &[2, 3, 6]);
        let wrong = Tensor::zeros((2, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(gemm.forward(&wrong).is_err());
    }
}
