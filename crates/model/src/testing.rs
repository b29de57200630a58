//! Tiny random models for tests (feature `testing`): written as safetensors +
//! config.json to a temp dir and loaded through the normal loader, so tests
//! exercise the real loading path without any download.

use std::collections::HashMap;
use std::path::Path;

use crate::{load_model, LoadOptions, Model, WeightPath};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Vocabulary size.
pub const VOCAB: usize = 64;
/// Width of the residual stream.
pub const HIDDEN: usize = 32;
/// Width of the MLP.
pub const FFN: usize = 64;
/// Query heads.
pub const HEADS: usize = 4;
/// Key/value heads.
pub const KV_HEADS: usize = 2;
/// Width of a head.
pub const HEAD_DIM: usize = 16;
/// Smaller than the test sequences, so windowed layers really mask.
pub const WINDOW: usize = 8;

/// A model family to test: its config.json and weight names.
#[derive(Debug, Clone, Copy)]
pub enum Tiny {
    /// Gemma 3: sliding layers 0 and 1, global layer 2, q/k norms, post norms.
    Gemma3,
    /// Llama: untied output head.
    Llama,
    /// Qwen3: q/k norms.
    Qwen3,
    /// Qwen2: q/k/v biases.
    Qwen2,
}

/// Every tiny family.
pub const ALL: [Tiny; 4] = [Tiny::Gemma3, Tiny::Llama, Tiny::Qwen3, Tiny::Qwen2];

fn config(kind: Tiny) -> serde_json::Value {
    let mut c = json!({
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 1024,
    });
    let extra = match kind {
        Tiny::Gemma3 => json!({
            "model_type": "gemma3_text",
            "num_hidden_layers": 3,
            "sliding_window": WINDOW,
            "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0,
            "query_pre_attn_scalar": HEAD_DIM,
        }),
        Tiny::Llama => json!({
            "model_type": "llama", "num_hidden_layers": 2,
            "rope_theta": 10_000.0, "tie_word_embeddings": false,
        }),
        Tiny::Qwen3 => json!({
            "model_type": "qwen3", "num_hidden_layers": 2,
            "rope_theta": 1_000_000.0, "tie_word_embeddings": true,
        }),
        Tiny::Qwen2 => json!({
            "model_type": "qwen2", "num_hidden_layers": 2,
            "rope_theta": 1_000_000.0, "tie_word_embeddings": true,
        }),
    };
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn random(rng: &mut StdRng, shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| (rng.random::<f32>() - 0.5) * 2.0 * scale)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn weights(kind: Tiny, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let layers = config(kind)["num_hidden_layers"].as_u64().unwrap() as usize;
    let mut w = HashMap::new();
    let mut put = |name: String, shape: &[usize], scale: f32, rng: &mut StdRng| {
        w.insert(name, random(rng, shape, scale));
    };
    put(
        "model.embed_tokens.weight".into(),
        &[VOCAB, HIDDEN],
        1.0,
        &mut rng,
    );
    put("model.norm.weight".into(), &[HIDDEN], 0.2, &mut rng);
    if matches!(kind, Tiny::Llama) {
        put("lm_head.weight".into(), &[VOCAB, HIDDEN], 0.3, &mut rng);
    }
    let q = HEADS * HEAD_DIM;
    let kv = KV_HEADS * HEAD_DIM;
    for i in 0..layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        put(p("input_layernorm.weight"), &[HIDDEN], 0.2, &mut rng);
        put(p("self_attn.q_proj.weight"), &[q, HIDDEN], 0.3, &mut rng);
        put(p("self_attn.k_proj.weight"), &[kv, HIDDEN], 0.3, &mut rng);
        put(p("self_attn.v_proj.weight"), &[kv, HIDDEN], 0.3, &mut rng);
        put(p("self_attn.o_proj.weight"), &[HIDDEN, q], 0.3, &mut rng);
        put(
            p("post_attention_layernorm.weight"),
            &[HIDDEN],
            0.2,
            &mut rng,
        );
        put(p("mlp.gate_proj.weight"), &[FFN, HIDDEN], 0.3, &mut rng);
        put(p("mlp.up_proj.weight"), &[FFN, HIDDEN], 0.3, &mut rng);
        put(p("mlp.down_proj.weight"), &[HIDDEN, FFN], 0.3, &mut rng);
        if matches!(kind, Tiny::Gemma3 | Tiny::Qwen3) {
            put(p("self_attn.q_norm.weight"), &[HEAD_DIM], 0.2, &mut rng);
            put(p("self_attn.k_norm.weight"), &[HEAD_DIM], 0.2, &mut rng);
        }
        if matches!(kind, Tiny::Gemma3) {
            put(
                p("pre_feedforward_layernorm.weight"),
                &[HIDDEN],
                0.2,
                &mut rng,
            );
            put(
                p("post_feedforward_layernorm.weight"),
                &[HIDDEN],
                0.2,
                &mut rng,
            );
        }
        if matches!(kind, Tiny::Qwen2) {
            put(p("self_attn.q_proj.bias"), &[q], 0.3, &mut rng);
            put(p("self_attn.k_proj.bias"), &[kv], 0.3, &mut rng);
            put(p("self_attn.v_proj.bias"), &[kv], 0.3, &mut rng);
        }
    }
    w
}

/// BOS id of the tiny models' tokenizer (`t1`).
pub const TINY_BOS: u32 = 1;
/// EOS id of the tiny models' tokenizer (`t63`).
pub const TINY_EOS: u32 = 63;

/// A word-level tokenizer over `t0` .. `t63` (whitespace-separated words;
/// anything else is `t0`), so a tiny model directory is a complete model.
fn write_tokenizer(dir: &Path) {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    let vocab = (0..VOCAB as u32).map(|i| (format!("t{i}"), i)).collect();
    let model = WordLevel::builder()
        .vocab(vocab)
        .unk_token("t0".into())
        .build()
        .unwrap();
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    tokenizer.save(dir.join("tokenizer.json"), false).unwrap();
}

/// Text whose tiny-tokenizer ids are `ids`.
pub fn tiny_text(ids: &[u32]) -> String {
    ids.iter().map(|i| format!("t{i} ")).collect()
}

/// Writes the tiny model of `kind` (config, weights, tokenizer) into `dir`.
pub fn write_tiny(dir: &Path, kind: Tiny) {
    let mut config = config(kind);
    config["bos_token_id"] = TINY_BOS.into();
    config["eos_token_id"] = TINY_EOS.into();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    write_tokenizer(dir);
    candle_core::safetensors::save(&weights(kind, 7), dir.join("model.safetensors")).unwrap();
}

/// A tiny model of `kind`, loaded with f32 weights; the temp dir lives as long as it.
pub fn tiny(kind: Tiny) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), kind);
    let options = LoadOptions {
        weight_path: WeightPath::F32,
        ..LoadOptions::default()
    };
    let model = load_model(dir.path(), &options).unwrap();
    (dir, model)
}

/// Deterministic pseudo-random token ids.
pub fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..VOCAB as u32)).collect()
}

/// The logits after a plain prefill of `ids` at positions `0..`: the
/// model's next-token distribution, as a vector.
pub fn last_logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    let positions: Vec<u32> = (0..ids.len() as u32).collect();
    let (_, last) = model.prefill(ids, &positions).unwrap();
    model
        .logits(&last)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Largest absolute element difference of two same-shaped tensors.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let f32s = |t: &Tensor| t.to_dtype(candle_core::DType::F32).unwrap();
    (f32s(a) - f32s(b))
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The default model for real-model tests: `PROPHETKV_MODEL`, else
/// `models/gemma-3-270m-q4_k_m.gguf` at the workspace root. Panics with the
/// fetch command when it is missing.
pub fn default_model_path() -> std::path::PathBuf {
    let path = std::env::var_os("PROPHETKV_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("models/gemma-3-270m-q4_k_m.gguf"));
    assert!(
        path.is_file(),
        "default model missing at {}: run scripts/fetch-model.sh",
        path.display()
    );
    path
}

/// The instruction-tuned second model, SmolLM2-135M-Instruct (Llama
/// architecture, byte-level BPE, a chat template), fetched by
/// `scripts/fetch-smollm2.sh`.
pub fn instruct_model_path() -> std::path::PathBuf {
    let path = workspace_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "instruct model missing at {}: run scripts/fetch-smollm2.sh",
        path.display()
    );
    path
}

/// The workspace root (where `models/` and `tasks/` live).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
