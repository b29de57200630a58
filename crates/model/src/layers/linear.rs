//! A projection `y = x W^T (+ b)` over quantized weights, dense weights, or both.
//!
//! With both, the pass picks the copy. Prompt rows (prefill, a document's
//! cache, Stage I, a recompute) always take the f32 copy: a row's keys and
//! values must not depend on how many rows share its pass, or a question of
//! 12 tokens, or the 13-token anchor every document attends to, would carry
//! the 8-bit activations of the quantized kernels where full prefill has f32
//! ones (on SmolLM2 that alone moved the first-token logits of ProphetKV at
//! ratio 1 by 0.24 from full's). Decode steps of a few rows are matrix-vector
//! products bound by reading the weights, so the smaller quantized copy wins;
//! a decode batch of many rows is a GEMM again and takes the f32 copy.

use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};

use crate::kernels::{self, Bf16Gemm, QuantGemv};
use crate::Result;

/// From this many rows on, a decode step with a dense copy uses it.
///
/// Below it the quantized kernels, which read each weight once for all rows,
/// beat the f32 GEMM on every format of the default model (timed on a 2-core
/// AVX-512 machine: Q5_0 2048×640 at 16 rows 0.98 ms vs 1.03 ms, Q4_K and
/// Q6_K still 4× faster), and one pass of our Q5_0/Q8_0 kernels over the
/// weights takes up to [`kernels::MAX_ROWS`] rows.
pub(crate) const GEMM_MIN_ROWS: usize = kernels::MAX_ROWS + 1;

/// What a pass computes, which picks the copy of weights kept in both forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PassKind {
    /// Rows of a prompt (prefill, a cache, a probe, a recompute): the f32 copy.
    Prompt,
    /// A decode step: the quantized copy below [`GEMM_MIN_ROWS`] rows.
    Step,
}

/// Block-quantized weights, multiplied as stored: by our kernels where they
/// handle the format (at any number of rows: 2.6× candle's Q5_0 product at
/// 512), else by candle's.
#[derive(Debug, Clone)]
struct Quantized {
    matmul: QMatMul,
    gemv: Option<QuantGemv>,
}

impl Quantized {
    fn new(matmul: QMatMul) -> Self {
        let gemv = match &matmul {
            QMatMul::QTensor(q) => QuantGemv::new(q.clone()),
            QMatMul::Tensor(_) | QMatMul::TensorF16(_) => None,
        };
        Self { matmul, gemv }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.gemv {
            Some(gemv) if x.rank() == 2 => gemv.forward(x),
            _ => Ok(self.matmul.forward(x)?),
        }
    }

    fn resident_bytes(&self) -> usize {
        match &self.matmul {
            QMatMul::QTensor(q) => q.storage_size_in_bytes(),
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => tensor_bytes(t),
        }
    }
}

/// The copies of a projection's `(out, in)` weights that the weight path keeps.
#[derive(Debug, Clone)]
enum Copies {
    /// Block-quantized, multiplied as stored.
    Quantized(Quantized),
    /// Dense f32.
    Dense(Tensor),
    /// Both, chosen per call by the number of rows.
    Both { quantized: Quantized, dense: Dense },
}

/// The dense copy a projection keeps beside its quantized one, for GEMMs.
#[derive(Debug, Clone)]
enum Dense {
    /// f32, multiplied by candle's GEMM.
    F32(Tensor),
    /// bf16, packed for the AVX-512 BF16 GEMM.
    Bf16(Bf16Gemm),
}

impl Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Dense::F32(d) => Ok(x.matmul(&d.t()?)?),
            Dense::Bf16(packed) => packed.forward(x),
        }
    }

    fn dims(&self) -> Vec<usize> {
        match self {
            Dense::F32(d) => d.dims().to_vec(),
            Dense::Bf16(packed) => packed.dims().to_vec(),
        }
    }

    fn resident_bytes(&self) -> usize {
        match self {
            Dense::F32(d) => tensor_bytes(d),
            Dense::Bf16(packed) => packed.resident_bytes(),
        }
    }
}

/// Weights of one projection plus its optional bias.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weights: Copies,
    /// Optional bias of length `out`.
    bias: Option<Tensor>,
}

impl Linear {
    /// A projection over quantized weights only.
    pub(crate) fn quantized(weight: QMatMul) -> Self {
        Self {
            weights: Copies::Quantized(Quantized::new(weight)),
            bias: None,
        }
    }

    /// A projection over dense f32 weights only.
    pub(crate) fn dense(weight: Tensor) -> Self {
        Self {
            weights: Copies::Dense(weight),
            bias: None,
        }
    }

    /// A projection that keeps both copies of the same weights.
    pub(crate) fn both(quantized: QMatMul, dense: Tensor) -> Self {
        Self {
            weights: Copies::Both {
                quantized: Quantized::new(quantized),
                dense: Dense::F32(dense),
            },
            bias: None,
        }
    }

    /// A projection that keeps the quantized weights and their bf16 form.
    pub(crate) fn both_bf16(quantized: QMatMul, packed: Bf16Gemm) -> Self {
        Self {
            weights: Copies::Both {
                quantized: Quantized::new(quantized),
                dense: Dense::Bf16(packed),
            },
            bias: None,
        }
    }

    /// The same projection with a bias added to its output.
    pub(crate) fn with_bias(self, bias: Option<Tensor>) -> Self {
        Self { bias, ..self }
    }

    /// Applies the projection to `(rows, in)` in a pass of `kind`, giving `(rows, out)`.
    pub(crate) fn forward(&self, x: &Tensor, kind: PassKind) -> Result<Tensor> {
        let rows = x.dims().iter().rev().skip(1).product::<usize>();
        let y = match &self.weights {
            Copies::Both { quantized, dense } => {
                if kind == PassKind::Step && rows < GEMM_MIN_ROWS {
                    quantized.forward(x)?
                } else {
                    dense.forward(x)?
                }
            }
            Copies::Quantized(q) => q.forward(x)?,
            Copies::Dense(d) => x.matmul(&d.t()?)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// `(out, in)` of the weight matrix.
    pub(crate) fn dims(&self) -> Vec<usize> {
        match &self.weights {
            Copies::Dense(d) => d.dims().to_vec(),
            Copies::Both { dense, .. } => dense.dims(),
            Copies::Quantized(q) => match &q.matmul {
                QMatMul::QTensor(q) => q.shape().dims().to_vec(),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims().to_vec(),
            },
        }
    }

    /// Bytes the weights (every copy) and the bias occupy.
    pub(crate) fn resident_bytes(&self) -> usize {
        let weights = match &self.weights {
            Copies::Quantized(q) => q.resident_bytes(),
            Copies::Dense(d) => tensor_bytes(d),
            Copies::Both { quantized, dense } => {
                quantized.resident_bytes() + dense.resident_bytes()
            }
        };
        weights + self.bias.as_ref().map_or(0, tensor_bytes)
    }
}

/// Bytes of a tensor's elements.
pub(crate) fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}
