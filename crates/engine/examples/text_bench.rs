//! Per-token cost of turning generated ids into streamed text, early and
//! late in a long answer: the incremental path the engine uses against
//! decoding the whole answer again at every token (what it did before).
//!
//! `cargo run --release -p prophetkv-engine --example text_bench -- --model PATH [--tokens 2000]`
//!
//! The ids are the real tokenizer's ids of the dev tasks' documents, so
//! the text has the words, digits and newlines of a real answer.

use std::path::PathBuf;
use std::time::Instant;

use prophetkv_engine::detokenize::IncrementalDecoder;
use prophetkv_engine::stop::{Delta, TextStream};
use prophetkv_model::TextTokenizer;

const STOP: &str = "\nUser:";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The ids of the dev tasks' documents, at least `n` of them.
fn answer_ids(tokenizer: &TextTokenizer, n: usize) -> Vec<u32> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tasks =
        std::fs::read_to_string(root.join("tasks/dev-niah.jsonl")).expect("tasks/dev-niah.jsonl");
    let mut ids = Vec::new();
    for line in tasks.lines() {
        let task: serde_json::Value = serde_json::from_str(line).expect("a task line");
        for doc in task["documents"].as_array().into_iter().flatten() {
            ids.extend(
                tokenizer
                    .encode(doc.as_str().unwrap_or_default())
                    .expect("encode"),
            );
        }
        if ids.len() >= n {
            break;
        }
    }
    assert!(ids.len() >= n, "the tasks hold only {} tokens", ids.len());
    ids.truncate(n);
    ids
}

/// Microseconds spent on each token by `step`.
fn per_token(ids: &[u32], mut step: impl FnMut(usize, u32)) -> Vec<f64> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            let t = Instant::now();
            step(i, id);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// The previous path: decode every id so far, then search the whole text.
fn whole_text(tokenizer: &TextTokenizer, ids: &[u32]) -> (Vec<f64>, String) {
    let mut emitted = 0usize;
    let mut out = String::new();
    let times = per_token(ids, |i, _| {
        let text = tokenizer.decode(&ids[..=i]).expect("decode");
        if text.find(STOP).is_none() {
            let visible = text.trim_end_matches('\u{FFFD}').len();
            let hold = (1..STOP.len())
                .filter(|&k| text[..visible].ends_with(&STOP[..k]))
                .max()
                .unwrap_or(0);
            let safe = visible - hold;
            if safe > emitted && text.is_char_boundary(safe) {
                out.push_str(&text[emitted..safe]);
                emitted = safe;
            }
        }
    });
    (times, out)
}

/// The engine's path: a window of ids decoded, the pending tail searched.
fn incremental(tokenizer: &TextTokenizer, ids: &[u32]) -> (Vec<f64>, String) {
    let mut decoder = IncrementalDecoder::default();
    let mut stream = TextStream::new(vec![STOP.to_string()]);
    let mut out = String::new();
    let times = per_token(ids, |_, id| {
        let delta = decoder.push(tokenizer, id).expect("decode");
        match stream.push(&delta) {
            Delta::Text(t) | Delta::Stopped(t) => out.push_str(&t),
        }
    });
    (times, out)
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

fn main() {
    let model = PathBuf::from(arg("--model").unwrap_or("models/gemma-3-270m-q4_k_m.gguf".into()));
    let n: usize = arg("--tokens").and_then(|s| s.parse().ok()).unwrap_or(2000);
    let tokenizer = TextTokenizer::from_path(&model).expect("the model's tokenizer");
    let ids = answer_ids(&tokenizer, n);
    let (old, old_text) = whole_text(&tokenizer, &ids);
    let (new, new_text) = incremental(&tokenizer, &ids);
    assert_eq!(old_text, new_text, "both paths must emit the same text");
    let window = (n / 10).max(1);
    println!("text per token over a {n}-token answer (µs, mean of {window} tokens; same text from both)\n");
    println!(
        "| path | tokens 1–{window} | tokens {}–{n} | late / early |",
        n - window + 1
    );
    println!("|---|---:|---:|---:|");
    for (name, times) in [
        ("decode everything per token (before)", &old),
        ("incremental (now)", &new),
    ] {
        let early = mean(&times[..window]);
        let late = mean(&times[n - window..]);
        println!("| {name} | {early:.1} | {late:.1} | {:.2}x |", late / early);
    }
    println!(
        "\ntotal: before {:.1} ms, now {:.1} ms",
        old.iter().sum::<f64>() / 1e3,
        new.iter().sum::<f64>() / 1e3
    );
}
