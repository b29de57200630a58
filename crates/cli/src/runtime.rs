//! Loading what both `serve` and `ingest` run on: the model, its tokenizer,
//! and the store opened for that model and instruction.

use std::path::Path;

use anyhow::{bail, Context};
use prophetkv_model::{
    device_from_name, load_model, LoadOptions, Model, TextTokenizer, WeightPath,
};
use prophetkv_store::{model_fingerprint, DocumentStore, ModelIdentity, StoreConfig};

/// `"mixed"`, `"q"` or `"f32"` as a weight path.
pub fn weight_path(dtype: &str) -> anyhow::Result<WeightPath> {
    match dtype {
        "mixed" => Ok(WeightPath::Mixed),
        "q" => Ok(WeightPath::Quantized),
        "f32" => Ok(WeightPath::F32),
        other => bail!("dtype must be mixed, q or f32, got {other:?}"),
    }
}

/// The model, its tokenizer, and the store whose caches belong to them,
/// all on the device named `device` (`cpu`, `cuda`, `cuda:N`).
pub fn open(
    path: &Path,
    weights: WeightPath,
    device: &str,
    instruction: &str,
    store: &StoreConfig,
) -> anyhow::Result<(Model, TextTokenizer, DocumentStore)> {
    let options = LoadOptions {
        weight_path: weights,
        device: device_from_name(device)?,
    };
    let model =
        load_model(path, &options).with_context(|| format!("loading model {}", path.display()))?;
    let tokenizer = TextTokenizer::from_path(path)
        .with_context(|| format!("loading tokenizer of {}", path.display()))?;
    let identity = ModelIdentity::new(
        model.config(),
        model_fingerprint(path, &format!("{weights:?}"))?,
        tokenizer.prompt_ids(instruction)?,
    );
    let store = DocumentStore::open(store, identity, model.device())
        .with_context(|| format!("opening the store in {}", store.data_dir.display()))?;
    Ok((model, tokenizer, store))
}
