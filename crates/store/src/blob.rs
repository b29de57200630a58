//! A document cache as bytes: safetensors with a checksummed header.
//!
//! Tensors `k.{layer}` and `v.{layer}` (pre-RoPE keys and values in the
//! configured [`KvDtype`]) plus `anchor` and `tokens` (u32 ids). The header's
//! metadata names the format, the model fingerprint, the storage key and a
//! blake3 checksum over every tensor's name, dtype, shape and bytes. A blob
//! whose format, fingerprint, key, checksum, dtype or shapes do not match is
//! rejected with [`StoreError::Integrity`] and never becomes a cache.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use prophetkv_model::DocCache;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::identity::ModelIdentity;
use crate::key::CacheKey;
use crate::{Result, StoreError};

const FORMAT: &str = "prophetkv-kv-1";

/// Element type of stored keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KvDtype {
    /// Half precision (the CPU default: half the bytes, ~1e-3 relative error).
    #[default]
    F16,
    /// bfloat16 (the GPU default).
    Bf16,
    /// Exact.
    F32,
}

impl KvDtype {
    fn candle(self) -> DType {
        match self {
            KvDtype::F16 => DType::F16,
            KvDtype::Bf16 => DType::BF16,
            KvDtype::F32 => DType::F32,
        }
    }

    fn safetensors(self) -> Dtype {
        match self {
            KvDtype::F16 => Dtype::F16,
            KvDtype::Bf16 => Dtype::BF16,
            KvDtype::F32 => Dtype::F32,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            KvDtype::F16 | KvDtype::Bf16 => 2,
            KvDtype::F32 => 4,
        }
    }
}

fn integrity(key: &CacheKey, reason: impl Into<String>) -> StoreError {
    StoreError::Integrity {
        key: key.hex(),
        reason: reason.into(),
    }
}

fn le_bytes(t: &Tensor, dtype: KvDtype) -> Result<Vec<u8>> {
    let t = t.to_dtype(dtype.candle())?.flatten_all()?;
    Ok(match dtype {
        KvDtype::F16 => t
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        KvDtype::Bf16 => t
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        KvDtype::F32 => t
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
    })
}

fn ids_bytes(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn checksum<'a>(tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>) -> String {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = blake3::Hasher::new();
    for (name, dtype, shape, data) in sorted {
        h.update(name.as_bytes());
        h.update(format!("{dtype:?}{shape:?}").as_bytes());
        h.update(data);
    }
    h.finalize().to_hex().to_string()
}

/// Serialises `cache` for storage under `key`.
pub fn encode(
    cache: &DocCache,
    key: &CacheKey,
    fingerprint: &str,
    dtype: KvDtype,
) -> Result<Vec<u8>> {
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (l, (k, v)) in cache.layers().iter().enumerate() {
        buffers.push((
            format!("k.{l}"),
            dtype.safetensors(),
            k.dims().to_vec(),
            le_bytes(k, dtype)?,
        ));
        buffers.push((
            format!("v.{l}"),
            dtype.safetensors(),
            v.dims().to_vec(),
            le_bytes(v, dtype)?,
        ));
    }
    buffers.push((
        "anchor".into(),
        Dtype::U32,
        vec![cache.anchor().len()],
        ids_bytes(cache.anchor()),
    ));
    buffers.push((
        "tokens".into(),
        Dtype::U32,
        vec![cache.len()],
        ids_bytes(cache.tokens()),
    ));
    let sum = checksum(
        buffers
            .iter()
            .map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.as_slice())),
    );
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("fingerprint".to_string(), fingerprint.to_string()),
        ("key".to_string(), key.hex()),
        ("layers".to_string(), cache.layers().len().to_string()),
        ("checksum".to_string(), sum),
    ]);
    let views = buffers
        .iter()
        .map(|(n, d, s, b)| {
            Ok((
                n.clone(),
                TensorView::new(*d, s.clone(), b).map_err(|e| integrity(key, e.to_string()))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| integrity(key, e.to_string()))
}

/// What a blob must be to be served.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// Storage key the blob was written under.
    pub key: &'a CacheKey,
    /// Fingerprint of the running model.
    pub fingerprint: &'a str,
    /// Layers of the running model.
    pub layers: usize,
    /// `(kv_heads, head_dim)` of the running model.
    pub head_shape: (usize, usize),
    /// The anchor ids in use.
    pub anchor: &'a [u32],
}

/// Parses and checks a blob into a cache in host memory; any mismatch is an
/// [`StoreError::Integrity`] error.
pub fn decode(bytes: &[u8], expected: &Expected<'_>) -> Result<DocCache> {
    let key = expected.key;
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| integrity(key, format!("unreadable: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| integrity(key, format!("unreadable: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let field = |name: &str| meta.get(name).cloned().unwrap_or_default();
    if field("format") != FORMAT {
        return Err(integrity(key, format!("format {:?}", field("format"))));
    }
    if field("fingerprint") != expected.fingerprint {
        return Err(integrity(key, "written by another model"));
    }
    if field("key") != key.hex() {
        return Err(integrity(key, "stored under another key"));
    }
    let tensors = st.tensors();
    let sum = checksum(
        tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.dtype(), t.shape(), t.data())),
    );
    // Fuzzing skips the checksum, so that mutated blobs reach the checks behind it.
    if sum != field("checksum") && !cfg!(fuzzing) {
        return Err(integrity(key, "checksum mismatch"));
    }
    let ids = |name: &str| -> Result<Vec<u32>> {
        let t = st
            .tensor(name)
            .map_err(|_| integrity(key, format!("missing {name}")))?;
        if t.dtype() != Dtype::U32 {
            return Err(integrity(key, format!("{name} is not u32")));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let tokens = ids("tokens")?;
    let anchor = ids("anchor")?;
    if anchor != expected.anchor {
        return Err(integrity(key, "cached after another anchor prefix"));
    }
    let (heads, dim) = expected.head_shape;
    let want = [tokens.len(), heads, dim];
    let mut layers = Vec::with_capacity(expected.layers);
    for l in 0..expected.layers {
        let load = |name: String| -> Result<Tensor> {
            let t = st
                .tensor(&name)
                .map_err(|_| integrity(key, format!("missing {name}")))?;
            if t.shape() != want {
                return Err(integrity(
                    key,
                    format!("{name} has shape {:?}, expected {want:?}", t.shape()),
                ));
            }
            let dtype = match t.dtype() {
                Dtype::F16 => DType::F16,
                Dtype::BF16 => DType::BF16,
                Dtype::F32 => DType::F32,
                other => return Err(integrity(key, format!("{name} has dtype {other:?}"))),
            };
            Ok(
                Tensor::from_raw_buffer(t.data(), dtype, t.shape(), &Device::Cpu)?
                    .to_dtype(DType::F32)?,
            )
        };
        layers.push((load(format!("k.{l}"))?, load(format!("v.{l}"))?));
    }
    if st.len() != 2 * expected.layers + 2 {
        return Err(integrity(
            key,
            format!("{} tensors for {} layers", st.len(), expected.layers),
        ));
    }
    DocCache::from_parts(anchor, tokens, layers).map_err(|e| integrity(key, e.to_string()))
}

/// This store's blob format for one model: encodes caches under a key and
/// checks a blob belongs to this model and key before it becomes a cache
/// (in host memory: the device tier copies it to the model's device).
#[derive(Debug, Clone)]
pub struct Codec {
    fingerprint: String,
    layers: usize,
    head_shape: (usize, usize),
    anchor: Vec<u32>,
    dtype: KvDtype,
    model_dtype: candle_core::DType,
}

impl Codec {
    /// The codec of `model`'s caches, stored as `dtype`.
    pub fn new(model: &ModelIdentity, dtype: KvDtype) -> Self {
        Self {
            fingerprint: model.fingerprint.clone(),
            layers: model.layers,
            head_shape: (model.kv_heads, model.head_dim),
            anchor: model.anchor.clone(),
            dtype,
            model_dtype: model.kv_dtype,
        }
    }

    /// The precision the model computes K/V in, which caches handed to it
    /// are converted to.
    pub(crate) fn model_dtype(&self) -> candle_core::DType {
        self.model_dtype
    }

    /// `cache` as a blob stored under `key`.
    pub fn encode(&self, cache: &DocCache, key: &CacheKey) -> Result<Vec<u8>> {
        encode(cache, key, &self.fingerprint, self.dtype)
    }

    /// The cache in a blob stored under `key`, in host memory; [`StoreError::Integrity`]
    /// when it is not this model's, not this key's, or damaged.
    pub fn decode(&self, bytes: &[u8], key: &CacheKey) -> Result<DocCache> {
        let expected = Expected {
            key,
            fingerprint: &self.fingerprint,
            layers: self.layers,
            head_shape: self.head_shape,
            anchor: &self.anchor,
        };
        decode(bytes, &expected)
    }
}
