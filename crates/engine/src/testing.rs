//! A running engine on a tiny random model, for this crate's tests and the
//! server's (feature `testing`).

use std::path::Path;
use std::sync::Arc;

use prophetkv_model::testing::{write_tiny, Tiny};
use prophetkv_model::{load_model, LoadOptions, Model, TextTokenizer, WeightPath};
use prophetkv_store::{DocumentStore, KvDtype, ModelIdentity, StoreConfig};

use crate::{EngineConfig, EngineHandle, EngineParts};

pub use prophetkv_store::testing::RedisServer;
pub use prophetkv_store::RemoteConfig;

/// The engine, what it was built from, and the directories it lives in
/// (deleted on drop).
pub struct TinyEngine {
    /// The running engine.
    pub engine: EngineHandle,
    /// The model's tokenizer.
    pub tokenizer: TextTokenizer,
    /// The store the engine uses.
    pub store: Arc<DocumentStore>,
    /// The instruction documents are cached after.
    pub instruction: String,
    /// The model's directory.
    pub model_dir: tempfile::TempDir,
    /// The store's directory.
    pub data_dir: tempfile::TempDir,
}

/// Loads the tiny model in `dir` with f32 weights.
pub fn load_tiny(dir: &Path) -> Model {
    let options = LoadOptions {
        weight_path: WeightPath::F32,
        ..LoadOptions::default()
    };
    match load_model(dir, &options) {
        Ok(model) => model,
        Err(e) => panic!("loading the tiny model: {e}"),
    }
}

/// A tiny Gemma 3 engine caching documents after `instruction`, with a
/// store in memory and on disk (and in Redis when `remote` is given).
pub fn tiny_engine(
    instruction: &str,
    config: EngineConfig,
    remote: Option<RemoteConfig>,
) -> TinyEngine {
    tiny_engine_behind(instruction, "", config, remote)
}

/// [`tiny_engine`] with documents cached behind `preamble` (empty: none).
pub fn tiny_engine_behind(
    instruction: &str,
    preamble: &str,
    config: EngineConfig,
    remote: Option<RemoteConfig>,
) -> TinyEngine {
    let model_dir = tempfile::tempdir().expect("a temporary directory");
    write_tiny(model_dir.path(), Tiny::Gemma3);
    let model = load_tiny(model_dir.path());
    let tokenizer = TextTokenizer::from_path(model_dir.path()).expect("the tiny tokenizer");
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let identity = ModelIdentity::new(
        &model,
        "tiny".into(),
        tokenizer.prompt_ids(instruction).expect("the anchor ids"),
    )
    .with_preamble(tokenizer.encode(preamble).expect("the preamble ids"));
    let store_config = StoreConfig {
        data_dir: data_dir.path().to_path_buf(),
        device_budget: 0,
        host_budget: 64 << 20,
        disk_budget: 64 << 20,
        remote,
        kv_dtype: KvDtype::F32,
    };
    let store =
        Arc::new(DocumentStore::open(&store_config, identity, model.device()).expect("the store"));
    let parts = EngineParts {
        model,
        tokenizer: tokenizer.clone(),
        store: store.clone(),
        instruction: instruction.into(),
    };
    let engine = EngineHandle::spawn(parts, config).expect("the engine");
    TinyEngine {
        engine,
        tokenizer,
        store,
        instruction: instruction.into(),
        model_dir,
        data_dir,
    }
}
