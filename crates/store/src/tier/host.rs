//! Decoded caches in host memory, weighed by bytes.
//!
//! Whatever the model's device, the caches here are CPU tensors: one that
//! arrives from the device tier is copied to host memory as it enters.

use std::sync::Arc;

use moka::sync::Cache;
use prophetkv_model::DocCache;

use super::{Entry, KvTier, Tier};
use crate::blob::Codec;
use crate::key::CacheKey;
use crate::Result;

/// In-memory tier; weights are KiB so budgets up to 4 TiB fit moka's `u32` weights.
///
/// Its evictions are not demoted: moka evicts in the background, and every
/// cache it holds was written through to the tiers below when it arrived.
/// (The device tier's are: see [`super::DeviceTier`].)
pub struct HostTier {
    cache: Option<Cache<CacheKey, Arc<DocCache>>>,
}

impl HostTier {
    /// A tier holding at most `budget` bytes (0 disables it).
    pub fn new(budget: u64) -> Self {
        let cache = (budget > 0).then(|| {
            Cache::builder()
                .max_capacity(budget.div_ceil(1024))
                .weigher(|_: &CacheKey, v: &Arc<DocCache>| {
                    u32::try_from(v.byte_size().div_ceil(1024)).unwrap_or(u32::MAX)
                })
                .build()
        });
        Self { cache }
    }
}

impl KvTier for HostTier {
    fn tier(&self) -> Tier {
        Tier::Host
    }

    fn get(&self, key: &CacheKey) -> Result<Option<Entry>> {
        Ok(self
            .cache
            .as_ref()
            .and_then(|c| c.get(key))
            .map(Entry::host))
    }

    fn contains(&self, key: &CacheKey) -> Result<bool> {
        Ok(self.cache.as_ref().is_some_and(|c| c.contains_key(key)))
    }

    fn put(&self, key: &CacheKey, entry: &Entry, codec: &Codec) -> Result<Vec<(CacheKey, Entry)>> {
        if let Some(c) = &self.cache {
            c.insert(*key, entry.cache(key, codec)?);
        }
        Ok(Vec::new())
    }

    fn remove(&self, key: &CacheKey) -> Result<()> {
        if let Some(c) = &self.cache {
            c.invalidate(key);
        }
        Ok(())
    }

    /// Rounded up to KiB per entry, after pending evictions.
    fn used_bytes(&self) -> Result<u64> {
        Ok(match &self.cache {
            Some(c) => {
                c.run_pending_tasks();
                c.weighted_size() * 1024
            }
            None => 0,
        })
    }
}
