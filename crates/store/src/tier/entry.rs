//! [`Entry`]: a cache on its way between tiers, decoded, encoded or both.

use std::sync::{Arc, OnceLock};

use prophetkv_model::DocCache;

use crate::blob::Codec;
use crate::key::CacheKey;
use crate::Result;

/// A cache as one tier hands it to another. Memory tiers hold the decoded
/// form, byte tiers the encoded one; each form is made at most once, when a
/// tier first asks for it.
#[derive(Debug, Default)]
pub struct Entry {
    cache: OnceLock<Arc<DocCache>>,
    bytes: OnceLock<Arc<Vec<u8>>>,
}

impl Entry {
    /// An entry from a decoded cache.
    pub fn decoded(cache: Arc<DocCache>) -> Self {
        let entry = Self::default();
        let _ = entry.cache.set(cache);
        entry
    }

    /// An entry from a stored blob (checked when first decoded).
    pub fn encoded(bytes: Vec<u8>) -> Self {
        let entry = Self::default();
        let _ = entry.bytes.set(Arc::new(bytes));
        entry
    }

    /// The decoded cache; decoding checks the blob (see [`Codec::decode`]).
    pub fn cache(&self, key: &CacheKey, codec: &Codec) -> Result<Arc<DocCache>> {
        if let Some(c) = self.cache.get() {
            return Ok(c.clone());
        }
        let bytes = self.bytes(key, codec)?;
        let decoded = Arc::new(codec.decode(&bytes, key)?);
        Ok(self.cache.get_or_init(|| decoded).clone())
    }

    /// The blob.
    pub fn bytes(&self, key: &CacheKey, codec: &Codec) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.bytes.get() {
            return Ok(b.clone());
        }
        let Some(cache) = self.cache.get() else {
            // Unreachable by construction: every entry starts with one form.
            return Err(crate::StoreError::Invalid {
                field: "entry",
                reason: "an entry with neither a cache nor a blob".into(),
            });
        };
        let encoded = Arc::new(codec.encode(cache, key)?);
        Ok(self.bytes.get_or_init(|| encoded).clone())
    }
}
