//! Random weights of a shape (the benchmarking stand-in for weights that
//! cannot be sent) and the precisions a model is loaded in.

use candle_core::Device;
use prophetkv_model::testing::last_logits;
use prophetkv_model::{
    load_random, random_config, DType, LoadOptions, Model, ModelConfig, TextTokenizer,
};

/// A config.json of a small Llama-family shape, in a temporary directory.
fn tiny_shape(arch: &str) -> (tempfile::TempDir, ModelConfig) {
    let dir = tempfile::tempdir().unwrap();
    let json = match arch {
        "llama" => {
            r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "vocab_size": 300, "max_position_embeddings": 512, "tie_word_embeddings": false}"#
        }
        _ => {
            r#"{"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1,
                "head_dim": 32, "vocab_size": 300, "sliding_window": 8,
                "sliding_window_pattern": 3, "max_position_embeddings": 512}"#
        }
    };
    std::fs::write(dir.path().join("config.json"), json).unwrap();
    let config = random_config(dir.path().to_str().unwrap()).unwrap();
    (dir, config)
}

fn first_logits(model: &Model, text: &str) -> Vec<f32> {
    let ids = TextTokenizer::bytes().unwrap().prompt_ids(text).unwrap();
    last_logits(model, &ids)
}

#[test]
fn the_same_seed_gives_the_same_model_and_another_seed_another() {
    for arch in ["llama", "gemma"] {
        let (_dir, config) = tiny_shape(arch);
        let options = LoadOptions::named("f32", Device::Cpu).unwrap();
        let load = |seed| load_random(config.clone(), seed, &options).unwrap();
        let text = "The capital of France is";
        let (a, b, c) = (load(7), load(7), load(8));
        let (la, lb, lc) = (
            first_logits(&a, text),
            first_logits(&b, text),
            first_logits(&c, text),
        );
        assert_eq!(la.len(), 300);
        assert_eq!(la, lb, "{arch}: same seed");
        assert_ne!(la, lc, "{arch}: another seed");
        let spread = la.iter().cloned().fold(f32::MIN, f32::max)
            - la.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 1e-3, "{arch}: logits must not tie ({spread})");
    }
}

#[test]
fn half_precision_is_refused_on_the_cpu_and_unknown_precisions_are_named() {
    let (_dir, config) = tiny_shape("llama");
    for name in ["bf16", "f16"] {
        let options = LoadOptions::named(name, Device::Cpu).unwrap();
        assert_ne!(options.dtype, DType::F32);
        let e = load_random(config.clone(), 0, &options)
            .unwrap_err()
            .to_string();
        assert!(e.contains("GPU only"), "{name}: {e}");
    }
    let e = LoadOptions::named("int4", Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mixed, mixed-bf16, q, f32, bf16 or f16"), "{e}");
    for (name, dtype) in [
        ("mixed", DType::F32),
        ("mixed-bf16", DType::F32),
        ("q", DType::F32),
        ("f32", DType::F32),
    ] {
        assert_eq!(LoadOptions::named(name, Device::Cpu).unwrap().dtype, dtype);
    }
}

#[test]
fn an_unknown_shape_names_the_known_ones() {
    let e = random_config("llama-9000").unwrap_err().to_string();
    for known in ["gemma-3-270m", "llama-3.1-8b", "qwen2.5-7b", "smollm2-135m"] {
        assert!(e.contains(known), "{e}");
    }
}

#[test]
fn a_sliding_window_of_zero_tokens_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 32, "vocab_size": 300, "sliding_window": 0,
        "sliding_window_pattern": 3, "max_position_embeddings": 512}"#;
    std::fs::write(dir.path().join("config.json"), json).unwrap();
    let config = random_config(dir.path().to_str().unwrap()).unwrap();
    let e = load_random(config, 0, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("sliding_window"), "{e}");
}
