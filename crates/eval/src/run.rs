//! Running strategies × ratios over tasks: every strategy sees the same
//! token ids and the same document caches (computed once per task), and
//! their answers are decoded greedily as one batch.

use std::collections::HashSet;
use std::time::Instant;

use prophetkv_model::{Kv, Model, TextTokenizer};
use prophetkv_reuse::{run, CachedDocuments, ReuseConfig, ReuseOutput, ReuseRequest, StrategyKind};
use serde::{Deserialize, Serialize};

use crate::score::is_correct;
use crate::task::Task;
use crate::{EvalError, Result};

/// One strategy at one ratio (`None` for the strategies without a budget).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// The strategy.
    pub strategy: StrategyKind,
    /// Its recompute ratio; `None` for `full` and `naive`.
    pub ratio: Option<f64>,
}

impl Arm {
    /// Every arm of `strategies` × `ratios` (`full` and `naive` once each),
    /// without repeats, ratios ascending.
    pub fn grid(strategies: &[StrategyKind], ratios: &[f64]) -> Vec<Arm> {
        let mut ratios = ratios.to_vec();
        ratios.sort_by(f64::total_cmp);
        ratios.dedup();
        let mut unique: Vec<StrategyKind> = Vec::new();
        for s in strategies {
            if !unique.contains(s) {
                unique.push(*s);
            }
        }
        let mut arms = Vec::new();
        for strategy in unique {
            if has_budget(strategy) {
                arms.extend(ratios.iter().map(|&r| Arm {
                    strategy,
                    ratio: Some(r),
                }));
            } else {
                arms.push(Arm {
                    strategy,
                    ratio: None,
                });
            }
        }
        arms
    }

    /// "prophetkv@0.2", or "full".
    pub fn label(&self) -> String {
        match self.ratio {
            Some(r) => format!("{}@{r}", self.strategy.name()),
            None => self.strategy.name().to_string(),
        }
    }
}

/// Whether a strategy's work depends on the recompute ratio.
pub fn has_budget(strategy: StrategyKind) -> bool {
    !matches!(strategy, StrategyKind::Full | StrategyKind::Naive)
}

/// The result of one arm on one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Task id.
    pub id: String,
    /// Task kind.
    pub task: String,
    /// Strategy and ratio.
    pub arm: Arm,
    /// Generated text, up to the first line break.
    pub prediction: String,
    /// Whether it answers the task.
    pub correct: bool,
    /// Time to the first token (reuse pass + first token), documents' caches
    /// already computed, in ms.
    pub ttft_ms: f64,
    /// Prompt tokens.
    pub context_tokens: usize,
    /// Document rows the strategy could recompute.
    pub eligible: usize,
    /// Rows it recomputed.
    pub selected: usize,
    /// Rows processed, summed over layers (the work done, for ideal speedups).
    pub layer_rows: usize,
    /// Stage timings, in ms.
    pub probe_ms: f64,
    /// Stage II time, in ms.
    pub recompute_ms: f64,
}

/// What `evaluate_task` needs besides the task.
pub struct Evaluator<'a> {
    /// The model.
    pub model: &'a Model,
    /// Its tokenizer.
    pub tokenizer: &'a TextTokenizer,
    /// Options shared by every arm (ProphetKV's probe, fusion, ...).
    pub base: ReuseConfig,
    /// Most tokens to generate per answer.
    pub max_new_tokens: usize,
    /// Ids that end an answer: EOS and every token whose text contains a
    /// line break.
    pub stop_ids: HashSet<u32>,
}

impl<'a> Evaluator<'a> {
    /// An evaluator whose answers end at EOS or a line break.
    pub fn new(
        model: &'a Model,
        tokenizer: &'a TextTokenizer,
        base: ReuseConfig,
        max_new_tokens: usize,
    ) -> Self {
        let mut stop_ids: HashSet<u32> = tokenizer.eos().iter().copied().collect();
        // Decoded, not the raw vocabulary string: byte-level vocabularies
        // spell a line break "Ċ", byte-fallback ones "<0x0A>".
        for id in 0..model.config().vocab_size as u32 {
            if tokenizer.decode(&[id]).is_ok_and(|t| t.contains('\n')) {
                stop_ids.insert(id);
            }
        }
        Self {
            model,
            tokenizer,
            base,
            max_new_tokens,
            stop_ids,
        }
    }

    /// A task's documents' caches (after its prefix) and its question's
    /// ids: computed once, shared by every strategy run on it.
    pub fn prepare(&self, task: &Task) -> Result<(CachedDocuments, Vec<u32>)> {
        let anchor = self.tokenizer.prompt_ids(&task.prefix)?;
        let ids: Vec<Vec<u32>> = task
            .documents
            .iter()
            .map(|d| self.tokenizer.encode(d))
            .collect::<std::result::Result<_, _>>()?;
        if let Some(i) = ids.iter().position(Vec::is_empty) {
            return Err(EvalError::Invalid(format!(
                "task {}: document {i} has no tokens",
                task.id
            )));
        }
        let query = self.tokenizer.encode(&task.question)?;
        Ok((CachedDocuments::compute(self.model, &anchor, &ids)?, query))
    }

    /// One reuse pass with `strategy` at `ratio` (over the shared options)
    /// and its first token, timed: the output, the token and the TTFT in ms.
    pub fn timed_pass(
        &self,
        request: &ReuseRequest<'_>,
        strategy: StrategyKind,
        ratio: f64,
    ) -> Result<(ReuseOutput, u32, f64)> {
        let config = ReuseConfig {
            strategy,
            ratio,
            ..self.base.clone()
        };
        let t = Instant::now();
        let out = run(self.model, request, &config, self.model.device())?;
        let first = out.logits.flatten_all()?.argmax(0)?.to_scalar::<u32>()?;
        Ok((out, first, t.elapsed().as_secs_f64() * 1e3))
    }

    /// Runs `arms` on `task`: the documents' caches once, each arm's reuse
    /// pass timed alone, then every answer decoded in one batch.
    pub fn evaluate_task(&self, task: &Task, arms: &[Arm]) -> Result<Vec<Outcome>> {
        let (cached, query) = self.prepare(task)?;
        let pieces = cached.pieces();
        let request = ReuseRequest {
            anchor: &cached.anchor,
            pieces: &pieces,
            query: &query,
        };
        let mut kvs: Vec<Kv> = Vec::with_capacity(arms.len());
        let mut firsts = Vec::with_capacity(arms.len());
        let mut outcomes = Vec::with_capacity(arms.len());
        for arm in arms {
            let ratio = arm.ratio.unwrap_or(if arm.strategy == StrategyKind::Full {
                1.0
            } else {
                0.0
            });
            let (out, first, ttft_ms) = self.timed_pass(&request, arm.strategy, ratio)?;
            let s = &out.stats;
            outcomes.push(Outcome {
                id: task.id.clone(),
                task: task.task.clone(),
                arm: *arm,
                prediction: String::new(),
                correct: false,
                ttft_ms,
                context_tokens: s.context_tokens,
                eligible: s.eligible,
                selected: s.selected,
                layer_rows: s.rows_per_layer.iter().sum(),
                probe_ms: s.timings.probe_ms,
                recompute_ms: s.timings.recompute_ms,
            });
            kvs.push(out.kv);
            firsts.push(first);
        }
        let answers = self.decode_batch(&mut kvs, &firsts)?;
        for (o, ids) in outcomes.iter_mut().zip(answers) {
            o.prediction = self.tokenizer.decode(&ids)?;
            o.correct = is_correct(task, &o.prediction);
        }
        Ok(outcomes)
    }

    /// Greedy continuation of every sequence from its first token, as one
    /// decode batch per step; each ends at a stop id or the token limit.
    fn decode_batch(&self, kvs: &mut [Kv], firsts: &[u32]) -> Result<Vec<Vec<u32>>> {
        let max_position = self.model.config().max_position;
        let mut outputs: Vec<Vec<u32>> = firsts.iter().map(|&t| vec![t]).collect();
        let mut active: Vec<usize> = (0..kvs.len())
            .filter(|&i| !self.stop_ids.contains(&firsts[i]))
            .collect();
        while !active.is_empty() {
            active.retain(|&i| {
                outputs[i].len() < self.max_new_tokens && kvs[i].len() + 1 < max_position
            });
            if active.is_empty() {
                break;
            }
            let tokens: Vec<u32> = active
                .iter()
                .map(|&i| *outputs[i].last().unwrap_or(&0))
                .collect();
            let mut batch: Vec<&mut Kv> = kvs
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| active.contains(i))
                .map(|(_, kv)| kv)
                .collect();
            let logits = self.model.decode(&mut batch, &tokens)?;
            let next: Vec<u32> = logits.argmax(1)?.to_vec1()?;
            for (&i, &t) in active.iter().zip(&next) {
                outputs[i].push(t);
            }
            active.retain(|&i| !outputs[i].last().is_some_and(|t| self.stop_ids.contains(t)));
        }
        Ok(outputs)
    }
}
