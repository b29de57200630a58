//! Time to get a document's KV from each tier versus computing it, and the
//! bytes per token stored, for the default model.
//!
//! ```text
//! cargo run --release -p prophetkv-store --example tier_bench -- \
//!     [--model models/gemma-3-270m-q4_k_m.gguf] [--tokens 1024] [--runs 5] [--redis-url redis://127.0.0.1:6379/]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use prophetkv_model::{load_model, LoadOptions, TextTokenizer, WeightPath};
use prophetkv_store::{
    DocumentStore, KvDtype, ModelIdentity, NewDocument, RemoteConfig, StoreConfig, Tier,
};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    let mut model_path = PathBuf::from("models/gemma-3-270m-q4_k_m.gguf");
    let (mut n, mut runs, mut redis_url) = (1024usize, 5usize, None::<String>);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model_path = value.into(),
            "--tokens" => n = value.parse().expect("--tokens"),
            "--runs" => runs = value.parse().expect("--runs"),
            "--redis-url" => redis_url = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    let options = LoadOptions {
        weight_path: WeightPath::F32,
        ..LoadOptions::default()
    };
    let model = load_model(&model_path, &options).expect("model");
    let tokenizer = TextTokenizer::from_path(&model_path).expect("tokenizer");
    let sentence = "The council met in the old library to argue about the new bridge, the canal tolls and the winter market. ";
    let mut ids = tokenizer
        .encode(&sentence.repeat(n / 20 + 1))
        .expect("tokenize");
    ids.truncate(n);
    let c = model.config();
    println!("| tier | load 1 document of {n} tokens (ms, median of {runs}) | vs computing |\n|---|---:|---:|");
    let mut compute_ms = 0.0;
    for dtype in [KvDtype::F16, KvDtype::F32] {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = ModelIdentity {
            fingerprint: format!("bench-{dtype:?}"),
            layers: c.num_layers(),
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            anchor: tokenizer.prompt_ids("").expect("bos"),
            preamble: Vec::new(),
            kv_dtype: model.dtype(),
        };
        let config = |host: u64| StoreConfig {
            data_dir: dir.path().to_path_buf(),
            device_budget: 0,
            host_budget: host,
            disk_budget: 1 << 34,
            remote: redis_url.as_ref().map(|url| RemoteConfig {
                url: url.clone(),
                budget: 1 << 34,
                prefix: format!("bench-{dtype:?}"),
            }),
            kv_dtype: dtype,
        };
        let time = |store: &DocumentStore, expect: Tier| -> f64 {
            let t = Instant::now();
            let (record, ids) = store.document("bench", "doc").expect("registered");
            let tier = match store.lookup("bench", &ids).expect("lookup") {
                Some((_, tier)) => tier,
                None => {
                    let cache = prophetkv_reuse::compute_doc_cache(&model, store.anchor(), &ids)
                        .expect("compute");
                    store.insert("bench", &ids, cache).expect("insert");
                    store.mark_ready(&record, &ids).expect("ready");
                    Tier::Computed
                }
            };
            assert_eq!(tier, expect);
            t.elapsed().as_secs_f64() * 1e3
        };
        let store =
            DocumentStore::open(&config(1 << 32), identity.clone(), model.device()).expect("store");
        store
            .register(
                "bench",
                NewDocument {
                    id: Some("doc".into()),
                    text: "doc".into(),
                    ..Default::default()
                },
                ids.clone(),
            )
            .expect("register");
        if dtype == KvDtype::F16 {
            let computed: Vec<f64> = (0..runs.min(3))
                .map(|_| {
                    let t = Instant::now();
                    prophetkv_reuse::compute_doc_cache(&model, &identity.anchor, &ids)
                        .expect("compute");
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            compute_ms = median(computed);
            println!("| compute (f32 prefill) | {compute_ms:.1} | 1.00 |");
        }
        time(&store, Tier::Computed);
        let host = median((0..runs).map(|_| time(&store, Tier::Host)).collect());
        drop(store);
        let store =
            DocumentStore::open(&config(0), identity.clone(), model.device()).expect("store");
        let disk = median((0..runs).map(|_| time(&store, Tier::Disk)).collect());
        let blob_path = store.blob_path("bench", "doc").expect("path");
        let bytes = std::fs::metadata(&blob_path).expect("blob").len();
        drop(store);
        let mut rows = vec![("host (memory)", host), ("disk", disk)];
        if redis_url.is_some() {
            let remote: Vec<f64> = (0..runs)
                .map(|_| {
                    // Only Redis holds it now.
                    std::fs::remove_file(&blob_path).expect("rm");
                    let fresh = DocumentStore::open(&config(0), identity.clone(), model.device())
                        .expect("store");
                    time(&fresh, Tier::Remote)
                })
                .collect();
            rows.push(("redis", median(remote)));
        }
        for (name, ms) in rows {
            println!(
                "| {name}, {dtype:?} blobs | {ms:.3} | {:.4} |",
                ms / compute_ms
            );
        }
        println!(
            "| bytes per token, {dtype:?} blob | {:.0} | |",
            bytes as f64 / n as f64
        );
    }
}
