//! [`DocumentStore`]: registry + tiers, with lookups that never serve a bad blob.
//!
//! A lookup goes through the tiers fastest first (device → host → disk →
//! Redis) and promotes what it finds into the faster ones; what it returns
//! is on the model's device (the device tier's own copy when that tier
//! holds or takes it). A blob that fails any check
//! (checksum, shape, dtype, model fingerprint, key, token ids) is deleted from
//! its tier, counted, and the lookup goes on. A miss is the caller's to
//! compute (the store never runs the model): it hands the cache back with
//! [`DocumentStore::insert`]. Blobs are stored per tenant (see
//! [`CacheKey::scoped`]), so tenants never share or observe each other's caches.
//! Registrations and deletions pass through the tenant's quota (see
//! [`crate::quota`]): a call that would exceed it registers nothing.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use candle_core::Device;
use prophetkv_model::DocCache;

use crate::blob::{Codec, KvDtype};
use crate::identity::ModelIdentity;
use crate::key::CacheKey;
use crate::quota::{change_of, forget_removed, Ledger, Quotas, TenantQuota, TenantUsage};
use crate::registry::{DocumentRecord, Registry};
use crate::stats::{Counters, StoreStats, TierBytes};
use crate::tier::{DeviceTier, DiskTier, Entry, HostTier, KvTier, RemoteConfig, RemoteTier, Tier};
use crate::{Result, StoreError};

/// Where and how much a store keeps.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Registry database and disk blobs live here.
    pub data_dir: PathBuf,
    /// Device tier budget in bytes: caches held in the model's device
    /// memory (the GPU); 0 disables it. Used as given, on any device (the
    /// CLI sets it only for a GPU: on the CPU it would be a second copy in
    /// the host tier's memory).
    pub device_budget: u64,
    /// Host (memory) tier budget in bytes; 0 disables it.
    pub host_budget: u64,
    /// Disk tier budget in bytes.
    pub disk_budget: u64,
    /// Redis tier, shared by replicas; `None` disables it.
    pub remote: Option<RemoteConfig>,
    /// Element type of stored K/V.
    pub kv_dtype: KvDtype,
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

/// Registry plus KV tiers.
pub struct DocumentStore {
    registry: Registry,
    /// Fastest first.
    tiers: Vec<Arc<dyn KvTier>>,
    /// The disk tier again, to name a document's blob file.
    blobs: Arc<DiskTier>,
    model: ModelIdentity,
    codec: Codec,
    /// The model's: where returned caches live.
    device: Device,
    counters: Counters,
    quotas: Quotas,
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
    /// Opens the store under `config.data_dir` for `model`, which runs on
    /// `device`: caches handed out are there, and the device tier (when
    /// `config.device_budget` is not 0) holds them there.
    pub fn open(config: &StoreConfig, model: ModelIdentity, device: &Device) -> Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StoreError::io(&config.data_dir, e))?;
        let registry = Registry::open(&config.data_dir.join("registry.redb"))?;
        let disk = Arc::new(DiskTier::open(
            &config.data_dir.join("blobs"),
            config.disk_budget,
        )?);
        let mut tiers: Vec<Arc<dyn KvTier>> = Vec::new();
        if config.device_budget > 0 {
            tiers.push(Arc::new(DeviceTier::new(device, config.device_budget)));
        }
        tiers.push(Arc::new(HostTier::new(config.host_budget)));
        tiers.push(disk.clone());
        if let Some(r) = &config.remote {
            tiers.push(Arc::new(RemoteTier::connect(r.clone())?));
        }
        Ok(Self {
            registry,
            tiers,
            blobs: disk,
            codec: Codec::new(&model, config.kv_dtype),
            device: device.clone(),
            model,
            counters: Counters::default(),
            quotas: Quotas::default(),
        })
    }

    /// This store with `quota` for every tenant (none by default).
    pub fn with_quota(mut self, quota: TenantQuota) -> Self {
        self.quotas = Quotas::new(quota);
        self
    }

    /// What `tenant` holds in the registry, as its quota counts it.
    pub fn usage(&self, tenant: &str) -> Result<TenantUsage> {
        self.usage_in(&mut self.quotas.lock(), tenant)
    }

    fn usage_in(&self, ledger: &mut Ledger<'_>, tenant: &str) -> Result<TenantUsage> {
        if let Some(usage) = ledger.get(tenant) {
            return Ok(*usage);
        }
        let (documents, tokens) = self.registry.usage(tenant)?;
        let usage = TenantUsage { documents, tokens };
        ledger.insert(tenant.to_string(), usage);
        Ok(usage)
    }

    /// Registers a document of `tenant` whose text tokenizes to `ids`. The
    /// same text registered again under the same id returns the existing record.
    pub fn register(
        &self,
        tenant: &str,
        doc: NewDocument,
        ids: Vec<u32>,
    ) -> Result<DocumentRecord> {
        let mut records = self.register_all(tenant, vec![(doc, ids)])?;
        records
            .pop()
            .ok_or_else(|| StoreError::registry("a registration returned no record"))
    }

    /// Registers `documents` of `tenant`, each with its token ids, in order,
    /// as one quota decision: when together they would take the tenant
    /// beyond its quota, none is registered.
    pub fn register_all(
        &self,
        tenant: &str,
        documents: Vec<(NewDocument, Vec<u32>)>,
    ) -> Result<Vec<DocumentRecord>> {
        check_name("tenant", tenant)?;
        let mut planned = Vec::with_capacity(documents.len());
        for (doc, ids) in documents {
            if ids.is_empty() {
                return Err(StoreError::Invalid {
                    field: "text",
                    reason: "the document is empty".into(),
                });
            }
            let id = match &doc.id {
                Some(id) => id.clone(),
                None => {
                    let h = blake3::hash(format!("{tenant}\0{}", doc.text).as_bytes());
                    format!("doc-{}", &h.to_hex()[..16])
                }
            };
            check_name("id", &id)?;
            planned.push((id, doc, ids));
        }
        let mut ledger = self.quotas.lock();
        let held = self.usage_in(&mut ledger, tenant)?;
        let change = change_of(
            planned
                .iter()
                .map(|(id, doc, ids)| (id.as_str(), doc.text.as_str(), ids.len())),
            |id| self.registry.get(tenant, id),
        )?;
        self.quotas.quota.check(held, change)?;
        let mut records = Vec::with_capacity(planned.len());
        for (id, doc, ids) in planned {
            match self.put_document(tenant, id, doc, ids) {
                Ok(record) => records.push(record),
                Err(e) => {
                    // Part of the call may be stored: count again next time.
                    ledger.remove(tenant);
                    return Err(e);
                }
            }
        }
        ledger.insert(tenant.to_string(), held.after(change));
        Ok(records)
    }

    /// Stores one checked document (quota held by the caller).
    fn put_document(
        &self,
        tenant: &str,
        id: String,
        doc: NewDocument,
        ids: Vec<u32>,
    ) -> Result<DocumentRecord> {
        if let Some(existing) = self.registry.get(tenant, &id)? {
            if existing.text == doc.text {
                return Ok(existing);
            }
            // Same id, new text: the old blobs no longer belong to it.
            self.drop_blobs(tenant, &existing)?;
        }
        let key = self.key(&ids);
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

    /// At most `limit` documents of `tenant` with ids after `after`, in id order.
    pub fn list_after(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>> {
        self.registry.list_after(tenant, after, limit)
    }

    /// Deletes `id` from `tenant`, with its blobs in every tier; its share
    /// of the tenant's quota is free at once.
    pub fn delete(&self, tenant: &str, id: &str) -> Result<DocumentRecord> {
        let removed = {
            let mut ledger = self.quotas.lock();
            let removed = self.registry.remove(tenant, id);
            forget_removed(&mut ledger, tenant, &removed);
            removed
        };
        let record = removed?.ok_or_else(|| StoreError::NotFound { id: id.to_string() })?;
        self.drop_blobs(tenant, &record)?;
        Ok(record)
    }

    fn drop_blobs(&self, tenant: &str, record: &DocumentRecord) -> Result<()> {
        if let Some(key) = CacheKey::from_hex(&record.key) {
            let scoped = key.scoped(tenant);
            for tier in &self.tiers {
                self.soft(tier.as_ref(), tier.remove(&scoped))?;
            }
        }
        Ok(())
    }

    /// The token ids of registered document `id`, with its record.
    pub fn document(&self, tenant: &str, id: &str) -> Result<(DocumentRecord, Vec<u32>)> {
        let record = self.get(tenant, id)?;
        let ids = self
            .registry
            .ids(tenant, id)?
            .ok_or_else(|| StoreError::NotFound { id: id.to_string() })?;
        Ok((record, ids))
    }

    /// Marks `record` ready now that its cache is stored, unless the document
    /// was deleted or re-registered since `record` was read.
    pub fn mark_ready(&self, record: &DocumentRecord, ids: &[u32]) -> Result<()> {
        if record.ready {
            return Ok(());
        }
        let mut ready = record.clone();
        ready.ready = true;
        ready.key = self.key(ids).hex();
        self.registry.update_if_unchanged(record, &ready)?;
        Ok(())
    }

    /// The anchor ids (BOS + instruction) every cache here is computed after.
    pub fn anchor(&self) -> &[u32] {
        &self.model.anchor
    }

    /// The ids every cache here is computed behind, after the anchor (empty: none).
    pub fn preamble(&self) -> &[u32] {
        &self.model.preamble
    }

    fn key(&self, ids: &[u32]) -> CacheKey {
        CacheKey::new(&self.model.fingerprint, &self.model.anchor, ids)
    }

    /// The cache of `ids` in `tenant` from the fastest tier holding a valid
    /// copy, promoted into the tiers above it, on the model's device; `None`
    /// when no tier has one.
    /// A blob failing its checks is deleted from its tier and counted, and
    /// the lookup goes on as if it were absent.
    pub fn lookup(&self, tenant: &str, ids: &[u32]) -> Result<Option<(Arc<DocCache>, Tier)>> {
        check_name("tenant", tenant)?;
        let key = self.key(ids).scoped(tenant);
        for (at, tier) in self.tiers.iter().enumerate() {
            let Some(entry) = self.soft(tier.as_ref(), tier.get(&key))?.flatten() else {
                continue;
            };
            match self.checked(&key, ids, &entry) {
                Ok(cache) => {
                    self.counters.hit(tier.tier());
                    for above in (0..at).rev() {
                        self.put_into(above, &key, &entry)?;
                    }
                    return Ok(Some((cache, tier.tier())));
                }
                Err(StoreError::Integrity { key: hex, reason }) => {
                    tracing::warn!(key = %hex, %reason, tier = ?tier.tier(), "rejected a stored KV blob");
                    self.counters.integrity.fetch_add(1, Ordering::Relaxed);
                    self.soft(tier.as_ref(), tier.remove(&key))?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Stores `cache`, computed for `ids` in `tenant` after a missed lookup,
    /// in every tier; it must be of these ids after this store's anchor.
    /// Returns it as every tier gives it back: with the values of the stored
    /// element type (`kv_dtype`, f16 by default), so that a document's
    /// answers never depend on which tier its cache came from, in the model's
    /// precision and on its device (the device tier's copy when it holds one).
    pub fn insert(&self, tenant: &str, ids: &[u32], cache: DocCache) -> Result<Arc<DocCache>> {
        check_name("tenant", tenant)?;
        if cache.tokens() != ids || cache.anchor() != self.model.anchor.as_slice() {
            return Err(StoreError::Invalid {
                field: "cache",
                reason: "computed for other token ids or another anchor prefix".into(),
            });
        }
        let key = self.key(ids).scoped(tenant);
        // The blob's values, not the computed ones: rounded to f16 they
        // differ, and a greedy answer from a reloaded copy could differ from
        // the first one (the soak, crates/cli/tests/soak.rs, saw it).
        let entry = Entry::encoded(self.codec.encode(&cache, &key)?);
        // Decoded (so checked) before any tier holds it.
        entry.cache(&key, &self.codec)?;
        // Slowest first, so a cache is in memory only once it is durable.
        for at in (0..self.tiers.len()).rev() {
            match self.put_into(at, &key, &entry) {
                Ok(()) => {}
                // The caller still has its cache; the text can rebuild it later.
                Err(StoreError::DiskFull { path }) => {
                    tracing::warn!(path = %path.display(), "the data disk is full: a computed cache is used but not kept");
                    self.counters.tier_errors.fetch_add(1, Ordering::Relaxed);
                    return entry.device_cache(&key, &self.codec, &self.device);
                }
                Err(e) => return Err(e),
            }
        }
        self.counters.computed.fetch_add(1, Ordering::Relaxed);
        entry.device_cache(&key, &self.codec, &self.device)
    }

    /// The entry's cache on the model's device, if its tokens are `ids`;
    /// an integrity error if not (or if its blob fails to decode).
    fn checked(&self, key: &CacheKey, ids: &[u32], entry: &Entry) -> Result<Arc<DocCache>> {
        let cache = entry.device_cache(key, &self.codec, &self.device)?;
        if cache.tokens() != ids {
            return Err(StoreError::Integrity {
                key: key.hex(),
                reason: "token ids differ from the document's".into(),
            });
        }
        Ok(cache)
    }

    /// The outcome of an operation on `tier`: a failure of a tier that is
    /// not required is logged, counted and becomes `None`.
    fn soft<T>(&self, tier: &dyn KvTier, outcome: Result<T>) -> Result<Option<T>> {
        match outcome {
            Ok(v) => Ok(Some(v)),
            Err(e) if !tier.required() => {
                tracing::warn!(tier = ?tier.tier(), error = %e, "KV tier unavailable; treated as a miss");
                self.counters.tier_errors.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Puts `entry` into tier `at` and offers what it evicts to the tiers below.
    fn put_into(&self, at: usize, key: &CacheKey, entry: &Entry) -> Result<()> {
        let tier = self.tiers[at].as_ref();
        let evicted = self
            .soft(tier, tier.put(key, entry, &self.codec))?
            .unwrap_or_default();
        for (victim, entry) in evicted {
            self.demote(at + 1, &victim, &entry);
        }
        Ok(())
    }

    /// Keeps an evicted entry in the first tier from `at` down that does not
    /// hold it yet; failures are logged, since the text can always rebuild it.
    fn demote(&self, at: usize, key: &CacheKey, entry: &Entry) {
        for below in at..self.tiers.len() {
            match self.tiers[below].contains(key) {
                Ok(true) => return,
                Ok(false) => {
                    if let Err(e) = self.put_into(below, key, entry) {
                        tracing::warn!(error = %e, "demoting an evicted cache failed");
                    }
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "demoting an evicted cache failed"),
            }
        }
    }

    /// Counters since the store opened, and the bytes each tier holds now
    /// (a round trip to Redis when that tier is on; a tier that fails to
    /// say counts 0, and is logged).
    pub fn stats(&self) -> StoreStats {
        let used = self.used_bytes().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the tiers' used bytes failed");
            TierBytes::default()
        });
        self.counters.snapshot(used)
    }

    /// Bytes each tier holds; a tier whose failures are misses (Redis)
    /// counts 0 while it is out of reach.
    pub fn used_bytes(&self) -> Result<TierBytes> {
        let mut used = TierBytes::default();
        for tier in &self.tiers {
            let bytes = self.soft(tier.as_ref(), tier.used_bytes())?.unwrap_or(0);
            used.set(tier.tier(), bytes);
        }
        Ok(used)
    }

    /// Path of the disk blob of document `id` (for tools and tests).
    pub fn blob_path(&self, tenant: &str, id: &str) -> Result<PathBuf> {
        let record = self.get(tenant, id)?;
        let key = CacheKey::from_hex(&record.key).ok_or_else(|| StoreError::Invalid {
            field: "key",
            reason: record.key.clone(),
        })?;
        Ok(self.blobs.blob_path(&key.scoped(tenant)))
    }
}

#[cfg(test)]
mod tests {
    use prophetkv_model::testing::{tiny, tokens, Tiny};
    use prophetkv_reuse::compute_doc_cache;

    use super::*;

    #[test]
    fn a_device_eviction_is_demoted_into_a_host_tier_that_lost_its_copy() {
        let (_files, model) = tiny(Tiny::Llama);
        let dir = tempfile::tempdir().unwrap();
        let identity = ModelIdentity::new(&model, "tiny".into(), vec![1, 2]);
        let (first, second) = (tokens(30, 1), tokens(30, 2));
        // Decoded caches are f32.
        let c = model.config();
        let bytes = (2 * c.num_layers() * 30 * c.num_kv_heads * c.head_dim * 4) as u64;
        let config = StoreConfig {
            data_dir: dir.path().to_path_buf(),
            device_budget: bytes * 3 / 2,
            host_budget: 64 << 20,
            disk_budget: 64 << 20,
            remote: None,
            kv_dtype: KvDtype::F16,
        };
        let store = DocumentStore::open(&config, identity, model.device()).unwrap();
        let (device, host) = (store.tiers[0].clone(), store.tiers[1].clone());
        assert_eq!((device.tier(), host.tier()), (Tier::Device, Tier::Host));
        let insert = |ids: &[u32]| {
            let cache = compute_doc_cache(&model, store.anchor(), ids).unwrap();
            store.insert("t", ids, cache).unwrap()
        };
        let key = store.key(&first).scoped("t");
        insert(&first);
        // The host tier lets go of it (as moka may); the device still has it.
        host.remove(&key).unwrap();
        assert!(device.contains(&key).unwrap());
        insert(&second);
        assert!(!device.contains(&key).unwrap());
        assert!(host.contains(&key).unwrap(), "evicted, so demoted to host");
        let (_, tier) = store.lookup("t", &first).unwrap().unwrap();
        assert_eq!(tier, Tier::Host);
    }
}
