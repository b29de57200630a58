//! Tables of outcomes: accuracy, accuracy relative to `full`, agreement with
//! `full`'s answer, the share of eligible rows recomputed, Stage I time, and
//! TTFT with its speedup over `full`, per group of tasks (kind and context
//! length) and over all of them.

use std::collections::{BTreeMap, HashMap};

use prophetkv_reuse::StrategyKind;
use serde::Serialize;

use crate::run::{Arm, Outcome};
use crate::score::agrees_with_full;

/// One line of a table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// "all", or a task kind and context length such as "multi-key 2k".
    pub group: String,
    /// The strategy and ratio.
    pub arm: Arm,
    /// Tasks counted.
    pub tasks: usize,
    /// Share answered correctly.
    pub accuracy: f64,
    /// Accuracy over `full`'s on the same tasks (absent without `full`).
    pub relative_to_full: Option<f64>,
    /// Share of tasks whose generated text equals `full`'s (surrounding
    /// whitespace aside): a paired measure, less noisy than accuracy
    /// differences (absent without `full`).
    pub agrees_with_full: Option<f64>,
    /// Mean share of eligible rows recomputed.
    pub selected_ratio: f64,
    /// Mean selection time (ProphetKV's Stage I, CacheBlend's layer-0 pass), ms.
    pub probe_ms: f64,
    /// Mean time to first token, ms.
    pub ttft_ms: f64,
    /// Mean `full` TTFT over this arm's mean TTFT.
    pub speedup: Option<f64>,
}

/// The group a task belongs to: its kind and its context rounded to 1k tokens.
pub fn group_of(o: &Outcome) -> String {
    group_label(&o.task, o.context_tokens)
}

/// "multi-key 2k": a task kind and its context rounded to 1k tokens.
pub fn group_label(kind: &str, context_tokens: usize) -> String {
    let k = (context_tokens as f64 / 1000.0).round().max(1.0);
    format!("{kind} {k}k")
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

fn rows_of(group: &str, outcomes: &[&Outcome], arms: &[Arm]) -> Vec<Row> {
    let of = |arm: &Arm| -> Vec<&Outcome> {
        outcomes.iter().copied().filter(|o| o.arm == *arm).collect()
    };
    let full = of(&Arm {
        strategy: StrategyKind::Full,
        ratio: None,
    });
    let full_accuracy =
        (!full.is_empty()).then(|| mean(full.iter().map(|o| f64::from(u8::from(o.correct)))));
    let full_ttft = (!full.is_empty()).then(|| mean(full.iter().map(|o| o.ttft_ms)));
    let full_answer: HashMap<&str, &str> = full
        .iter()
        .map(|o| (o.id.as_str(), o.prediction.as_str()))
        .collect();
    arms.iter()
        .filter_map(|arm| {
            let mine = of(arm);
            if mine.is_empty() {
                return None;
            }
            let accuracy = mean(mine.iter().map(|o| f64::from(u8::from(o.correct))));
            let ttft_ms = mean(mine.iter().map(|o| o.ttft_ms));
            let paired: Vec<bool> = mine
                .iter()
                .filter_map(|o| {
                    let reference = full_answer.get(o.id.as_str())?;
                    Some(agrees_with_full(&o.prediction, reference))
                })
                .collect();
            Some(Row {
                group: group.to_string(),
                arm: *arm,
                tasks: mine.len(),
                accuracy,
                relative_to_full: full_accuracy.filter(|f| *f > 0.0).map(|f| accuracy / f),
                agrees_with_full: (!paired.is_empty())
                    .then(|| mean(paired.iter().map(|&a| f64::from(u8::from(a))))),
                selected_ratio: mean(
                    mine.iter()
                        .filter(|o| o.eligible > 0)
                        .map(|o| o.selected as f64 / o.eligible as f64),
                ),
                probe_ms: mean(mine.iter().map(|o| o.probe_ms)),
                ttft_ms,
                speedup: full_ttft.map(|f| f / ttft_ms),
            })
        })
        .collect()
}

/// Rows over all outcomes, then per group, each in `arms` order.
pub fn summarize(outcomes: &[Outcome], arms: &[Arm]) -> Vec<Row> {
    let all: Vec<&Outcome> = outcomes.iter().collect();
    let mut rows = rows_of("all", &all, arms);
    let mut groups: BTreeMap<String, Vec<&Outcome>> = BTreeMap::new();
    for o in outcomes {
        groups.entry(group_of(o)).or_default().push(o);
    }
    if groups.len() > 1 {
        for (g, members) in &groups {
            rows.extend(rows_of(g, members, arms));
        }
    }
    rows
}

/// A markdown table of `rows`.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| tasks | strategy | ratio | n | accuracy | vs full | agrees with full | selected | Stage I (ms) | TTFT (ms) | speedup |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let pct = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{:.1}%", 100.0 * x));
    for r in rows {
        let ratio = r.arm.ratio.map_or("–".to_string(), |x| format!("{x}"));
        let speedup = r.speedup.map_or("–".to_string(), |x| format!("{x:.2}×"));
        out.push_str(&format!(
            "| {} | {} | {ratio} | {} | {:.1}% | {} | {} | {:.3} | {:.0} | {:.0} | {speedup} |\n",
            r.group,
            r.arm.strategy.name(),
            r.tasks,
            100.0 * r.accuracy,
            pct(r.relative_to_full),
            pct(r.agrees_with_full),
            r.selected_ratio,
            r.probe_ms,
            r.ttft_ms,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: &str, arm: Arm, prediction: &str, correct: bool, ttft_ms: f64) -> Outcome {
        Outcome {
            id: id.into(),
            task: "multi-key".into(),
            arm,
            prediction: prediction.into(),
            correct,
            ttft_ms,
            context_tokens: 1990,
            eligible: 100,
            selected: if arm.ratio.is_some() { 20 } else { 0 },
            layer_rows: 0,
            probe_ms: if arm.ratio.is_some() { 10.0 } else { 0.0 },
            recompute_ms: 0.0,
        }
    }

    #[test]
    fn accuracy_agreement_and_speedup_are_computed_per_arm_on_paired_tasks() {
        let full = Arm {
            strategy: StrategyKind::Full,
            ratio: None,
        };
        let pkv = Arm {
            strategy: StrategyKind::ProphetKv,
            ratio: Some(0.2),
        };
        // Task c: both wrong with the same text, which agrees; task b:
        // prophetkv wrong where full was right, which does not.
        let outcomes = vec![
            outcome("a", full, " 12345.\n", true, 100.0),
            outcome("b", full, " 67890.", true, 300.0),
            outcome("c", full, " 11111.", false, 200.0),
            outcome("a", pkv, " 12345.", true, 50.0),
            outcome("b", pkv, " 67899.", false, 50.0),
            outcome("c", pkv, " 11111.", false, 50.0),
        ];
        let rows = summarize(&outcomes, &[full, pkv]);
        assert_eq!(rows.len(), 2, "one group: no per-group rows");
        let (f, p) = (&rows[0], &rows[1]);
        assert_eq!(f.agrees_with_full, Some(1.0));
        assert!((p.accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(p.relative_to_full, Some(0.5));
        assert!((p.agrees_with_full.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(p.speedup, Some(4.0));
        assert_eq!(p.probe_ms, 10.0);
        assert!((p.selected_ratio - 0.2).abs() < 1e-12);
        assert_eq!(group_of(&outcomes[0]), "multi-key 2k");
        let table = markdown(&rows);
        assert!(
            table.contains(
                "| all | prophetkv | 0.2 | 3 | 33.3% | 50.0% | 66.7% | 0.200 | 10 | 50 | 4.00× |"
            ),
            "{table}"
        );
    }

    #[test]
    fn without_full_there_is_no_relative_accuracy_agreement_or_speedup() {
        let pkv = Arm {
            strategy: StrategyKind::ProphetKv,
            ratio: Some(0.2),
        };
        let rows = summarize(&[outcome("a", pkv, " 1.", true, 50.0)], &[pkv]);
        assert_eq!(rows[0].relative_to_full, None);
        assert_eq!(rows[0].agrees_with_full, None);
        assert_eq!(rows[0].speedup, None);
        assert!(markdown(&rows).contains("| 100.0% | – | – |"));
    }
}
