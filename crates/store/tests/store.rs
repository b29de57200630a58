//! The store against a real Redis server, real files and a tiny model.
//!
//! Each Redis test starts its own `redis-server` on a free loopback port
//! (`make test` installs it) and stops it afterwards.

use std::path::Path;
use std::sync::Arc;

use prophetkv_model::testing::{max_abs_diff, tiny, tokens, Tiny};
use prophetkv_model::{DocCache, Model};
use prophetkv_reuse::{compute_doc_cache, compute_doc_cache_behind};
use prophetkv_store::testing::RedisServer;
use prophetkv_store::{
    DocumentStore, KvDtype, ModelIdentity, NewDocument, RemoteConfig, StoreConfig, StoreError, Tier,
};

/// What the engine does with a store: look up, compute on a miss, store it.
fn cached_ids(
    store: &DocumentStore,
    model: &Model,
    tenant: &str,
    ids: &[u32],
) -> Result<(Arc<DocCache>, Tier), StoreError> {
    if let Some(hit) = store.lookup(tenant, ids)? {
        return Ok(hit);
    }
    let cache =
        compute_doc_cache_behind(model, store.anchor(), store.preamble(), ids, &[]).unwrap();
    Ok((store.insert(tenant, ids, cache)?, Tier::Computed))
}

/// [`cached_ids`] of a registered document, which is then marked ready.
fn cached(
    store: &DocumentStore,
    model: &Model,
    tenant: &str,
    id: &str,
) -> Result<(Arc<DocCache>, Tier), StoreError> {
    let (record, ids) = store.document(tenant, id)?;
    let found = cached_ids(store, model, tenant, &ids)?;
    store.mark_ready(&record, &ids)?;
    Ok(found)
}

fn identity(model: &Model) -> ModelIdentity {
    ModelIdentity::new(model, "tiny-gemma".into(), vec![1, 2, 3])
}

fn config(dir: &Path, redis: Option<&RedisServer>) -> StoreConfig {
    StoreConfig {
        data_dir: dir.to_path_buf(),
        device_budget: 0,
        host_budget: 64 << 20,
        disk_budget: 64 << 20,
        remote: redis.map(|r| RemoteConfig {
            url: r.url.clone(),
            budget: 64 << 20,
            prefix: "pkv-test".into(),
        }),
        kv_dtype: KvDtype::F16,
    }
}

fn doc(text: &str) -> NewDocument {
    NewDocument {
        id: Some(text.split_whitespace().next().unwrap_or("d").to_string()),
        name: text.into(),
        text: text.into(),
        ..Default::default()
    }
}

/// Bytes of one stored blob / decoded cache of `n` tokens on the tiny model.
fn tiny_bytes(model: &Model, n: usize) -> (u64, u64) {
    let c = model.config();
    let elems = (2 * c.num_layers() * n * c.num_kv_heads * c.head_dim) as u64;
    (elems * 2, elems * 4)
}

#[test]
fn document_ingested_by_one_replica_is_served_to_another_from_redis_with_no_prefill() {
    let redis = RedisServer::start();
    let (_m, model) = tiny(Tiny::Gemma3);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = DocumentStore::open(
        &config(dir_a.path(), Some(&redis)),
        identity(&model),
        model.device(),
    )
    .unwrap();
    let b = DocumentStore::open(
        &config(dir_b.path(), Some(&redis)),
        identity(&model),
        model.device(),
    )
    .unwrap();
    let ids = tokens(40, 1);
    a.register("t", doc("alpha text"), ids.clone()).unwrap();
    let (from_a, tier) = cached(&a, &model, "t", "alpha").unwrap();
    assert_eq!(tier, Tier::Computed);

    b.register("t", doc("alpha text"), ids.clone()).unwrap();
    let (from_b, tier) = cached(&b, &model, "t", "alpha").unwrap();
    assert_eq!(tier, Tier::Remote, "replica B must be served by Redis");
    assert_eq!(b.stats().computed, 0, "replica B did no prefill work");
    for (l, ((ka, va), (kb, vb))) in from_a.layers().iter().zip(from_b.layers()).enumerate() {
        // Stored as f16: within half-precision rounding of A's f32 cache.
        let d = max_abs_diff(ka, kb).max(max_abs_diff(va, vb));
        assert!(d < 1e-2, "layer {l}: {d}");
    }
    // Promoted: the next lookup on B is a memory hit.
    assert_eq!(cached(&b, &model, "t", "alpha").unwrap().1, Tier::Host);
}

#[test]
fn flipped_bytes_in_a_disk_blob_lead_to_a_recompute_never_a_wrong_kv() {
    let (_m, model) = tiny(Tiny::Gemma3);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), None);
    cfg.host_budget = 0; // every lookup reads the disk
    cfg.kv_dtype = KvDtype::F32;
    let store = DocumentStore::open(&cfg, identity(&model), model.device()).unwrap();
    let ids = tokens(30, 2);
    store.register("t", doc("beta text"), ids.clone()).unwrap();
    let (first, _) = cached(&store, &model, "t", "beta").unwrap();
    let reference = compute_doc_cache(&model, &[1, 2, 3], &ids).unwrap();
    let path = store.blob_path("t", "beta").unwrap();
    for offset_from_end in [7usize, 4000] {
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - offset_from_end;
        bytes[at] ^= 0x5a;
        std::fs::write(&path, &bytes).unwrap();
        let failures = store.stats().integrity_failures;
        let (served, tier) = cached(&store, &model, "t", "beta").unwrap();
        assert_eq!(tier, Tier::Computed, "a corrupt blob must not be served");
        assert_eq!(store.stats().integrity_failures, failures + 1);
        for ((k, v), (rk, rv)) in served.layers().iter().zip(reference.layers()) {
            assert!(max_abs_diff(k, rk) < 1e-6 && max_abs_diff(v, rv) < 1e-6);
        }
    }
    // The rewritten blob is valid again.
    assert_eq!(cached(&store, &model, "t", "beta").unwrap().1, Tier::Disk);
    drop(first);
}

#[test]
fn a_computed_cache_is_handed_back_as_the_disk_gives_it_so_answers_never_depend_on_the_tier() {
    let (_m, model) = tiny(Tiny::Gemma3);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), None); // f16 blobs
    cfg.host_budget = 0; // every lookup reads the disk
    let store = DocumentStore::open(&cfg, identity(&model), model.device()).unwrap();
    let ids = tokens(30, 3);
    let (first, tier) = cached_ids(&store, &model, "t", &ids).unwrap();
    assert_eq!(tier, Tier::Computed);
    let (again, tier) = cached_ids(&store, &model, "t", &ids).unwrap();
    assert_eq!(tier, Tier::Disk);
    for (l, ((k, v), (k2, v2))) in first.layers().iter().zip(again.layers()).enumerate() {
        let d = max_abs_diff(k, k2).max(max_abs_diff(v, v2));
        assert_eq!(
            d, 0.0,
            "layer {l}: the first use and the reloaded copy differ"
        );
    }
    // Rounding to f16 does change the computed values: handing those back
    // (as the store once did) would differ from every reloaded copy.
    let computed = compute_doc_cache(&model, store.anchor(), &ids).unwrap();
    let (k, _) = &computed.layers()[0];
    assert!(max_abs_diff(k, &first.layers()[0].0) > 0.0);
}

#[test]
fn blob_from_another_model_or_key_is_rejected() {
    let (_m, model) = tiny(Tiny::Gemma3);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), None);
    cfg.host_budget = 0;
    let store = DocumentStore::open(&cfg, identity(&model), model.device()).unwrap();
    store.register("t", doc("one text"), tokens(20, 3)).unwrap();
    store.register("t", doc("two text"), tokens(20, 4)).unwrap();
    cached(&store, &model, "t", "one").unwrap();
    cached(&store, &model, "t", "two").unwrap();
    // Put document one's blob where document two's belongs.
    std::fs::copy(
        store.blob_path("t", "one").unwrap(),
        store.blob_path("t", "two").unwrap(),
    )
    .unwrap();
    assert_eq!(
        cached(&store, &model, "t", "two").unwrap().1,
        Tier::Computed
    );
    assert_eq!(store.stats().integrity_failures, 1);
    drop(store);
    // Another model fingerprint never reads these blobs as its own.
    let mut other = identity(&model);
    other.fingerprint = "another-model".into();
    let store = DocumentStore::open(&cfg, other, model.device()).unwrap();
    assert_eq!(
        cached(&store, &model, "t", "one").unwrap().1,
        Tier::Computed
    );
}

#[test]
fn caches_behind_a_preamble_are_keyed_apart_from_caches_without_one() {
    let (_m, model) = tiny(Tiny::Gemma3);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), None);
    let ids = tokens(20, 3);
    let open = |preamble: Vec<u32>| {
        let identity = identity(&model).with_preamble(preamble);
        DocumentStore::open(&cfg, identity, model.device()).unwrap()
    };
    let named = |p: Vec<u32>| identity(&model).with_preamble(p).fingerprint;
    assert_eq!(
        named(Vec::new()),
        identity(&model).fingerprint,
        "none: keys as before"
    );
    assert_ne!(named(tokens(6, 9)), named(tokens(6, 8)));
    let plain = open(Vec::new());
    let (without, _) = cached_ids(&plain, &model, "t", &ids).unwrap();
    drop(plain);
    let behind = open(tokens(6, 9));
    assert!(
        behind.lookup("t", &ids).unwrap().is_none(),
        "another preamble's cache"
    );
    let (with, tier) = cached_ids(&behind, &model, "t", &ids).unwrap();
    assert_eq!(tier, Tier::Computed);
    assert_eq!(
        with.anchor(),
        without.anchor(),
        "filed under the same anchor"
    );
    // Layer 0's keys see no context; the last layer's do.
    let keys = |c: &DocCache| c.layers().last().unwrap().0.clone();
    assert!(
        max_abs_diff(&keys(&with), &keys(&without)) > 1e-4,
        "the rows saw the preamble"
    );
    drop(behind);
    // Each store finds its own on disk.
    assert!(open(Vec::new()).lookup("t", &ids).unwrap().is_some());
    assert!(open(tokens(6, 9)).lookup("t", &ids).unwrap().is_some());
}

#[test]
fn budgets_hold_and_evicted_documents_come_back_from_a_lower_tier() {
    let redis = RedisServer::start();
    let (_m, model) = tiny(Tiny::Gemma3);
    let dir = tempfile::tempdir().unwrap();
    let (blob, decoded) = tiny_bytes(&model, 50);
    let mut cfg = config(dir.path(), Some(&redis));
    cfg.host_budget = decoded * 5 / 2; // two documents
    cfg.disk_budget = blob * 3 + blob / 2; // three documents (+ headers)
    let store = DocumentStore::open(&cfg, identity(&model), model.device()).unwrap();
    for i in 0..8 {
        store
            .register("t", doc(&format!("d{i} text")), tokens(50, 10 + i))
            .unwrap();
        assert_eq!(
            cached(&store, &model, "t", &format!("d{i}")).unwrap().1,
            Tier::Computed
        );
        let used = store.used_bytes().unwrap();
        assert!(used.host <= cfg.host_budget, "{used:?} > {cfg:?}");
        assert!(used.disk <= cfg.disk_budget, "{used:?} > {cfg:?}");
        assert!(used.remote <= 64 << 20, "{used:?}");
    }
    // d0 left memory and disk long ago; Redis still has it.
    assert_eq!(cached(&store, &model, "t", "d0").unwrap().1, Tier::Remote);
    assert_eq!(cached(&store, &model, "t", "d0").unwrap().1, Tier::Host);
    // A small Redis budget evicts too, and stays within it.
    let mut tight = config(tempfile::tempdir().unwrap().path(), Some(&redis));
    tight.remote.as_mut().unwrap().budget = blob * 2 + blob / 2;
    tight.remote.as_mut().unwrap().prefix = "pkv-tight".into();
    let dir2 = tempfile::tempdir().unwrap();
    tight.data_dir = dir2.path().to_path_buf();
    let store = DocumentStore::open(&tight, identity(&model), model.device()).unwrap();
    for i in 0..5 {
        store
            .register("t", doc(&format!("e{i} text")), tokens(50, 30 + i))
            .unwrap();
        cached(&store, &model, "t", &format!("e{i}")).unwrap();
        let remote = store.used_bytes().unwrap().remote;
        assert!(remote <= blob * 2 + blob / 2, "remote {remote}");
    }
}

#[test]
fn tenant_b_cannot_list_read_delete_or_hit_tenant_a_documents() {
    let (_m, model) = tiny(Tiny::Llama);
    let dir = tempfile::tempdir().unwrap();
    let store =
        DocumentStore::open(&config(dir.path(), None), identity(&model), model.device()).unwrap();
    let ids = tokens(25, 5);
    let a = store
        .register("tenant-a", doc("secret text"), ids.clone())
        .unwrap();
    cached(&store, &model, "tenant-a", &a.id).unwrap();
    assert!(store.list("tenant-b").unwrap().is_empty());
    assert_eq!(store.list("tenant-a").unwrap().len(), 1);
    assert!(matches!(
        store.get("tenant-b", &a.id),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        cached(&store, &model, "tenant-b", &a.id),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete("tenant-b", &a.id),
        Err(StoreError::NotFound { .. })
    ));
    // The same text in tenant B is B's own document and B's own computation.
    store
        .register("tenant-b", doc("secret text"), ids.clone())
        .unwrap();
    assert_eq!(
        cached(&store, &model, "tenant-b", &a.id).unwrap().1,
        Tier::Computed
    );
    assert_eq!(
        cached_ids(&store, &model, "tenant-b", &ids).unwrap().1,
        Tier::Host
    );
    store.delete("tenant-a", &a.id).unwrap();
    assert_eq!(store.get("tenant-b", &a.id).unwrap().tenant, "tenant-b");
}

#[test]
fn same_text_registered_twice_or_sent_inline_is_computed_once() {
    let (_m, model) = tiny(Tiny::Llama);
    let dir = tempfile::tempdir().unwrap();
    let store =
        DocumentStore::open(&config(dir.path(), None), identity(&model), model.device()).unwrap();
    let ids = tokens(25, 6);
    let text = NewDocument {
        text: "same".into(),
        ..Default::default()
    };
    let first = store.register("t", text.clone(), ids.clone()).unwrap();
    let second = store.register("t", text, ids.clone()).unwrap();
    assert_eq!(first.id, second.id);
    cached(&store, &model, "t", &first.id).unwrap();
    assert_eq!(cached_ids(&store, &model, "t", &ids).unwrap().1, Tier::Host);
    assert_eq!(store.stats().computed, 1);
    assert!(store.get("t", &first.id).unwrap().ready);
    // A cache of other ids is refused, not stored under these.
    let other = compute_doc_cache(&model, store.anchor(), &tokens(25, 7)).unwrap();
    assert!(matches!(
        store.insert("t", &ids, other),
        Err(StoreError::Invalid { field: "cache", .. })
    ));
    // Bad names are errors, not panics.
    let err = store.register(
        "",
        NewDocument {
            text: "x".into(),
            ..Default::default()
        },
        ids.clone(),
    );
    assert!(matches!(
        err,
        Err(StoreError::Invalid {
            field: "tenant",
            ..
        })
    ));
    let err = store.register(
        "t",
        NewDocument {
            text: "x".into(),
            ..Default::default()
        },
        vec![],
    );
    assert!(matches!(
        err,
        Err(StoreError::Invalid { field: "text", .. })
    ));
}
