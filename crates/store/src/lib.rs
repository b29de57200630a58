//! The document KV store: a registry of documents and tiers of their caches.
//!
//! - [`DocumentStore`]: register, list, get and delete documents per tenant;
//!   look up a document's [`prophetkv_reuse::DocCache`] from the fastest
//!   tier holding a valid copy (host memory, local disk, Redis) or compute it.
//! - [`Registry`]: the embedded database (redb) of [`DocumentRecord`]s; the
//!   text is kept so any cache can be rebuilt.
//! - [`blob`]: the checksummed on-disk / in-Redis format.
//! - [`CacheKey`]: content addresses, `blake3(model, anchor ids, document ids)`.
//!
//! Everything is synchronous; Redis I/O uses blocking connections with timeouts.

#![warn(missing_docs)]

pub mod blob;
mod error;
mod key;
mod registry;
mod store;
pub mod tier;

pub use blob::KvDtype;
pub use error::{Result, StoreError};
pub use key::CacheKey;
pub use registry::{DocumentRecord, Registry};
pub use store::{
    model_fingerprint, DocumentStore, ModelIdentity, NewDocument, StoreConfig, StoreStats,
};
pub use tier::{RemoteConfig, Tier};
