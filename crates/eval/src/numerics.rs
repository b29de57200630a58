//! `prophetkv bench numerics`: the runtime on another device (a GPU) checked
//! against the CPU's f32 on the same weights and prompts.
//!
//! Four properties, each with its bound: the device's f32 gives the CPU's
//! first-token logits and greedy tokens; its low precision (bf16) the same
//! top-1 on nearly every prompt; ProphetKV at ratio 1 is full prefill there;
//! and at a partial ratio the device selects the rows the CPU selects.

use std::collections::HashSet;

use prophetkv_model::{continue_greedy, Model};
use prophetkv_reuse::{ReuseConfig, ReuseOutput, StrategyKind};
use serde::Serialize;

use crate::generate::{generate, GenSpec, TaskKind};
use crate::run::Evaluator;
use crate::{EvalError, Result};

/// The prompts and bounds.
#[derive(Debug, Clone)]
pub struct NumericsSpec {
    /// Generated prompts (multi-key tasks).
    pub prompts: usize,
    /// Their length in tokens.
    pub context_tokens: usize,
    /// Documents per prompt.
    pub docs: usize,
    /// Greedy tokens compared after the first.
    pub greedy_tokens: usize,
    /// ProphetKV's ratio for the selection check.
    pub ratio: f64,
    /// Seed of the prompts.
    pub seed: u64,
}

/// One prompt's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct PromptNumerics {
    /// Prompt tokens.
    pub tokens: usize,
    /// Largest |logit difference| of the first token, device f32 vs CPU f32.
    pub f32_max_logit_diff: f32,
    /// Whether the greedy tokens agree, device f32 vs CPU f32.
    pub f32_same_greedy: bool,
    /// Whether the low-precision top-1 is the CPU f32's.
    pub low_same_top1: bool,
    /// The CPU f32's first logit minus its second: how clear its top-1 is.
    pub f32_top2_gap: f32,
    /// Where the CPU f32's top-1 ranks among the low precision's logits (0: first).
    pub low_rank_of_top1: usize,
    /// Largest |logit difference|, ProphetKV at ratio 1 vs full, on the device.
    pub ratio1_max_logit_diff: f32,
    /// Rows the device and the CPU both selected, over the CPU's selection.
    pub selection_overlap: f64,
}

/// A property, its measured value and its bound.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Measured.
    pub value: f64,
    /// The bound it must hold.
    pub bound: String,
    /// Whether it holds.
    pub pass: bool,
}

/// Every prompt's numbers and the checks over them.
#[derive(Debug, Clone, Serialize)]
pub struct NumericsReport {
    /// Per prompt.
    pub prompts: Vec<PromptNumerics>,
    /// The four properties.
    pub checks: Vec<Check>,
}

/// The three runtimes compared: the CPU's f32 (the reference), the device's
/// f32, and the device's low precision.
pub struct Runtimes<'a> {
    /// CPU, f32.
    pub cpu: &'a Evaluator<'a>,
    /// The device, f32.
    pub device: &'a Evaluator<'a>,
    /// The device, bf16 or f16.
    pub low: &'a Evaluator<'a>,
}

fn pass(
    ev: &Evaluator<'_>,
    request: &prophetkv_reuse::ReuseRequest<'_>,
    strategy: StrategyKind,
    ratio: f64,
) -> Result<ReuseOutput> {
    let config = ReuseConfig {
        strategy,
        ratio,
        ..ev.base.clone()
    };
    Ok(ev.timed_pass(request, &config)?.0)
}

fn logits(out: &ReuseOutput) -> Result<Vec<f32>> {
    Ok(out.logits.flatten_all()?.to_vec1()?)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn top1(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

fn top2_gap(v: &[f32]) -> f32 {
    let first = top1(v);
    let second = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, x)| *x)
        .fold(f32::NEG_INFINITY, f32::max);
    v[first] - second
}

fn greedy(model: &Model, out: &mut ReuseOutput, n: usize) -> Result<Vec<u32>> {
    Ok(continue_greedy(model, &mut out.kv, &out.logits, n, &[], 0)?.output_ids)
}

fn selected(out: &ReuseOutput) -> HashSet<u32> {
    out.stats
        .selected_positions
        .iter()
        .flatten()
        .copied()
        .collect()
}

/// Measures every prompt and checks the bounds; `progress` gets a line per prompt.
pub fn compare(
    rt: &Runtimes<'_>,
    spec: &NumericsSpec,
    progress: &mut dyn FnMut(&str),
) -> Result<NumericsReport> {
    if spec.prompts == 0 {
        return Err(EvalError::Invalid("need at least one prompt".into()));
    }
    let tokenizer = rt.cpu.tokenizer;
    let count = |t: &str| tokenizer.encode(t).map(|ids| ids.len()).unwrap_or(0);
    let gen = GenSpec {
        kind: TaskKind::MultiKey,
        n: spec.prompts,
        context_tokens: spec.context_tokens,
        docs: spec.docs,
        seed: spec.seed,
        distractors: None,
    };
    let mut prompts = Vec::new();
    for task in generate(&gen, &count)? {
        let on = |ev: &Evaluator<'_>| ev.prepare(&task);
        let (cpu_p, dev_p, low_p) = (on(rt.cpu)?, on(rt.device)?, on(rt.low)?);
        let (cpu_pieces, dev_pieces, low_pieces) = (cpu_p.pieces(), dev_p.pieces(), low_p.pieces());
        let cpu_req = cpu_p.request(&cpu_pieces);
        let dev_req = dev_p.request(&dev_pieces);
        let low_req = low_p.request(&low_pieces);

        let mut cpu_full = pass(rt.cpu, &cpu_req, StrategyKind::Full, 1.0)?;
        let mut dev_full = pass(rt.device, &dev_req, StrategyKind::Full, 1.0)?;
        let low_full = pass(rt.low, &low_req, StrategyKind::Full, 1.0)?;
        let (cpu_l, dev_l, low_l) = (logits(&cpu_full)?, logits(&dev_full)?, logits(&low_full)?);
        let cpu_greedy = greedy(rt.cpu.model, &mut cpu_full, spec.greedy_tokens)?;
        let dev_greedy = greedy(rt.device.model, &mut dev_full, spec.greedy_tokens)?;

        let ratio1 = pass(rt.device, &dev_req, StrategyKind::ProphetKv, 1.0)?;
        let cpu_sel = selected(&pass(
            rt.cpu,
            &cpu_req,
            StrategyKind::ProphetKv,
            spec.ratio,
        )?);
        let dev_sel = selected(&pass(
            rt.device,
            &dev_req,
            StrategyKind::ProphetKv,
            spec.ratio,
        )?);
        let overlap = if cpu_sel.is_empty() {
            1.0
        } else {
            cpu_sel.intersection(&dev_sel).count() as f64 / cpu_sel.len() as f64
        };
        let measured = PromptNumerics {
            tokens: cpu_full.stats.context_tokens,
            f32_max_logit_diff: max_diff(&cpu_l, &dev_l),
            f32_same_greedy: cpu_greedy == dev_greedy,
            low_same_top1: top1(&cpu_l) == top1(&low_l),
            f32_top2_gap: top2_gap(&cpu_l),
            low_rank_of_top1: low_l.iter().filter(|&&v| v > low_l[top1(&cpu_l)]).count(),
            ratio1_max_logit_diff: max_diff(&logits(&ratio1)?, &dev_l),
            selection_overlap: overlap,
        };
        progress(&format!(
            "prompt {} ({} tokens): f32 diff {:.2e}, same greedy {}, low top-1 {} (f32 gap {:.3}, rank {}), ratio-1 diff {:.2e}, overlap {:.3}",
            prompts.len() + 1,
            measured.tokens,
            measured.f32_max_logit_diff,
            measured.f32_same_greedy,
            measured.low_same_top1,
            measured.f32_top2_gap,
            measured.low_rank_of_top1,
            measured.ratio1_max_logit_diff,
            measured.selection_overlap
        ));
        prompts.push(measured);
    }
    let n = prompts.len() as f64;
    let worst = |f: fn(&PromptNumerics) -> f32| prompts.iter().map(f).fold(0.0f32, f32::max) as f64;
    let share = |f: fn(&PromptNumerics) -> bool| prompts.iter().filter(|p| f(p)).count() as f64 / n;
    let f32_diff = worst(|p| p.f32_max_logit_diff);
    let same_greedy = share(|p| p.f32_same_greedy);
    let low_top1 = share(|p| p.low_same_top1);
    let ratio1 = worst(|p| p.ratio1_max_logit_diff);
    let overlap = prompts.iter().map(|p| p.selection_overlap).sum::<f64>() / n;
    let check = |name: &str, value: f64, bound: &str, pass: bool| Check {
        name: name.into(),
        value,
        bound: bound.into(),
        pass,
    };
    let checks = vec![
        check(
            "device f32 vs CPU f32: largest first-token logit difference",
            f32_diff,
            "<= 1e-3",
            f32_diff <= 1e-3,
        ),
        check(
            "device f32 vs CPU f32: share of prompts with the same greedy tokens",
            same_greedy,
            "= 1",
            same_greedy >= 1.0,
        ),
        check(
            "device low precision vs CPU f32: share of prompts with the same top-1",
            low_top1,
            ">= 0.95",
            low_top1 >= 0.95,
        ),
        check(
            "device f32: ProphetKV at ratio 1 vs full, largest logit difference",
            ratio1,
            "<= 1e-3",
            ratio1 <= 1e-3,
        ),
        check(
            "ProphetKV's selection, device f32 vs CPU f32: mean overlap",
            overlap,
            ">= 0.98",
            overlap >= 0.98,
        ),
    ];
    Ok(NumericsReport { prompts, checks })
}
