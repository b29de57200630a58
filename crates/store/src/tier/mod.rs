//! The tiers a document cache can live in, fastest first.
//!
//! - [`HostTier`]: decoded caches in memory (moka, weighed by bytes).
//! - [`DiskTier`]: one checksummed blob file per cache, written atomically.
//! - [`RemoteTier`]: blobs in Redis, shared by every replica.
//!
//! Writes go through to every tier with room, so an entry evicted from one
//! tier is still found in the next (eviction demotes, it does not drop, while
//! a lower tier has room). On CPU the model's device is host memory, so there
//! is no separate device tier.

mod disk;
mod host;
mod remote;

pub use disk::DiskTier;
pub use host::HostTier;
pub use remote::{RemoteConfig, RemoteTier};

use serde::Serialize;

/// Where a lookup found a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Decoded, in memory.
    Host,
    /// A blob file on this replica's disk.
    Disk,
    /// A blob in Redis.
    Remote,
    /// Not stored anywhere: computed from the text.
    Computed,
}
