//! Hugging Face layout: `config.json` + `*.safetensors` (+ `tokenizer.json`).

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::source::{Stored, WeightNames, WeightSource};
use crate::config::{
    gemma3_layers, Activation, Family, LayerConfig, ModelConfig, RopeConfig, RopeScaling,
    RopeStyle, GEMMA3_LOCAL_ROPE_BASE, GEMMA3_SLIDING_PATTERN,
};
use crate::{ModelError, Result};

/// Reads `config.json` in `dir` into a [`ModelConfig`].
pub(crate) fn read_config(dir: &Path) -> Result<ModelConfig> {
    read_config_file(&dir.join("config.json"))
}

/// Reads a `config.json` file into a [`ModelConfig`].
pub(crate) fn read_config_file(path: &Path) -> Result<ModelConfig> {
    let path = path.to_path_buf();
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
        path: path.clone(),
        source,
    })?;
    let root: Value = serde_json::from_str(&text).map_err(|e| ModelError::Corrupt {
        path: path.clone(),
        reason: format!("config.json is not valid JSON: {e}"),
    })?;
    parse_config(&root)
}

/// Architecture name and the object holding the text model's fields.
fn text_config(root: &Value) -> Result<(String, &Value)> {
    let model_type = root
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| ModelError::config("model_type", "is missing from config.json"))?;
    Ok(match (model_type, root.get("text_config")) {
        ("gemma3", Some(text)) => ("gemma3".into(), text),
        ("gemma3_text", _) => ("gemma3".into(), root),
        (other, _) => (other.to_string(), root),
    })
}

struct Fields<'a>(&'a Value);

impl Fields<'_> {
    fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| ModelError::config(key, "is missing from config.json"))
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| ModelError::config(key, format!("must be an integer, got {v}"))),
        }
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| ModelError::config(key, format!("must be a number, got {v}"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> bool {
        self.0.get(key).and_then(Value::as_bool).unwrap_or(default)
    }

    /// `rope_theta`, also where newer configs nest it in `rope_parameters`.
    fn rope_theta(&self, layer_type: &str, default: f64) -> Result<f64> {
        let params = self.0.get("rope_parameters");
        let nested = params
            .and_then(|p| p.get(layer_type).or(Some(p)))
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64);
        Ok(match nested {
            Some(t) => t,
            None => self.f64_opt("rope_theta")?.unwrap_or(default),
        })
    }

    fn rope_scaling(&self) -> Result<RopeScaling> {
        let Some(s) = self.0.get("rope_scaling").filter(|v| !v.is_null()) else {
            return Ok(RopeScaling::None);
        };
        let kind = s
            .get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let num = |k: &str| {
            s.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| ModelError::config(format!("rope_scaling.{k}"), "is missing"))
        };
        match kind {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear {
                factor: num("factor")?,
            }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position: num("original_max_position_embeddings")?,
            }),
            other => Err(ModelError::config(
                "rope_scaling.rope_type",
                format!("{other:?} is not supported (default, linear, llama3)"),
            )),
        }
    }
}

pub(crate) fn parse_config(root: &Value) -> Result<ModelConfig> {
    let (arch, text) = text_config(root)?;
    let family = match arch.as_str() {
        "gemma3" => Family::Gemma3,
        "llama" | "mistral" | "qwen2" | "qwen3" => Family::Llama,
        _ => return Err(ModelError::UnsupportedArchitecture { name: arch }),
    };
    let f = Fields(text);
    let hidden = f.usize("hidden_size")?;
    let num_heads = f.usize("num_attention_heads")?;
    let head_dim = match f.usize_opt("head_dim")? {
        Some(d) => d,
        None => hidden / num_heads.max(1),
    };
    let common = ModelConfig {
        family,
        architecture: arch.clone(),
        vocab_size: f.usize("vocab_size")?,
        hidden_size: hidden,
        intermediate_size: f.usize("intermediate_size")?,
        num_heads,
        num_kv_heads: f.usize_opt("num_key_value_heads")?.unwrap_or(num_heads),
        head_dim,
        rms_norm_eps: f.f64_opt("rms_norm_eps")?.unwrap_or(1e-6),
        max_position: f.usize_opt("max_position_embeddings")?.unwrap_or(4096),
        rope_style: RopeStyle::Half,
        layers: Vec::new(),
        attn_scale: 1.0 / (head_dim.max(1) as f64).sqrt(),
        embed_scale: None,
        qk_norm: arch == "qwen3",
        qkv_bias: arch == "qwen2" || f.bool_or("attention_bias", false),
        final_logit_softcap: f.f64_opt("final_logit_softcapping")?,
        activation: Activation::Silu,
        tied_embeddings: f.bool_or("tie_word_embeddings", family == Family::Gemma3),
    };
    Ok(match family {
        Family::Gemma3 => gemma3_config(&f, text, common)?,
        Family::Llama => llama_config(&f, &arch, common)?,
    })
}

/// Gemma 3's layers (sliding windows interleaved with global layers, two
/// rope bases), query scale, embedding scale and activation.
fn gemma3_config(f: &Fields<'_>, text: &Value, common: ModelConfig) -> Result<ModelConfig> {
    let (num_layers, head_dim, hidden) = (
        f.usize("num_hidden_layers")?,
        common.head_dim,
        common.hidden_size,
    );
    let window = f.usize("sliding_window")?;
    let layer_types: Option<Vec<String>> = text
        .get("layer_types")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let pattern = f
        .usize_opt("sliding_window_pattern")?
        .unwrap_or(GEMMA3_SLIDING_PATTERN)
        .max(1);
    let is_sliding = |i: usize| match &layer_types {
        Some(types) => types.get(i).is_some_and(|t| t == "sliding_attention"),
        None => !(i + 1).is_multiple_of(pattern),
    };
    let global = RopeConfig {
        base: f.rope_theta("full_attention", 1_000_000.0)?,
        scaling: f.rope_scaling()?,
    };
    let local_base = match f.f64_opt("rope_local_base_freq")? {
        Some(b) => b,
        None => f.rope_theta("sliding_attention", GEMMA3_LOCAL_ROPE_BASE)?,
    };
    let query_scalar = f
        .f64_opt("query_pre_attn_scalar")?
        .unwrap_or(head_dim as f64);
    Ok(ModelConfig {
        layers: gemma3_layers(num_layers, is_sliding, window, global, local_base),
        attn_scale: 1.0 / query_scalar.sqrt(),
        embed_scale: Some((hidden as f64).sqrt()),
        qk_norm: true,
        activation: Activation::GeluTanh,
        ..common
    })
}

/// The Llama family's layers: one rope base, an optional sliding window
/// (Mistral; Qwen2 only when `use_sliding_window`).
fn llama_config(f: &Fields<'_>, arch: &str, common: ModelConfig) -> Result<ModelConfig> {
    let window = if arch == "qwen2" && !f.bool_or("use_sliding_window", false) {
        None
    } else {
        f.usize_opt("sliding_window")?
    };
    let layer = LayerConfig {
        sliding_window: window,
        rope: RopeConfig {
            base: f.rope_theta("full_attention", 10_000.0)?,
            scaling: f.rope_scaling()?,
        },
    };
    Ok(ModelConfig {
        layers: vec![layer; f.usize("num_hidden_layers")?],
        ..common
    })
}

/// Weights of the `*.safetensors` files in a directory, memory-mapped.
pub(crate) struct SafetensorsSource {
    tensors: MmapedSafetensors,
    device: Device,
    names: WeightNames,
}

impl SafetensorsSource {
    pub(crate) fn open(dir: &Path, config: &ModelConfig, device: &Device) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| ModelError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ModelError::UnknownFormat {
                path: dir.to_path_buf(),
                reason: "directory has no *.safetensors files".into(),
            });
        }
        // SAFETY: the files are opened read-only; prophetkv never writes model files.
        let tensors =
            unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| ModelError::Corrupt {
                path: dir.to_path_buf(),
                reason: format!("cannot read safetensors: {e}"),
            })?;
        let prefix = if tensors.get("model.embed_tokens.weight").is_ok() {
            "model."
        } else {
            "language_model.model."
        };
        Ok(Self {
            tensors,
            device: device.clone(),
            names: WeightNames::Hf {
                prefix: prefix.into(),
                family: config.family,
            },
        })
    }
}

impl WeightSource for SafetensorsSource {
    fn has(&self, name: &str) -> bool {
        self.tensors.get(name).is_ok()
    }

    fn dense(&mut self, name: &str) -> Result<Tensor> {
        if !self.has(name) {
            return Err(ModelError::weight(
                name,
                "missing from the safetensors files",
            ));
        }
        let t = self
            .tensors
            .load(name, &self.device)
            .map_err(|e| ModelError::weight(name, format!("cannot load: {e}")))?;
        Ok(t.to_dtype(DType::F32)?)
    }

    fn stored(&mut self, name: &str) -> Result<Stored> {
        Ok(Stored::Float(self.dense(name)?))
    }

    fn names(&self) -> &WeightNames {
        &self.names
    }
}
