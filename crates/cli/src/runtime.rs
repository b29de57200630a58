//! Loading what `serve`, `ingest`, `eval` and `bench` run on: the model (a
//! file, or random weights of a shape), its tokenizer, and the store opened
//! for that model and instruction.

use std::path::{Path, PathBuf};

use anyhow::Context;
use prophetkv_model::{
    device_from_name, load_model, load_random, random_config, DType, LoadOptions, Model,
    TextTokenizer,
};
use prophetkv_store::{model_fingerprint, DocumentStore, ModelIdentity, StoreConfig};

/// Where a model's weights come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A GGUF file or a safetensors directory (with its tokenizer).
    Path(PathBuf),
    /// Random weights of a known shape or a config.json, drawn from a seed,
    /// tokenizing one byte per token: a benchmark stand-in for weights that
    /// cannot be sent. Its answers mean nothing.
    Random {
        /// `gemma-3-270m`, `llama-3.1-8b`, ... or the path of a config.json.
        shape: String,
        /// Seed of the weights.
        seed: u64,
    },
}

impl ModelSource {
    /// Random weights when `random` names a shape, else the model at `path`.
    pub fn new(path: &Path, random: Option<&str>, seed: u64) -> Self {
        match random.filter(|s| !s.trim().is_empty()) {
            Some(shape) => Self::Random {
                shape: shape.trim().to_string(),
                seed,
            },
            None => Self::Path(path.to_path_buf()),
        }
    }

    /// The shape, when the weights are random.
    pub fn random_shape(&self) -> Option<&str> {
        match self {
            Self::Random { shape, .. } => Some(shape),
            Self::Path(_) => None,
        }
    }

    /// The model in precision `dtype` (see [`LoadOptions::named`]) on
    /// `device` (`cpu`, `cuda`, `cuda:N`), its tokenizer, and the
    /// fingerprint its cached KV is keyed by.
    pub fn load(
        &self,
        dtype: &str,
        device: &str,
    ) -> anyhow::Result<(Model, TextTokenizer, String)> {
        let options = LoadOptions::named(dtype, device_from_name(device)?)?;
        // The CPU's f32 runs keep the fingerprints they always had.
        let precision = if options.dtype == DType::F32 {
            format!("{:?}", options.weight_path)
        } else {
            format!("{:?}/{:?}", options.weight_path, options.dtype)
        };
        match self {
            Self::Path(path) => {
                let model = load_model(path, &options)
                    .with_context(|| format!("loading model {}", path.display()))?;
                let tokenizer = TextTokenizer::from_path(path)
                    .with_context(|| format!("loading tokenizer of {}", path.display()))?;
                let fingerprint = model_fingerprint(path, &precision)?;
                Ok((model, tokenizer, fingerprint))
            }
            Self::Random { shape, seed } => {
                let config = random_config(shape)?;
                let model = load_random(config, *seed, &options)
                    .with_context(|| format!("drawing random weights of {shape}"))?;
                tracing::warn!(
                    shape,
                    seed,
                    "serving RANDOM weights: a benchmark stand-in, its answers mean nothing"
                );
                let fingerprint = format!("random:{shape}:{seed}:{precision}");
                Ok((model, TextTokenizer::bytes()?, fingerprint))
            }
        }
    }
}

/// What `serve` and `ingest` must agree on for their caches to meet in one
/// store: how the weights run, and the text every document is cached behind.
pub struct RuntimeSettings {
    /// Weight path and precision (`--dtype`).
    pub dtype: String,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// The instruction that opens every prompt: the anchor documents follow.
    pub instruction: String,
    /// Text between the anchor and each document while its cache is computed
    /// (empty: none).
    pub preamble: String,
}

/// The model, its tokenizer, and the store whose caches belong to them,
/// all on the device the settings name.
pub fn open(
    source: &ModelSource,
    settings: &RuntimeSettings,
    store: &StoreConfig,
) -> anyhow::Result<(Model, TextTokenizer, DocumentStore)> {
    let (model, tokenizer, fingerprint) = source.load(&settings.dtype, &settings.device)?;
    let preamble = match settings.preamble.as_str() {
        "" => Vec::new(),
        text => tokenizer.encode(text)?,
    };
    let anchor = tokenizer.prompt_ids(&settings.instruction)?;
    let identity = ModelIdentity::new(&model, fingerprint, anchor).with_preamble(preamble);
    let store = DocumentStore::open(store, identity, model.device())
        .with_context(|| format!("opening the store in {}", store.data_dir.display()))?;
    Ok((model, tokenizer, store))
}
