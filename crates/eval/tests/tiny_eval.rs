//! `evaluate` end to end on a tiny random model: every strategy × ratio on a
//! few tasks, reports and plots written, reruns resumed, runs of another
//! configuration refused.

use std::path::Path;

use prophetkv_eval::eval::{evaluate, partial_outcomes, Progress, RunIdentity};
use prophetkv_eval::report::summarize;
use prophetkv_eval::run::{Arm, Evaluator};
use prophetkv_eval::task::{Match, Task};
use prophetkv_model::testing::{tiny_text, tokens, write_tiny, Tiny};
use prophetkv_model::{load_model, LoadOptions, Model, TextTokenizer, WeightPath};
use prophetkv_reuse::{ReuseConfig, StrategyKind};

fn tiny(dir: &Path) -> (Model, TextTokenizer) {
    write_tiny(dir, Tiny::Llama);
    let options = LoadOptions {
        weight_path: WeightPath::F32,
        ..LoadOptions::default()
    };
    (
        load_model(dir, &options).unwrap(),
        TextTokenizer::from_path(dir).unwrap(),
    )
}

fn tasks() -> Vec<Task> {
    (0..3u64)
        .map(|i| Task {
            id: format!("tiny-{i}"),
            task: if i == 2 { "other" } else { "needle" }.into(),
            prefix: "t5 ".into(),
            documents: (0..3)
                .map(|d| tiny_text(&tokens(20 + 5 * d, 10 * i + d as u64)))
                .collect(),
            question: tiny_text(&tokens(4, 100 + i)),
            answers: vec!["t7".into()],
            match_mode: Match::Any,
        })
        .collect()
}

fn identity(max_new_tokens: usize) -> RunIdentity {
    RunIdentity {
        tasks_blake3: "test".into(),
        model: "tiny".into(),
        weights: "f32".into(),
        max_new_tokens,
        options: "default".into(),
    }
}

#[test]
fn eval_writes_every_outcome_and_the_reports_then_resumes_without_rerunning() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, tokenizer) = tiny(model_dir.path());
    let evaluator = Evaluator::new(&model, &tokenizer, ReuseConfig::default(), 4);
    let arms = Arm::grid(&StrategyKind::ALL, &[0.5, 1.0]);
    assert_eq!(arms.len(), 2 + 4 * 2);
    let repeated = Arm::grid(
        &[
            StrategyKind::Full,
            StrategyKind::ProphetKv,
            StrategyKind::Full,
        ],
        &[0.3, 0.1, 0.3],
    );
    let labels: Vec<String> = repeated.iter().map(Arm::label).collect();
    assert_eq!(labels, ["full", "prophetkv@0.1", "prophetkv@0.3"]);
    let out = tempfile::tempdir().unwrap();
    let tasks = tasks();
    let mut seen = Vec::new();
    let report = evaluate(
        &evaluator,
        &tasks,
        &arms,
        out.path(),
        identity(4),
        &mut |p: Progress| seen.push(p.done),
    )
    .unwrap();
    assert_eq!(seen, vec![0, 1, 2, 3]);
    assert_eq!(report.outcomes.len(), tasks.len() * arms.len());
    for name in [
        "results.json",
        "results.md",
        "accuracy_vs_ratio.png",
        "runs.jsonl",
    ] {
        assert!(out.path().join(name).is_file(), "{name} missing");
    }
    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(md.contains("| all | prophetkv | 0.5 |"), "{md}");
    assert!(
        md.contains("| needle 0k |") || md.contains("| needle 1k |"),
        "{md}"
    );

    for task in &tasks {
        let of = |arm: &Arm| {
            report
                .outcomes
                .iter()
                .find(|o| o.id == task.id && o.arm == *arm)
                .unwrap()
        };
        let full = of(&arms[0]);
        for arm in &arms {
            let o = of(arm);
            if let Some(ratio) = arm.ratio {
                assert_eq!(
                    o.selected,
                    (ratio * o.eligible as f64).floor() as usize,
                    "{}",
                    arm.label()
                );
                if ratio == 1.0 {
                    // Every budgeted strategy at ratio 1 is full prefill.
                    assert_eq!(o.prediction, full.prediction, "{}", arm.label());
                }
            }
            assert!(o.ttft_ms > 0.0 && o.context_tokens == full.context_tokens);
        }
    }

    // A rerun finds everything done and runs nothing.
    let journal = std::fs::read_to_string(out.path().join("runs.jsonl")).unwrap();
    let mut resumed = Vec::new();
    evaluate(
        &evaluator,
        &tasks,
        &arms,
        out.path(),
        identity(4),
        &mut |p: Progress| resumed.push((p.done, p.resumed)),
    )
    .unwrap();
    assert_eq!(resumed, vec![(3, 3)]);
    assert_eq!(
        std::fs::read_to_string(out.path().join("runs.jsonl")).unwrap(),
        journal
    );

    // Another configuration in the same directory is refused.
    let err = evaluate(
        &evaluator,
        &tasks,
        &arms,
        out.path(),
        identity(8),
        &mut |_| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("different run"), "{err}");
}

#[test]
fn an_interrupted_eval_redoes_only_the_torn_task() {
    let model_dir = tempfile::tempdir().unwrap();
    let (model, tokenizer) = tiny(model_dir.path());
    let evaluator = Evaluator::new(&model, &tokenizer, ReuseConfig::default(), 2);
    let arms = Arm::grid(&[StrategyKind::Full, StrategyKind::ProphetKv], &[0.3]);
    let out = tempfile::tempdir().unwrap();
    let tasks = tasks();
    evaluate(
        &evaluator,
        &tasks,
        &arms,
        out.path(),
        identity(2),
        &mut |_| {},
    )
    .unwrap();
    // Simulate a crash while the last task's outcomes were being written.
    let path = out.path().join("runs.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let torn = &text[..text.len() - 20];
    std::fs::write(&path, torn).unwrap();
    std::fs::remove_file(out.path().join("results.json")).unwrap();
    // The status view counts only tasks with every arm done, and writes nothing.
    let (done, outcomes) = partial_outcomes(&tasks, &arms, out.path()).unwrap();
    let rows = summarize(&outcomes, &arms);
    assert_eq!(done, 2);
    assert!(rows.iter().all(|r| r.tasks == 2), "{rows:?}");
    assert!(!out.path().join("results.json").exists());
    let mut progress = Vec::new();
    let report = evaluate(
        &evaluator,
        &tasks,
        &arms,
        out.path(),
        identity(2),
        &mut |p: Progress| progress.push((p.done, p.resumed)),
    )
    .unwrap();
    assert_eq!(progress, vec![(2, 2), (3, 2)]);
    assert_eq!(report.outcomes.len(), tasks.len() * arms.len());
    assert!(out.path().join("results.json").is_file());
    let lines = std::fs::read_to_string(&path).unwrap().lines().count();
    assert_eq!(lines, tasks.len() * arms.len());
}

#[test]
fn ablation_finds_the_answer_rows_and_a_variant_at_ratio_one_answers_as_full() {
    use prophetkv_eval::ablate::{ablate, answer_positions, summarize, Variant};
    use prophetkv_reuse::Fusion;

    let model_dir = tempfile::tempdir().unwrap();
    let (model, tokenizer) = tiny(model_dir.path());
    let task = Task {
        id: "ablate".into(),
        task: "needle".into(),
        prefix: "t5 ".into(),
        documents: vec![
            "t3 t4 t5 t6 ".into(),
            "t3 t9 t4 ".into(),
            "t5 t6 t3 ".into(),
        ],
        question: "t8 t2 ".into(),
        answers: vec!["t9".into()],
        match_mode: Match::Any,
    };
    // BOS and "t5", then 4 rows of the first document: "t9" is row 1 of the second.
    let anchor = tokenizer.prompt_ids(&task.prefix).unwrap().len();
    assert_eq!(
        answer_positions(&tokenizer, &task).unwrap(),
        vec![vec![], vec![(anchor + 5) as u32], vec![]]
    );
    let evaluator = Evaluator::new(&model, &tokenizer, ReuseConfig::default(), 4);
    let variants = vec![
        Variant {
            name: "visible".into(),
            spec: "--fusion visible --ratio 1".into(),
            config: ReuseConfig {
                ratio: 1.0,
                prophet: prophetkv_reuse::ProphetOptions {
                    fusion: Fusion::Visible,
                    ..Default::default()
                },
                ..ReuseConfig::default()
            },
        },
        Variant {
            name: "naive".into(),
            spec: "--strategy naive".into(),
            config: ReuseConfig {
                strategy: StrategyKind::Naive,
                ..ReuseConfig::default()
            },
        },
    ];
    let mut seen = 0;
    let trials = ablate(&evaluator, &[task], &variants, |done, total, latest| {
        assert_eq!((total, latest.len()), (1, 3));
        seen = done;
    })
    .unwrap();
    assert_eq!(seen, 1);
    let [full, visible, naive] = &trials[..] else {
        panic!("{trials:?}")
    };
    assert_eq!(full.variant, "full");
    assert_eq!(visible.prediction, full.prediction);
    assert!(visible.agrees_with_full);
    assert_eq!(visible.answer_rows, Some((1, 1)));
    assert_eq!(naive.answer_rows, Some((1, 0)));
    // The reference answer scores the same under full and a variant at ratio 1.
    let (f, v) = (full.gold_logprob.unwrap(), visible.gold_logprob.unwrap());
    assert!(f < 0.0 && (f - v).abs() < 1e-3, "{f} vs {v}");
    let rows = summarize(&trials, &variants);
    assert_eq!(rows[1].answer_covered, Some(1.0));
    assert_eq!(rows[2].answer_recall, Some(0.0));
}
