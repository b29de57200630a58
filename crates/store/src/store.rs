//! [`DocumentStore`]: registry + tiers, with lookups that never serve a bad blob.
//!
//! A lookup goes host → disk → Redis → compute from the registered text, and
//! promotes what it finds into the faster tiers. A blob that fails any check
//! (checksum, shape, dtype, model fingerprint, key, token ids) is deleted from
//! its tier, counted, and the lookup goes on; in the end the text is always
//! there to recompute from. Blobs are stored per tenant (see
//! [`CacheKey::scoped`]), so tenants never share or observe each other's caches.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use candle_core::Device;
use prophetkv_reuse::{Backbone, DocCache};
use serde::Serialize;

use crate::blob::{self, Expected, KvDtype};
use crate::key::CacheKey;
use crate::registry::{DocumentRecord, Registry};
use crate::tier::{DiskTier, HostTier, RemoteConfig, RemoteTier, Tier};
use crate::{Result, StoreError};

/// Where and how much a store keeps.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Registry database and disk blobs live here.
    pub data_dir: PathBuf,
    /// Host (memory) tier budget in bytes; 0 disables it.
    pub host_budget: u64,
    /// Disk tier budget in bytes.
    pub disk_budget: u64,
    /// Redis tier, shared by replicas; `None` disables it.
    pub remote: Option<RemoteConfig>,
    /// Element type of stored K/V.
    pub kv_dtype: KvDtype,
}

/// The model the caches belong to.
#[derive(Debug, Clone)]
pub struct ModelIdentity {
    /// Changes whenever the KV would (weights, weight path).
    pub fingerprint: String,
    /// Transformer blocks.
    pub layers: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// BOS + instruction prefix every document is cached after.
    pub anchor: Vec<u32>,
}

impl ModelIdentity {
    /// The identity of a model with `config`, fingerprinted as `fingerprint`,
    /// whose documents are cached after `anchor`.
    pub fn new(
        config: &prophetkv_model::ModelConfig,
        fingerprint: String,
        anchor: Vec<u32>,
    ) -> Self {
        Self {
            fingerprint,
            layers: config.num_layers(),
            kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            anchor,
        }
    }
}

/// A document to register.
#[derive(Debug, Clone, Default)]
pub struct NewDocument {
    /// Id; derived from the tenant and the text when `None`.
    pub id: Option<String>,
    /// Human-readable name.
    pub name: String,
    /// The text.
    pub text: String,
    /// Free-form JSON metadata.
    pub metadata: serde_json::Value,
}

/// Counters since the store opened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStats {
    /// Lookups served from memory.
    pub host_hits: u64,
    /// Lookups served from this replica's disk.
    pub disk_hits: u64,
    /// Lookups served from Redis.
    pub remote_hits: u64,
    /// Caches computed from text.
    pub computed: u64,
    /// Blobs rejected by integrity checks (and deleted).
    pub integrity_failures: u64,
}

#[derive(Default)]
struct Counters {
    host: AtomicU64,
    disk: AtomicU64,
    remote: AtomicU64,
    computed: AtomicU64,
    integrity: AtomicU64,
}

/// Registry plus KV tiers.
pub struct DocumentStore {
    registry: Registry,
    host: HostTier,
    disk: DiskTier,
    remote: Option<RemoteTier>,
    model: ModelIdentity,
    kv_dtype: KvDtype,
    device: Device,
    counters: Counters,
}

fn check_name(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 256 || value.contains('\0') {
        return Err(StoreError::Invalid {
            field,
            reason: format!(
                "must be 1-256 bytes without NUL, got {:?}",
                value.chars().take(40).collect::<String>()
            ),
        });
    }
    Ok(())
}

impl DocumentStore {
    /// Opens the store under `config.data_dir` for `model`.
    pub fn open(config: &StoreConfig, model: ModelIdentity, device: &Device) -> Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StoreError::io(&config.data_dir, e))?;
        let registry = Registry::open(&config.data_dir.join("registry.redb"))?;
        let disk = DiskTier::open(&config.data_dir.join("blobs"), config.disk_budget)?;
        let remote = match &config.remote {
            Some(r) => Some(RemoteTier::connect(r.clone())?),
            None => None,
        };
        Ok(Self {
            registry,
            host: HostTier::new(config.host_budget),
            disk,
            remote,
            model,
            kv_dtype: config.kv_dtype,
            device: device.clone(),
            counters: Counters::default(),
        })
    }

    /// Registers a document of `tenant` whose text tokenizes to `ids`. The
    /// same text registered again under the same id returns the existing record.
    pub fn register(
        &self,
        tenant: &str,
        doc: NewDocument,
        ids: Vec<u32>,
    ) -> Result<DocumentRecord> {
        check_name("tenant", tenant)?;
        if ids.is_empty() {
            return Err(StoreError::Invalid {
                field: "text",
                reason: "the document is empty".into(),
            });
        }
        let id = match doc.id {
            Some(id) => id,
            None => {
                let h = blake3::hash(format!("{tenant}\0{}", doc.text).as_bytes());
                format!("doc-{}", &h.to_hex()[..16])
            }
        };
        check_name("id", &id)?;
        if let Some(existing) = self.registry.get(tenant, &id)? {
            if existing.text == doc.text {
                return Ok(existing);
            }
            // Same id, new text: the old blobs no longer belong to it.
            self.drop_blobs(tenant, &existing)?;
        }
        let key = CacheKey::new(&self.model.fingerprint, &self.model.anchor, &ids);
        let record = DocumentRecord {
            id,
            tenant: tenant.to_string(),
            name: doc.name,
            metadata: doc.metadata,
            tokens: ids.len(),
            key: key.hex(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            text: doc.text,
            ready: false,
        };
        self.registry.put(&record, &ids)?;
        Ok(record)
    }

    /// The record of `id` in `tenant`.
    pub fn get(&self, tenant: &str, id: &str) -> Result<DocumentRecord> {
        self.registry
            .get(tenant, id)?
            .ok_or_else(|| StoreError::NotFound { id: id.to_string() })
    }

    /// Every document of `tenant`.
    pub fn list(&self, tenant: &str) -> Result<Vec<DocumentRecord>> {
        self.registry.list(tenant)
    }

    /// Deletes `id` from `tenant`, with its blobs in every tier.
    pub fn delete(&self, tenant: &str, id: &str) -> Result<DocumentRecord> {
        let record = self
            .registry
            .remove(tenant, id)?
            .ok_or_else(|| StoreError::NotFound { id: id.to_string() })?;
        self.drop_blobs(tenant, &record)?;
        Ok(record)
    }

    fn drop_blobs(&self, tenant: &str, record: &DocumentRecord) -> Result<()> {
        if let Some(key) = CacheKey::from_hex(&record.key) {
            let scoped = key.scoped(tenant);
            self.host.remove(&scoped);
            self.disk.remove(&scoped)?;
            if let Some(r) = &self.remote {
                r.remove(&scoped)?;
            }
        }
        Ok(())
    }

    /// The KV of registered document `id`, from the fastest tier holding a
    /// valid copy, or computed from its text (and then stored).
    pub fn cache(
        &self,
        model: &impl Backbone,
        tenant: &str,
        id: &str,
    ) -> Result<(Arc<DocCache>, Tier)> {
        let record = self.get(tenant, id)?;
        let ids = self
            .registry
            .ids(tenant, id)?
            .ok_or_else(|| StoreError::NotFound { id: id.to_string() })?;
        let found = self.lookup_or_compute(model, tenant, &ids)?;
        if !record.ready {
            // Only if the document was neither deleted nor re-registered
            // while its cache was computed.
            let mut ready = record.clone();
            ready.ready = true;
            ready.key = CacheKey::new(&self.model.fingerprint, &self.model.anchor, &ids).hex();
            self.registry.update_if_unchanged(&record, &ready)?;
        }
        Ok(found)
    }

    /// The KV of an inline document (not registered), content-addressed, so
    /// the same text sent again is not computed again.
    pub fn inline_cache(
        &self,
        model: &impl Backbone,
        tenant: &str,
        ids: &[u32],
    ) -> Result<(Arc<DocCache>, Tier)> {
        check_name("tenant", tenant)?;
        self.lookup_or_compute(model, tenant, ids)
    }

    fn lookup_or_compute(
        &self,
        model: &impl Backbone,
        tenant: &str,
        ids: &[u32],
    ) -> Result<(Arc<DocCache>, Tier)> {
        let key = CacheKey::new(&self.model.fingerprint, &self.model.anchor, ids).scoped(tenant);
        if let Some(c) = self.host.get(&key) {
            self.counters.host.fetch_add(1, Ordering::Relaxed);
            return Ok((c, Tier::Host));
        }
        if let Some(c) = self.decode_blob(&key, ids, self.disk.get(&key)?, Tier::Disk)? {
            self.counters.disk.fetch_add(1, Ordering::Relaxed);
            self.host.put(key, c.clone());
            return Ok((c, Tier::Disk));
        }
        if let Some(remote) = &self.remote {
            let bytes = remote.get(&key)?;
            if let Some(c) = self.decode_blob(&key, ids, bytes.clone(), Tier::Remote)? {
                self.counters.remote.fetch_add(1, Ordering::Relaxed);
                if let Some(bytes) = bytes {
                    self.disk.put(&key, &bytes, &|k, b| self.demote(k, b))?;
                }
                self.host.put(key, c.clone());
                return Ok((c, Tier::Remote));
            }
        }
        let cache = Arc::new(DocCache::compute(model, &self.model.anchor, ids)?);
        self.counters.computed.fetch_add(1, Ordering::Relaxed);
        let bytes = blob::encode(&cache, &key, &self.model.fingerprint, self.kv_dtype)?;
        self.disk.put(&key, &bytes, &|k, b| self.demote(k, b))?;
        if let Some(remote) = &self.remote {
            remote.put(&key, &bytes)?;
        }
        self.host.put(key, cache.clone());
        Ok((cache, Tier::Computed))
    }

    /// Decodes a blob from `tier`; a blob failing its checks is deleted there
    /// and counted, and the lookup continues as if it were absent.
    fn decode_blob(
        &self,
        key: &CacheKey,
        ids: &[u32],
        bytes: Option<Vec<u8>>,
        tier: Tier,
    ) -> Result<Option<Arc<DocCache>>> {
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let expected = Expected {
            key,
            fingerprint: &self.model.fingerprint,
            layers: self.model.layers,
            head_shape: (self.model.kv_heads, self.model.head_dim),
            tokens: ids,
            anchor: &self.model.anchor,
        };
        match blob::decode(&bytes, &expected, &self.device) {
            Ok(c) => Ok(Some(Arc::new(c))),
            Err(StoreError::Integrity { key, reason }) => {
                tracing::warn!(%key, %reason, ?tier, "rejected a stored KV blob; recomputing");
                self.counters.integrity.fetch_add(1, Ordering::Relaxed);
                match tier {
                    Tier::Disk => self
                        .disk
                        .remove(&CacheKey::from_hex(&key).unwrap_or(*expected.key))?,
                    Tier::Remote => {
                        if let Some(r) = &self.remote {
                            r.remove(expected.key)?;
                        }
                    }
                    Tier::Host | Tier::Computed => {}
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Called with blobs the disk tier evicts: keep them in Redis when it has room.
    fn demote(&self, key: &CacheKey, bytes: &[u8]) {
        if let Some(remote) = &self.remote {
            let present = remote.contains(key).unwrap_or(true);
            if !present {
                if let Err(e) = remote.put(key, bytes) {
                    tracing::warn!(error = %e, "demoting an evicted blob to Redis failed");
                }
            }
        }
    }

    /// Lookup counters.
    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            host_hits: c.host.load(Ordering::Relaxed),
            disk_hits: c.disk.load(Ordering::Relaxed),
            remote_hits: c.remote.load(Ordering::Relaxed),
            computed: c.computed.load(Ordering::Relaxed),
            integrity_failures: c.integrity.load(Ordering::Relaxed),
        }
    }

    /// Bytes held by the host, disk and remote tiers.
    pub fn used_bytes(&self) -> Result<(u64, u64, u64)> {
        let remote = match &self.remote {
            Some(r) => r.used_bytes()?,
            None => 0,
        };
        Ok((self.host.used_bytes(), self.disk.used_bytes(), remote))
    }

    /// Path of the disk blob of document `id` (for tools and tests).
    pub fn blob_path(&self, tenant: &str, id: &str) -> Result<PathBuf> {
        let record = self.get(tenant, id)?;
        let key = CacheKey::from_hex(&record.key).ok_or_else(|| StoreError::Invalid {
            field: "key",
            reason: record.key.clone(),
        })?;
        Ok(self.disk.blob_path(&key.scoped(tenant)))
    }
}

/// A fingerprint of the model file and weight path: the file's size and
/// first and last MiB, hashed (reading all of a multi-GB file at start-up
/// would cost seconds; any re-quantisation changes these bytes).
pub fn model_fingerprint(path: &Path, weight_path: &str) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut h = blake3::Hasher::new();
    h.update(weight_path.as_bytes());
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| StoreError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "safetensors" || x == "json")
            })
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    for file in files {
        let mut f = std::fs::File::open(&file).map_err(|e| StoreError::io(&file, e))?;
        let len = f.metadata().map_err(|e| StoreError::io(&file, e))?.len();
        h.update(&len.to_le_bytes());
        let mut buf = vec![0u8; (1 << 20).min(len as usize)];
        f.read_exact(&mut buf)
            .map_err(|e| StoreError::io(&file, e))?;
        h.update(&buf);
        f.seek(SeekFrom::Start(len - buf.len() as u64))
            .map_err(|e| StoreError::io(&file, e))?;
        f.read_exact(&mut buf)
            .map_err(|e| StoreError::io(&file, e))?;
        h.update(&buf);
    }
    Ok(h.finalize().to_hex()[..32].to_string())
}
