//! CPU kernels for the decode step's matrix-vector products, chosen at run time.
//!
//! A decode step reads every weight once per token, so its speed is the speed
//! at which the quantized weights stream through the cores. candle's kernels
//! cover Q4_K and Q6_K well, but Q5_0 and Q4_1 have no SIMD path there and
//! Q8_0 rows whose length is not a multiple of 256 (every projection of a
//! 640-wide model, the output projection included) miss its fast path. These kernels
//! fill that gap: one dot product per block format and instruction set,
//! behind [`Isa::detect`], which asks the CPU *and* the OS (a binary built for
//! a portable baseline runs its AVX-512 code only where the kernel enabled
//! the AVX-512 state).
//!
//! The MLP's gated GELU and SiLU get the same treatment (libm's `tanhf` and
//! `expf` are scalar), and so does attention's softmax, which masks by
//! position as it reads ([`softmax`]).
//!
//! Prompt rows on CPUs with AVX-512 BF16 can take a bf16 GEMM
//! ([`gemm_bf16`]): twice the multiply-adds per instruction of the f32 one.
//!
//! Every SIMD kernel is tested against the scalar one on random inputs.
//!
//! The CUDA build adds two GPU kernels: attention in one pass on tensor cores
//! ([`flash_attention`], bf16 and f16, checked against the chunked path by
//! `prophetkv bench attention`), and the chunked path's softmax with the
//! position mask applied inside ([`masked_softmax`], checked against the CPU
//! by `prophetkv bench numerics`).

mod activation;
mod avx2;
mod avx512;
#[cfg(feature = "cuda")]
mod flash_attention;
mod formats;
mod gemm_bf16;
mod gemv;
mod isa;
#[cfg(feature = "cuda")]
mod masked_softmax;
mod scalar;
mod softmax;

pub(crate) use activation::{gelu_tanh_mul, silu_mul};
#[cfg(feature = "cuda")]
pub(crate) use flash_attention::{flash_attention, runs_on as flash_runs_on};
pub(crate) use gemm_bf16::Bf16Gemm;
pub(crate) use gemv::{QuantGemv, MAX_ROWS};
pub use isa::Isa;
#[cfg(feature = "cuda")]
pub(crate) use masked_softmax::masked_softmax;
pub(crate) use softmax::masked_softmax_cpu;

/// Whether this CPU and OS run `mixed-bf16`'s bf16 GEMM for prompt rows;
/// where they do not, `mixed-bf16` computes prompt rows as `mixed` does.
pub fn bf16_prompt_gemm() -> bool {
    gemm_bf16::Bf16Kernel::fastest().is_some()
}

/// Rows (query × head-in-group pairs) per block of the flash-attention
/// kernel: the host plans one key range per tile of this many rows.
pub(crate) const FLASH_TILE_ROWS: usize = 64;

/// Head sizes the flash-attention kernel is built for.
pub(crate) const FLASH_HEAD_DIMS: [usize; 3] = [64, 128, 256];
