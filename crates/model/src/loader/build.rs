//! Assembles a [`Model`] from a [`WeightSource`] and a [`ModelConfig`].

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};

use super::source::{Stored, WeightSource, W};
use super::LoadOptions;
use crate::config::{Family, ModelConfig};
use crate::kernels::Bf16Gemm;
use crate::layers::block::{Attention, Block};
use crate::layers::embedding::Embedding;
use crate::layers::linear::Linear;
use crate::layers::mlp::Mlp;
use crate::layers::norm::RmsNorm;
use crate::layers::rope::Rope;
use crate::model::Model;
use crate::model::WeightPath;
use crate::{ModelError, Result};

pub(crate) fn build_model(
    source: &mut dyn WeightSource,
    config: ModelConfig,
    options: &LoadOptions,
) -> Result<Model> {
    config.validate()?;
    check_dtype(options)?;
    let names = source.names().clone();
    let c = &config;
    // The last layer's weights must be there before anything is allocated
    // per layer: a damaged layer count is refused, not allocated for.
    let last = names.name(W::AttnNorm, c.num_layers().saturating_sub(1));
    if !source.has(&last) {
        return Err(ModelError::weight(
            last,
            format!("missing, yet the model claims {} layers", c.num_layers()),
        ));
    }

    let embed_name = names.name(W::Embed, 0);
    let embed = embedding_for(source.stored(&embed_name)?, options)?;
    expect_dims(&embed.dims(), &[c.vocab_size, c.hidden_size], &embed_name)?;
    let output_name = names.name(W::Output, 0);
    let tied = !source.has(&output_name);
    let (lm_head, lm_head_tied) = if !tied {
        let head = head_for(source.stored(&output_name)?, options)?;
        expect_dims(&head.dims(), &[c.vocab_size, c.hidden_size], &output_name)?;
        (head, false)
    } else {
        // Tied: the output projection multiplies the embedding table as kept,
        // except that the mixed path gives an f32 table its own Q8_0 copy.
        match &embed {
            Embedding::Quantized(q) => (Linear::quantized(QMatMul::from_arc(q.clone())?), true),
            Embedding::Dense(t) if options.weight_path.is_mixed() => match quantize_q8(t)? {
                Some(q) => (Linear::quantized(QMatMul::from_qtensor(q)?), false),
                None => (Linear::dense(t.clone()), true),
            },
            Embedding::Dense(t) => (Linear::dense(t.clone()), true),
        }
    };

    // Layer kinds: distinct (window, rope) pairs, shared by the layers that have them.
    let mut kinds: Vec<(Option<usize>, crate::config::RopeConfig)> = Vec::new();
    let mut layer_kinds = Vec::with_capacity(c.num_layers());
    for layer in &c.layers {
        let key = (layer.sliding_window, layer.rope.clone());
        let idx = match kinds.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                kinds.push(key);
                kinds.len() - 1
            }
        };
        layer_kinds.push(idx);
    }

    let mut blocks = Vec::with_capacity(c.num_layers());
    for (i, &kind) in layer_kinds.iter().enumerate() {
        blocks.push(build_block(source, c, i, kind, options)?);
    }
    let final_norm = norm(
        source,
        c,
        &names.name(W::FinalNorm, 0),
        c.hidden_size,
        options.dtype,
    )?;
    let ropes = kinds
        .iter()
        .map(|(_, rope)| {
            Rope::new(
                rope,
                c.head_dim,
                c.rope_style,
                options.dtype,
                &options.device,
            )
        })
        .collect();
    let kind_windows = kinds.iter().map(|(w, _)| *w).collect();
    tracing::debug!(
        layers = c.num_layers(),
        kinds = layer_kinds.len(),
        "model assembled"
    );
    Ok(Model {
        config,
        device: options.device.clone(),
        dtype: options.dtype,
        weight_path: options.weight_path,
        embed,
        blocks,
        final_norm,
        lm_head,
        lm_head_tied,
        ropes,
        kind_windows,
        layer_kinds,
    })
}

fn build_block(
    source: &mut dyn WeightSource,
    c: &ModelConfig,
    i: usize,
    kind: usize,
    options: &LoadOptions,
) -> Result<Block> {
    let names = source.names().clone();
    let n = |w: W| names.name(w, i);
    let gemma = c.family == Family::Gemma3;
    let post_attn_norm = if gemma {
        Some(norm(
            source,
            c,
            &n(W::PostAttnNorm),
            c.hidden_size,
            options.dtype,
        )?)
    } else {
        None
    };
    let post_mlp_norm = if gemma {
        Some(norm(
            source,
            c,
            &n(W::PostMlpNorm),
            c.hidden_size,
            options.dtype,
        )?)
    } else {
        None
    };
    Ok(Block {
        attn_norm: norm(source, c, &n(W::AttnNorm), c.hidden_size, options.dtype)?,
        attn: build_attention(source, c, &n, options)?,
        post_attn_norm,
        mlp_norm: norm(source, c, &n(W::MlpNorm), c.hidden_size, options.dtype)?,
        mlp: build_mlp(source, c, &n, options)?,
        post_mlp_norm,
        kind,
    })
}

/// A block's attention: projections (with biases where the model has
/// them) and q/k norms; `n` names the block's weights.
fn build_attention(
    source: &mut dyn WeightSource,
    c: &ModelConfig,
    n: &dyn Fn(W) -> String,
    options: &LoadOptions,
) -> Result<Attention> {
    let q_out = c.num_heads * c.head_dim;
    let kv_out = c.num_kv_heads * c.head_dim;
    let mut proj = |w: W, bias: W, out: usize| -> Result<Linear> {
        let linear = checked_linear(source, &n(w), options, [out, c.hidden_size])?;
        let bias = if c.qkv_bias {
            let b = source.dense(&n(bias))?;
            expect_shape(&b, &[out], &n(bias))?;
            Some(b.to_dtype(options.dtype)?)
        } else {
            None
        };
        Ok(linear.with_bias(bias))
    };
    let q = proj(W::Q, W::QBias, q_out)?;
    let k = proj(W::K, W::KBias, kv_out)?;
    let v = proj(W::V, W::VBias, kv_out)?;
    let o = checked_linear(source, &n(W::O), options, [c.hidden_size, q_out])?;
    let (q_norm, k_norm) = if c.qk_norm {
        (
            Some(norm(source, c, &n(W::QNorm), c.head_dim, options.dtype)?),
            Some(norm(source, c, &n(W::KNorm), c.head_dim, options.dtype)?),
        )
    } else {
        (None, None)
    };
    Ok(Attention {
        q,
        k,
        v,
        o,
        q_norm,
        k_norm,
        num_heads: c.num_heads,
        num_kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
        scale: c.attn_scale,
    })
}

/// A block's gated MLP; `n` names the block's weights.
fn build_mlp(
    source: &mut dyn WeightSource,
    c: &ModelConfig,
    n: &dyn Fn(W) -> String,
    options: &LoadOptions,
) -> Result<Mlp> {
    let (inner, hidden) = (c.intermediate_size, c.hidden_size);
    Ok(Mlp {
        gate: checked_linear(source, &n(W::Gate), options, [inner, hidden])?,
        up: checked_linear(source, &n(W::Up), options, [inner, hidden])?,
        down: checked_linear(source, &n(W::Down), options, [hidden, inner])?,
        activation: c.activation,
    })
}

/// Loads an RMS norm weight; Gemma's `1 + w` is applied here for formats
/// that store `w` (GGUF converters already store `1 + w`).
fn norm(
    source: &mut dyn WeightSource,
    c: &ModelConfig,
    name: &str,
    size: usize,
    dtype: DType,
) -> Result<RmsNorm> {
    let mut w = source.dense(name)?.to_dtype(DType::F32)?;
    expect_shape(&w, &[size], name)?;
    if c.family == Family::Gemma3 && matches!(source.names(), super::source::WeightNames::Hf { .. })
    {
        w = (w + 1.0)?;
    }
    Ok(RmsNorm::new(w.to_dtype(dtype)?, c.rms_norm_eps))
}

fn checked_linear(
    source: &mut dyn WeightSource,
    name: &str,
    options: &LoadOptions,
    dims: [usize; 2],
) -> Result<Linear> {
    let linear = linear_for(source.stored(name)?, options)?;
    expect_dims(&linear.dims(), &dims, name)?;
    Ok(linear)
}

/// A block's projection in the copies the weight path keeps: the stored
/// matrix for matrix-vector steps and, on the mixed path, its f32 form for
/// GEMMs (float weights get a Q8_0 copy for the former).
fn linear_for(stored: Stored, options: &LoadOptions) -> Result<Linear> {
    if !options.device.is_cpu() {
        return Ok(Linear::dense(on_device(stored, options)?));
    }
    Ok(match (options.weight_path, stored) {
        (WeightPath::F32, stored) => Linear::dense(into_f32(stored, &options.device)?),
        (WeightPath::Quantized, Stored::Quantized(q)) => {
            Linear::quantized(QMatMul::from_qtensor(*q)?)
        }
        (WeightPath::Quantized, Stored::Float(t)) => Linear::dense(t),
        (WeightPath::Mixed | WeightPath::MixedBf16, Stored::Quantized(q)) => {
            let dense = q.dequantize(&options.device)?.to_dtype(DType::F32)?;
            mixed_linear(options.weight_path, QMatMul::from_qtensor(*q)?, dense)?
        }
        (WeightPath::Mixed | WeightPath::MixedBf16, Stored::Float(t)) => match quantize_q8(&t)? {
            Some(q) => mixed_linear(options.weight_path, QMatMul::from_qtensor(q)?, t)?,
            None => Linear::dense(t),
        },
    })
}

/// Quantized weights with their f32 form `dense`, which `mixed-bf16` keeps
/// in bf16 where this CPU has the bf16 GEMM.
fn mixed_linear(path: WeightPath, quantized: QMatMul, dense: Tensor) -> Result<Linear> {
    if path == WeightPath::MixedBf16 {
        if let Some(packed) = Bf16Gemm::new(&dense)? {
            return Ok(Linear::both_bf16(quantized, packed));
        }
    }
    Ok(Linear::both(quantized, dense))
}

/// The output projection: one row per step, so never an f32 copy where a
/// quantized one exists (it is the largest matrix of a large-vocabulary model).
fn head_for(stored: Stored, options: &LoadOptions) -> Result<Linear> {
    if !options.device.is_cpu() {
        return Ok(Linear::dense(on_device(stored, options)?));
    }
    Ok(match (options.weight_path, stored) {
        (WeightPath::F32, stored) => Linear::dense(into_f32(stored, &options.device)?),
        (_, Stored::Quantized(q)) => Linear::quantized(QMatMul::from_qtensor(*q)?),
        (WeightPath::Mixed | WeightPath::MixedBf16, Stored::Float(t)) => match quantize_q8(&t)? {
            Some(q) => Linear::quantized(QMatMul::from_qtensor(q)?),
            None => Linear::dense(t),
        },
        (WeightPath::Quantized, Stored::Float(t)) => Linear::dense(t),
    })
}

/// The embedding table: a quantized file's table stays quantized on the CPU
/// (rows are dequantized on lookup, to the same values the f32 path holds);
/// float tables stay f32, so that prefill matches the f32 path exactly.
fn embedding_for(stored: Stored, options: &LoadOptions) -> Result<Embedding> {
    Ok(match (options.weight_path, stored) {
        (WeightPath::F32, stored) => Embedding::Dense(on_device(stored, options)?),
        (_, Stored::Quantized(q)) if options.device.is_cpu() => Embedding::Quantized(Arc::new(*q)),
        (_, stored) => Embedding::Dense(on_device(stored, options)?),
    })
}

/// A GPU keeps one dense copy of every matrix in the model's element type
/// (quantized files are dequantized once, at load): its GEMMs and
/// matrix-vector products both run on tensor cores from that copy.
fn on_device(stored: Stored, options: &LoadOptions) -> Result<Tensor> {
    Ok(into_f32(stored, &options.device)?.to_dtype(options.dtype)?)
}

/// The CPU runtime computes in f32 only; a GPU in bf16, f16 or f32.
fn check_dtype(options: &LoadOptions) -> Result<()> {
    match options.dtype {
        DType::F32 => Ok(()),
        DType::BF16 | DType::F16 if !options.device.is_cpu() => Ok(()),
        DType::BF16 | DType::F16 => Err(ModelError::Device(format!(
            "{:?} runs on a GPU only; the CPU runtime computes in f32",
            options.dtype
        ))),
        other => Err(ModelError::Device(format!(
            "{other:?} is not a compute type (f32, bf16 or f16)"
        ))),
    }
}

fn into_f32(stored: Stored, device: &Device) -> Result<Tensor> {
    Ok(match stored {
        Stored::Quantized(q) => q.dequantize(device)?.to_dtype(DType::F32)?,
        Stored::Float(t) => t,
    })
}

/// A Q8_0 copy of a CPU float matrix whose rows split into 32-value blocks.
fn quantize_q8(t: &Tensor) -> Result<Option<QTensor>> {
    let cols = t.dims().last().copied().unwrap_or(0);
    if !t.device().is_cpu() || cols == 0 || cols % GgmlDType::Q8_0.block_size() != 0 {
        return Ok(None);
    }
    Ok(Some(QTensor::quantize(t, GgmlDType::Q8_0)?))
}

fn expect_dims(found: &[usize], dims: &[usize], name: &str) -> Result<()> {
    if found != dims {
        return Err(ModelError::weight(
            name,
            format!("expected shape {dims:?}, found {found:?}"),
        ));
    }
    Ok(())
}

pub(crate) fn expect_shape(t: &Tensor, dims: &[usize], name: &str) -> Result<()> {
    expect_dims(t.dims(), dims, name)
}
