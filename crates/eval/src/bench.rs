//! `prophetkv bench ttft`: time to first token of each strategy on the same
//! prompts, interleaved run by run so that machine noise hits all alike,
//! with the speedup over `full` and the ideal speedup from the rows each
//! strategy actually computed.

use std::path::Path;

use prophetkv_reuse::{ReuseConfig, StrategyKind};
use serde::Serialize;

use crate::generate::{generate, GenSpec, TaskKind};
use crate::plot::{draw, Chart, Series};
use crate::run::Evaluator;
use crate::{EvalError, Result};

/// What to time.
#[derive(Debug, Clone)]
pub struct TtftSpec {
    /// Target context lengths in tokens.
    pub contexts: Vec<usize>,
    /// Documents per prompt.
    pub docs: usize,
    /// Recompute ratio of the budgeted strategies.
    pub ratio: f64,
    /// Strategies, `full` among them for speedups.
    pub strategies: Vec<StrategyKind>,
    /// Timed runs per strategy and context.
    pub runs: usize,
    /// Seed of the generated prompts.
    pub seed: u64,
}

/// TTFT of one strategy at one context length.
#[derive(Debug, Clone, Serialize)]
pub struct TtftRow {
    /// Prompt tokens.
    pub context_tokens: usize,
    /// The strategy.
    pub strategy: StrategyKind,
    /// Median over runs, ms.
    pub median_ms: f64,
    /// Fastest run, ms.
    pub min_ms: f64,
    /// Slowest run, ms.
    pub max_ms: f64,
    /// `full`'s median over this median.
    pub speedup: Option<f64>,
    /// `full`'s rows processed (summed over layers) over this strategy's.
    pub ideal_speedup: Option<f64>,
    /// Medians of the stages within the TTFT, ms: assembly, Stage I,
    /// recompute, first token (each waits for the device).
    pub stages_ms: StageMedians,
}

/// Median time of each stage of a reuse pass, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageMedians {
    /// Laying out the request and re-rotating the cached keys.
    pub assembly: f64,
    /// Stage I (the probe; CacheBlend's layer-0 pass).
    pub probe: f64,
    /// Stage II: the recompute (all rows for full prefill).
    pub recompute: f64,
    /// The first token's logits.
    pub first_token: f64,
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Times every strategy at every context length; `progress` gets a line
/// per context.
pub fn bench_ttft(
    evaluator: &Evaluator<'_>,
    spec: &TtftSpec,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<TtftRow>> {
    if spec.runs == 0 || spec.strategies.is_empty() || spec.contexts.is_empty() {
        return Err(EvalError::Invalid(
            "need at least one run, strategy and context length".into(),
        ));
    }
    let tokenizer = evaluator.tokenizer;
    let count = |t: &str| tokenizer.encode(t).map(|ids| ids.len()).unwrap_or(0);
    let mut rows = Vec::new();
    for &context in &spec.contexts {
        let gen = GenSpec {
            kind: TaskKind::MultiKey,
            n: 1,
            context_tokens: context,
            docs: spec.docs,
            seed: spec.seed,
            distractors: None,
        };
        let task = generate(&gen, &count)?.remove(0);
        let prepared = evaluator.prepare(&task)?;
        let pieces = prepared.pieces();
        let request = prepared.request(&pieces);
        let n = spec.strategies.len();
        let mut times = vec![Vec::with_capacity(spec.runs); n];
        let mut stages = vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; n];
        let mut layer_rows = vec![0usize; n];
        let mut context_tokens = 0;
        // One untimed pass warms allocations, then interleaved timed runs.
        for round in 0..=spec.runs {
            for (i, &strategy) in spec.strategies.iter().enumerate() {
                let config = ReuseConfig {
                    strategy,
                    ratio: spec.ratio,
                    ..evaluator.base.clone()
                };
                let (out, _, ms) = evaluator.timed_pass(&request, &config)?;
                if round > 0 {
                    times[i].push(ms);
                    let t = &out.stats.timings;
                    let parts = [t.assembly_ms, t.probe_ms, t.recompute_ms, t.first_token_ms];
                    for (all, part) in stages[i].iter_mut().zip(parts) {
                        all.push(part);
                    }
                }
                layer_rows[i] = out.stats.rows_per_layer.iter().sum();
                context_tokens = out.stats.context_tokens;
            }
        }
        let full = spec
            .strategies
            .iter()
            .position(|s| *s == StrategyKind::Full);
        let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
        for (i, &strategy) in spec.strategies.iter().enumerate() {
            let t = &times[i];
            rows.push(TtftRow {
                context_tokens,
                strategy,
                median_ms: medians[i],
                min_ms: t.iter().copied().fold(f64::INFINITY, f64::min),
                max_ms: t.iter().copied().fold(0.0, f64::max),
                speedup: full.map(|f| medians[f] / medians[i]),
                ideal_speedup: full.map(|f| layer_rows[f] as f64 / layer_rows[i].max(1) as f64),
                stages_ms: {
                    let [a, p, r, f] = &mut stages[i];
                    StageMedians {
                        assembly: median(a),
                        probe: median(p),
                        recompute: median(r),
                        first_token: median(f),
                    }
                },
            });
        }
        progress(&format!(
            "{context_tokens} tokens: {}",
            spec.strategies
                .iter()
                .zip(&medians)
                .map(|(s, m)| format!("{} {m:.0} ms", s.name()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(rows)
}

/// A markdown table of `rows`.
pub fn ttft_markdown(rows: &[TtftRow], ratio: f64) -> String {
    let mut out = String::from(
        "| context tokens | strategy | TTFT median (ms) | min | max | speedup vs full | ideal speedup (rows) | of ideal | assembly / Stage I / recompute / first token (ms) |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let name = if r.strategy == StrategyKind::Full || r.strategy == StrategyKind::Naive {
            r.strategy.name().to_string()
        } else {
            format!("{}@{ratio}", r.strategy.name())
        };
        let f = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.2}×"));
        let of_ideal = match (r.speedup, r.ideal_speedup) {
            (Some(s), Some(i)) if i > 0.0 => format!("{:.0}%", 100.0 * s / i),
            _ => "–".into(),
        };
        let st = &r.stages_ms;
        out.push_str(&format!(
            "| {} | {name} | {:.0} | {:.0} | {:.0} | {} | {} | {of_ideal} | {:.1} / {:.1} / {:.1} / {:.1} |\n",
            r.context_tokens,
            r.median_ms,
            r.min_ms,
            r.max_ms,
            f(r.speedup),
            f(r.ideal_speedup),
            st.assembly,
            st.probe,
            st.recompute,
            st.first_token,
        ));
    }
    out
}

/// `ttft_vs_context.png`: median TTFT against context length, per strategy.
pub fn ttft_chart(rows: &[TtftRow], ratio: f64, path: &Path) -> Result<()> {
    let mut strategies: Vec<StrategyKind> = Vec::new();
    for r in rows {
        if !strategies.contains(&r.strategy) {
            strategies.push(r.strategy);
        }
    }
    let series = strategies
        .into_iter()
        .map(|s| Series {
            label: if s == StrategyKind::Full || s == StrategyKind::Naive {
                s.name().to_string()
            } else {
                format!("{}@{ratio}", s.name())
            },
            points: rows
                .iter()
                .filter(|r| r.strategy == s)
                .map(|r| (r.context_tokens as f64, r.median_ms))
                .collect(),
            horizontal: false,
        })
        .collect();
    draw(
        &Chart {
            title: "Time to first token vs context length".into(),
            x_label: "context tokens".into(),
            y_label: "TTFT, median (ms)".into(),
            series,
            y_range: None,
            legend_upper_left: true,
        },
        path,
    )
}
