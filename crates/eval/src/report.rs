//! Tables of outcomes: accuracy, accuracy relative to `full`, the share of
//! eligible rows recomputed, and TTFT with its speedup over `full`, per
//! group of tasks (kind and context length) and over all of them.

use std::collections::BTreeMap;

use prophetkv_reuse::StrategyKind;
use serde::Serialize;

use crate::run::{Arm, Outcome};

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
    /// Mean share of eligible rows recomputed.
    pub selected_ratio: f64,
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
    arms.iter()
        .filter_map(|arm| {
            let mine = of(arm);
            if mine.is_empty() {
                return None;
            }
            let accuracy = mean(mine.iter().map(|o| f64::from(u8::from(o.correct))));
            let ttft_ms = mean(mine.iter().map(|o| o.ttft_ms));
            Some(Row {
                group: group.to_string(),
                arm: *arm,
                tasks: mine.len(),
                accuracy,
                relative_to_full: full_accuracy.filter(|f| *f > 0.0).map(|f| accuracy / f),
                selected_ratio: mean(
                    mine.iter()
                        .filter(|o| o.eligible > 0)
                        .map(|o| o.selected as f64 / o.eligible as f64),
                ),
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
        "| tasks | strategy | ratio | n | accuracy | vs full | selected | TTFT (ms) | speedup |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let ratio = r.arm.ratio.map_or("–".to_string(), |x| format!("{x}"));
        let relative = r
            .relative_to_full
            .map_or("–".to_string(), |x| format!("{:.1}%", 100.0 * x));
        let speedup = r.speedup.map_or("–".to_string(), |x| format!("{x:.2}×"));
        out.push_str(&format!(
            "| {} | {} | {ratio} | {} | {:.1}% | {relative} | {:.3} | {:.0} | {speedup} |\n",
            r.group,
            r.arm.strategy.name(),
            r.tasks,
            100.0 * r.accuracy,
            r.selected_ratio,
            r.ttft_ms,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: &str, arm: Arm, correct: bool, ttft_ms: f64) -> Outcome {
        Outcome {
            id: id.into(),
            task: "multi-key".into(),
            arm,
            prediction: String::new(),
            correct,
            ttft_ms,
            context_tokens: 1990,
            eligible: 100,
            selected: if arm.ratio.is_some() { 20 } else { 0 },
            layer_rows: 0,
            probe_ms: 0.0,
            recompute_ms: 0.0,
        }
    }

    #[test]
    fn accuracy_relative_accuracy_and_speedup_are_computed_per_arm() {
        let full = Arm {
            strategy: StrategyKind::Full,
            ratio: None,
        };
        let pkv = Arm {
            strategy: StrategyKind::ProphetKv,
            ratio: Some(0.2),
        };
        let outcomes = vec![
            outcome("a", full, true, 100.0),
            outcome("b", full, true, 300.0),
            outcome("a", pkv, true, 50.0),
            outcome("b", pkv, false, 50.0),
        ];
        let rows = summarize(&outcomes, &[full, pkv]);
        assert_eq!(rows.len(), 2, "one group: no per-group rows");
        let p = &rows[1];
        assert_eq!(p.accuracy, 0.5);
        assert_eq!(p.relative_to_full, Some(0.5));
        assert_eq!(p.speedup, Some(4.0));
        assert!((p.selected_ratio - 0.2).abs() < 1e-12);
        assert_eq!(group_of(&outcomes[0]), "multi-key 2k");
        let table = markdown(&rows);
        assert!(
            table.contains("| all | prophetkv | 0.2 | 2 | 50.0% | 50.0% | 0.200 | 50 | 4.00× |"),
            "{table}"
        );
    }
}
