//! Loading a model from a local path: a GGUF file, or a directory with
//! `config.json` + `*.safetensors`. Nothing is fetched from a hub.

mod build;
mod gguf;
mod hf;
mod random;
mod source;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::config::ModelConfig;
use crate::model::{Model, WeightPath};

use crate::{ModelError, Result};
pub use random::{random_config, random_shapes};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Which copies of the weights to keep and multiply (see [`WeightPath`]).
    pub weight_path: WeightPath,
    /// Where the weights and every activation live.
    pub device: Device,
    /// Element type of the dense weights, activations and KV: f32 on the
    /// CPU; bf16 (the GPU's default), f16 or f32 on a GPU.
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            weight_path: WeightPath::Mixed,
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }
}

impl LoadOptions {
    /// The options a precision names on `device`: `mixed` (the default: on
    /// the CPU block-quantized weights for decode steps and their f32 form
    /// for prompt rows, on a GPU bf16), `mixed-bf16` (the prompt rows' copy in
    /// bf16 on CPUs with AVX-512 BF16), `q` (quantized as stored), `f32`
    /// (the exactness reference), `bf16` or `f16` (a GPU's).
    pub fn named(precision: &str, device: Device) -> Result<Self> {
        let gpu_default = if device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        };
        let (weight_path, dtype) = match precision {
            "mixed" => (WeightPath::Mixed, gpu_default),
            "mixed-bf16" => (WeightPath::MixedBf16, gpu_default),
            "q" => (WeightPath::Quantized, gpu_default),
            "f32" => (WeightPath::F32, DType::F32),
            "bf16" => (WeightPath::Mixed, DType::BF16),
            "f16" => (WeightPath::Mixed, DType::F16),
            other => {
                return Err(ModelError::Device(format!(
                    "dtype must be mixed, mixed-bf16, q, f32, bf16 or f16, got {other:?}"
                )))
            }
        };
        Ok(Self {
            weight_path,
            device,
            dtype,
        })
    }
}

/// On-disk format of a model path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFormat {
    /// A single GGUF file: weights, hyper-parameters and vocabulary.
    Gguf(PathBuf),
    /// A Hugging Face style directory: config.json, safetensors shards, tokenizer.json.
    Safetensors(PathBuf),
}

impl ModelFormat {
    /// Recognises the format of `path`, or says what is missing.
    pub fn detect(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            if !path.join("config.json").is_file() {
                return Err(ModelError::UnknownFormat {
                    path: path.to_path_buf(),
                    reason: "directory has no config.json".into(),
                });
            }
            return Ok(Self::Safetensors(path.to_path_buf()));
        }
        let mut magic = [0u8; 4];
        let read = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .map_err(|source| ModelError::Io {
                path: path.to_path_buf(),
                source,
            });
        match read {
            Ok(()) if &magic == b"GGUF" => Ok(Self::Gguf(path.to_path_buf())),
            Ok(()) => Err(ModelError::UnknownFormat {
                path: path.to_path_buf(),
                reason: "not a GGUF file (bad magic) and not a model directory".into(),
            }),
            Err(ModelError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                Err(ModelError::Corrupt {
                    path: path.to_path_buf(),
                    reason: "file is shorter than a GGUF header".into(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The path this format was detected at.
    pub fn path(&self) -> &Path {
        match self {
            Self::Gguf(p) | Self::Safetensors(p) => p,
        }
    }
}

/// Loads the model at `path` (GGUF file or safetensors directory).
pub fn load_model(path: &Path, options: &LoadOptions) -> Result<Model> {
    match ModelFormat::detect(path)? {
        ModelFormat::Gguf(p) => {
            let mut source = gguf::GgufSource::open(&p, &options.device)?;
            let config = source.config()?;
            build::build_model(&mut source, config, options)
        }
        ModelFormat::Safetensors(p) => {
            let config = hf::read_config(&p)?;
            let mut source = hf::SafetensorsSource::open(&p, &config, &options.device)?;
            build::build_model(&mut source, config, options)
        }
    }
}

/// A model of `config`'s shape with random weights drawn from `seed` (the
/// same on every device): a benchmarking stand-in for weights that cannot
/// be sent, like vLLM's `--load-format dummy`.
pub fn load_random(config: ModelConfig, seed: u64, options: &LoadOptions) -> Result<Model> {
    let mut source = random::RandomSource::new(&config, seed, options.dtype, &options.device);
    build::build_model(&mut source, config, options)
}

pub(crate) use gguf::{read_header as read_gguf_header, GgufMetadata};
