//! What the store counts: hits per tier, failures, and the bytes each tier holds.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::tier::Tier;

/// Bytes each tier holds (0 for a tier that is off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TierBytes {
    /// Caches on the model's device (exact).
    pub device: u64,
    /// Caches in host memory (rounded up to KiB per cache).
    pub host: u64,
    /// Blob files on this replica's disk.
    pub disk: u64,
    /// Blobs in Redis, over every replica sharing its prefix.
    pub remote: u64,
}

impl TierBytes {
    /// `bytes` as `tier`'s.
    pub(crate) fn set(&mut self, tier: Tier, bytes: u64) {
        match tier {
            Tier::Device => self.device = bytes,
            Tier::Host => self.host = bytes,
            Tier::Disk => self.disk = bytes,
            Tier::Remote => self.remote = bytes,
            Tier::Computed => {}
        }
    }
}

/// Counters since the store opened, and the bytes its tiers hold now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStats {
    /// Lookups served from the model's device memory.
    pub device_hits: u64,
    /// Lookups served from host memory.
    pub host_hits: u64,
    /// Lookups served from this replica's disk.
    pub disk_hits: u64,
    /// Lookups served from Redis.
    pub remote_hits: u64,
    /// Caches stored after every tier missed (computed by the caller).
    pub computed: u64,
    /// Blobs rejected by integrity checks (and deleted).
    pub integrity_failures: u64,
    /// Failed operations on a tier whose failures are misses (Redis out of reach).
    pub tier_errors: u64,
    /// Bytes each tier holds.
    pub used_bytes: TierBytes,
}

#[derive(Default)]
pub(crate) struct Counters {
    device: AtomicU64,
    host: AtomicU64,
    disk: AtomicU64,
    remote: AtomicU64,
    pub(crate) computed: AtomicU64,
    pub(crate) integrity: AtomicU64,
    pub(crate) tier_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn hit(&self, tier: Tier) {
        let counter = match tier {
            Tier::Device => &self.device,
            Tier::Host => &self.host,
            Tier::Disk => &self.disk,
            Tier::Remote => &self.remote,
            Tier::Computed => &self.computed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now, with `used_bytes`.
    pub(crate) fn snapshot(&self, used_bytes: TierBytes) -> StoreStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreStats {
            device_hits: load(&self.device),
            host_hits: load(&self.host),
            disk_hits: load(&self.disk),
            remote_hits: load(&self.remote),
            computed: load(&self.computed),
            integrity_failures: load(&self.integrity),
            tier_errors: load(&self.tier_errors),
            used_bytes,
        }
    }
}
