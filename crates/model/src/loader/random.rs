//! Random weights of a real architecture's shape, for benchmarking where the
//! weights cannot be sent (speed depends on the shape, not the values).
//!
//! Values come from a counter-based generator keyed by the seed and the
//! tensor's name, so the same seed gives the same weights on every device,
//! thread count and machine: the GPU's numerics are checked against the
//! CPU's on exactly these weights. Matrices are uniform with standard
//! deviation 0.02 (Hugging Face's initializer range); norm weights lie near
//! 1 (after Gemma's `1 + w`), so that no two logits tie.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, WithDType};
use rayon::prelude::*;
use serde_json::Value;

use super::hf::{parse_config, read_config_file};
use super::source::{Stored, WeightNames, WeightSource, W};
use crate::config::{Family, ModelConfig};
use crate::{ModelError, Result};

/// Shapes known by name: Hugging Face `config.json` of each (their text part).
const SHAPES: &[(&str, &str)] = &[
    (
        "gemma-3-270m",
        r#"{"model_type": "gemma3_text", "hidden_size": 640, "intermediate_size": 2048,
            "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1,
            "head_dim": 256, "vocab_size": 262144, "sliding_window": 512,
            "max_position_embeddings": 32768, "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0, "query_pre_attn_scalar": 256,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": true}"#,
    ),
    (
        "smollm2-135m",
        r#"{"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
            "vocab_size": 49152, "max_position_embeddings": 8192, "rope_theta": 100000.0,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": true}"#,
    ),
    (
        "llama-3.1-8b",
        r#"{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#,
    ),
    (
        "qwen2.5-7b",
        r#"{"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
            "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
            "vocab_size": 152064, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": false}"#,
    ),
];

/// Names of the shapes [`random_config`] knows.
pub fn random_shapes() -> Vec<&'static str> {
    SHAPES.iter().map(|(name, _)| *name).collect()
}

/// The config of `shape`: a known name, or the path of a Hugging Face
/// `config.json` (or of a directory holding one).
pub fn random_config(shape: &str) -> Result<ModelConfig> {
    if let Some((_, json)) = SHAPES.iter().find(|(name, _)| *name == shape) {
        let root: Value = serde_json::from_str(json)
            .map_err(|e| ModelError::config("shape", format!("{shape}: {e}")))?;
        return parse_config(&root);
    }
    let path = Path::new(shape);
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    if !file.is_file() {
        return Err(ModelError::config(
            "shape",
            format!(
                "{shape:?} is neither a known shape ({}) nor a config.json",
                random_shapes().join(", ")
            ),
        ));
    }
    read_config_file(&file)
}

/// How one weight is drawn.
#[derive(Debug, Clone, Copy)]
struct Draw {
    mean: f32,
    std: f32,
}

const MATRIX: Draw = Draw {
    mean: 0.0,
    std: 0.02,
};

/// A weight source that draws every tensor of a config's shape.
pub(crate) struct RandomSource {
    shapes: HashMap<String, (Vec<usize>, Draw)>,
    seed: u64,
    dtype: DType,
    device: Device,
    names: WeightNames,
}

impl RandomSource {
    /// Weights of `config`'s shape drawn from `seed`, made in `dtype` on `device`.
    pub(crate) fn new(config: &ModelConfig, seed: u64, dtype: DType, device: &Device) -> Self {
        let names = WeightNames::Hf {
            prefix: "model.".into(),
            family: config.family,
        };
        let c = config;
        let gemma = c.family == Family::Gemma3;
        // Gemma stores norm weights as `w` in `1 + w`; Llama as the scale.
        let norm = Draw {
            mean: if gemma { 0.0 } else { 1.0 },
            std: 0.1,
        };
        let (q_out, kv_out) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let mut shapes = HashMap::new();
        let mut add = |w: W, layer: usize, dims: Vec<usize>, draw: Draw| {
            shapes.insert(names.name(w, layer), (dims, draw));
        };
        add(W::Embed, 0, vec![c.vocab_size, c.hidden_size], MATRIX);
        if !c.tied_embeddings {
            add(W::Output, 0, vec![c.vocab_size, c.hidden_size], MATRIX);
        }
        add(W::FinalNorm, 0, vec![c.hidden_size], norm);
        for i in 0..c.num_layers() {
            add(W::AttnNorm, i, vec![c.hidden_size], norm);
            add(W::MlpNorm, i, vec![c.hidden_size], norm);
            add(W::Q, i, vec![q_out, c.hidden_size], MATRIX);
            add(W::K, i, vec![kv_out, c.hidden_size], MATRIX);
            add(W::V, i, vec![kv_out, c.hidden_size], MATRIX);
            add(W::O, i, vec![c.hidden_size, q_out], MATRIX);
            add(W::Gate, i, vec![c.intermediate_size, c.hidden_size], MATRIX);
            add(W::Up, i, vec![c.intermediate_size, c.hidden_size], MATRIX);
            add(W::Down, i, vec![c.hidden_size, c.intermediate_size], MATRIX);
            if c.qkv_bias {
                add(W::QBias, i, vec![q_out], MATRIX);
                add(W::KBias, i, vec![kv_out], MATRIX);
                add(W::VBias, i, vec![kv_out], MATRIX);
            }
            if c.qk_norm {
                add(W::QNorm, i, vec![c.head_dim], norm);
                add(W::KNorm, i, vec![c.head_dim], norm);
            }
            if gemma {
                add(W::PostAttnNorm, i, vec![c.hidden_size], norm);
                add(W::PostMlpNorm, i, vec![c.hidden_size], norm);
            }
        }
        Self {
            shapes,
            seed,
            dtype,
            device: device.clone(),
            names,
        }
    }
}

impl WeightSource for RandomSource {
    fn has(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    fn dense(&mut self, name: &str) -> Result<Tensor> {
        let (dims, draw) = self
            .shapes
            .get(name)
            .ok_or_else(|| ModelError::weight(name, "not part of this shape"))?;
        let stream = self.seed ^ fnv1a(name.as_bytes());
        let n: usize = dims.iter().product();
        let value = |i: usize| draw.mean + draw.std * uniform(stream, i as u64);
        // Drawn straight into the element type, so that an 8B shape never
        // holds an f32 copy of itself.
        let (dims, device) = (dims.as_slice(), &self.device);
        match self.dtype {
            DType::BF16 => drawn(n, dims, device, |i| half::bf16::from_f32(value(i))),
            DType::F16 => drawn(n, dims, device, |i| half::f16::from_f32(value(i))),
            _ => drawn(n, dims, device, value),
        }
    }

    fn stored(&mut self, name: &str) -> Result<Stored> {
        Ok(Stored::Float(self.dense(name)?))
    }

    fn names(&self) -> &WeightNames {
        &self.names
    }
}

/// `n` values `value(0..n)`, drawn in parallel, as a tensor of `dims` on `device`.
fn drawn<T: WithDType>(
    n: usize,
    dims: &[usize],
    device: &Device,
    value: impl Fn(usize) -> T + Sync + Send,
) -> Result<Tensor> {
    let values: Vec<T> = (0..n).into_par_iter().map(value).collect();
    Ok(Tensor::from_vec(values, dims, device)?)
}

/// A value of mean 0 and standard deviation 1 (uniform on ±√3), the
/// `index`-th of `stream`.
fn uniform(stream: u64, index: u64) -> f32 {
    let bits = splitmix64(stream ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 40;
    let u = bits as f32 / (1u64 << 24) as f32; // [0, 1)
    (2.0 * u - 1.0) * 3f32.sqrt()
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a: a stable hash of a tensor's name (std's hashers may change).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_shape_parses_to_its_family() {
        let gemma = random_config("gemma-3-270m").unwrap();
        assert_eq!(gemma.family, Family::Gemma3);
        assert_eq!((gemma.num_layers(), gemma.head_dim), (18, 256));
        let llama = random_config("llama-3.1-8b").unwrap();
        assert_eq!(llama.family, Family::Llama);
        assert_eq!((llama.num_kv_heads, llama.head_dim), (8, 128));
        assert!(random_config("qwen2.5-7b").unwrap().qkv_bias);
        assert!(random_config("smollm2-135m").unwrap().tied_embeddings);
        let e = random_config("gpt-5").unwrap_err().to_string();
        assert!(
            e.contains("gemma-3-270m") && e.contains("config.json"),
            "{e}"
        );
    }

    #[test]
    fn draws_depend_on_seed_and_name_only_and_have_the_set_spread() {
        let config = random_config("smollm2-135m").unwrap();
        let name = "model.layers.3.mlp.up_proj.weight";
        let draw = |seed| -> Vec<f32> {
            let mut source = RandomSource::new(&config, seed, DType::F32, &Device::Cpu);
            let t = source.dense(name).unwrap();
            t.flatten_all().unwrap().to_vec1().unwrap()
        };
        let (x, y, z) = (draw(7), draw(7), draw(8));
        assert_eq!(x, y);
        assert_ne!(x, z);
        let n = x.len() as f32;
        let mean = x.iter().sum::<f32>() / n;
        let std = (x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
        assert!(
            mean.abs() < 1e-3 && (std - 0.02).abs() < 1e-3,
            "{mean} {std}"
        );
        let bf16 = RandomSource::new(&config, 7, DType::BF16, &Device::Cpu)
            .dense(name)
            .unwrap();
        assert_eq!(bf16.dtype(), DType::BF16);
        let back: Vec<f32> = bf16
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(back
            .iter()
            .zip(&x)
            .all(|(p, q)| (p - q).abs() <= q.abs() / 128.0));
        let source = RandomSource::new(&config, 7, DType::F32, &Device::Cpu);
        assert!(
            !source.has("lm_head.weight"),
            "tied shapes have no output matrix"
        );
    }
}
