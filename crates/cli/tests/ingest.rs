//! `prophetkv ingest` killed with SIGKILL mid-way: the registry stays
//! consistent, nothing half-written is served, and a rerun finishes the job.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prophetkv_engine::DocumentCaches;
use prophetkv_model::testing::{default_model_path, max_abs_diff};
use prophetkv_model::{load_model, LoadOptions, TextTokenizer, WeightPath};
use prophetkv_reuse::compute_doc_cache;
use prophetkv_store::{
    model_fingerprint, DocumentStore, KvDtype, ModelIdentity, StoreConfig, Tier,
};

const WORDS: [&str; 24] = [
    "harbor", "lantern", "meadow", "granite", "festival", "orchard", "council", "river", "bridge",
    "winter", "merchant", "library", "signal", "valley", "cedar", "copper", "garden", "tower",
    "market", "school", "canal", "quarry", "ferry", "mill",
];

/// `n` small documents of varied prose.
fn write_documents(dir: &Path, n: usize) {
    for i in 0..n {
        let text: Vec<String> = (0..12)
            .map(|s| {
                let w = |k: usize| WORDS[(i * 7 + s * 5 + k * 3) % WORDS.len()];
                format!(
                    "The {} near the {} was rebuilt after the {} closed in {}.",
                    w(0),
                    w(1),
                    w(2),
                    1800 + i * 13 + s
                )
            })
            .collect();
        std::fs::write(dir.join(format!("doc{i:02}.txt")), text.join(" ")).unwrap();
    }
}

fn ingest(model: &Path, docs: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prophetkv"));
    cmd.args(["ingest", "--model"])
        .arg(model)
        .arg("--dir")
        .arg(docs)
        .arg("--data-dir")
        .arg(data)
        .args([
            "--dtype",
            "f32",
            "--host-budget-mb",
            "0",
            "--tenant",
            "crash",
            "--prefix",
            "",
        ])
        .env_remove("PROPHETKV_REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

fn blobs(data: &Path) -> usize {
    std::fs::read_dir(data.join("blobs"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "kv"))
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn ingest_killed_mid_way_leaves_a_consistent_registry_and_resumes() {
    let model_path = default_model_path();
    let docs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let n = 24;
    write_documents(docs.path(), n);

    let mut child = ingest(&model_path, docs.path(), data.path())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while blobs(data.path()) < 3 {
        assert!(Instant::now() < deadline, "ingest made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "ingest finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Reopen as a fresh process would.
    let options = LoadOptions {
        weight_path: WeightPath::F32,
        ..LoadOptions::default()
    };
    let model = load_model(&model_path, &options).unwrap();
    let tokenizer = TextTokenizer::from_path(&model_path).unwrap();
    let identity = ModelIdentity::new(
        &model,
        model_fingerprint(&model_path, "F32").unwrap(),
        tokenizer.prompt_ids("").unwrap(),
    );
    let config = StoreConfig {
        data_dir: data.path().to_path_buf(),
        device_budget: 0,
        host_budget: 0,
        disk_budget: 20 << 30,
        remote: None,
        kv_dtype: KvDtype::F16,
    };
    let store = Arc::new(DocumentStore::open(&config, identity.clone(), model.device()).unwrap());
    let caches = DocumentCaches::new(store.clone());
    let leftovers = std::fs::read_dir(data.path().join("blobs"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp")
        })
        .count();
    assert_eq!(
        leftovers, 0,
        "half-written blobs must be cleaned up, never served"
    );
    let listed = store.list("crash").unwrap();
    assert!(
        !listed.is_empty() && listed.len() < n,
        "killed mid-way: {} of {n} registered",
        listed.len()
    );
    let ready_before = listed.iter().filter(|r| r.ready).count();
    for record in &listed {
        let (cache, tier) = caches.registered(&model, "crash", &record.id).unwrap();
        let ids = tokenizer.encode(&record.text).unwrap();
        let fresh = compute_doc_cache(&model, &identity.anchor, &ids).unwrap();
        for ((k, v), (fk, fv)) in cache.layers().iter().zip(fresh.layers()) {
            let d = max_abs_diff(k, fk).max(max_abs_diff(v, fv));
            assert!(
                d < 0.05,
                "{} served from {tier:?} differs from a fresh compute by {d}",
                record.id
            );
        }
        if record.ready {
            assert_eq!(
                tier,
                Tier::Disk,
                "{} was ready, its blob must load",
                record.id
            );
        }
    }
    drop((caches, store));

    // Rerun: finishes the rest and skips what is done.
    let out = ingest(&model_path, docs.path(), data.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let summary = String::from_utf8_lossy(&out.stdout);
    let store = DocumentStore::open(&config, identity, model.device()).unwrap();
    let listed = store.list("crash").unwrap();
    assert_eq!(listed.len(), n, "{summary}");
    assert!(listed.iter().all(|r| r.ready), "{summary}");
    assert!(summary.contains("already ready"), "{summary}");
    assert!(ready_before > 0);
}
