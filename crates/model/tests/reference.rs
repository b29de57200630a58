//! Both model families against independent implementations: Hugging Face
//! transformers (GGUF dequantized to fp32, its tokenizer converted from the
//! GGUF) and llama.cpp (quantized kernels), on the three prompts of
//! `data/reference-prompts.json` (one past Gemma's 512-token window), and for
//! SmolLM2 also its byte-level BPE tokenizer on the strings listed there
//! (`scripts/reference-logits.sh` writes the reference files).
//!
//! Needs `models/gemma-3-270m-q4_k_m.gguf` and
//! `models/SmolLM2-135M-Instruct.Q4_1.gguf` (`make model`; the test command
//! fetches them).

use std::path::PathBuf;

use std::path::Path;

use prophetkv_model::testing::{default_model_path, instruct_model_path, last_logits};
use prophetkv_model::{generate_greedy, load_model, LoadOptions, Model, TextTokenizer, WeightPath};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    results: Vec<Prompt>,
    /// Strings and their ids without special tokens (absent in older files).
    #[serde(default)]
    tokenizer: Vec<Tokenized>,
}

#[derive(Deserialize)]
struct Tokenized {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Prompt {
    name: String,
    text: String,
    token_ids: Vec<u32>,
    top_ids: Vec<u32>,
    top_logits: Vec<f32>,
    greedy_ids: Vec<u32>,
}

fn reference(file: &str) -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load(model: &Path, path: WeightPath) -> Model {
    let options = LoadOptions {
        weight_path: path,
        ..LoadOptions::default()
    };
    load_model(model, &options).unwrap()
}

/// The largest |logit − HF| over HF's top-20 of each prompt, per weight path
/// and for llama.cpp.
struct Distances {
    f32: f32,
    mixed: f32,
    mixed_bf16: f32,
    quantized: f32,
    llama: f32,
}

impl std::fmt::Display for Distances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max |logit - HF| over the top-20 of 3 prompts: f32 {:.2e}, mixed {:.4}, mixed-bf16 {:.4}, quantized {:.4} (llama.cpp {:.4})",
            self.f32, self.mixed, self.mixed_bf16, self.quantized, self.llama
        )
    }
}

#[test]
fn default_model_matches_hf_and_llamacpp_references() {
    let distances = check_against_references(
        &default_model_path(),
        "gemma3-270m-hf-logits.json",
        "gemma3-270m-llamacpp-logits.json",
    );
    println!("{distances}");
}

#[test]
fn llama_family_model_matches_hf_and_llamacpp_references() {
    let distances = check_against_references(
        &instruct_model_path(),
        "smollm2-135m-hf-logits.json",
        "smollm2-135m-llamacpp-logits.json",
    );
    println!("SmolLM2: {distances}");
}

/// Checks the model at `model` against the two reference files: prompt ids,
/// reference strings' ids (both references), f32 logits and greedy
/// continuations (HF), and the other paths within llama.cpp-like distance.
fn check_against_references(model: &Path, hf_file: &str, llama_file: &str) -> Distances {
    let model_path = model;
    let hf = reference(hf_file);
    let llama = reference(llama_file);
    let tokenizer = TextTokenizer::from_path(model_path).unwrap();

    for reference in [&hf, &llama] {
        for t in &reference.tokenizer {
            let ids = tokenizer.encode(&t.text).unwrap();
            assert_eq!(ids, t.ids, "{:?}: token ids differ", t.text);
            assert_eq!(
                tokenizer.decode(&ids).unwrap(),
                t.text,
                "{:?}: round trip",
                t.text
            );
        }
    }
    for p in &hf.results {
        let ids = tokenizer.prompt_ids(&p.text).unwrap();
        assert_eq!(
            ids, p.token_ids,
            "{}: prompt token ids differ from HF",
            p.name
        );
    }

    // f32: exact reference path.
    let model = load(model_path, WeightPath::F32);
    let mut max_f32 = 0f32;
    for p in &hf.results {
        let logits = last_logits(&model, &p.token_ids);
        let top1 = prophetkv_model::top_k(&logits, 1)[0].0;
        assert_eq!(top1, p.top_ids[0], "{}: f32 top-1 differs from HF", p.name);
        for (&id, &want) in p.top_ids.iter().zip(&p.top_logits) {
            let d = (logits[id as usize] - want).abs();
            max_f32 = max_f32.max(d);
            assert!(d <= 0.02, "{}: f32 logit of {id} off by {d}", p.name);
        }
        let g = generate_greedy(&model, &p.token_ids, 16, &[], 0).unwrap();
        assert_eq!(
            g.output_ids, p.greedy_ids,
            "{}: f32 greedy continuation differs",
            p.name
        );
    }
    drop(model);

    // Quantized, mixed (the default: f32 prefill, quantized output projection
    // and decode) and mixed-bf16 (its prefill in bf16 where the CPU has
    // AVX-512 BF16): within llama.cpp-like distance of HF.
    let max_q = max_distance_to_hf(model_path, WeightPath::Quantized, &hf);
    let max_mixed = max_distance_to_hf(model_path, WeightPath::Mixed, &hf);
    let max_mixed_bf16 = max_distance_to_hf(model_path, WeightPath::MixedBf16, &hf);
    let mut max_llama = 0f32;
    for (p, l) in hf.results.iter().zip(&llama.results) {
        for (&id, &theirs) in l.top_ids.iter().zip(&l.top_logits) {
            if let Some(i) = p.top_ids.iter().position(|&x| x == id) {
                max_llama = max_llama.max((theirs - p.top_logits[i]).abs());
            }
        }
    }
    Distances {
        f32: max_f32,
        mixed: max_mixed,
        mixed_bf16: max_mixed_bf16,
        quantized: max_q,
        llama: max_llama,
    }
}

/// The largest |logit − HF| of `path` over HF's top-20 of every prompt,
/// each within 0.75 (llama.cpp's own is ~0.55), with HF's top-1 where HF's
/// margin over its second is clear.
fn max_distance_to_hf(model_path: &Path, path: WeightPath, hf: &Reference) -> f32 {
    let model = load(model_path, path);
    let mut max = 0f32;
    for p in &hf.results {
        let logits = last_logits(&model, &p.token_ids);
        for (&id, &want) in p.top_ids.iter().zip(&p.top_logits) {
            let d = (logits[id as usize] - want).abs();
            max = max.max(d);
            assert!(d <= 0.75, "{}: {path:?} logit of {id} off by {d}", p.name);
        }
        let margin = p.top_logits[0] - p.top_logits[1];
        let top1 = prophetkv_model::top_k(&logits, 1)[0].0;
        if margin > 0.05 {
            assert_eq!(top1, p.top_ids[0], "{}: {path:?} top-1 differs", p.name);
        }
    }
    max
}
