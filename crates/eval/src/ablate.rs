//! Ablations: variants of the reuse options side by side on a task file,
//! each against `full` on the same tasks, with diagnostics of the selection
//! itself: how much of the answer's own rows a variant recomputed, and how
//! much of its budget went to the last two documents.

use std::collections::BTreeMap;

use prophetkv_model::TextTokenizer;
use prophetkv_reuse::{ReuseConfig, ReuseStats, StrategyKind};
use serde::{Deserialize, Serialize};

use crate::report::group_label;
use crate::run::{Answered, Evaluator};
use crate::score::agrees_with_full;
use crate::stats::Gap;
use crate::task::Task;
use crate::Result;

/// One configuration under test, with the name it is reported by.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Short name for the table.
    pub name: String,
    /// How it was asked for (command-line options), for the table.
    pub spec: String,
    /// The configuration run.
    pub config: ReuseConfig,
}

/// One variant on one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trial {
    /// Task id.
    pub id: String,
    /// "multi-key 2k", ...
    pub group: String,
    /// Variant name (`full` for the reference).
    pub variant: String,
    /// Generated text.
    pub prediction: String,
    /// Whether it answers the task.
    pub correct: bool,
    /// Whether its answer equals `full`'s.
    pub agrees_with_full: bool,
    /// Answer rows in eligible documents, and how many of them were recomputed.
    pub answer_rows: Option<(usize, usize)>,
    /// Rows selected, and how many of them lie in the last two documents
    /// (absent for `full`, which selects nothing).
    pub selected: Option<(usize, usize)>,
    /// Share of the eligible rows recomputed (rows started at a middle
    /// layer counting for the layers they ran).
    #[serde(default)]
    pub recompute_share: f64,
    /// Log-probability of the reference answer: the task's first answer,
    /// after a space, as it would follow the question.
    pub gold_logprob: Option<f64>,
    /// Time to first token, ms.
    pub ttft_ms: f64,
}

/// A variant's summary over the tasks run.
#[derive(Debug, Clone, Serialize)]
pub struct AblationRow {
    /// Variant name.
    pub variant: String,
    /// Its options.
    pub spec: String,
    /// Tasks run.
    pub tasks: usize,
    /// Share answered correctly.
    pub accuracy: f64,
    /// Accuracy over `full`'s.
    pub relative_to_full: Option<f64>,
    /// Share of tasks answered exactly as `full` answered.
    pub agreement: f64,
    /// Share of the answers' rows (in eligible documents) recomputed.
    pub answer_recall: Option<f64>,
    /// Share of tasks whose answer rows were all recomputed.
    pub answer_covered: Option<f64>,
    /// Share of selected rows that lie in the last two documents.
    pub late_share: Option<f64>,
    /// Mean over tasks of the share of eligible rows recomputed.
    pub recomputed: Option<f64>,
    /// Mean over tasks of full's log-probability of the reference answer
    /// minus this variant's (paired; 0 for full, lower is better).
    pub logprob_gap: Option<Gap>,
    /// Mean time to first token, ms.
    pub ttft_ms: f64,
    /// Accuracy per group of tasks.
    pub groups: BTreeMap<String, f64>,
}

/// Runs `full` and every variant on every task; `progress` hears each task done.
pub fn ablate(
    evaluator: &Evaluator<'_>,
    tasks: &[Task],
    variants: &[Variant],
    mut progress: impl FnMut(usize, usize, &[Trial]),
) -> Result<Vec<Trial>> {
    let full = ReuseConfig {
        strategy: StrategyKind::Full,
        ratio: 1.0,
        ..evaluator.base.clone()
    };
    let configs: Vec<ReuseConfig> = std::iter::once(full)
        .chain(variants.iter().map(|v| v.config.clone()))
        .collect();
    let names: Vec<&str> = std::iter::once("full")
        .chain(variants.iter().map(|v| v.name.as_str()))
        .collect();
    let mut trials = Vec::new();
    for (done, task) in tasks.iter().enumerate() {
        let gold = evaluator.gold_ids(task)?;
        let answered = evaluator.answer_task(task, &configs, Some(&gold))?;
        let positions = answer_positions(evaluator.tokenizer, task)?;
        let reference = answered[0].prediction.trim().to_string();
        let start = trials.len();
        for ((name, config), a) in names.iter().zip(&configs).zip(&answered) {
            // With a prefix outside the anchor the first document is eligible too.
            let first_eligible = config.first_doc_eligible
                || (!evaluator.prefix_in_anchor && !task.prefix.is_empty());
            trials.push(trial(
                task,
                name,
                config,
                a,
                &positions,
                &reference,
                first_eligible,
            ));
        }
        progress(done + 1, tasks.len(), &trials[start..]);
    }
    Ok(trials)
}

fn trial(
    task: &Task,
    name: &str,
    config: &ReuseConfig,
    a: &Answered,
    positions: &[Vec<u32>],
    reference: &str,
    first_eligible: bool,
) -> Trial {
    let s: &ReuseStats = &a.stats;
    let skip = usize::from(!first_eligible);
    let answer_rows = {
        let total: usize = positions.iter().skip(skip).map(Vec::len).sum();
        let hit: usize = positions
            .iter()
            .zip(&s.selected_positions)
            .skip(skip)
            .map(|(want, got)| want.iter().filter(|p| got.binary_search(p).is_ok()).count())
            .sum();
        (total > 0 && config.strategy != StrategyKind::Full).then_some((total, hit))
    };
    let n = s.selected_positions.len();
    let late: usize = s
        .selected_positions
        .iter()
        .skip(n.saturating_sub(2))
        .map(Vec::len)
        .sum();
    Trial {
        id: task.id.clone(),
        group: group_label(&task.task, s.context_tokens),
        variant: name.to_string(),
        prediction: a.prediction.clone(),
        correct: a.correct,
        agrees_with_full: agrees_with_full(&a.prediction, reference),
        answer_rows,
        selected: (config.strategy != StrategyKind::Full).then_some((s.selected, late)),
        recompute_share: s.recompute_share,
        gold_logprob: a.gold_logprob,
        ttft_ms: a.ttft_ms,
    }
}

/// The trials a run wrote to `path` (its `trials.jsonl`), of the tasks that
/// `full` and every variant finished, with agreement judged afresh against
/// `full`'s answer: what a stopped or finished run has shown so far.
pub fn load_trials(path: &std::path::Path, variants: &[Variant]) -> Result<Vec<Trial>> {
    let text = std::fs::read_to_string(path).map_err(|source| crate::EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut trials: Vec<Trial> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        trials.push(
            serde_json::from_str(line).map_err(|e| crate::EvalError::TaskLine {
                path: path.to_path_buf(),
                line: i + 1,
                reason: e.to_string(),
            })?,
        );
    }
    let names: Vec<&str> = std::iter::once("full")
        .chain(variants.iter().map(|v| v.name.as_str()))
        .collect();
    // Tasks in the order the run met them, each with its trials.
    let mut tasks: Vec<(String, Vec<Trial>)> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for t in trials {
        let i = *at.entry(t.id.clone()).or_insert_with(|| {
            tasks.push((t.id.clone(), Vec::new()));
            tasks.len() - 1
        });
        tasks[i].1.push(t);
    }
    let mut out = Vec::new();
    for (_, mut ts) in tasks {
        let Some(reference) = ts.iter().find(|t| t.variant == "full") else {
            continue;
        };
        let reference = reference.prediction.clone();
        if !names.iter().all(|n| ts.iter().any(|t| t.variant == *n)) {
            continue;
        }
        ts.retain(|t| names.contains(&t.variant.as_str()));
        for t in &mut ts {
            t.agrees_with_full = agrees_with_full(&t.prediction, &reference);
        }
        out.extend(ts);
    }
    Ok(out)
}

/// Prompt positions of every answer's tokens, per document (ascending).
/// The prompt is BOS, the prefix, then the documents in order.
pub fn answer_positions(tokenizer: &TextTokenizer, task: &Task) -> Result<Vec<Vec<u32>>> {
    let mut offset = tokenizer.prompt_ids(&task.prefix)?.len();
    let mut out = Vec::with_capacity(task.documents.len());
    for doc in &task.documents {
        let (ids, spans) = tokenizer.encode_with_offsets(doc)?;
        let mut here: Vec<u32> = Vec::new();
        for answer in &task.answers {
            let Some(a) = doc.find(answer.as_str()) else {
                continue;
            };
            let b = a + answer.len();
            here.extend(
                spans
                    .iter()
                    .enumerate()
                    .filter(|(_, &(s, e))| s < b && e > a)
                    .map(|(i, _)| (offset + i) as u32),
            );
        }
        here.sort_unstable();
        here.dedup();
        out.push(here);
        offset += ids.len();
    }
    Ok(out)
}

/// Per-variant summaries, `full` first, in the order the variants ran.
pub fn summarize(trials: &[Trial], variants: &[Variant]) -> Vec<AblationRow> {
    let mean = |xs: &[f64]| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
    let accuracy = |ts: &[&Trial]| {
        mean(
            &ts.iter()
                .map(|t| f64::from(u8::from(t.correct)))
                .collect::<Vec<_>>(),
        )
        .unwrap_or(0.0)
    };
    let of = |name: &str| -> Vec<&Trial> { trials.iter().filter(|t| t.variant == name).collect() };
    let full_accuracy = accuracy(&of("full"));
    let specs = std::iter::once(("full".to_string(), "--strategy full".to_string()))
        .chain(variants.iter().map(|v| (v.name.clone(), v.spec.clone())));
    specs
        .map(|(name, spec)| {
            let mine = of(&name);
            let acc = accuracy(&mine);
            let mut groups: BTreeMap<String, Vec<&Trial>> = BTreeMap::new();
            for t in &mine {
                groups.entry(t.group.clone()).or_default().push(t);
            }
            let recalls: Vec<(usize, usize)> = mine.iter().filter_map(|t| t.answer_rows).collect();
            let (total, hit) = recalls
                .iter()
                .fold((0, 0), |(t, h), &(a, b)| (t + a, h + b));
            let (selected, late) = mine
                .iter()
                .filter_map(|t| t.selected)
                .fold((0, 0), |(s, l), (ts, tl)| (s + ts, l + tl));
            AblationRow {
                tasks: mine.len(),
                accuracy: acc,
                relative_to_full: (full_accuracy > 0.0).then(|| acc / full_accuracy),
                agreement: mean(
                    &mine
                        .iter()
                        .map(|t| f64::from(u8::from(t.agrees_with_full)))
                        .collect::<Vec<_>>(),
                )
                .unwrap_or(0.0),
                answer_recall: (total > 0).then(|| hit as f64 / total as f64),
                answer_covered: mean(
                    &recalls
                        .iter()
                        .map(|&(a, b)| f64::from(u8::from(a == b)))
                        .collect::<Vec<_>>(),
                ),
                late_share: (selected > 0).then(|| late as f64 / selected as f64),
                recomputed: mean(
                    &mine
                        .iter()
                        .filter(|t| t.selected.is_some())
                        .map(|t| t.recompute_share)
                        .collect::<Vec<_>>(),
                ),
                logprob_gap: paired_gap(trials, &mine),
                ttft_ms: mean(&mine.iter().map(|t| t.ttft_ms).collect::<Vec<_>>()).unwrap_or(0.0),
                groups: groups
                    .iter()
                    .map(|(g, ts)| (g.clone(), accuracy(ts)))
                    .collect(),
                variant: name,
                spec,
            }
        })
        .collect()
}

/// Full's gold log-probability minus each trial's, per task, averaged.
fn paired_gap(all: &[Trial], mine: &[&Trial]) -> Option<Gap> {
    let gaps: Vec<f64> = mine
        .iter()
        .filter_map(|t| {
            let full = all
                .iter()
                .find(|f| f.variant == "full" && f.id == t.id)?
                .gold_logprob?;
            Some(full - t.gold_logprob?)
        })
        .collect();
    Gap::of(&gaps)
}

/// The summaries as markdown: one overall table, one of accuracy per group.
pub fn ablation_markdown(rows: &[AblationRow]) -> String {
    let pct = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{:.1}%", 100.0 * x));
    let mut out = String::from(
        "| variant | options | tasks | accuracy | of full | agrees with full | answer log-prob gap to full (± s.e.) | answer rows recomputed | answer fully recomputed | selected in last 2 docs | recomputed (of eligible) | mean TTFT (ms) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            r.variant,
            r.spec,
            r.tasks,
            pct(Some(r.accuracy)),
            pct(r.relative_to_full),
            pct(Some(r.agreement)),
            r.logprob_gap.map_or("–".to_string(), |g| g.display()),
            pct(r.answer_recall),
            pct(r.answer_covered),
            pct(r.late_share),
            r.recomputed.map_or("–".to_string(), |x| format!("{x:.3}")),
            r.ttft_ms,
        ));
    }
    let groups: Vec<&String> = rows
        .first()
        .map(|r| r.groups.keys().collect())
        .unwrap_or_default();
    if !groups.is_empty() {
        out.push_str("\n| variant |");
        for g in &groups {
            out.push_str(&format!(" {g} |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(groups.len()));
        out.push('\n');
        for r in rows {
            out.push_str(&format!("| {} |", r.variant));
            for g in &groups {
                out.push_str(&format!(" {} |", pct(r.groups.get(*g).copied())));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(variant: &str, group: &str, correct: bool, answer_rows: Option<(usize, usize)>) -> Trial {
        Trial {
            id: "x".into(),
            group: group.into(),
            variant: variant.into(),
            prediction: String::new(),
            correct,
            agrees_with_full: correct,
            answer_rows,
            selected: (variant != "full").then_some((10, 4)),
            recompute_share: 0.25,
            gold_logprob: Some(if correct { -1.0 } else { -3.0 }),
            ttft_ms: 100.0,
        }
    }

    #[test]
    fn loaded_trials_keep_the_tasks_every_variant_finished_and_judge_agreement_afresh() {
        let v = |name: &str| Variant {
            name: name.into(),
            spec: String::new(),
            config: ReuseConfig::default(),
        };
        let mut rows = [
            t("full", "a 1k", true, None),
            t("v", "a 1k", true, None),
            t("full", "a 1k", true, None),
        ];
        rows[0].prediction = " 42.\n".into();
        rows[1].prediction = " 42. And more".into();
        rows[1].agrees_with_full = false;
        rows[2].id = "unfinished".into();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trials.jsonl");
        let text: Vec<String> = rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        let loaded = load_trials(&path, &[v("v")]).unwrap();
        assert_eq!(loaded.len(), 2);
        assert!(loaded.iter().all(|t| t.id == "x" && t.agrees_with_full));
        assert!(load_trials(&dir.path().join("missing"), &[]).is_err());
    }

    #[test]
    fn summaries_count_accuracy_recall_and_late_share_per_variant() {
        let trials = vec![
            t("full", "a 1k", true, None),
            t("full", "b 1k", true, None),
            t("v", "a 1k", true, Some((4, 4))),
            t("v", "b 1k", false, Some((4, 1))),
        ];
        let variants = vec![Variant {
            name: "v".into(),
            spec: "--fusion visible".into(),
            config: ReuseConfig::default(),
        }];
        let rows = summarize(&trials, &variants);
        assert_eq!(rows.len(), 2);
        let v = &rows[1];
        assert_eq!(v.accuracy, 0.5);
        assert_eq!(v.relative_to_full, Some(0.5));
        assert_eq!(v.answer_recall, Some(5.0 / 8.0));
        assert_eq!(v.answer_covered, Some(0.5));
        assert_eq!(v.late_share, Some(0.4));
        assert_eq!(v.recomputed, Some(0.25));
        assert_eq!(rows[0].recomputed, None);
        assert_eq!(v.groups["b 1k"], 0.0);
        // Paired gaps 0 and 2: mean 1, standard error 1.
        let gap = |mean, se| {
            Some(Gap {
                mean,
                stderr: Some(se),
            })
        };
        assert_eq!(v.logprob_gap, gap(1.0, 1.0));
        assert_eq!(rows[0].logprob_gap, gap(0.0, 0.0));
        assert_eq!(rows[0].late_share, None);
        // One task: a mean without a standard error.
        let one = summarize(&trials[..1], &[]);
        assert_eq!(
            one[0].logprob_gap,
            Some(Gap {
                mean: 0.0,
                stderr: None
            })
        );
        let md = ablation_markdown(&rows);
        assert!(
            md.contains("| v | `--fusion visible` | 2 | 50.0% | 50.0% |"),
            "{md}"
        );
        assert!(md.contains("| variant | a 1k | b 1k |"), "{md}");
    }
}
