//! `prophetkv generate` as a user runs it: JSON output and one-line errors.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use candle_core::quantized::gguf_file;
use prophetkv_model::testing::default_model_path;

fn generate(model: &Path, prompt: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prophetkv"))
        .args(["generate", "--model"])
        .arg(model)
        .args(["--prompt", prompt])
        .args(extra)
        .env_remove("PROPHETKV_MODEL")
        // Errors must stay one line even when backtraces are captured.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run prophetkv")
}

/// Asserts a clean failure: non-zero exit, one stderr line containing `needle`, no panic.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "{stderr:?} does not mention {needle:?}"
    );
}

#[test]
fn json_output_has_prompt_ids_output_ids_text_and_descending_top_logits() {
    let out = generate(
        &default_model_path(),
        "The capital of France is",
        &["--max-tokens", "4", "--top-logprobs", "5", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["prompt_ids"][0], 2, "BOS first");
    assert_eq!(v["output_ids"].as_array().unwrap().len(), 4);
    assert!(v["text"].as_str().is_some());
    let top = v["first_step_top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    let logits: Vec<f64> = top.iter().map(|p| p[1].as_f64().unwrap()).collect();
    assert!(
        logits.windows(2).all(|w| w[0] >= w[1]),
        "not descending: {logits:?}"
    );
    assert_eq!(top[0][0], v["output_ids"][0], "greedy picks the top logit");
}

#[test]
fn missing_model_file_is_a_one_line_error() {
    let out = generate(Path::new("/nonexistent/model.gguf"), "hi", &[]);
    assert_one_line_error(&out, "cannot read model at /nonexistent/model.gguf");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("No such file").count(),
        1,
        "cause repeated: {stderr}"
    );
}

#[test]
fn file_that_is_not_a_model_is_a_one_line_error() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"this is not a gguf file at all").unwrap();
    let out = generate(f.path(), "hi", &[]);
    assert_one_line_error(&out, "not a GGUF file");
}

#[test]
fn truncated_gguf_is_a_one_line_error() {
    let bytes = std::fs::read(default_model_path()).unwrap();
    // Cut inside the tensor data, then inside the header (its vocabulary).
    for (cut, needle) in [
        (bytes.len() / 2, "truncated"),
        (1 << 20, "cannot parse GGUF header"),
    ] {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes[..cut]).unwrap();
        let out = generate(f.path(), "hi", &[]);
        assert_one_line_error(&out, needle);
    }
}

#[test]
fn unknown_architecture_is_a_one_line_error() {
    // GGUF naming an architecture we do not implement.
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let arch = gguf_file::Value::String("phi3".into());
    gguf_file::write(f.as_file_mut(), &[("general.architecture", &arch)], &[]).unwrap();
    let out = generate(f.path(), "hi", &[]);
    assert_one_line_error(&out, "unsupported architecture \"phi3\"");

    // And a Hugging Face directory of an unknown model type.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "gpt_neox"}"#,
    )
    .unwrap();
    let out = generate(dir.path(), "hi", &[]);
    assert_one_line_error(&out, "unsupported architecture \"gpt_neox\"");
}

#[test]
fn prompt_longer_than_the_context_is_a_one_line_error() {
    // Gemma 3 270M has a 32,768-token context; Gemma splits digits, so this
    // 40,000-byte prompt (under the OS's argument limit) is 40,000 tokens.
    let prompt = "0123456789".repeat(4_000);
    let out = generate(&default_model_path(), &prompt, &[]);
    assert_one_line_error(&out, "exceeds the model's context of 32768 tokens");
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["generate", "--help"],
        vec!["ingest", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_prophetkv"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

#[test]
fn bad_reuse_input_is_a_clear_error() {
    let model = default_model_path();
    let doc = ["--document", "Document 1:\nThe code is 123.\n\n"];
    // Ratio outside [0, 1].
    let out = generate(
        &model,
        "Question: the code?",
        &[&doc[..], &["--ratio", "2"]].concat(),
    );
    assert_one_line_error(&out, "recompute_ratio must be within [0, 1], got 2");
    // An empty document.
    let out = generate(
        &model,
        "Question: the code?",
        &[&doc[..], &["--document", ""]].concat(),
    );
    assert_one_line_error(&out, "document 1 is empty");
    // A prompt that does not fit the model's context (40,000 digit tokens).
    let long = "0123456789".repeat(4_000);
    let out = generate(&model, "Question: the code?", &["--document", &long]);
    assert_one_line_error(&out, "exceeds the model's context of 32768 tokens");
    // A documents file that is not a JSON list of strings.
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"{\"not\": \"a list\"}").unwrap();
    let path = f.path().to_str().unwrap();
    let out = generate(&model, "q", &["--documents-file", path]);
    assert_one_line_error(&out, "must hold a JSON list of strings");
    // An unknown strategy: clap's usage error names the valid ones.
    let out = generate(&model, "q", &["--strategy", "magic"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(
            "unknown strategy \"magic\" (full, naive, prophetkv, cacheblend, epic, random)"
        ),
        "{stderr}"
    );
}

#[test]
fn documents_json_output_carries_reuse_stats() {
    let docs = [
        "Document 1:\nThe harbor town grew slowly along the river.\n\n",
        "Document 2:\nThe access code for the Aurora project is 74547.\n\n",
    ];
    let out = generate(
        &default_model_path(),
        "Question: What is the access code for the Aurora project?\nAnswer:",
        &[
            "--prefix",
            "Read the documents below and answer the question at the end.\n\n",
            "--document",
            docs[0],
            "--document",
            docs[1],
            "--strategy",
            "prophetkv",
            "--ratio",
            "0.5",
            "--max-tokens",
            "6",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stats = &v["stats"];
    assert_eq!(stats["strategy"], "prophetkv");
    let eligible = stats["eligible"].as_u64().unwrap();
    assert!(eligible > 0, "the second document is eligible");
    assert_eq!(stats["selected"].as_u64().unwrap(), eligible / 2);
    assert_eq!(stats["selected_positions"].as_array().unwrap().len(), 2);
    assert_eq!(
        stats["context_tokens"].as_u64().unwrap() as usize,
        v["prompt_ids"].as_array().unwrap().len()
    );
    for stage in [
        "lookup_ms",
        "assembly_ms",
        "probe_ms",
        "recompute_ms",
        "first_token_ms",
    ] {
        assert!(stats["timings"][stage].as_f64().is_some(), "{stage}");
    }
}

fn prophetkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prophetkv"))
        .args(args)
        .env_remove("PROPHETKV_MODEL")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run prophetkv")
}

#[test]
fn tasks_gen_is_deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let model = default_model_path();
    let gen = |seed: &str, name: &str| {
        let out = dir.path().join(name);
        let o = prophetkv(&[
            "tasks",
            "gen",
            "--model",
            model.to_str().unwrap(),
            "--kind",
            "rag",
            "--n",
            "3",
            "--context-tokens",
            "600",
            "--docs",
            "3",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out).unwrap()
    };
    let (a, b, c) = (
        gen("7", "a.jsonl"),
        gen("7", "b.jsonl"),
        gen("8", "c.jsonl"),
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.lines().count(), 3);
}

fn tiny_task_line(id: &str) -> String {
    format!(
        r#"{{"id": "{id}", "task": "tiny", "prefix": "t5 ", "documents": ["t1 t2 t3 t4 t6 t8 t9 ", "t10 t11 t12 t13 t14 t15 ", "t20 t21 t22 t23 t24 "], "question": "t30 t31 ", "answers": ["t7"]}}"#
    )
}

/// A directory holding a tiny model (`model/`) and a task file of `lines`.
fn tiny_model_and_tasks(
    lines: &[String],
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    prophetkv_model::testing::write_tiny(&model, prophetkv_model::testing::Tiny::Gemma3);
    let tasks = dir.path().join("t.jsonl");
    std::fs::write(&tasks, lines.join("\n") + "\n").unwrap();
    (dir, model, tasks)
}

/// Runs `prophetkv eval` on a tiny model over a task file of `lines`;
/// returns the output and the run directory.
fn eval_tiny(lines: &[String], extra: &[&str]) -> (Output, std::path::PathBuf, tempfile::TempDir) {
    let (dir, _model, _tasks) = tiny_model_and_tasks(lines);
    let out = dir.path().join("out");
    (eval_in(dir.path(), &out, extra), out, dir)
}

/// Runs `prophetkv eval` on the model and tasks of a `tiny_model_and_tasks`
/// directory into `out`.
fn eval_in(dir: &Path, out: &Path, extra: &[&str]) -> Output {
    let (model, tasks) = (dir.join("model"), dir.join("t.jsonl"));
    let mut args = vec![
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--tasks",
        tasks.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    prophetkv(&args)
}

#[test]
fn eval_on_the_tiny_model_prints_the_table_and_writes_reports_and_plots() {
    let lines = [tiny_task_line("a"), tiny_task_line("b")];
    let extra = [
        "--strategies",
        "full,naive,prophetkv",
        "--ratios",
        "0.5",
        "--max-new-tokens",
        "3",
    ];
    let (o, out, _dir) = eval_tiny(&lines, &extra);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("2/2 tasks"),
        "no plain progress lines: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| all | prophetkv | 0.5 | 2 |"), "{stdout}");
    for f in ["results.json", "results.md", "accuracy_vs_ratio.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
}

#[test]
fn eval_against_another_run_pairs_its_prophetkv_arm_task_by_task() {
    let lines = [tiny_task_line("a"), tiny_task_line("b")];
    let common = [
        "--strategies",
        "full,prophetkv",
        "--ratios",
        "0.5",
        "--max-new-tokens",
        "2",
    ];
    let (o, first, dir) = eval_tiny(&lines, &[&common[..], &["--spread", "0"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let second = dir.path().join("second");
    let against = [&common[..], &["--against", first.to_str().unwrap()]].concat();
    let o = eval_in(dir.path(), &second, &against);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let row = format!(
        "| prophetkv@0.5 | prophetkv@0.5 ({}) | 2 |",
        first.display()
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(&row), "{row}");
    // --status pairs the same way; a directory without outcomes is an error.
    let status = eval_in(dir.path(), &second, &[&against[..], &["--status"]].concat());
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains(&row), "{status}");
    // A finished run's status is not called partial.
    assert!(status.starts_with("2 of 2 tasks done in "), "{status}");
    assert!(!status.contains("partial"), "{status}");
    let empty = dir.path().join("empty");
    let bad = [&common[..], &["--against", empty.to_str().unwrap()]].concat();
    assert_one_line_error(&eval_in(dir.path(), &second, &bad), "no outcomes there");
}

#[test]
fn eval_with_a_malformed_task_file_names_the_line_and_writes_no_results() {
    let lines = [tiny_task_line("a"), r#"{"id": "b"}"#.to_string()];
    let (o, out, _dir) = eval_tiny(&lines, &[]);
    assert_one_line_error(&o, "line 2");
    assert!(!out.join("results.json").exists());
    assert!(!out.join("results.md").exists());
}

#[test]
fn eval_status_reads_the_journal_and_a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("t.jsonl");
    std::fs::write(&tasks, tiny_task_line("a") + "\n").unwrap();
    let out = dir.path().join("out");
    let args = [
        "eval",
        "--tasks",
        tasks.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--status",
    ];
    let o = prophetkv(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("0 of 1 tasks done"));
    assert!(!out.join("results.json").exists());
    // The reader goes away before anything is written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_prophetkv"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(o.status.success(), "{stderr}");
}

#[test]
fn ablate_on_the_tiny_model_prints_each_variant_and_a_bad_variant_is_a_one_line_error() {
    let (dir, model, tasks) = tiny_model_and_tasks(&[tiny_task_line("a"), tiny_task_line("b")]);
    let out = dir.path().join("out");
    let run_with = |variant: &str, extra: &[&str]| {
        let args = [
            "ablate",
            "--model",
            model.to_str().unwrap(),
            "--tasks",
            tasks.to_str().unwrap(),
            "--n",
            "1",
            "--max-new-tokens",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--variant",
            "naive=--strategy naive",
            "--variant",
            variant,
        ];
        prophetkv(&[&args[..], extra].concat())
    };
    let run = |variant: &str| run_with(variant, &[]);
    let o = run("vis=--fusion visible --ratio 0.5");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    for row in [
        "| full | `--strategy full` | 1 |",
        "| naive | `--strategy naive` | 1 |",
        "| vis | `--fusion visible --ratio 0.5` | 1 |",
    ] {
        assert!(stdout.contains(row), "{row} missing: {stdout}");
    }
    let trials = std::fs::read_to_string(out.join("trials.jsonl")).unwrap();
    assert_eq!(
        trials.lines().count(),
        3,
        "one task (--n 1) × full + 2 variants"
    );
    assert!(out.join("ablation.md").is_file());
    // Every task done: the status is not called partial.
    let status = run_with("vis=--fusion visible --ratio 0.5", &["--status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.starts_with("1 of 1 tasks done by full and every variant in "),
        "{status}"
    );
    assert!(!status.contains("partial"), "{status}");

    assert_one_line_error(&run("bad=--fusion median"), "variant bad");
    assert_one_line_error(&run("--fusion max"), "NAME=OPTIONS");
}

#[test]
fn serve_on_a_device_this_binary_cannot_use_is_a_one_line_error() {
    let data = tempfile::tempdir().unwrap();
    for (device, needle) in [
        ("cuda", "built without CUDA support"),
        ("tpu", "unknown device \"tpu\" (cpu, cuda or cuda:N)"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_prophetkv"))
            .args(["serve", "--device", device, "--data-dir"])
            .arg(data.path())
            .output()
            .unwrap();
        assert_one_line_error(&out, needle);
    }
}

#[test]
fn serve_with_an_unknown_fusion_is_a_one_line_error() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_prophetkv"))
        .args(["serve", "--fusion", "median", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_one_line_error(&out, "\"median\" is not one of mean, max, visible");
}
