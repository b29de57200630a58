//! Per-tenant storage quotas: what the registry holds for a tenant, counted
//! in documents and tokens; a call beyond the quota stores nothing, and
//! deleting frees room. No model runs: registering never computes a cache.

use std::path::Path;

use candle_core::Device;
use prophetkv_store::{
    DocumentStore, KvDtype, ModelIdentity, NewDocument, StoreConfig, StoreError, TenantQuota,
    TenantUsage,
};

fn open(dir: &Path, quota: TenantQuota) -> DocumentStore {
    let config = StoreConfig {
        data_dir: dir.to_path_buf(),
        device_budget: 0,
        host_budget: 1 << 20,
        disk_budget: 1 << 20,
        remote: None,
        kv_dtype: KvDtype::F32,
    };
    let identity = ModelIdentity {
        fingerprint: "quota-test".into(),
        layers: 1,
        kv_heads: 1,
        head_dim: 4,
        anchor: vec![1],
        preamble: Vec::new(),
        kv_dtype: candle_core::DType::F32,
    };
    DocumentStore::open(&config, identity, &Device::Cpu)
        .unwrap()
        .with_quota(quota)
}

/// Document `id` whose text is `tokens` words (and as many token ids).
fn doc(id: &str, tokens: usize) -> (NewDocument, Vec<u32>) {
    let text = vec![id; tokens].join(" ");
    let new = NewDocument {
        id: Some(id.into()),
        name: id.into(),
        text,
        ..Default::default()
    };
    (new, (0..tokens as u32).map(|t| t + 10).collect())
}

fn usage(documents: u64, tokens: u64) -> TenantUsage {
    TenantUsage { documents, tokens }
}

#[test]
fn a_call_beyond_the_document_quota_stores_nothing_and_deleting_frees_room() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        TenantQuota {
            max_documents: 3,
            max_tokens: 0,
        },
    );
    store
        .register_all("a", vec![doc("d1", 2), doc("d2", 3)])
        .unwrap();
    assert_eq!(store.usage("a").unwrap(), usage(2, 5));

    let refused = store
        .register_all("a", vec![doc("d3", 1), doc("d4", 1)])
        .unwrap_err();
    assert!(
        matches!(
            refused,
            StoreError::QuotaExceeded {
                limit: "store.tenant_max_documents",
                max: 3,
                held: 2,
                adding: 2,
                ..
            }
        ),
        "{refused}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("store.tenant_max_documents is 3"),
        "{message}"
    );
    assert_eq!(
        store.list("a").unwrap().len(),
        2,
        "nothing of the call is stored"
    );

    // The same text again counts once; a new document fills the quota.
    let (again, ids) = doc("d1", 2);
    store.register("a", again, ids).unwrap();
    let (third, ids) = doc("d3", 1);
    store.register("a", third, ids).unwrap();
    assert_eq!(store.usage("a").unwrap(), usage(3, 6));
    let (fourth, ids) = doc("d4", 1);
    assert!(matches!(
        store.register("a", fourth.clone(), ids.clone()),
        Err(StoreError::QuotaExceeded { .. })
    ));

    store.delete("a", "d2").unwrap();
    assert_eq!(store.usage("a").unwrap(), usage(2, 3));
    store.register("a", fourth, ids).unwrap();
    assert_eq!(store.usage("a").unwrap(), usage(3, 4));
}

#[test]
fn the_token_quota_counts_a_replaced_text_by_its_new_length() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        TenantQuota {
            max_documents: 0,
            max_tokens: 10,
        },
    );
    let (first, ids) = doc("d1", 6);
    store.register("a", first, ids).unwrap();
    let (second, ids) = doc("d2", 5);
    let refused = store.register("a", second, ids).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("store.tenant_max_tokens is 10 tokens; the tenant holds 6"),
        "{refused}"
    );
    // d1 again with a shorter text frees 2 tokens: 4 + 5 fits.
    let (shorter, ids) = doc("d1", 4);
    store.register("a", shorter, ids).unwrap();
    assert_eq!(store.usage("a").unwrap(), usage(1, 4));
    let (second, ids) = doc("d2", 5);
    store.register("a", second, ids).unwrap();
    assert_eq!(store.usage("a").unwrap(), usage(2, 9));
}

#[test]
fn each_tenant_has_its_own_quota_and_usage_is_read_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let quota = TenantQuota {
        max_documents: 2,
        max_tokens: 0,
    };
    {
        let store = open(dir.path(), quota);
        store
            .register_all("a", vec![doc("d1", 1), doc("d2", 1)])
            .unwrap();
        // Tenant b is not held to a's usage.
        store
            .register_all("b", vec![doc("d1", 1), doc("d2", 1)])
            .unwrap();
    }
    let store = open(dir.path(), quota);
    assert_eq!(store.usage("a").unwrap(), usage(2, 2));
    let (third, ids) = doc("d3", 1);
    assert!(matches!(
        store.register("a", third.clone(), ids.clone()),
        Err(StoreError::QuotaExceeded { .. })
    ));
    store.delete("b", "d1").unwrap();
    assert!(matches!(
        store.register("a", third.clone(), ids.clone()),
        Err(StoreError::QuotaExceeded { .. })
    ));
    store.register("b", third, ids).unwrap();
}

#[test]
fn without_a_quota_registering_is_unbounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), TenantQuota::default());
    let docs: Vec<_> = (0..50).map(|i| doc(&format!("d{i}"), 3)).collect();
    store.register_all("a", docs).unwrap();
    assert_eq!(store.usage("a").unwrap(), usage(50, 150));
}
