//! Decoded caches in memory, weighed by bytes.

use std::sync::Arc;

use moka::sync::Cache;
use prophetkv_reuse::DocCache;

use crate::key::CacheKey;

/// In-memory tier; weights are KiB so budgets up to 4 TiB fit moka's `u32` weights.
pub struct HostTier {
    cache: Option<Cache<CacheKey, Arc<DocCache>>>,
}

/// Bytes a decoded cache occupies (f32 keys and values).
pub fn cache_bytes(cache: &DocCache) -> u64 {
    cache
        .layers()
        .iter()
        .map(|(k, v)| (k.elem_count() + v.elem_count()) as u64 * 4)
        .sum()
}

impl HostTier {
    /// A tier holding at most `budget` bytes (0 disables it).
    pub fn new(budget: u64) -> Self {
        let cache = (budget > 0).then(|| {
            Cache::builder()
                .max_capacity(budget.div_ceil(1024))
                .weigher(|_: &CacheKey, v: &Arc<DocCache>| {
                    u32::try_from(cache_bytes(v).div_ceil(1024)).unwrap_or(u32::MAX)
                })
                .build()
        });
        Self { cache }
    }

    /// The cache under `key`, if held.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<DocCache>> {
        self.cache.as_ref()?.get(key)
    }

    /// Holds `value` under `key` (evicting least-recently-used entries beyond the budget).
    pub fn put(&self, key: CacheKey, value: Arc<DocCache>) {
        if let Some(c) = &self.cache {
            c.insert(key, value);
        }
    }

    /// Drops `key`.
    pub fn remove(&self, key: &CacheKey) {
        if let Some(c) = &self.cache {
            c.invalidate(key);
        }
    }

    /// Bytes held (rounded up to KiB per entry), after pending evictions.
    pub fn used_bytes(&self) -> u64 {
        match &self.cache {
            Some(c) => {
                c.run_pending_tasks();
                c.weighted_size() * 1024
            }
            None => 0,
        }
    }
}
