//! Running strategies × ratios over tasks: every strategy sees the same
//! token ids and the same document caches (computed once per task), and
//! their answers are decoded greedily as one batch.

use std::collections::HashSet;
use std::time::Instant;

use prophetkv_model::{Kv, Model, Rows, TextTokenizer};
use prophetkv_reuse::{
    run, CachedDocuments, Piece, ReuseConfig, ReuseOutput, ReuseRequest, ReuseStats, StrategyKind,
};
use serde::{Deserialize, Serialize};

use crate::score::{is_correct, recall};
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

/// `log softmax(logits)[id]`, in f64.
fn log_softmax_at(logits: &[f32], id: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::MIN, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    logits
        .get(id as usize)
        .map_or(f64::NEG_INFINITY, |&x| x as f64 - max - sum.ln())
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
    /// Share of the task's answers found ([`recall`]; absent in runs
    /// recorded before it was kept).
    #[serde(default)]
    pub recall: Option<f64>,
    /// Log-probability of the first answer (with a leading space) as the
    /// continuation under this arm's cache: a paired, continuous measure
    /// next to accuracy (absent in runs recorded before it was kept).
    #[serde(default)]
    pub gold_logprob: Option<f64>,
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

/// One configuration's answer to a task.
#[derive(Debug, Clone)]
pub struct Answered {
    /// Generated text, up to the first line break.
    pub prediction: String,
    /// Whether it answers the task.
    pub correct: bool,
    /// Time to the first token, documents' caches already computed, in ms.
    pub ttft_ms: f64,
    /// The reuse run's statistics.
    pub stats: ReuseStats,
    /// Log-probability of the reference answer's tokens, when asked for.
    pub gold_logprob: Option<f64>,
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
    /// Whether documents are cached after the task's prefix (the deployed
    /// layout) or after BOS alone, the prefix then computed fresh.
    pub prefix_in_anchor: bool,
    /// Token ids documents are cached behind (after the anchor), standing in
    /// for the documents before them in a request; empty: none, every
    /// document cached after the anchor alone.
    pub preamble: Vec<u32>,
    /// With a preamble, how many leading documents are cached without it
    /// (1: the first, exact where it sits).
    pub exact_documents: usize,
}

/// A task ready for reuse passes.
pub struct Prepared {
    /// The anchor's and the documents' caches.
    pub cached: CachedDocuments,
    /// The task's prefix when it is not part of the anchor (else empty).
    pub fresh_prefix: Vec<u32>,
    /// The question's ids.
    pub query: Vec<u32>,
}

impl Prepared {
    /// The request's pieces: the fresh prefix, if any, then the documents.
    pub fn pieces(&self) -> Vec<Piece<'_>> {
        let prefix = (!self.fresh_prefix.is_empty()).then_some(Piece::Fresh(&self.fresh_prefix));
        prefix.into_iter().chain(self.cached.pieces()).collect()
    }

    /// The request over `pieces` (from [`Prepared::pieces`]).
    pub fn request<'a>(&'a self, pieces: &'a [Piece<'a>]) -> ReuseRequest<'a> {
        ReuseRequest {
            anchor: &self.cached.anchor,
            pieces,
            query: &self.query,
        }
    }
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
            prefix_in_anchor: true,
            preamble: Vec::new(),
            exact_documents: 1,
        }
    }

    /// A task's documents' caches and the ids around them: computed once,
    /// shared by every configuration run on it.
    pub fn prepare(&self, task: &Task) -> Result<Prepared> {
        self.prepare_keeping(task, &self.base.hidden_layers())
    }

    /// [`Evaluator::prepare`], the documents keeping their hidden states
    /// entering each of `hidden_layers` (for recomputations that resume there).
    pub fn prepare_keeping(&self, task: &Task, hidden_layers: &[usize]) -> Result<Prepared> {
        let (anchor, fresh_prefix) = if self.prefix_in_anchor {
            (self.tokenizer.prompt_ids(&task.prefix)?, Vec::new())
        } else {
            (
                self.tokenizer.prompt_ids("")?,
                self.tokenizer.encode(&task.prefix)?,
            )
        };
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
        Ok(Prepared {
            cached: CachedDocuments::compute_behind(
                self.model,
                &anchor,
                &self.preamble,
                &ids,
                self.exact_documents,
                hidden_layers,
            )?,
            fresh_prefix,
            query: self.tokenizer.encode(&task.question)?,
        })
    }

    /// One reuse pass and its first token, timed: the output, the token and
    /// the TTFT in ms.
    pub fn timed_pass(
        &self,
        request: &ReuseRequest<'_>,
        config: &ReuseConfig,
    ) -> Result<(ReuseOutput, u32, f64)> {
        let config = config.validate(self.model.config().num_layers())?;
        let t = Instant::now();
        let out = run(self.model, request, &config, self.model.device())?;
        let first = out.logits.flatten_all()?.argmax(0)?.to_scalar::<u32>()?;
        Ok((out, first, t.elapsed().as_secs_f64() * 1e3))
    }

    /// Runs `arms` on `task`: the documents' caches once, each arm's reuse
    /// pass timed alone, then every answer decoded in one batch.
    pub fn evaluate_task(&self, task: &Task, arms: &[Arm]) -> Result<Vec<Outcome>> {
        let configs: Vec<ReuseConfig> = arms
            .iter()
            .map(|arm| ReuseConfig {
                strategy: arm.strategy,
                ratio: arm.ratio.unwrap_or(if arm.strategy == StrategyKind::Full {
                    1.0
                } else {
                    0.0
                }),
                ..self.base.clone()
            })
            .collect();
        let gold = self.gold_ids(task)?;
        let answered = self.answer_task(task, &configs, Some(&gold))?;
        Ok(arms
            .iter()
            .zip(answered)
            .map(|(arm, a)| Outcome {
                id: task.id.clone(),
                task: task.task.clone(),
                arm: *arm,
                recall: Some(recall(task, &a.prediction)),
                gold_logprob: a.gold_logprob,
                prediction: a.prediction,
                correct: a.correct,
                ttft_ms: a.ttft_ms,
                context_tokens: a.stats.context_tokens,
                eligible: a.stats.eligible,
                selected: a.stats.selected,
                layer_rows: a.stats.rows_per_layer.iter().sum(),
                probe_ms: a.stats.timings.probe_ms,
                recompute_ms: a.stats.timings.recompute_ms,
            })
            .collect())
    }

    /// The first answer as the model would continue the question (with a
    /// leading space); empty for a task without answers.
    pub fn gold_ids(&self, task: &Task) -> Result<Vec<u32>> {
        Ok(match task.answers.first() {
            Some(a) => self.tokenizer.encode(&format!(" {a}"))?,
            None => Vec::new(),
        })
    }

    /// Runs each configuration on `task` (the documents' caches computed
    /// once, each reuse pass timed alone), then decodes every answer in one
    /// batch. With `gold`, also scores those tokens as the answer under each
    /// configuration's cache (a paired, continuous measure next to accuracy).
    pub fn answer_task(
        &self,
        task: &Task,
        configs: &[ReuseConfig],
        gold: Option<&[u32]>,
    ) -> Result<Vec<Answered>> {
        let hidden_layers: Vec<usize> = configs.iter().flat_map(|c| c.hidden_layers()).collect();
        let prepared = self.prepare_keeping(task, &hidden_layers)?;
        let pieces = prepared.pieces();
        let request = prepared.request(&pieces);
        let mut kvs: Vec<Kv> = Vec::with_capacity(configs.len());
        let mut firsts = Vec::with_capacity(configs.len());
        let mut answered = Vec::with_capacity(configs.len());
        for config in configs {
            let (out, first, ttft_ms) = self.timed_pass(&request, config)?;
            let gold_logprob = match gold {
                Some(ids) if !ids.is_empty() => Some(self.logprob(&out, ids)?),
                _ => None,
            };
            answered.push(Answered {
                prediction: String::new(),
                correct: false,
                ttft_ms,
                stats: out.stats,
                gold_logprob,
            });
            kvs.push(out.kv);
            firsts.push(first);
        }
        let texts = self.decode_batch(&mut kvs, &firsts)?;
        for (a, ids) in answered.iter_mut().zip(texts) {
            a.prediction = self.tokenizer.decode(&ids)?;
            a.correct = is_correct(task, &a.prediction);
        }
        Ok(answered)
    }

    /// Log-probability of `ids` as the continuation of a reuse pass (its
    /// cache is copied, not extended).
    fn logprob(&self, out: &ReuseOutput, ids: &[u32]) -> Result<f64> {
        let first: Vec<f32> = out.logits.flatten_all()?.to_vec1()?;
        let mut total = log_softmax_at(&first, ids[0]);
        if ids.len() > 1 {
            let mut kv = out.kv.try_clone()?;
            let next = kv.next_position();
            let positions: Vec<u32> = (0..ids.len() as u32 - 1).map(|i| next + i).collect();
            let rows = Rows::append(&ids[..ids.len() - 1], &positions, kv.len());
            let hidden = self.model.forward_rows(&mut kv, &rows, None)?.hidden;
            let logits: Vec<Vec<f32>> = self.model.logits(&hidden)?.to_vec2()?;
            total += logits
                .iter()
                .zip(&ids[1..])
                .map(|(row, &id)| log_softmax_at(row, id))
                .sum::<f64>();
        }
        Ok(total)
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
