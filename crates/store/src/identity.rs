//! Which model a store's caches belong to, and the fingerprint that tells.

use std::path::{Path, PathBuf};

use crate::{Result, StoreError};

/// The model the caches belong to.
#[derive(Debug, Clone)]
pub struct ModelIdentity {
    /// Changes whenever the KV would (weights, weight path).
    pub fingerprint: String,
    /// Transformer blocks.
    pub layers: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// BOS + instruction prefix every document is cached after.
    pub anchor: Vec<u32>,
    /// Tokens every document is cached behind, between the anchor and the
    /// document, its rows then filed under the anchor alone (empty: none): a
    /// stand-in for the documents a request puts before it. Set with
    /// [`ModelIdentity::with_preamble`], which keys it into the fingerprint.
    pub preamble: Vec<u32>,
    /// The precision the model computes its K/V in: caches are handed to it
    /// in this precision (blobs keep their own, `StoreConfig::kv_dtype`).
    pub kv_dtype: candle_core::DType,
}

impl ModelIdentity {
    /// The identity of `model`, fingerprinted as `fingerprint`, whose
    /// documents are cached after `anchor`.
    pub fn new(model: &prophetkv_model::Model, fingerprint: String, anchor: Vec<u32>) -> Self {
        let config = model.config();
        Self {
            fingerprint,
            layers: config.num_layers(),
            kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            anchor,
            preamble: Vec::new(),
            kv_dtype: model.dtype(),
        }
    }

    /// The same identity with documents cached behind `preamble`: caches
    /// computed behind another preamble (or none) differ, so the fingerprint
    /// names it and their keys never meet.
    pub fn with_preamble(mut self, preamble: Vec<u32>) -> Self {
        if !preamble.is_empty() {
            let mut h = blake3::Hasher::new();
            for id in &preamble {
                h.update(&id.to_le_bytes());
            }
            let hex = h.finalize().to_hex();
            self.fingerprint = format!("{}+preamble:{}", self.fingerprint, &hex[..16]);
        }
        self.preamble = preamble;
        self
    }
}

/// A fingerprint of the model file and weight path: the file's size and
/// first and last MiB, hashed (reading all of a multi-GB file at start-up
/// would cost seconds; any re-quantisation changes these bytes).
pub fn model_fingerprint(path: &Path, weight_path: &str) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut h = blake3::Hasher::new();
    h.update(weight_path.as_bytes());
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| StoreError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "safetensors" || x == "json")
            })
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    for file in files {
        let mut f = std::fs::File::open(&file).map_err(|e| StoreError::io(&file, e))?;
        let len = f.metadata().map_err(|e| StoreError::io(&file, e))?.len();
        h.update(&len.to_le_bytes());
        let mut buf = vec![0u8; (1 << 20).min(len as usize)];
        f.read_exact(&mut buf)
            .map_err(|e| StoreError::io(&file, e))?;
        h.update(&buf);
        f.seek(SeekFrom::Start(len - buf.len() as u64))
            .map_err(|e| StoreError::io(&file, e))?;
        f.read_exact(&mut buf)
            .map_err(|e| StoreError::io(&file, e))?;
        h.update(&buf);
    }
    Ok(h.finalize().to_hex()[..32].to_string())
}
