//! [`Entry`]: a cache on its way between tiers, in the forms tiers ask for.

use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device};
use prophetkv_model::DocCache;

use crate::blob::Codec;
use crate::key::CacheKey;
use crate::Result;

/// A cache as one tier hands it to another. The host tier holds it decoded
/// in host memory, the device tier decoded on the model's device, byte
/// tiers encoded; each form is made at most once, when a tier (or the
/// store, for what it returns) first asks for it, from the forms at hand.
/// Every form holds the same values, the device form in the model's
/// precision (and a host form made from it keeps that precision).
#[derive(Debug, Default)]
pub struct Entry {
    host: OnceLock<Arc<DocCache>>,
    device: OnceLock<Arc<DocCache>>,
    bytes: OnceLock<Arc<Vec<u8>>>,
}

/// `cache` with every tensor on `device`, converted to `dtype` when one is
/// given (shared, not copied, when it is there and so already).
pub(crate) fn moved(cache: &DocCache, device: &Device, dtype: Option<DType>) -> Result<DocCache> {
    let to = |t: &candle_core::Tensor| {
        let t = t.to_device(device)?;
        match dtype {
            Some(dtype) => t.to_dtype(dtype),
            None => Ok(t),
        }
    };
    let layers = cache
        .layers()
        .iter()
        .map(|(k, v)| Ok((to(k)?, to(v)?)))
        .collect::<Result<Vec<_>>>()?;
    // The shapes are the checked cache's, so this cannot fail.
    DocCache::from_parts(cache.anchor().to_vec(), cache.tokens().to_vec(), layers).map_err(|e| {
        crate::StoreError::Invalid {
            field: "cache",
            reason: e.to_string(),
        }
    })
}

impl Entry {
    /// An entry from a cache decoded in host memory.
    pub fn host(cache: Arc<DocCache>) -> Self {
        let entry = Self::default();
        let _ = entry.host.set(cache);
        entry
    }

    /// An entry from a cache on the model's device.
    pub fn on_device(cache: Arc<DocCache>) -> Self {
        let entry = Self::default();
        let _ = entry.device.set(cache);
        entry
    }

    /// An entry from a stored blob (checked when first decoded).
    pub fn encoded(bytes: Vec<u8>) -> Self {
        let entry = Self::default();
        let _ = entry.bytes.set(Arc::new(bytes));
        entry
    }

    /// The cache in host memory: decoded from the blob (which checks it,
    /// see [`Codec::decode`]) or copied from the device.
    pub fn cache(&self, key: &CacheKey, codec: &Codec) -> Result<Arc<DocCache>> {
        if let Some(c) = self.host.get() {
            return Ok(c.clone());
        }
        let host = match self.device.get() {
            Some(on_device) => moved(on_device, &Device::Cpu, None)?,
            None => codec.decode(&self.bytes(key, codec)?, key)?,
        };
        Ok(self.host.get_or_init(|| Arc::new(host)).clone())
    }

    /// The cache on `device` (the model's), in the model's precision: copied
    /// there from host memory once, decoding the blob first if need be.
    pub fn device_cache(
        &self,
        key: &CacheKey,
        codec: &Codec,
        device: &Device,
    ) -> Result<Arc<DocCache>> {
        if let Some(c) = self.device.get() {
            return Ok(c.clone());
        }
        let on_device = moved(&*self.cache(key, codec)?, device, Some(codec.model_dtype()))?;
        Ok(self.device.get_or_init(|| Arc::new(on_device)).clone())
    }

    /// The blob.
    pub fn bytes(&self, key: &CacheKey, codec: &Codec) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.bytes.get() {
            return Ok(b.clone());
        }
        let Some(cache) = self.host.get().or_else(|| self.device.get()) else {
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
