//! Assembles a [`Model`] from a [`WeightSource`] and a [`ModelConfig`].

use candle_core::Tensor;

use super::source::{WeightSource, W};
use super::LoadOptions;
use crate::config::{Family, ModelConfig};
use crate::layers::block::{Attention, Block};
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
    let names = source.names().clone();
    let c = &config;

    let embed = source.dense(&names.name(W::Embed, 0))?;
    expect_shape(
        &embed,
        &[c.vocab_size, c.hidden_size],
        &names.name(W::Embed, 0),
    )?;
    let output_name = names.name(W::Output, 0);
    let lm_head = if source.has(&output_name) {
        checked_linear(
            source,
            &output_name,
            options.weight_path,
            [c.vocab_size, c.hidden_size],
        )?
    } else if options.weight_path == crate::model::WeightPath::F32 {
        // Tied: share the f32 table with the embedding lookup.
        Linear::Dense {
            weight: embed.clone(),
            bias: None,
        }
    } else {
        // Tied: the quantized path multiplies the stored (quantized) table.
        source.linear(&names.name(W::Embed, 0), options.weight_path)?
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
    let final_norm = norm(source, c, &names.name(W::FinalNorm, 0), c.hidden_size)?;
    let ropes = kinds
        .iter()
        .map(|(_, rope)| Rope::new(rope, c.head_dim, c.rope_style))
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
        weight_path: options.weight_path,
        embed,
        blocks,
        final_norm,
        lm_head,
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
        Some(norm(source, c, &n(W::PostAttnNorm), c.hidden_size)?)
    } else {
        None
    };
    let post_mlp_norm = if gemma {
        Some(norm(source, c, &n(W::PostMlpNorm), c.hidden_size)?)
    } else {
        None
    };
    Ok(Block {
        attn_norm: norm(source, c, &n(W::AttnNorm), c.hidden_size)?,
        attn: build_attention(source, c, &n, options.weight_path)?,
        post_attn_norm,
        mlp_norm: norm(source, c, &n(W::MlpNorm), c.hidden_size)?,
        mlp: build_mlp(source, c, &n, options.weight_path)?,
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
    path: WeightPath,
) -> Result<Attention> {
    let q_out = c.num_heads * c.head_dim;
    let kv_out = c.num_kv_heads * c.head_dim;
    let mut proj = |w: W, bias: W, out: usize| -> Result<Linear> {
        let linear = checked_linear(source, &n(w), path, [out, c.hidden_size])?;
        let bias = if c.qkv_bias {
            let b = source.dense(&n(bias))?;
            expect_shape(&b, &[out], &n(bias))?;
            Some(b)
        } else {
            None
        };
        Ok(match linear {
            Linear::Quantized { weight, .. } => Linear::Quantized { weight, bias },
            Linear::Dense { weight, .. } => Linear::Dense { weight, bias },
        })
    };
    let q = proj(W::Q, W::QBias, q_out)?;
    let k = proj(W::K, W::KBias, kv_out)?;
    let v = proj(W::V, W::VBias, kv_out)?;
    let o = checked_linear(source, &n(W::O), path, [c.hidden_size, q_out])?;
    let (q_norm, k_norm) = if c.qk_norm {
        (
            Some(norm(source, c, &n(W::QNorm), c.head_dim)?),
            Some(norm(source, c, &n(W::KNorm), c.head_dim)?),
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
    path: WeightPath,
) -> Result<Mlp> {
    let (inner, hidden) = (c.intermediate_size, c.hidden_size);
    Ok(Mlp {
        gate: checked_linear(source, &n(W::Gate), path, [inner, hidden])?,
        up: checked_linear(source, &n(W::Up), path, [inner, hidden])?,
        down: checked_linear(source, &n(W::Down), path, [hidden, inner])?,
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
) -> Result<RmsNorm> {
    let mut w = source.dense(name)?;
    expect_shape(&w, &[size], name)?;
    if c.family == Family::Gemma3 && matches!(source.names(), super::source::WeightNames::Hf { .. })
    {
        w = (w + 1.0)?;
    }
    Ok(RmsNorm::new(w, c.rms_norm_eps))
}

fn checked_linear(
    source: &mut dyn WeightSource,
    name: &str,
    path: crate::model::WeightPath,
    dims: [usize; 2],
) -> Result<Linear> {
    let linear = source.linear(name, path)?;
    if linear.dims() != dims {
        return Err(ModelError::weight(
            name,
            format!("expected shape {dims:?}, found {:?}", linear.dims()),
        ));
    }
    Ok(linear)
}

pub(crate) fn expect_shape(t: &Tensor, dims: &[usize], name: &str) -> Result<()> {
    if t.dims() != dims {
        return Err(ModelError::weight(
            name,
            format!("expected shape {dims:?}, found {:?}", t.dims()),
        ));
    }
    Ok(())
}
