//! `prophetkv bench decode`: batched decode throughput after a prompt, as
//! the engine's worker steps it (one batched step per token for every
//! running sequence), greedy on the device.

use std::time::Instant;

use prophetkv_model::{Kv, Model};
use serde::Serialize;

use crate::{EvalError, Result};

/// What to time.
#[derive(Debug, Clone)]
pub struct DecodeSpec {
    /// Prompt tokens before decoding starts.
    pub context_tokens: usize,
    /// Batch sizes (sequences stepped together).
    pub batches: Vec<usize>,
    /// Timed steps per batch size (after one untimed warm-up step).
    pub steps: usize,
}

/// Decode speed at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeRow {
    /// Sequences stepped together.
    pub batch: usize,
    /// Prompt tokens of each sequence.
    pub context_tokens: usize,
    /// Mean time of one batched step, ms.
    pub step_ms: f64,
    /// Tokens per second over the batch.
    pub tokens_per_s: f64,
}

/// Times `spec.steps` batched decode steps at every batch size.
pub fn bench_decode(model: &Model, spec: &DecodeSpec) -> Result<Vec<DecodeRow>> {
    if spec.steps == 0 || spec.context_tokens == 0 || spec.batches.contains(&0) {
        return Err(EvalError::Invalid(
            "need a prompt, at least one step and batch sizes of at least 1".into(),
        ));
    }
    // Ids below 256 exist in every vocabulary (and are bytes for random weights).
    let vocab = model.config().vocab_size.min(256) as u32;
    let prompt: Vec<u32> = (0..spec.context_tokens as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let positions: Vec<u32> = (0..spec.context_tokens as u32).collect();
    let (first, _) = model.prefill(&prompt, &positions)?;
    let mut rows = Vec::new();
    for &batch in &spec.batches {
        let mut seqs: Vec<Kv> = (0..batch)
            .map(|_| first.try_clone())
            .collect::<prophetkv_model::Result<_>>()?;
        let mut tokens: Vec<u32> = (0..batch as u32).map(|b| b % vocab).collect();
        let mut step = |tokens: &mut Vec<u32>| -> Result<()> {
            let mut refs: Vec<&mut Kv> = seqs.iter_mut().collect();
            let logits = model.decode(&mut refs, tokens)?;
            *tokens = logits.argmax(1)?.to_vec1::<u32>()?;
            Ok(())
        };
        step(&mut tokens)?;
        let t = Instant::now();
        for _ in 0..spec.steps {
            step(&mut tokens)?;
        }
        let secs = t.elapsed().as_secs_f64();
        rows.push(DecodeRow {
            batch,
            context_tokens: spec.context_tokens,
            step_ms: secs * 1e3 / spec.steps as f64,
            tokens_per_s: (batch * spec.steps) as f64 / secs,
        });
    }
    Ok(rows)
}

/// A markdown table of `rows`.
pub fn decode_markdown(rows: &[DecodeRow]) -> String {
    let mut out =
        String::from("| batch | context tokens | step (ms) | tokens/s |\n|---:|---:|---:|---:|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.1} |\n",
            r.batch, r.context_tokens, r.step_ms, r.tokens_per_s
        ));
    }
    out
}
