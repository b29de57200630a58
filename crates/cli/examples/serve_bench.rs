//! Load benchmark of a running `prophetkv serve`: concurrent clients stream
//! RAG completions over a shared pool of documents, one strategy after the
//! other on the same requests; prints requests/s and client-side TTFT
//! percentiles per strategy as a markdown table.
//!
//! ```text
//! cargo run --release -p prophetkv --example serve_bench -- --url http://127.0.0.1:8080 \
//!     [--tasks tasks/dev-niah.jsonl] [--task-prefix code-s102-n8-t2000] [--pool 6] \
//!     [--clients 8] [--requests 32] [--strategies prophetkv:0.2,full] [--max-tokens 8]
//! ```
//!
//! The pool is the documents of the first `--pool` matching tasks; request
//! `i` asks task `i mod pool`'s question over its documents. The pool is
//! registered and its KV computed (one untimed request per task) before any
//! timing, as in a deployment whose documents were ingested ahead of time.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Task file (DESIGN.md §7 format).
    #[arg(long, default_value = "tasks/dev-niah.jsonl")]
    tasks: PathBuf,
    /// Use tasks whose id starts with this.
    #[arg(long, default_value = "code-s102-n8-t2000")]
    task_prefix: String,
    /// Tasks whose documents form the pool.
    #[arg(long, default_value_t = 6)]
    pool: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Requests per strategy.
    #[arg(long, default_value_t = 32)]
    requests: usize,
    /// strategy:ratio pairs, run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "prophetkv:0.2,full")]
    strategies: Vec<String>,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 8)]
    max_tokens: usize,
}

#[derive(Deserialize)]
struct Task {
    id: String,
    documents: Vec<String>,
    question: String,
    answers: Vec<String>,
}

/// One finished request, seen from the client.
struct Sample {
    ttft: Duration,
    correct: bool,
    prompt_tokens: u64,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(3600)))
        .build()
        .into()
}

fn doc_id(task: &Task, i: usize) -> String {
    format!("{}-{i}", task.id)
}

fn request_body(task: &Task, strategy: &str, ratio: f64, max_tokens: usize) -> Value {
    let docs: Vec<Value> = (0..task.documents.len())
        .map(|i| json!({"id": doc_id(task, i)}))
        .collect();
    json!({
        "prompt": task.question, "max_tokens": max_tokens, "temperature": 0, "stream": true,
        "stream_options": {"include_usage": true}, "documents": docs,
        "kv_reuse": {"strategy": strategy, "recompute_ratio": ratio},
    })
}

/// Streams one completion; TTFT is the time to the first chunk with text.
fn stream_one(url: &str, task: &Task, body: &Value) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let r = agent()
        .post(format!("{url}/v1/completions"))
        .send_json(body)?;
    if r.status() != 200 {
        let status = r.status();
        let body = r.into_body().read_to_string().unwrap_or_default();
        bail!("status {status}: {body}");
    }
    let mut ttft = None;
    let mut text = String::new();
    let mut prompt_tokens = 0;
    for line in BufReader::new(r.into_body().into_reader()).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data)?;
        if let Some(t) = chunk["choices"][0]["text"].as_str() {
            if !t.is_empty() && ttft.is_none() {
                ttft = Some(start.elapsed());
            }
            text.push_str(t);
        }
        if let Some(n) = chunk["usage"]["prompt_tokens"].as_u64() {
            prompt_tokens = n;
        }
    }
    Ok(Sample {
        ttft: ttft.unwrap_or_else(|| start.elapsed()),
        correct: task.answers.iter().any(|a| text.contains(a.as_str())),
        prompt_tokens,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.tasks)
        .with_context(|| format!("reading {}", args.tasks.display()))?;
    let tasks: Vec<Task> = text
        .lines()
        .map(serde_json::from_str::<Task>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|t| t.id.starts_with(&args.task_prefix))
        .take(args.pool)
        .collect();
    if tasks.is_empty() {
        bail!("no task id starts with {:?}", args.task_prefix);
    }

    // Register the pool and compute its KV before timing anything.
    for task in &tasks {
        let docs: Vec<Value> = task
            .documents
            .iter()
            .enumerate()
            .map(|(i, d)| json!({"id": doc_id(task, i), "text": d}))
            .collect();
        let r = agent()
            .post(format!("{}/v1/documents", args.url))
            .send_json(json!({ "documents": docs }))?;
        if r.status() != 201 && r.status() != 409 {
            let status = r.status();
            let body = r.into_body().read_to_string().unwrap_or_default();
            bail!("registering {}: status {status}: {body}", task.id);
        }
        stream_one(&args.url, task, &request_body(task, "naive", 0.0, 1))?;
    }
    eprintln!(
        "pool: {} documents of {} tasks registered and cached",
        tasks.iter().map(|t| t.documents.len()).sum::<usize>(),
        tasks.len()
    );

    println!(
        "| strategy | clients | requests | requests/s | TTFT p50 (s) | TTFT p99 (s) | mean prompt tokens | correct |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for spec in &args.strategies {
        let (strategy, ratio) = match spec.split_once(':') {
            Some((s, r)) => (s, r.parse::<f64>().context("ratio")?),
            None => (spec.as_str(), 1.0),
        };
        let next = AtomicUsize::new(0);
        let samples = Mutex::new(Vec::new());
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..args.clients {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.requests {
                        break;
                    }
                    let task = &tasks[i % tasks.len()];
                    let body = request_body(task, strategy, ratio, args.max_tokens);
                    let sample = stream_one(&args.url, task, &body);
                    samples
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(sample);
                });
            }
        });
        let wall = start.elapsed().as_secs_f64();
        let samples = samples
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut ttft: Vec<f64> = samples.iter().map(|s| s.ttft.as_secs_f64()).collect();
        ttft.sort_by(f64::total_cmp);
        let label = if strategy == "full" {
            "full".to_string()
        } else {
            format!("{strategy}@{ratio}")
        };
        println!(
            "| {label} | {} | {} | {:.3} | {:.2} | {:.2} | {:.0} | {}/{} |",
            args.clients,
            samples.len(),
            samples.len() as f64 / wall,
            percentile(&ttft, 50.0),
            percentile(&ttft, 99.0),
            samples.iter().map(|s| s.prompt_tokens as f64).sum::<f64>() / samples.len() as f64,
            samples.iter().filter(|s| s.correct).count(),
            samples.len(),
        );
    }
    Ok(())
}
