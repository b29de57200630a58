//! Where weights come from, behind one small trait, and what each is called.

use candle_core::quantized::QTensor;
use candle_core::Tensor;

use crate::config::Family;
use crate::Result;

/// A weight as the file stores it.
pub(crate) enum Stored {
    /// Block-quantized (GGUF's Q4_K, Q8_0, ...).
    Quantized(Box<QTensor>),
    /// A float type, converted to f32.
    Float(Tensor),
}

/// A file format's tensors, by name.
pub(crate) trait WeightSource {
    /// True when the file holds a tensor of this name.
    fn has(&self, name: &str) -> bool;
    /// The tensor as dense f32.
    fn dense(&mut self, name: &str) -> Result<Tensor>;
    /// A matrix as stored: block-quantized, or float as f32.
    fn stored(&mut self, name: &str) -> Result<Stored>;
    /// The naming scheme of this format.
    fn names(&self) -> &WeightNames;
}

/// One named weight of a block or of the model.
#[derive(Debug, Clone, Copy)]
pub(crate) enum W {
    Embed,
    Output,
    FinalNorm,
    AttnNorm,
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    QNorm,
    KNorm,
    PostAttnNorm,
    MlpNorm,
    Gate,
    Up,
    Down,
    PostMlpNorm,
}

/// Tensor names of a format (GGUF's `blk.N.*` or Hugging Face's `model.layers.N.*`).
#[derive(Debug, Clone)]
pub(crate) enum WeightNames {
    Gguf,
    Hf {
        /// `model.` or, for multimodal Gemma 3 checkpoints, `language_model.model.`.
        prefix: String,
        family: Family,
    },
}

impl WeightNames {
    pub(crate) fn name(&self, w: W, layer: usize) -> String {
        match self {
            WeightNames::Gguf => gguf_name(w, layer),
            WeightNames::Hf { prefix, family } => hf_name(prefix, *family, w, layer),
        }
    }
}

fn gguf_name(w: W, i: usize) -> String {
    let block = |s: &str| format!("blk.{i}.{s}");
    match w {
        W::Embed => "token_embd.weight".into(),
        W::Output => "output.weight".into(),
        W::FinalNorm => "output_norm.weight".into(),
        W::AttnNorm => block("attn_norm.weight"),
        W::Q => block("attn_q.weight"),
        W::K => block("attn_k.weight"),
        W::V => block("attn_v.weight"),
        W::O => block("attn_output.weight"),
        W::QBias => block("attn_q.bias"),
        W::KBias => block("attn_k.bias"),
        W::VBias => block("attn_v.bias"),
        W::QNorm => block("attn_q_norm.weight"),
        W::KNorm => block("attn_k_norm.weight"),
        W::PostAttnNorm => block("post_attention_norm.weight"),
        W::MlpNorm => block("ffn_norm.weight"),
        W::Gate => block("ffn_gate.weight"),
        W::Up => block("ffn_up.weight"),
        W::Down => block("ffn_down.weight"),
        W::PostMlpNorm => block("post_ffw_norm.weight"),
    }
}

fn hf_name(prefix: &str, family: Family, w: W, i: usize) -> String {
    let layer = |s: &str| format!("{prefix}layers.{i}.{s}");
    match w {
        W::Embed => format!("{prefix}embed_tokens.weight"),
        W::Output => "lm_head.weight".into(),
        W::FinalNorm => format!("{prefix}norm.weight"),
        W::AttnNorm => layer("input_layernorm.weight"),
        W::Q => layer("self_attn.q_proj.weight"),
        W::K => layer("self_attn.k_proj.weight"),
        W::V => layer("self_attn.v_proj.weight"),
        W::O => layer("self_attn.o_proj.weight"),
        W::QBias => layer("self_attn.q_proj.bias"),
        W::KBias => layer("self_attn.k_proj.bias"),
        W::VBias => layer("self_attn.v_proj.bias"),
        W::QNorm => layer("self_attn.q_norm.weight"),
        W::KNorm => layer("self_attn.k_norm.weight"),
        // Gemma names its post-attention norm what Llama calls its pre-MLP norm.
        W::PostAttnNorm => layer("post_attention_layernorm.weight"),
        W::MlpNorm => match family {
            Family::Gemma3 => layer("pre_feedforward_layernorm.weight"),
            Family::Llama => layer("post_attention_layernorm.weight"),
        },
        W::Gate => layer("mlp.gate_proj.weight"),
        W::Up => layer("mlp.up_proj.weight"),
        W::Down => layer("mlp.down_proj.weight"),
        W::PostMlpNorm => layer("post_feedforward_layernorm.weight"),
    }
}
