//! The device tier in front of the host tier, with the CPU standing in for
//! the GPU: its budget, its LRU order, demotion to the host tier, promotion
//! into it, its hit counts and deletion.

use std::sync::Arc;

use prophetkv_model::testing::{max_abs_diff, tiny, tokens, Tiny};
use prophetkv_model::{DocCache, Model};
use prophetkv_reuse::compute_doc_cache;
use prophetkv_store::{DocumentStore, KvDtype, ModelIdentity, NewDocument, StoreConfig, Tier};

const TOKENS: usize = 40;

struct Fixture {
    _model_files: tempfile::TempDir,
    model: Model,
    dir: tempfile::TempDir,
    /// Bytes of one decoded cache of [`TOKENS`] tokens.
    cache_bytes: u64,
}

impl Fixture {
    fn new() -> Self {
        let (model_files, model) = tiny(Tiny::Llama);
        let c = model.config();
        // Decoded caches are f32 whatever the stored element type.
        let cache_bytes = (2 * c.num_layers() * TOKENS * c.num_kv_heads * c.head_dim * 4) as u64;
        Self {
            _model_files: model_files,
            model,
            dir: tempfile::tempdir().unwrap(),
            cache_bytes,
        }
    }

    /// A store over this fixture's directory, with fresh memory tiers.
    fn store(&self, device_budget: u64) -> DocumentStore {
        self.store_for_precision(device_budget, self.model.dtype())
    }

    /// [`Fixture::store`] for a model that computes K/V in `kv_dtype`.
    fn store_for_precision(
        &self,
        device_budget: u64,
        kv_dtype: candle_core::DType,
    ) -> DocumentStore {
        let config = StoreConfig {
            data_dir: self.dir.path().to_path_buf(),
            device_budget,
            host_budget: 64 << 20,
            disk_budget: 64 << 20,
            remote: None,
            kv_dtype: KvDtype::F16,
        };
        let mut identity = ModelIdentity::new(&self.model, "tiny-llama".into(), vec![1, 2, 3]);
        identity.kv_dtype = kv_dtype;
        DocumentStore::open(&config, identity, self.model.device()).unwrap()
    }

    /// A store whose device tier holds `docs` caches (and a bit).
    fn store_for(&self, docs: u64) -> DocumentStore {
        self.store(docs * self.cache_bytes + self.cache_bytes / 2)
    }
}

fn ids(i: usize) -> Vec<u32> {
    tokens(TOKENS, 100 + i as u64)
}

fn register(store: &DocumentStore, i: usize) {
    let doc = NewDocument {
        id: Some(format!("d{i}")),
        text: format!("document {i}"),
        ..Default::default()
    };
    store.register("t", doc, ids(i)).unwrap();
}

/// Document `i` as the engine gets it: looked up, or computed and inserted.
fn cached(store: &DocumentStore, model: &Model, i: usize) -> (Arc<DocCache>, Tier) {
    if let Some(hit) = store.lookup("t", &ids(i)).unwrap() {
        return hit;
    }
    let cache = compute_doc_cache(model, store.anchor(), &ids(i)).unwrap();
    (store.insert("t", &ids(i), cache).unwrap(), Tier::Computed)
}

fn tier_of(store: &DocumentStore, model: &Model, i: usize) -> Tier {
    cached(store, model, i).1
}

fn assert_same_values(a: &DocCache, b: &DocCache) {
    for ((ka, va), (kb, vb)) in a.layers().iter().zip(b.layers()) {
        let d = max_abs_diff(ka, kb).max(max_abs_diff(va, vb));
        assert_eq!(d, 0.0, "the tiers must hand back the same values");
    }
}

#[test]
fn device_bytes_never_exceed_the_budget_and_count_the_caches_held_exactly() {
    let f = Fixture::new();
    let store = f.store_for(2);
    for i in 0..8 {
        register(&store, i);
        assert_eq!(tier_of(&store, &f.model, i), Tier::Computed);
        let used = store.used_bytes().unwrap();
        assert!(
            used.device <= 2 * f.cache_bytes + f.cache_bytes / 2,
            "{used:?}"
        );
        assert_eq!(
            used.device,
            f.cache_bytes * (i as u64 + 1).min(2),
            "{used:?}"
        );
    }
}

#[test]
fn a_device_hit_returns_the_device_copy_that_insert_returned() {
    let f = Fixture::new();
    let store = f.store_for(2);
    let (inserted, tier) = cached(&store, &f.model, 0);
    assert_eq!(tier, Tier::Computed);
    let (hit, tier) = cached(&store, &f.model, 0);
    assert_eq!(tier, Tier::Device);
    assert!(
        Arc::ptr_eq(&inserted, &hit),
        "a device hit is the copy already on the device, not a new one"
    );
}

#[test]
fn recently_looked_up_caches_survive_device_eviction() {
    let f = Fixture::new();
    let store = f.store_for(2);
    cached(&store, &f.model, 0);
    cached(&store, &f.model, 1);
    // 0 is used again, so 1 is the least recently used when 2 arrives.
    assert_eq!(tier_of(&store, &f.model, 0), Tier::Device);
    assert_eq!(tier_of(&store, &f.model, 2), Tier::Computed);
    assert_eq!(tier_of(&store, &f.model, 0), Tier::Device);
    assert_eq!(tier_of(&store, &f.model, 2), Tier::Device);
    assert_eq!(tier_of(&store, &f.model, 1), Tier::Host);
}

#[test]
fn a_cache_evicted_from_the_device_is_served_by_the_host_then_promoted_back() {
    let f = Fixture::new();
    let store = f.store_for(1);
    let (first, _) = cached(&store, &f.model, 0);
    cached(&store, &f.model, 1);
    let (from_host, tier) = cached(&store, &f.model, 0);
    assert_eq!(tier, Tier::Host);
    assert_same_values(&first, &from_host);
    let (from_device, tier) = cached(&store, &f.model, 0);
    assert_eq!(tier, Tier::Device);
    assert!(Arc::ptr_eq(&from_host, &from_device));
    // Promoting 0 evicted 1 from the device.
    assert_eq!(tier_of(&store, &f.model, 1), Tier::Host);
    assert_eq!(store.used_bytes().unwrap().device, f.cache_bytes);
}

#[test]
fn a_disk_hit_is_promoted_into_the_device_and_host_tiers() {
    let f = Fixture::new();
    let (inserted, _) = cached(&f.store_for(2), &f.model, 0);
    // A new process: its memory tiers are empty, the disk is not.
    let store = f.store_for(2);
    assert_eq!(store.used_bytes().unwrap().device, 0);
    let (from_disk, tier) = cached(&store, &f.model, 0);
    assert_eq!(tier, Tier::Disk);
    assert_same_values(&inserted, &from_disk);
    let used = store.used_bytes().unwrap();
    assert_eq!(used.device, f.cache_bytes, "{used:?}");
    assert!(used.host >= f.cache_bytes, "{used:?}");
    let (from_device, tier) = cached(&store, &f.model, 0);
    assert_eq!(tier, Tier::Device);
    assert!(Arc::ptr_eq(&from_disk, &from_device));
}

#[test]
fn hits_are_counted_per_tier_including_the_device() {
    let f = Fixture::new();
    cached(&f.store_for(1), &f.model, 0);
    let store = f.store_for(1);
    assert_eq!(tier_of(&store, &f.model, 0), Tier::Disk);
    assert_eq!(tier_of(&store, &f.model, 0), Tier::Device);
    assert_eq!(tier_of(&store, &f.model, 0), Tier::Device);
    assert_eq!(tier_of(&store, &f.model, 1), Tier::Computed);
    assert_eq!(tier_of(&store, &f.model, 0), Tier::Host);
    let stats = store.stats();
    assert_eq!(
        (
            stats.device_hits,
            stats.host_hits,
            stats.disk_hits,
            stats.remote_hits,
            stats.computed
        ),
        (2, 1, 1, 0, 1),
        "{stats:?}"
    );
    assert_eq!(stats.used_bytes, store.used_bytes().unwrap());
    assert_eq!(stats.used_bytes.device, f.cache_bytes);
}

#[test]
fn a_cache_larger_than_the_device_budget_is_not_held_there() {
    let f = Fixture::new();
    let store = f.store(f.cache_bytes - 1);
    let (inserted, _) = cached(&store, &f.model, 0);
    assert_eq!(store.used_bytes().unwrap().device, 0);
    let (hit, tier) = cached(&store, &f.model, 0);
    assert_eq!(tier, Tier::Host);
    assert_same_values(&inserted, &hit);
    assert_eq!(store.used_bytes().unwrap().device, 0);
}

#[test]
fn deleting_a_document_removes_its_cache_from_the_device_tier() {
    let f = Fixture::new();
    let store = f.store_for(2);
    register(&store, 0);
    cached(&store, &f.model, 0);
    assert_eq!(store.used_bytes().unwrap().device, f.cache_bytes);
    store.delete("t", "d0").unwrap();
    assert_eq!(store.used_bytes().unwrap().device, 0);
    assert!(store.lookup("t", &ids(0)).unwrap().is_none());
}

#[test]
fn with_no_device_budget_there_is_no_device_tier() {
    let f = Fixture::new();
    let store = f.store(0);
    cached(&store, &f.model, 0);
    assert_eq!(tier_of(&store, &f.model, 0), Tier::Host);
    assert_eq!(store.used_bytes().unwrap().device, 0);
    assert_eq!(store.stats().device_hits, 0);
}

#[test]
fn tier_names_serialize_in_lower_case() {
    assert_eq!(serde_json::to_string(&Tier::Device).unwrap(), "\"device\"");
}

#[test]
fn caches_come_back_in_the_models_precision_from_every_tier() {
    // A model computing K/V in f16 (as one in bf16 on a GPU; the CPU runtime
    // itself computes in f32, so its caches are converted here): blobs
    // decode to f32, and a cache handed out in f32 would not join its KV.
    let f = Fixture::new();
    let half = candle_core::DType::F16;
    let c = f.model.config();
    let f16_bytes = (2 * c.num_layers() * TOKENS * c.num_kv_heads * c.head_dim * 2) as u64;
    let store = |device_budget| f.store_for_precision(device_budget, half);
    let compute = |store: &DocumentStore, i: usize| {
        let cache = compute_doc_cache(&f.model, store.anchor(), &ids(i)).unwrap();
        let layers = cache
            .layers()
            .iter()
            .map(|(k, v)| (k.to_dtype(half).unwrap(), v.to_dtype(half).unwrap()))
            .collect();
        let cache = DocCache::from_parts(cache.anchor().to_vec(), ids(i), layers).unwrap();
        store.insert("t", &ids(i), cache).unwrap()
    };
    let first = store(f16_bytes + f16_bytes / 2);
    let computed = compute(&first, 0);
    // 1 pushes 0 down to the host tier; a fresh store reads 0 from disk.
    compute(&first, 1);
    let (from_host, host) = first.lookup("t", &ids(0)).unwrap().unwrap();
    let (from_disk, disk) = store(0).lookup("t", &ids(0)).unwrap().unwrap();
    assert_eq!((host, disk), (Tier::Host, Tier::Disk));
    for cache in [&computed, &from_host, &from_disk] {
        for (k, v) in cache.layers() {
            assert_eq!((k.dtype(), v.dtype()), (half, half));
        }
        assert_same_values(&computed, cache);
    }
    assert_eq!(
        first.used_bytes().unwrap().device,
        f16_bytes,
        "the device tier holds f16"
    );
}
