//! GGUF: one file with hyper-parameters, vocabulary and (mostly quantized) weights.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use super::source::{Stored, WeightNames, WeightSource};
use crate::config::{
    gemma3_layers, Activation, Family, LayerConfig, ModelConfig, RopeConfig, RopeScaling,
    RopeStyle, GEMMA3_LOCAL_ROPE_BASE, GEMMA3_SLIDING_PATTERN,
};
use crate::{ModelError, Result};

/// Typed access to GGUF metadata; errors name the key.
pub(crate) struct GgufMetadata<'a> {
    values: &'a HashMap<String, Value>,
}

impl<'a> GgufMetadata<'a> {
    pub(crate) fn new(values: &'a HashMap<String, Value>) -> Self {
        Self { values }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.values.get(key)
    }

    fn require(&self, key: &str) -> Result<&'a Value> {
        self.get(key)
            .ok_or_else(|| ModelError::config(key, "is missing from the GGUF metadata"))
    }

    pub(crate) fn string(&self, key: &str) -> Result<&'a str> {
        self.require(key)?
            .to_string()
            .map(|s| s.as_str())
            .map_err(|_| ModelError::config(key, "is not a string"))
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        usize_of(self.require(key)?).ok_or_else(|| ModelError::config(key, "is not an integer"))
    }

    pub(crate) fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => usize_of(v)
                .map(Some)
                .ok_or_else(|| ModelError::config(key, "is not an integer")),
        }
    }

    pub(crate) fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .to_f64()
                .or_else(|_| v.to_f32().map(f64::from))
                .map(Some)
                .map_err(|_| ModelError::config(key, "is not a float")),
        }
    }

    pub(crate) fn bool_opt(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.to_bool().ok())
    }
}

fn usize_of(v: &Value) -> Option<usize> {
    match v {
        Value::U8(x) => Some(*x as usize),
        Value::U16(x) => Some(*x as usize),
        Value::U32(x) => Some(*x as usize),
        Value::U64(x) => usize::try_from(*x).ok(),
        Value::I8(x) => usize::try_from(*x).ok(),
        Value::I16(x) => usize::try_from(*x).ok(),
        Value::I32(x) => usize::try_from(*x).ok(),
        Value::I64(x) => usize::try_from(*x).ok(),
        _ => None,
    }
}

/// candle errors carry a backtrace on later lines when `RUST_BACKTRACE` is set.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// Reads the header (metadata + tensor index) of a GGUF file.
pub(crate) fn read_header(path: &Path) -> Result<(File, Content)> {
    let mut file = File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let content = Content::read(&mut file).map_err(|e| ModelError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot parse GGUF header: {}", first_line(&e)),
    })?;
    Ok((file, content))
}

/// Weights of a GGUF file, read tensor by tensor.
pub(crate) struct GgufSource {
    path: PathBuf,
    file: File,
    content: Content,
    device: Device,
    names: WeightNames,
}

impl GgufSource {
    pub(crate) fn open(path: &Path, device: &Device) -> Result<Self> {
        let (file, content) = read_header(path)?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        // A truncated download parses fine up to the tensor data; catch it here.
        for (name, info) in &content.tensor_infos {
            // No weight is empty; candle cannot read one (it would view an
            // unaligned empty buffer as blocks).
            if info.shape.dims().contains(&0) {
                return Err(ModelError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "tensor {name} has no elements: shape {:?}",
                        info.shape.dims()
                    ),
                });
            }
            // A damaged header can claim any shape: count in checked arithmetic.
            let end = info
                .shape
                .dims()
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
                .map(|n| n / info.ggml_dtype.block_size() as u64)
                .and_then(|blocks| blocks.checked_mul(info.ggml_dtype.type_size() as u64))
                .and_then(|bytes| bytes.checked_add(info.offset))
                .and_then(|bytes| bytes.checked_add(content.tensor_data_offset));
            let Some(end) = end else {
                return Err(ModelError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "tensor {name} has shape {:?} at offset {}: larger than any file",
                        info.shape.dims(),
                        info.offset
                    ),
                });
            };
            if end > file_len {
                return Err(ModelError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "tensor {name} ends at byte {end} but the file has {file_len} bytes (truncated?)"
                    ),
                });
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            content,
            device: device.clone(),
            names: WeightNames::Gguf,
        })
    }

    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        if !self.has(name) {
            return Err(ModelError::weight(name, "missing from the GGUF file"));
        }
        self.content
            .tensor(&mut self.file, name, &self.device)
            .map_err(|e| ModelError::Corrupt {
                path: self.path.clone(),
                reason: format!("cannot read tensor {name}: {}", first_line(&e)),
            })
    }

    /// Hyper-parameters from the metadata (and tensor shapes where the metadata is silent).
    pub(crate) fn config(&mut self) -> Result<ModelConfig> {
        let divisors = if self.has("rope_freqs.weight") {
            Some(self.dense("rope_freqs.weight")?.to_vec1::<f32>()?)
        } else {
            None
        };
        let md = GgufMetadata::new(&self.content.metadata);
        let arch = md.string("general.architecture")?.to_string();
        let family = match arch.as_str() {
            "gemma3" => Family::Gemma3,
            "llama" | "mistral" | "qwen2" | "qwen3" => Family::Llama,
            _ => return Err(ModelError::UnsupportedArchitecture { name: arch }),
        };
        let key = |k: &str| format!("{arch}.{k}");
        let hidden = md.usize(&key("embedding_length"))?;
        let num_layers = md.usize(&key("block_count"))?;
        // Every layer has its tensors in the file, so a damaged count cannot
        // make the loader allocate for layers that are not there.
        let last = format!("blk.{}.attn_norm.weight", num_layers.saturating_sub(1));
        if num_layers == 0 || !self.has(&last) {
            return Err(ModelError::config(
                key("block_count"),
                format!("is {num_layers}, but the file has no tensor {last}"),
            ));
        }
        let num_heads = md.usize(&key("attention.head_count"))?;
        let num_kv_heads = md
            .usize_opt(&key("attention.head_count_kv"))?
            .unwrap_or(num_heads);
        let head_dim = match md.usize_opt(&key("attention.key_length"))? {
            Some(d) => d,
            None if num_heads > 0 => hidden / num_heads,
            None => 0,
        };
        let vocab_size = match self.content.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims()[0],
            None => {
                return Err(ModelError::weight(
                    "token_embd.weight",
                    "missing from the GGUF file",
                ))
            }
        };
        let base = md.f64_opt(&key("rope.freq_base"))?.unwrap_or(10_000.0);
        let scaling = match divisors {
            Some(d) => RopeScaling::Divisors(d),
            None => rope_scaling(&md, &arch)?,
        };
        let global = RopeConfig { base, scaling };
        let window = md.usize_opt(&key("attention.sliding_window"))?;
        let eps = md
            .f64_opt(&key("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| {
                ModelError::config(key("attention.layer_norm_rms_epsilon"), "is missing")
            })?;
        let tied = !self.has("output.weight");
        let common = ModelConfig {
            family,
            architecture: arch.clone(),
            vocab_size,
            hidden_size: hidden,
            intermediate_size: md.usize(&key("feed_forward_length"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: eps,
            max_position: md.usize(&key("context_length"))?,
            rope_style: RopeStyle::Half,
            layers: Vec::new(),
            attn_scale: 1.0 / (head_dim.max(1) as f64).sqrt(),
            embed_scale: None,
            qk_norm: self.has("blk.0.attn_q_norm.weight"),
            qkv_bias: self.has("blk.0.attn_q.bias"),
            final_logit_softcap: md.f64_opt(&key("final_logit_softcapping"))?,
            activation: Activation::Silu,
            tied_embeddings: tied,
        };
        let layers = LayerShape {
            num_layers,
            window,
            global,
        };
        match family {
            Family::Gemma3 => gemma3_config(common, layers, &key("attention.sliding_window")),
            Family::Llama => Ok(llama_config(common, layers)),
        }
    }
}

/// What the per-layer configuration is made from.
struct LayerShape {
    num_layers: usize,
    window: Option<usize>,
    global: RopeConfig,
}

/// Gemma 3: sliding windows interleaved with global layers, its query and
/// embedding scales and activation.
fn gemma3_config(common: ModelConfig, shape: LayerShape, window_key: &str) -> Result<ModelConfig> {
    let window = shape
        .window
        .ok_or_else(|| ModelError::config(window_key, "is missing"))?;
    // Gemma 3 27B scales queries by hidden/heads, not head_dim.
    let query_scalar = if shape.num_layers == 62 {
        common.hidden_size / common.num_heads.max(1)
    } else {
        common.head_dim
    };
    Ok(ModelConfig {
        layers: gemma3_layers(
            shape.num_layers,
            |i| (i + 1) % GEMMA3_SLIDING_PATTERN != 0,
            window,
            shape.global,
            GEMMA3_LOCAL_ROPE_BASE,
        ),
        attn_scale: 1.0 / (query_scalar.max(1) as f64).sqrt(),
        embed_scale: Some((common.hidden_size as f64).sqrt()),
        activation: Activation::GeluTanh,
        ..common
    })
}

/// The Llama family: one rope base for every layer, in the layout the GGUF
/// converter stored the q/k rows in.
fn llama_config(common: ModelConfig, shape: LayerShape) -> ModelConfig {
    // GGUF converters permute Llama's q/k rows into interleaved pairs;
    // Qwen weights are stored as trained (rotate-half).
    let rope_style = if common.architecture == "llama" || common.architecture == "mistral" {
        RopeStyle::Interleaved
    } else {
        RopeStyle::Half
    };
    let layer = LayerConfig {
        sliding_window: shape.window,
        rope: shape.global,
    };
    ModelConfig {
        layers: vec![layer; shape.num_layers],
        rope_style,
        ..common
    }
}

fn rope_scaling(md: &GgufMetadata<'_>, arch: &str) -> Result<RopeScaling> {
    let kind_key = format!("{arch}.rope.scaling.type");
    match md
        .get(&kind_key)
        .and_then(|v| v.to_string().ok())
        .map(|s| s.as_str())
    {
        None | Some("none") => Ok(RopeScaling::None),
        Some("linear") => {
            let factor_key = format!("{arch}.rope.scaling.factor");
            let factor = md
                .f64_opt(&factor_key)?
                .ok_or_else(|| ModelError::config(factor_key, "is missing"))?;
            Ok(RopeScaling::Linear { factor })
        }
        Some(other) => Err(ModelError::config(
            kind_key,
            format!("{other:?} is not supported (none, linear)"),
        )),
    }
}

impl WeightSource for GgufSource {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn dense(&mut self, name: &str) -> Result<Tensor> {
        Ok(self
            .qtensor(name)?
            .dequantize(&self.device)?
            .to_dtype(DType::F32)?)
    }

    fn stored(&mut self, name: &str) -> Result<Stored> {
        let q = self.qtensor(name)?;
        Ok(match q.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                Stored::Float(q.dequantize(&self.device)?.to_dtype(DType::F32)?)
            }
            _ => Stored::Quantized(Box::new(q)),
        })
    }

    fn names(&self) -> &WeightNames {
        &self.names
    }
}
