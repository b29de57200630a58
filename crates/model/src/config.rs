//! Model hyper-parameters, read from GGUF metadata or a Hugging Face config.json.
//!
//! One [`ModelConfig`] describes every supported family. Per-layer differences
//! (Gemma 3's sliding-window layers with their own RoPE base) are spelled out in
//! [`ModelConfig::layers`], so the forward pass never branches on a family name
//! for attention geometry.

use serde::Serialize;

/// The block layout and weight naming a model follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Gemma 3: scaled embeddings, q/k norms, pre+post norms around attention and MLP.
    Gemma3,
    /// Llama 3.x, Mistral, Qwen2.5 (q/k/v bias), Qwen3 (q/k norms).
    Llama,
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeStyle {
    /// Dimension i pairs with i + d/2 (Hugging Face `rotate_half`, GGUF "neox").
    Half,
    /// Dimension 2i pairs with 2i + 1 (Llama weights as permuted by GGUF converters).
    Interleaved,
}

/// Adjustment of the RoPE frequencies for long-context checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum RopeScaling {
    /// Plain frequencies `base^(-2i/d)`.
    None,
    /// Positions divided by `factor` (Gemma 3 4B+ global layers).
    Linear {
        /// Position divisor.
        factor: f64,
    },
    /// Llama 3.1 wavelength-dependent scaling.
    Llama3 {
        /// Scale for low frequencies.
        factor: f64,
        /// Wavelength bound (as a fraction of the original context) below which frequencies scale fully.
        low_freq_factor: f64,
        /// Wavelength bound above which frequencies are kept.
        high_freq_factor: f64,
        /// Context length the model was pre-trained with.
        original_max_position: f64,
    },
    /// Per-frequency divisors stored with the weights (GGUF `rope_freqs.weight`).
    Divisors(Vec<f32>),
}

/// RoPE parameters of one layer kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RopeConfig {
    /// Base of the frequency ladder (`rope_theta`).
    pub base: f64,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

/// Attention geometry of one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerConfig {
    /// Keys further back than this many positions are masked (`None`: global layer).
    pub sliding_window: Option<usize>,
    /// RoPE applied to this layer's queries and keys.
    pub rope: RopeConfig,
}

/// Activation inside the gated MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GELU, tanh approximation (Gemma).
    GeluTanh,
    /// SiLU (Llama family).
    Silu,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// Block layout.
    pub family: Family,
    /// Architecture name as given by the file (e.g. `gemma3`, `qwen2`).
    pub architecture: String,
    /// Rows of the embedding table.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Epsilon of every RMS norm.
    pub rms_norm_eps: f64,
    /// Longest sequence the model supports (positions are `0..max_position`).
    pub max_position: usize,
    /// How RoPE pairs dimensions.
    pub rope_style: RopeStyle,
    /// One entry per transformer block.
    pub layers: Vec<LayerConfig>,
    /// Multiplier of attention scores (`1/sqrt(query_pre_attn_scalar)` or `1/sqrt(head_dim)`).
    pub attn_scale: f64,
    /// Multiplier of token embeddings (Gemma: `sqrt(hidden_size)`).
    pub embed_scale: Option<f64>,
    /// Per-head RMS norm on queries and keys (Gemma 3, Qwen3).
    pub qk_norm: bool,
    /// Bias on the q/k/v projections (Qwen2).
    pub qkv_bias: bool,
    /// `tanh` soft-cap applied to final logits (Gemma 2 style), if any.
    pub final_logit_softcap: Option<f64>,
    /// MLP activation.
    pub activation: Activation,
    /// Output projection shares the embedding table.
    pub tied_embeddings: bool,
}

impl ModelConfig {
    /// Number of transformer blocks.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Rejects shapes the forward pass cannot run, naming the field.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        use crate::ModelError;
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("num_hidden_layers", self.layers.len()),
            ("max_position_embeddings", self.max_position),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ModelError::config(field, "must be positive, got 0"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(ModelError::config(
                "num_key_value_heads",
                format!(
                    "must divide num_attention_heads ({}), got {}",
                    self.num_heads, self.num_kv_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(ModelError::config(
                "head_dim",
                format!("must be even for RoPE, got {}", self.head_dim),
            ));
        }
        // A window of 0 would hide every key, itself included.
        if self.layers.iter().any(|l| l.sliding_window == Some(0)) {
            return Err(ModelError::config(
                "sliding_window",
                "must be positive, got 0",
            ));
        }
        Ok(())
    }
}

/// Gemma 3 puts a global layer after every five sliding-window layers.
pub(crate) const GEMMA3_SLIDING_PATTERN: usize = 6;
/// RoPE base of Gemma 3's sliding-window layers; GGUF files only store the global one.
pub(crate) const GEMMA3_LOCAL_ROPE_BASE: f64 = 10_000.0;

/// Builds Gemma 3's per-layer table: every `pattern`-th layer global, the rest windowed.
pub(crate) fn gemma3_layers(
    num_layers: usize,
    is_sliding: impl Fn(usize) -> bool,
    window: usize,
    global: RopeConfig,
    local_base: f64,
) -> Vec<LayerConfig> {
    (0..num_layers)
        .map(|i| {
            if is_sliding(i) {
                LayerConfig {
                    sliding_window: Some(window),
                    rope: RopeConfig {
                        base: local_base,
                        scaling: RopeScaling::None,
                    },
                }
            } else {
                LayerConfig {
                    sliding_window: None,
                    rope: global.clone(),
                }
            }
        })
        .collect()
}
