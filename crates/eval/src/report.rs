//! Tables of outcomes: accuracy, recall over multi-value answers, accuracy
//! relative to `full`, the paired measures against `full` (agreement with its
//! answer, the gap in the reference answer's log-probability, each with its
//! standard error), the share of eligible rows recomputed, Stage I time, and
//! TTFT with its speedup over `full`, per group of tasks (kind and context
//! length) and over all of them; and ProphetKV against each other strategy at
//! the same ratio, task by task (wins, losses, sign test).

use std::collections::{BTreeMap, HashMap};

use prophetkv_reuse::StrategyKind;
use serde::Serialize;

use crate::run::{Arm, Outcome};
use crate::score::agrees_with_full;
use crate::stats::{sign_test, Gap};

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
    /// Mean share of each task's answers found (RULER's string_match_all;
    /// equals accuracy on single-answer tasks).
    pub recall: f64,
    /// Accuracy over `full`'s on the same tasks (absent without `full`).
    pub relative_to_full: Option<f64>,
    /// Share of tasks whose generated text equals `full`'s (surrounding
    /// whitespace aside): a paired measure, less noisy than accuracy
    /// differences (absent without `full`).
    pub agrees_with_full: Option<f64>,
    /// Standard error of `agrees_with_full`.
    pub agrees_stderr: Option<f64>,
    /// `full`'s log-probability of the reference answer minus this arm's,
    /// per task, averaged (absent without `full` or recorded log-probabilities).
    pub logprob_gap: Option<Gap>,
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
    let full_logprob: HashMap<&str, f64> = full
        .iter()
        .filter_map(|o| Some((o.id.as_str(), o.gold_logprob?)))
        .collect();
    arms.iter()
        .filter_map(|arm| {
            let mine = of(arm);
            if mine.is_empty() {
                return None;
            }
            let accuracy = mean(mine.iter().map(|o| f64::from(u8::from(o.correct))));
            let ttft_ms = mean(mine.iter().map(|o| o.ttft_ms));
            let paired: Vec<f64> = mine
                .iter()
                .filter_map(|o| {
                    let reference = full_answer.get(o.id.as_str())?;
                    Some(f64::from(u8::from(agrees_with_full(
                        &o.prediction,
                        reference,
                    ))))
                })
                .collect();
            let agreement = Gap::of(&paired);
            let gaps: Vec<f64> = mine
                .iter()
                .filter_map(|o| Some(full_logprob.get(o.id.as_str())? - o.gold_logprob?))
                .collect();
            Some(Row {
                group: group.to_string(),
                arm: *arm,
                tasks: mine.len(),
                accuracy,
                recall: mean(
                    mine.iter()
                        .map(|o| o.recall.unwrap_or(f64::from(u8::from(o.correct)))),
                ),
                relative_to_full: full_accuracy.filter(|f| *f > 0.0).map(|f| accuracy / f),
                agrees_with_full: agreement.map(|g| g.mean),
                agrees_stderr: agreement.and_then(|g| g.stderr),
                logprob_gap: Gap::of(&gaps),
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
        "| tasks | strategy | ratio | n | accuracy | recall | vs full | agrees with full | log-prob gap to full | selected | Stage I (ms) | TTFT (ms) | speedup |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let pct = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{:.1}%", 100.0 * x));
    for r in rows {
        let ratio = r.arm.ratio.map_or("–".to_string(), |x| format!("{x}"));
        let speedup = r.speedup.map_or("–".to_string(), |x| format!("{x:.2}×"));
        let agrees = match (r.agrees_with_full, r.agrees_stderr) {
            (Some(a), Some(e)) => format!("{:.1}% ± {:.1}", 100.0 * a, 100.0 * e),
            (a, _) => pct(a),
        };
        let gap = r.logprob_gap.map_or("–".to_string(), |g| g.display());
        out.push_str(&format!(
            "| {} | {} | {ratio} | {} | {:.1}% | {:.1}% | {} | {agrees} | {gap} | {:.3} | {:.0} | {:.0} | {speedup} |\n",
            r.group,
            r.arm.strategy.name(),
            r.tasks,
            100.0 * r.accuracy,
            100.0 * r.recall,
            pct(r.relative_to_full),
            r.selected_ratio,
            r.probe_ms,
            r.ttft_ms,
        ));
    }
    out
}

/// ProphetKV against another arm on the same tasks, task by task.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The ProphetKV arm.
    pub arm: Arm,
    /// The arm it is compared with.
    pub against: Arm,
    /// The run directory `against` comes from, when not this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against_run: Option<String>,
    /// Tasks both arms ran.
    pub tasks: usize,
    /// Tasks ProphetKV answers correctly and `against` does not.
    pub wins: usize,
    /// Tasks `against` answers correctly and ProphetKV does not.
    pub losses: usize,
    /// Two-sided exact sign test over the `wins + losses` discordant tasks.
    pub p_value: f64,
}

/// Every ProphetKV arm against each other arm with the same ratio, and
/// against `naive`, over all outcomes.
pub fn compare(outcomes: &[Outcome], arms: &[Arm]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for arm in arms
        .iter()
        .filter(|a| a.strategy == StrategyKind::ProphetKv)
    {
        let mine = correct(outcomes, arm);
        let others = arms.iter().filter(|b| {
            b.strategy != StrategyKind::ProphetKv
                && (b.ratio == arm.ratio || b.strategy == StrategyKind::Naive)
        });
        for against in others {
            let theirs = correct(outcomes, against);
            out.extend(paired(arm, &mine, against, &theirs, None));
        }
    }
    out
}

/// Every ProphetKV arm against the same arm of another run (`run` names it:
/// other options, another preamble), on the tasks both ran.
pub fn compare_with_run(
    outcomes: &[Outcome],
    arms: &[Arm],
    theirs: &[Outcome],
    run: &str,
) -> Vec<Comparison> {
    arms.iter()
        .filter(|a| a.strategy == StrategyKind::ProphetKv)
        .filter_map(|arm| {
            let (mine, other) = (correct(outcomes, arm), correct(theirs, arm));
            paired(arm, &mine, arm, &other, Some(run))
        })
        .collect()
}

/// Whether `arm` answered each task correctly, by task id.
fn correct<'a>(outcomes: &'a [Outcome], arm: &Arm) -> HashMap<&'a str, bool> {
    outcomes
        .iter()
        .filter(|o| o.arm == *arm)
        .map(|o| (o.id.as_str(), o.correct))
        .collect()
}

/// `arm` (its answers `mine`) against `against` (`theirs`), task by task;
/// `None` when they share no task.
fn paired(
    arm: &Arm,
    mine: &HashMap<&str, bool>,
    against: &Arm,
    theirs: &HashMap<&str, bool>,
    against_run: Option<&str>,
) -> Option<Comparison> {
    let (mut tasks, mut wins, mut losses) = (0, 0, 0);
    for (id, &x) in mine {
        let Some(&y) = theirs.get(id) else { continue };
        tasks += 1;
        wins += usize::from(x && !y);
        losses += usize::from(y && !x);
    }
    (tasks > 0).then(|| Comparison {
        arm: *arm,
        against: *against,
        against_run: against_run.map(str::to_string),
        tasks,
        wins,
        losses,
        p_value: sign_test(wins, losses),
    })
}

/// A markdown table of `comparisons`.
pub fn comparison_markdown(comparisons: &[Comparison]) -> String {
    let mut out = String::from(
        "| prophetkv | against | tasks | wins | losses | sign test p |\n|---|---|---:|---:|---:|---:|\n",
    );
    for c in comparisons {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.3} |\n",
            c.arm.label(),
            match &c.against_run {
                Some(run) => format!("{} ({run})", c.against.label()),
                None => c.against.label(),
            },
            c.tasks,
            c.wins,
            c.losses,
            c.p_value
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
            recall: None,
            gold_logprob: None,
            ttft_ms,
            context_tokens: 1990,
            eligible: 100,
            selected: if arm.ratio.is_some() { 20 } else { 0 },
            layer_rows: 0,
            probe_ms: if arm.ratio.is_some() { 10.0 } else { 0.0 },
            recompute_ms: 0.0,
        }
    }

    /// `full` and `prophetkv@0.2`.
    fn full_and_prophetkv() -> (Arm, Arm) {
        let full = Arm {
            strategy: StrategyKind::Full,
            ratio: None,
        };
        let pkv = Arm {
            strategy: StrategyKind::ProphetKv,
            ratio: Some(0.2),
        };
        (full, pkv)
    }

    #[test]
    fn accuracy_agreement_and_speedup_are_computed_per_arm_on_paired_tasks() {
        let (full, pkv) = full_and_prophetkv();
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
                "| all | prophetkv | 0.2 | 3 | 33.3% | 33.3% | 50.0% | 66.7% ± 33.3 | – | 0.200 | 10 | 50 | 4.00× |"
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
        assert!(markdown(&rows).contains("| 100.0% | 100.0% | – | – | – |"));
    }

    #[test]
    fn recall_and_the_log_probability_gap_are_paired_with_full() {
        let (full, pkv) = full_and_prophetkv();
        let with = |mut o: Outcome, recall: f64, logprob: f64| {
            o.recall = Some(recall);
            o.gold_logprob = Some(logprob);
            o
        };
        let outcomes = vec![
            with(outcome("a", full, " 1 and 2", true, 100.0), 1.0, -1.0),
            with(outcome("b", full, " 3 and 4", true, 100.0), 1.0, -2.0),
            with(outcome("a", pkv, " 1 and 9", false, 50.0), 0.5, -2.0),
            with(outcome("b", pkv, " 3 and 4", true, 50.0), 1.0, -4.0),
        ];
        let rows = summarize(&outcomes, &[full, pkv]);
        let p = &rows[1];
        assert_eq!(p.recall, 0.75);
        let gap = p.logprob_gap.unwrap();
        assert_eq!(gap.mean, 1.5);
        assert_eq!(gap.stderr, Some(0.5));
        assert_eq!(rows[0].logprob_gap.unwrap().mean, 0.0);
    }

    #[test]
    fn prophetkv_is_compared_with_each_arm_of_its_ratio_and_with_naive() {
        let arm = |strategy, ratio| Arm { strategy, ratio };
        let pkv = arm(StrategyKind::ProphetKv, Some(0.2));
        let blend = arm(StrategyKind::CacheBlend, Some(0.2));
        let blend_high = arm(StrategyKind::CacheBlend, Some(0.3));
        let naive = arm(StrategyKind::Naive, None);
        let full = arm(StrategyKind::Full, None);
        let mut outcomes = Vec::new();
        // 7 tasks: prophetkv alone right on 6, cacheblend alone right on 1.
        for i in 0..7 {
            let id = format!("t{i}");
            outcomes.push(outcome(&id, pkv, "", i < 6, 1.0));
            outcomes.push(outcome(&id, blend, "", i == 6, 1.0));
            outcomes.push(outcome(&id, blend_high, "", true, 1.0));
            outcomes.push(outcome(&id, naive, "", false, 1.0));
            outcomes.push(outcome(&id, full, "", true, 1.0));
        }
        let c = compare(&outcomes, &[full, naive, pkv, blend, blend_high]);
        let labels: Vec<String> = c.iter().map(|c| c.against.label()).collect();
        assert_eq!(
            labels,
            ["naive", "cacheblend@0.2"],
            "same ratio and naive only"
        );
        let blend = &c[1];
        assert_eq!((blend.tasks, blend.wins, blend.losses), (7, 6, 1));
        assert!((blend.p_value - 16.0 / 128.0).abs() < 1e-12);
        assert!(comparison_markdown(&c)
            .contains("| prophetkv@0.2 | cacheblend@0.2 | 7 | 6 | 1 | 0.125 |"));
    }

    #[test]
    fn prophetkv_is_compared_with_the_same_arm_of_another_run_on_shared_tasks() {
        let (full, pkv) = full_and_prophetkv();
        let mut mine = Vec::new();
        let mut theirs = Vec::new();
        // Tasks t0..t4 in both runs (mine right on t0..t2, theirs on t2..t4
        // but t3 and t4 wrong in mine: 2 wins, 2 losses); t5 in mine only.
        for i in 0..6 {
            let id = format!("t{i}");
            mine.push(outcome(&id, full, "", true, 1.0));
            mine.push(outcome(&id, pkv, "", i <= 2 || i == 5, 1.0));
            if i < 5 {
                theirs.push(outcome(&id, pkv, "", i >= 2, 1.0));
            }
        }
        let c = compare_with_run(&mine, &[full, pkv], &theirs, "paper-run");
        assert_eq!(c.len(), 1, "only ProphetKV arms are paired");
        assert_eq!((c[0].tasks, c[0].wins, c[0].losses), (5, 2, 2));
        assert_eq!(c[0].against_run.as_deref(), Some("paper-run"));
        assert!(comparison_markdown(&c)
            .contains("| prophetkv@0.2 | prophetkv@0.2 (paper-run) | 5 | 2 | 2 | 1.000 |"));
        assert!(compare_with_run(&mine, &[full, pkv], &[], "none").is_empty());
    }
}
