//! `prophetkv eval`: strategies × ratios over a task file, resumable, with
//! `results.json`, `results.md`, accuracy-vs-ratio plots and the
//! accuracy/cost frontier (accuracy against the mean recomputed share and
//! against TTFT, so that a method is not credited for recomputing more) in
//! the run directory. The results files are written only once every task is
//! done.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::journal::Journal;
use crate::plot::{draw, Chart, Series};
use crate::report::{compare, comparison_markdown, markdown, summarize, Comparison, Row};
use crate::run::{has_budget, Arm, Evaluator, Outcome};
use crate::task::Task;
use crate::{EvalError, Result};

/// What the outcomes in a run directory were measured with; a rerun must
/// match it to resume.
#[derive(Debug, Clone, Serialize)]
pub struct RunIdentity {
    /// blake3 of the task file.
    pub tasks_blake3: String,
    /// Model file or directory.
    pub model: String,
    /// Weight path ("f32" or "q").
    pub weights: String,
    /// Token limit of answers.
    pub max_new_tokens: usize,
    /// The reuse options shared by every arm.
    pub options: String,
}

/// Where an eval stands, for progress bars.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Tasks finished (including those found done).
    pub done: usize,
    /// Tasks in the file.
    pub total: usize,
    /// Tasks found done in the journal at the start.
    pub resumed: usize,
}

/// The summary rows and every outcome of a finished eval.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// What was measured.
    pub identity: RunIdentity,
    /// Tables: all tasks, then each group.
    pub summary: Vec<Row>,
    /// ProphetKV against the other strategies at the same ratio, task by task.
    pub comparisons: Vec<Comparison>,
    /// Per task and arm.
    pub outcomes: Vec<Outcome>,
}

/// blake3 of a file's bytes, hex.
pub fn file_blake3(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

/// Runs every arm missing from `dir`'s journal on every task, then writes
/// the reports. `progress` is called after each task.
pub fn evaluate(
    evaluator: &Evaluator<'_>,
    tasks: &[Task],
    arms: &[Arm],
    dir: &Path,
    identity: RunIdentity,
    progress: &mut dyn FnMut(Progress),
) -> Result<EvalReport> {
    if arms.is_empty() {
        return Err(EvalError::Invalid("no strategies to evaluate".into()));
    }
    let mut journal = Journal::open(dir, &identity)?;
    let missing = |j: &Journal, t: &Task| -> Vec<Arm> {
        arms.iter()
            .copied()
            .filter(|a| !j.is_done(&t.id, a))
            .collect()
    };
    let resumed = tasks
        .iter()
        .filter(|t| missing(&journal, t).is_empty())
        .count();
    let mut done = resumed;
    progress(Progress {
        done,
        total: tasks.len(),
        resumed,
    });
    for task in tasks {
        let todo = missing(&journal, task);
        if todo.is_empty() {
            continue;
        }
        let outcomes = evaluator.evaluate_task(task, &todo)?;
        journal.record(&outcomes)?;
        done += 1;
        progress(Progress {
            done,
            total: tasks.len(),
            resumed,
        });
    }
    let outcomes: Vec<Outcome> = tasks
        .iter()
        .flat_map(|t| arms.iter().filter_map(|a| journal.get(&t.id, a).cloned()))
        .collect();
    let report = EvalReport {
        identity,
        summary: summarize(&outcomes, arms),
        comparisons: compare(&outcomes, arms),
        outcomes,
    };
    write_report(dir, &report, arms)?;
    Ok(report)
}

/// Where a run directory stands: how many of `tasks` have every arm done
/// in `dir`, and those tasks' outcomes (for the tables over them alone).
/// Reads only; writes nothing.
pub fn partial_outcomes(tasks: &[Task], arms: &[Arm], dir: &Path) -> Result<(usize, Vec<Outcome>)> {
    let recorded = Journal::read_outcomes(dir)?;
    let mut outcomes = Vec::new();
    let mut done = 0;
    for task in tasks {
        let mine: Vec<&Outcome> = arms
            .iter()
            .filter_map(|a| recorded.iter().find(|o| o.id == task.id && o.arm == *a))
            .collect();
        if mine.len() == arms.len() {
            done += 1;
            outcomes.extend(mine.into_iter().cloned());
        }
    }
    Ok((done, outcomes))
}

fn write(path: PathBuf, text: &str) -> Result<()> {
    std::fs::write(&path, text).map_err(|source| EvalError::Io { path, source })
}

/// `results.json`, `results.md`, `accuracy_vs_ratio*.png` and
/// `frontier_{recompute,ttft}.png` in `dir`.
pub fn write_report(dir: &Path, report: &EvalReport, arms: &[Arm]) -> Result<()> {
    let json =
        serde_json::to_string_pretty(report).map_err(|e| EvalError::Invalid(e.to_string()))?;
    write(dir.join("results.json"), &json)?;
    let mut text = markdown(&report.summary);
    if !report.comparisons.is_empty() {
        text.push_str("\nProphetKV against each strategy, task by task (all tasks):\n\n");
        text.push_str(&comparison_markdown(&report.comparisons));
    }
    write(dir.join("results.md"), &text)?;
    let all: Vec<&Row> = report.summary.iter().filter(|r| r.group == "all").collect();
    for cost in [Cost::Recompute, Cost::Ttft] {
        draw(&frontier_chart(&all, arms, cost), &dir.join(cost.file()))?;
    }
    let mut groups: Vec<&str> = report.summary.iter().map(|r| r.group.as_str()).collect();
    groups.dedup();
    for group in groups {
        let name = if group == "all" {
            "accuracy_vs_ratio.png".to_string()
        } else {
            format!("accuracy_vs_ratio_{}.png", group.replace(' ', "_"))
        };
        let rows: Vec<&Row> = report.summary.iter().filter(|r| r.group == group).collect();
        draw(&accuracy_chart(group, &rows, arms), &dir.join(name))?;
    }
    Ok(())
}

/// The cost axis of a frontier chart.
#[derive(Debug, Clone, Copy)]
enum Cost {
    /// Mean share of eligible rows recomputed (`full` at 1).
    Recompute,
    /// Mean time to first token.
    Ttft,
}

impl Cost {
    fn file(self) -> &'static str {
        match self {
            Cost::Recompute => "frontier_recompute.png",
            Cost::Ttft => "frontier_ttft.png",
        }
    }

    fn of(self, row: &Row) -> f64 {
        match (self, row.arm.strategy) {
            (Cost::Recompute, prophetkv_reuse::StrategyKind::Full) => 1.0,
            (Cost::Recompute, _) => row.selected_ratio,
            (Cost::Ttft, _) => row.ttft_ms,
        }
    }
}

/// For each strategy of `arms` (in order) with rows, `point` of each of its rows.
fn by_strategy(
    rows: &[&Row],
    arms: &[Arm],
    point: impl Fn(&Row) -> (f64, f64),
) -> Vec<(prophetkv_reuse::StrategyKind, Vec<(f64, f64)>)> {
    let mut strategies: Vec<_> = arms.iter().map(|a| a.strategy).collect();
    strategies.dedup();
    strategies
        .into_iter()
        .filter_map(|s| {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.arm.strategy == s)
                .map(|r| point(r))
                .collect();
            (!points.is_empty()).then_some((s, points))
        })
        .collect()
}

/// Accuracy of each strategy against what it spent, one line per strategy
/// through its ratios (`full` and `naive` one point each).
fn frontier_chart(rows: &[&Row], arms: &[Arm], cost: Cost) -> Chart {
    let series = by_strategy(rows, arms, |r| (cost.of(r), 100.0 * r.accuracy))
        .into_iter()
        .map(|(s, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label: s.name().to_string(),
                points,
                horizontal: false,
            }
        })
        .collect();
    let n = rows.iter().map(|r| r.tasks).max().unwrap_or(0);
    let (title, x_label) = match cost {
        Cost::Recompute => (
            "Accuracy vs share of context recomputed",
            "mean share of eligible rows recomputed",
        ),
        Cost::Ttft => ("Accuracy vs time to first token", "mean TTFT (ms)"),
    };
    Chart {
        title: format!("{title} ({n} tasks)"),
        x_label: x_label.into(),
        y_label: "accuracy (%)".into(),
        series,
        y_range: Some((0.0, 100.0)),
        legend_upper_left: false,
    }
}

fn accuracy_chart(group: &str, rows: &[&Row], arms: &[Arm]) -> Chart {
    let ratios: Vec<f64> = arms.iter().filter_map(|a| a.ratio).collect();
    let series = by_strategy(rows, arms, |r| {
        (r.arm.ratio.unwrap_or(0.0), 100.0 * r.accuracy)
    })
    .into_iter()
    .map(|(s, mut points)| {
        let horizontal = !has_budget(s);
        if horizontal {
            // Span the ratios measured, as a reference line.
            let y = points[0].1;
            points = ratios.iter().map(|&x| (x, y)).collect();
            if points.is_empty() {
                points = vec![(0.0, y)];
            }
        }
        Series {
            label: s.name().to_string(),
            points,
            horizontal,
        }
    })
    .collect();
    let n = rows.iter().map(|r| r.tasks).max().unwrap_or(0);
    Chart {
        title: format!("Accuracy vs recompute ratio ({group}, {n} tasks)"),
        x_label: "recompute ratio".into(),
        y_label: "accuracy (%)".into(),
        series,
        y_range: Some((0.0, 100.0)),
        legend_upper_left: false,
    }
}
