//! Exact-answer accuracy and time to first token of every strategy on a task
//! file (DESIGN.md §7 format), side by side in one process: each task's
//! document caches are computed once and shared by all strategies.
//!
//! ```text
//! cargo run --release -p prophetkv-reuse --example strategy_compare -- \
//!     [--model models/gemma-3-270m-q4_k_m.gguf] [--tasks tasks/dev-niah.jsonl] \
//!     [--ratio 0.2] [--per-group N] [--out results.jsonl]
//! ```
//! `--per-group N` keeps the first N tasks of each (task kind, document count) group.
//! ```text
//! ```
//! Prints one JSON line per task and strategy, then a markdown table.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use prophetkv_model::{continue_greedy, load_model, LoadOptions, TextTokenizer, WeightPath};
use prophetkv_reuse::{run, CachedDocuments, ReuseConfig, ReuseRequest, StrategyKind};
use serde::Deserialize;

#[derive(Deserialize)]
struct Task {
    id: String,
    task: String,
    prefix: String,
    documents: Vec<String>,
    question: String,
    answers: Vec<String>,
}

fn main() {
    let mut model_path = PathBuf::from("models/gemma-3-270m-q4_k_m.gguf");
    let mut tasks_path = PathBuf::from("tasks/dev-niah.jsonl");
    let mut ratio = 0.2;
    let mut per_group = usize::MAX;
    let mut out_path: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model_path = value.into(),
            "--tasks" => tasks_path = value.into(),
            "--ratio" => ratio = value.parse().expect("--ratio"),
            "--per-group" => per_group = value.parse().expect("--per-group"),
            "--out" => out_path = Some(value.into()),
            other => panic!("unknown flag {other}"),
        }
    }
    let options = LoadOptions {
        weight_path: WeightPath::F32,
        ..LoadOptions::default()
    };
    let model = load_model(&model_path, &options).expect("model");
    let tokenizer = TextTokenizer::from_path(&model_path).expect("tokenizer");
    let text = std::fs::read_to_string(&tasks_path).expect("tasks");
    let mut seen: BTreeMap<(String, usize), usize> = BTreeMap::new();
    let tasks: Vec<Task> = text
        .lines()
        .map(|l| serde_json::from_str::<Task>(l).expect("task line"))
        .filter(|t| {
            let n = seen.entry((t.task.clone(), t.documents.len())).or_default();
            *n += 1;
            *n <= per_group
        })
        .collect();
    let mut out = out_path.map(|p| std::fs::File::create(p).expect("out file"));

    // (task kind, strategy) -> (correct, total, ttft sum, full ttft sum)
    let mut table: BTreeMap<(String, usize), (usize, usize, f64, f64)> = BTreeMap::new();
    for task in &tasks {
        let anchor_ids = tokenizer.prompt_ids(&task.prefix).unwrap();
        let ids: Vec<Vec<u32>> = task
            .documents
            .iter()
            .map(|d| tokenizer.encode(d).unwrap())
            .collect();
        let cached = CachedDocuments::compute(&model, &anchor_ids, &ids).unwrap();
        let pieces = cached.pieces();
        let query = tokenizer.encode(&task.question).unwrap();
        let request = ReuseRequest {
            anchor: &cached.anchor,
            pieces: &pieces,
            query: &query,
        };
        let mut full_ttft = 0.0;
        for (s, strategy) in StrategyKind::ALL.into_iter().enumerate() {
            let config = ReuseConfig {
                strategy,
                ratio,
                ..ReuseConfig::default()
            };
            let t = Instant::now();
            let mut result = run(&model, &request, &config, model.device()).unwrap();
            let ttft = t.elapsed().as_secs_f64() * 1e3;
            if strategy == StrategyKind::Full {
                full_ttft = ttft;
            }
            let logits = result.logits.clone();
            let c =
                continue_greedy(&model, &mut result.kv, &logits, 8, tokenizer.eos(), 0).unwrap();
            let prediction = tokenizer.decode(&c.output_ids).unwrap();
            let correct = task
                .answers
                .iter()
                .any(|a| prediction.to_lowercase().contains(&a.to_lowercase()));
            let line = serde_json::json!({
                "id": task.id, "task": task.task, "strategy": strategy.name(), "ratio": ratio,
                "prediction": prediction, "correct": correct, "ttft_ms": ttft,
                "context_tokens": result.stats.context_tokens, "selected": result.stats.selected,
                "eligible": result.stats.eligible,
            });
            println!("{line}");
            if let Some(f) = out.as_mut() {
                writeln!(f, "{line}").unwrap();
            }
            let kind = format!("{} ({} docs)", task.task, task.documents.len());
            let e = table.entry((kind, s)).or_default();
            e.0 += usize::from(correct);
            e.1 += 1;
            e.2 += ttft;
            e.3 += full_ttft;
        }
    }
    println!("\n| tasks | strategy | ratio | accuracy | TTFT vs full |\n|---|---|---:|---:|---:|");
    for ((kind, s), (correct, total, ttft, full)) in &table {
        println!(
            "| {kind} | {} | {ratio} | {}/{} ({:.0}%) | {:.2} |",
            StrategyKind::ALL[*s].name(),
            correct,
            total,
            100.0 * *correct as f64 / *total as f64,
            ttft / full
        );
    }
}
