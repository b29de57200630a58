//! What the fuzz targets share: a scratch directory for inputs the code under
//! test reads from a path, the blob codec's expected identity, the framing of
//! a model directory in one input, and the real models' tokenizers and chat
//! templates (fetched by `make model`).
//!
//! The seed corpora come from the test suite: `crates/cli/tests/fuzz_seeds.rs`
//! writes inputs that the code under test accepts, in the formats read here.
//! That test compiles this file as one of its modules, so `make test` keeps it
//! building (this crate is its own workspace, which only `make fuzz` builds).

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use prophetkv_model::{LoadOptions, TextTokenizer, WeightPath};
use prophetkv_server::chat_template::ChatTemplate;
use prophetkv_store::{CacheKey, Codec, KvDtype, ModelIdentity};

/// Fingerprint of the model the `kv_blob` target's codec expects (the seeds
/// are encoded under the same one).
pub const BLOB_FINGERPRINT: &str = "fuzz-model";
/// Anchor ids the `kv_blob` target's codec expects.
pub const BLOB_ANCHOR: [u32; 2] = [2, 5];
/// `(layers, kv_heads, head_dim)` the `kv_blob` target's codec expects.
pub const BLOB_SHAPE: (usize, usize, usize) = (3, 2, 4);
/// Document ids the `kv_blob` target's key is made from.
pub const BLOB_DOCUMENT: [u32; 3] = [7, 8, 9];

/// The identity of the model the `kv_blob` target's blobs belong to.
pub fn blob_identity() -> ModelIdentity {
    let (layers, kv_heads, head_dim) = BLOB_SHAPE;
    ModelIdentity {
        fingerprint: BLOB_FINGERPRINT.to_string(),
        layers,
        kv_heads,
        head_dim,
        anchor: BLOB_ANCHOR.to_vec(),
        preamble: Vec::new(),
        kv_dtype: candle_core::DType::F32,
    }
}

/// The key the `kv_blob` target's blobs are stored under.
pub fn blob_key() -> CacheKey {
    CacheKey::new(BLOB_FINGERPRINT, &BLOB_ANCHOR, &BLOB_DOCUMENT)
}

/// The codec the `kv_blob` target decodes with, and the key its blobs are under.
pub fn blob_codec() -> (Codec, CacheKey) {
    (Codec::new(&blob_identity(), KvDtype::F16), blob_key())
}

/// A model directory in one input: a little-endian u32 length, that many
/// bytes of `config.json`, then `model.safetensors`.
pub fn split_model_dir(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let rest = &data[4..];
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// [`split_model_dir`]'s inverse.
pub fn join_model_dir(config: &[u8], safetensors: &[u8]) -> Vec<u8> {
    let mut out = (config.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(config);
    out.extend_from_slice(safetensors);
    out
}

/// A directory that lives as long as the process, on tmpfs where there is one.
pub fn scratch_dir() -> &'static Path {
    static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        };
        dir.expect("a scratch directory for fuzz inputs")
    });
    DIR.path()
}

/// Writes `bytes` to `name` in the scratch directory.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, bytes).expect("writing a fuzz input to the scratch directory");
    path
}

/// f32 weights: the cheapest load that still builds every layer.
pub fn f32_load() -> LoadOptions {
    LoadOptions {
        weight_path: WeightPath::F32,
        ..LoadOptions::default()
    }
}

/// A real model's tokenizer and chat template.
pub struct RealModel {
    /// Its tokenizer, read from the GGUF file.
    pub tokenizer: TextTokenizer,
    /// Its chat template, compiled as the server compiles it.
    pub template: Option<Arc<ChatTemplate>>,
    /// Its vocabulary size.
    pub vocab_size: usize,
    /// Which byte values some token stands for alone. A byte-level
    /// vocabulary may lack a few (SmolLM2 has none for 21, among them
    /// U+0013 and the lead byte 0xF3): text holding them cannot be
    /// represented, and the reference tokenizers drop them too.
    pub single_bytes: [bool; 256],
}

impl RealModel {
    /// Whether every byte of `text` is some token's one byte.
    pub fn represents(&self, text: &str) -> bool {
        text.bytes().all(|b| self.single_bytes[b as usize])
    }
}

fn real_model(path: PathBuf) -> RealModel {
    let tokenizer = TextTokenizer::from_path(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make model`)", path.display()));
    let token = |id: Option<u32>| id.and_then(|i| tokenizer.token(i)).unwrap_or_default();
    let bos = token(tokenizer.bos());
    let eos = token(tokenizer.eos().first().copied());
    let template = tokenizer.chat_template().map(|source| {
        Arc::new(ChatTemplate::new(source, &bos, &eos).expect("the model's template compiles"))
    });
    let mut single_bytes = [false; 256];
    let mut vocab_size = 0;
    while let Some(piece) = tokenizer.token_piece(vocab_size as u32) {
        if let [b] = piece.bytes[..] {
            single_bytes[b as usize] = true;
        }
        vocab_size += 1;
    }
    RealModel {
        tokenizer,
        template,
        vocab_size,
        single_bytes,
    }
}

/// Gemma 3 270M (SentencePiece vocabulary, Gemma's chat template).
pub fn gemma() -> &'static RealModel {
    static MODEL: LazyLock<RealModel> =
        LazyLock::new(|| real_model(prophetkv_model::testing::default_model_path()));
    &MODEL
}

/// SmolLM2 135M Instruct (byte-level BPE vocabulary, ChatML template).
pub fn smollm2() -> &'static RealModel {
    static MODEL: LazyLock<RealModel> =
        LazyLock::new(|| real_model(prophetkv_model::testing::instruct_model_path()));
    &MODEL
}
