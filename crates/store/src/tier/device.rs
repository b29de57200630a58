//! Decoded caches in the model's device memory (the GPU), in front of the host tier.
//!
//! A cache is copied to the device once, when it enters this tier (inserted,
//! or promoted from a tier below); a hit here hands out that device-resident
//! copy, so a request's documents are assembled without a trip through host
//! memory.
//!
//! Invariants: the bytes held (each cache weighed by [`DocCache::byte_size`],
//! exactly) never exceed the budget once [`KvTier::put`] returns; a cache
//! larger than the whole budget is not held. Past the budget the least
//! recently used caches (a `get` or a `put` is a use) are evicted, and
//! unlike the host tier's they are returned from `put`, so that the store
//! demotes them to the host tier (which copies them to host memory).
//!
//! Cost: one mutex around a hash map and an ordered map, `O(log n)` per
//! operation; no tensor is copied while it is held.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::Device;
use prophetkv_model::DocCache;

use super::{Entry, KvTier, Tier};
use crate::blob::Codec;
use crate::key::CacheKey;
use crate::Result;

struct Held {
    cache: Arc<DocCache>,
    size: u64,
    last_use: u64,
}

/// Which caches are held, in order of last use, and their bytes.
#[derive(Default)]
struct Lru {
    held: HashMap<CacheKey, Held>,
    /// Last-use tick → key; the first is the least recently used.
    order: BTreeMap<u64, CacheKey>,
    used: u64,
    tick: u64,
}

impl Lru {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The cache under `key`, marked used now.
    fn touch(&mut self, key: &CacheKey) -> Option<Arc<DocCache>> {
        let tick = self.next_tick();
        let held = self.held.get_mut(key)?;
        self.order.remove(&held.last_use);
        held.last_use = tick;
        self.order.insert(tick, *key);
        Some(held.cache.clone())
    }

    fn remove(&mut self, key: &CacheKey) -> Option<Held> {
        let held = self.held.remove(key)?;
        self.order.remove(&held.last_use);
        self.used -= held.size;
        Some(held)
    }

    /// Holds `cache` under `key` (replacing what was there), used now.
    fn insert(&mut self, key: &CacheKey, cache: Arc<DocCache>, size: u64) {
        self.remove(key);
        let tick = self.next_tick();
        self.order.insert(tick, *key);
        self.used += size;
        self.held.insert(
            *key,
            Held {
                cache,
                size,
                last_use: tick,
            },
        );
    }

    /// Evicts the least recently used caches until `budget` is met.
    fn evict_past(&mut self, budget: u64) -> Vec<(CacheKey, Arc<DocCache>)> {
        let mut evicted = Vec::new();
        while self.used > budget {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some(held) = self.held.remove(&victim) {
                self.used -= held.size;
                evicted.push((victim, held.cache));
            }
        }
        evicted
    }
}

/// Caches on the model's device within a byte budget.
pub struct DeviceTier {
    device: Device,
    budget: u64,
    lru: Mutex<Lru>,
}

impl DeviceTier {
    /// A tier holding at most `budget` bytes of caches on `device` (the model's).
    pub fn new(device: &Device, budget: u64) -> Self {
        Self {
            device: device.clone(),
            budget,
            lru: Mutex::default(),
        }
    }

    fn lru(&self) -> MutexGuard<'_, Lru> {
        // Every update leaves the maps and the byte count consistent before
        // anything that can panic, so a poisoned lock is still usable.
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KvTier for DeviceTier {
    fn tier(&self) -> Tier {
        Tier::Device
    }

    fn get(&self, key: &CacheKey) -> Result<Option<Entry>> {
        Ok(self.lru().touch(key).map(Entry::on_device))
    }

    fn contains(&self, key: &CacheKey) -> Result<bool> {
        Ok(self.lru().held.contains_key(key))
    }

    fn put(&self, key: &CacheKey, entry: &Entry, codec: &Codec) -> Result<Vec<(CacheKey, Entry)>> {
        if self.budget == 0 {
            return Ok(Vec::new());
        }
        // Copied to the device outside the lock; the entry keeps the copy,
        // so the store hands out this same one.
        let cache = entry.device_cache(key, codec, &self.device)?;
        let size = cache.byte_size();
        let mut lru = self.lru();
        if size > self.budget {
            lru.remove(key);
            return Ok(Vec::new());
        }
        lru.insert(key, cache, size);
        let evicted = lru.evict_past(self.budget);
        drop(lru);
        Ok(evicted
            .into_iter()
            .map(|(k, cache)| (k, Entry::on_device(cache)))
            .collect())
    }

    fn remove(&self, key: &CacheKey) -> Result<()> {
        self.lru().remove(key);
        Ok(())
    }

    /// Exact: the sum of the held caches' [`DocCache::byte_size`].
    fn used_bytes(&self) -> Result<u64> {
        Ok(self.lru().used)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Tensor};

    use super::*;
    use crate::{KvDtype, ModelIdentity};

    const HEADS: usize = 1;
    const DIM: usize = 4;

    fn codec() -> Codec {
        let model = ModelIdentity {
            fingerprint: "test".into(),
            layers: 1,
            kv_heads: HEADS,
            head_dim: DIM,
            anchor: vec![1],
            preamble: Vec::new(),
            kv_dtype: DType::F32,
        };
        Codec::new(&model, KvDtype::F32)
    }

    /// A one-layer f32 cache of `tokens` rows: `2 * tokens * HEADS * DIM * 4` bytes.
    fn cache(tokens: u32) -> Arc<DocCache> {
        let rows = tokens as usize;
        let k = Tensor::zeros((rows, HEADS, DIM), DType::F32, &Device::Cpu).unwrap();
        let ids = (0..tokens).collect();
        Arc::new(DocCache::from_parts(vec![1], ids, vec![(k.clone(), k)]).unwrap())
    }

    fn key(n: u32) -> CacheKey {
        CacheKey::new("test", &[1], &[n])
    }

    fn put(tier: &DeviceTier, n: u32, tokens: u32) -> Vec<CacheKey> {
        let entry = Entry::host(cache(tokens));
        let evicted = tier.put(&key(n), &entry, &codec()).unwrap();
        evicted.into_iter().map(|(k, _)| k).collect()
    }

    /// Bytes of `cache(tokens)`.
    fn bytes(tokens: u32) -> u64 {
        cache(tokens).byte_size()
    }

    #[test]
    fn used_bytes_are_the_exact_sum_of_held_caches() {
        let tier = DeviceTier::new(&Device::Cpu, 10 * bytes(4));
        put(&tier, 1, 4);
        put(&tier, 2, 3);
        assert_eq!(tier.used_bytes().unwrap(), bytes(4) + bytes(3));
        put(&tier, 1, 4);
        assert_eq!(
            tier.used_bytes().unwrap(),
            bytes(4) + bytes(3),
            "a cache put again is counted once"
        );
        tier.remove(&key(2)).unwrap();
        assert_eq!(tier.used_bytes().unwrap(), bytes(4));
        assert!(!tier.contains(&key(2)).unwrap());
    }

    #[test]
    fn put_past_the_budget_returns_the_least_recently_used() {
        let tier = DeviceTier::new(&Device::Cpu, 3 * bytes(2));
        for n in 1..=3 {
            assert!(put(&tier, n, 2).is_empty());
        }
        // 1 is used, so 2 is now the least recently used.
        assert!(tier.get(&key(1)).unwrap().is_some());
        assert_eq!(put(&tier, 4, 2), vec![key(2)]);
        assert_eq!(put(&tier, 5, 2), vec![key(3)]);
        assert_eq!(tier.used_bytes().unwrap(), 3 * bytes(2));
        for (n, held) in [(1, true), (2, false), (3, false), (4, true), (5, true)] {
            assert_eq!(tier.contains(&key(n)).unwrap(), held, "key {n}");
        }
    }

    #[test]
    fn a_large_put_evicts_as_many_as_it_needs() {
        let tier = DeviceTier::new(&Device::Cpu, 4 * bytes(1));
        for n in 1..=4 {
            put(&tier, n, 1);
        }
        assert_eq!(put(&tier, 9, 3), vec![key(1), key(2), key(3)]);
        assert_eq!(tier.used_bytes().unwrap(), bytes(3) + bytes(1));
    }

    #[test]
    fn a_cache_larger_than_the_budget_is_not_held_and_evicts_nothing() {
        let tier = DeviceTier::new(&Device::Cpu, bytes(2));
        put(&tier, 1, 2);
        assert!(put(&tier, 2, 3).is_empty());
        assert!(!tier.contains(&key(2)).unwrap());
        assert!(tier.contains(&key(1)).unwrap());
        assert_eq!(tier.used_bytes().unwrap(), bytes(2));
    }

    #[test]
    fn a_zero_budget_holds_nothing() {
        let tier = DeviceTier::new(&Device::Cpu, 0);
        assert!(put(&tier, 1, 1).is_empty());
        assert!(tier.get(&key(1)).unwrap().is_none());
        assert_eq!(tier.used_bytes().unwrap(), 0);
    }

    #[test]
    fn evicted_entries_hand_back_the_held_cache() {
        let tier = DeviceTier::new(&Device::Cpu, bytes(2));
        let first = Entry::host(cache(2));
        tier.put(&key(1), &first, &codec()).unwrap();
        let held = tier.get(&key(1)).unwrap().unwrap();
        let held = held.device_cache(&key(1), &codec(), &Device::Cpu).unwrap();
        let evicted = tier.put(&key(2), &Entry::host(cache(2)), &codec()).unwrap();
        let [(victim, entry)] = evicted.as_slice() else {
            panic!("one eviction expected, got {}", evicted.len());
        };
        assert_eq!(*victim, key(1));
        let back = entry.device_cache(victim, &codec(), &Device::Cpu).unwrap();
        assert!(
            Arc::ptr_eq(&held, &back),
            "the device copy itself is demoted"
        );
    }
}
