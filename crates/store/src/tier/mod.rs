//! The tiers a document cache can live in, fastest first, behind one trait.
//!
//! - [`DeviceTier`]: decoded caches on the model's device (the GPU), LRU
//!   within a byte budget; its evictions are returned, to be demoted.
//! - [`HostTier`]: decoded caches in host memory (moka, weighed by bytes).
//! - [`DiskTier`]: one checksummed blob file per cache, written atomically.
//! - [`RemoteTier`]: blobs in Redis, shared by every replica.
//!
//! The store writes a new cache through to every tier with room, promotes a
//! hit into the tiers above the one it came from, and offers what a tier
//! evicts to the tier below (eviction demotes, it does not drop, while a
//! lower tier has room). Caches move between host and device memory only
//! where they cross the device tier's boundary (see [`Entry`]).

mod device;
mod disk;
mod entry;
mod host;
mod remote;

pub use device::DeviceTier;
pub use disk::DiskTier;
pub use entry::Entry;
pub use host::HostTier;
pub use remote::{RemoteConfig, RemoteTier};

use serde::Serialize;

use crate::blob::Codec;
use crate::key::CacheKey;
use crate::Result;

/// Where a lookup found a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Decoded, in the model's device memory (the GPU).
    Device,
    /// Decoded, in host memory.
    Host,
    /// A blob file on this replica's disk.
    Disk,
    /// A blob in Redis.
    Remote,
    /// Not stored anywhere: computed from the text.
    Computed,
}

/// One level of the cache hierarchy. Implementations are synchronous and
/// safe to share between threads; each keeps its own byte budget.
pub trait KvTier: Send + Sync {
    /// Which tier this is, for hits and stats.
    fn tier(&self) -> Tier;
    /// The entry under `key`, if held (marks it recently used). The store
    /// checks it before serving it.
    fn get(&self, key: &CacheKey) -> Result<Option<Entry>>;
    /// Whether `key` is held, without reading it.
    fn contains(&self, key: &CacheKey) -> Result<bool>;
    /// Holds `entry` under `key` (an entry larger than the whole budget is
    /// not held) and returns what it evicted to make room.
    fn put(&self, key: &CacheKey, entry: &Entry, codec: &Codec) -> Result<Vec<(CacheKey, Entry)>>;
    /// Drops `key`.
    fn remove(&self, key: &CacheKey) -> Result<()>;
    /// Bytes held.
    fn used_bytes(&self) -> Result<u64>;
    /// Whether a failure here fails the operation (tiers of this machine) or
    /// is logged, counted and taken as a miss (a shared tier across the
    /// network, which may be out of reach for a while: the text can always
    /// rebuild what it holds).
    fn required(&self) -> bool {
        true
    }
}

/// A tier that keeps encoded blobs (disk, Redis). Every such tier is a
/// [`KvTier`] the same way: entries go in as their bytes and come out
/// undecoded (the store checks them when it decodes).
pub trait BlobTier: Send + Sync {
    /// Which tier this is.
    fn tier(&self) -> Tier;
    /// The blob under `key`, if held (marks it recently used).
    fn get_blob(&self, key: &CacheKey) -> Result<Option<Vec<u8>>>;
    /// Whether a blob is held under `key`.
    fn contains_blob(&self, key: &CacheKey) -> Result<bool>;
    /// Holds `bytes` under `key`; returns the blobs it evicted for room.
    fn put_blob(&self, key: &CacheKey, bytes: &[u8]) -> Result<Vec<(CacheKey, Vec<u8>)>>;
    /// Drops the blob under `key`.
    fn remove_blob(&self, key: &CacheKey) -> Result<()>;
    /// Bytes of blobs held.
    fn stored_bytes(&self) -> Result<u64>;
    /// See [`KvTier::required`].
    fn required(&self) -> bool {
        true
    }
}

impl<T: BlobTier> KvTier for T {
    fn tier(&self) -> Tier {
        BlobTier::tier(self)
    }

    fn get(&self, key: &CacheKey) -> Result<Option<Entry>> {
        Ok(self.get_blob(key)?.map(Entry::encoded))
    }

    fn contains(&self, key: &CacheKey) -> Result<bool> {
        self.contains_blob(key)
    }

    fn put(&self, key: &CacheKey, entry: &Entry, codec: &Codec) -> Result<Vec<(CacheKey, Entry)>> {
        let evicted = self.put_blob(key, &entry.bytes(key, codec)?)?;
        Ok(evicted
            .into_iter()
            .map(|(k, bytes)| (k, Entry::encoded(bytes)))
            .collect())
    }

    fn remove(&self, key: &CacheKey) -> Result<()> {
        self.remove_blob(key)
    }

    fn used_bytes(&self) -> Result<u64> {
        self.stored_bytes()
    }

    fn required(&self) -> bool {
        BlobTier::required(self)
    }
}
