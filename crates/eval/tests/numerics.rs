//! `bench numerics` on the CPU alone: a runtime checked against itself holds
//! every bound, and one on other weights fails them.

use prophetkv_eval::numerics::{compare, NumericsSpec, Runtimes};
use prophetkv_eval::run::Evaluator;
use prophetkv_model::{load_random, random_config, LoadOptions, Model, TextTokenizer};
use prophetkv_reuse::ReuseConfig;

fn tiny_random(seed: u64) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 300, "max_position_embeddings": 4096}"#,
    )
    .unwrap();
    let config = random_config(dir.path().to_str().unwrap()).unwrap();
    let model = load_random(config, seed, &LoadOptions::default()).unwrap();
    (dir, model)
}

fn spec() -> NumericsSpec {
    NumericsSpec {
        prompts: 3,
        context_tokens: 600,
        docs: 4,
        greedy_tokens: 4,
        ratio: 0.2,
        seed: 1,
    }
}

#[test]
fn a_runtime_against_itself_holds_every_bound() {
    let tokenizer = TextTokenizer::bytes().unwrap();
    let (_dir, model) = tiny_random(3);
    let ev = Evaluator::new(&model, &tokenizer, ReuseConfig::default(), 1);
    let runtimes = Runtimes {
        cpu: &ev,
        device: &ev,
        low: &ev,
    };
    let mut lines = 0;
    let report = compare(&runtimes, &spec(), &mut |_| lines += 1).unwrap();
    assert_eq!((report.prompts.len(), lines), (3, 3));
    assert_eq!(report.checks.len(), 5);
    for check in &report.checks {
        assert!(check.pass, "{check:?}");
    }
    assert!(report.prompts.iter().all(|p| p.f32_max_logit_diff == 0.0));
}

#[test]
fn a_runtime_on_other_weights_fails_the_logit_bounds() {
    let tokenizer = TextTokenizer::bytes().unwrap();
    let (_a, model) = tiny_random(3);
    let (_b, other) = tiny_random(4);
    let ev = Evaluator::new(&model, &tokenizer, ReuseConfig::default(), 1);
    let wrong = Evaluator::new(&other, &tokenizer, ReuseConfig::default(), 1);
    let runtimes = Runtimes {
        cpu: &ev,
        device: &wrong,
        low: &wrong,
    };
    let report = compare(&runtimes, &spec(), &mut |_| {}).unwrap();
    let first = &report.checks[0];
    assert!(first.name.contains("logit") && !first.pass, "{first:?}");
}
