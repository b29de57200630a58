//! The document KV store: a registry of documents and tiers of their caches.
//!
//! - [`DocumentStore`]: register, list, get and delete documents per tenant;
//!   look up a document's [`prophetkv_model::DocCache`] in the fastest tier
//!   holding a valid copy (the model's device memory, host memory, local
//!   disk, Redis), and store one a caller computed after a miss. The store
//!   never runs the model.
//! - [`KvTier`]: one level of the hierarchy; each tier is one implementation.
//! - [`Registry`]: the embedded database (redb) of [`DocumentRecord`]s; the
//!   text is kept so any cache can be rebuilt.
//! - [`blob`]: the checksummed on-disk / in-Redis format.
//! - [`CacheKey`]: content addresses, `blake3(model, anchor ids, document ids)`.
//! - [`TenantQuota`]: how many documents and tokens a tenant may keep
//!   registered; registering beyond it is refused.
//!
//! Everything is synchronous; Redis I/O uses blocking connections with timeouts.

#![warn(missing_docs)]

pub mod blob;
mod error;
mod identity;
mod journal;
mod key;
mod quota;
mod registry;
mod stats;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tier;

pub use blob::{Codec, KvDtype};
pub use error::{Result, StoreError};
pub use identity::{model_fingerprint, ModelIdentity};
pub use key::CacheKey;
pub use quota::{TenantQuota, TenantUsage};
pub use registry::{DocumentRecord, Registry};
pub use stats::{StoreStats, TierBytes};
pub use store::{DocumentStore, NewDocument, StoreConfig};
pub use tier::{BlobTier, Entry, KvTier, RemoteConfig, Tier};
