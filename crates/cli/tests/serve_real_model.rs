//! `prophetkv serve` on the default model over real HTTP: a needle question
//! over registered and inline documents, streamed and not, and the official
//! `openai` Python package driving the server.
//!
//! Needs `models/gemma-3-270m-q4_k_m.gguf` and, for the SDK test, the
//! `.venv` with `openai` installed (`make test` sets up both).

mod common;

use common::{run_venv_script, streamed_text, Server};
use prophetkv_eval::task::{load_tasks, Task};
use prophetkv_model::testing::{default_model_path, workspace_root};
use prophetkv_model::TextTokenizer;
use serde_json::{json, Value};

/// Dev task `code-s102-n8-t2000-3` cut to 6 documents (~1,560 tokens; the
/// needle is in document 4).
fn task() -> Task {
    let mut task = load_tasks(&workspace_root().join("tasks/dev-niah.jsonl"))
        .unwrap()
        .into_iter()
        .find(|t| t.id == "code-s102-n8-t2000-3")
        .unwrap();
    task.documents.truncate(6);
    task
}

fn start(task: &Task) -> Server {
    Server::start(
        &default_model_path(),
        &["--dtype", "f32", "--instruction", &task.prefix],
    )
}

/// Checks the `prophetkv` object of a prophetkv@0.2 answer over the task's
/// documents: the ratio's share of the eligible rows is recomputed, the rest
/// of the document rows are reused, and the fresh rows are the question's.
fn assert_stats_match_the_ratio(stats: &Value, doc_tokens: u64, anchor: u64, query: u64) {
    let n = |k: &str| {
        stats[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {stats}"))
    };
    assert_eq!(stats["strategy"], "prophetkv");
    let (eligible, selected) = (n("eligible_tokens"), n("selected_tokens"));
    assert_eq!(selected, (0.2 * eligible as f64).floor() as u64, "{stats}");
    assert_eq!(n("reused_tokens") + selected, doc_tokens, "{stats}");
    assert_eq!(n("recomputed_tokens"), selected + query, "{stats}");
    assert_eq!(n("context_tokens"), anchor + doc_tokens + query, "{stats}");
}

#[test]
fn needle_question_is_answered_over_http_with_documents_by_id_and_inline_streamed_and_not() {
    let task = task();
    let answer = &task.answers[0];
    let tokenizer = TextTokenizer::from_path(&default_model_path()).unwrap();
    let anchor = tokenizer.prompt_ids(&task.prefix).unwrap().len() as u64;
    let query = tokenizer.encode(&task.question).unwrap().len() as u64;
    let server = start(&task);

    let docs: Vec<Value> = task
        .documents
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"id": format!("doc-{i}"), "text": text}))
        .collect();
    let (status, registered) = server.post("/v1/documents", &json!({ "documents": docs }));
    assert_eq!(status, 201, "{registered}");
    let doc_tokens: u64 = registered["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["tokens"].as_u64().unwrap())
        .sum();
    let expected_tokens: usize = task
        .documents
        .iter()
        .map(|d| tokenizer.encode(d).unwrap().len())
        .sum();
    assert_eq!(doc_tokens, expected_tokens as u64);

    let by_id: Vec<Value> = (0..6).map(|i| json!({"id": format!("doc-{i}")})).collect();
    let inline: Vec<Value> = task.documents.iter().map(|d| json!({"text": d})).collect();
    let request = |documents: &[Value], stream: bool| {
        json!({
            "prompt": task.question, "max_tokens": 8, "temperature": 0, "stream": stream,
            "documents": documents,
            "kv_reuse": {"strategy": "prophetkv", "recompute_ratio": 0.2},
        })
    };

    // By id, not streamed: each document's KV was computed either by the
    // idle engine after registration or by this first use.
    let (status, body) = server.post("/v1/completions", &request(&by_id, false));
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains(answer.as_str()), "answered {text:?}");
    assert_stats_match_the_ratio(&body["prophetkv"], doc_tokens, anchor, query);
    let hits = &body["prophetkv"]["cache_hits"];
    assert_eq!(
        hits["computed"].as_u64().unwrap() + hits["host"].as_u64().unwrap(),
        6,
        "{hits}"
    );

    // Inline, streamed: the same text comes from the memory tier.
    let (chunks, done) = server.stream("/v1/completions", &request(&inline, true));
    assert!(done, "the stream ended without [DONE]");
    let text = streamed_text(&chunks);
    assert!(text.contains(answer.as_str()), "streamed {text:?}");
    let stats = &chunks.last().unwrap()["prophetkv"];
    assert_stats_match_the_ratio(stats, doc_tokens, anchor, query);
    assert_eq!(stats["cache_hits"]["host"], 6, "{stats}");

    // Chat by id, streamed.
    let chat = json!({
        "messages": [{"role": "user", "content": "What is the access code for the Aurora project?"}],
        "max_tokens": 12, "temperature": 0, "stream": true, "documents": by_id,
    });
    let (chunks, done) = server.stream("/v1/chat/completions", &chat);
    assert!(done);
    let text = streamed_text(&chunks);
    assert!(text.contains(answer.as_str()), "chat streamed {text:?}");
}

#[test]
fn the_official_openai_python_package_drives_the_server() {
    let task = task();
    let server = start(&task);
    let tasks = workspace_root().join("tasks/dev-niah.jsonl");
    let tasks = tasks.to_string_lossy();
    let args = ["--base-url", server.base.as_str(), "--tasks", &tasks];
    let stdout = run_venv_script("openai_sdk.py", &args);
    assert!(stdout.contains("all checks passed"));
}

#[test]
fn the_readmes_curl_and_python_examples_run_as_written() {
    let server = Server::start(&default_model_path(), &[]);
    let readme = workspace_root().join("README.md");
    let readme = readme.to_string_lossy();
    let args = ["--base-url", server.base.as_str(), "--readme", &readme];
    let stdout = run_venv_script("readme_examples.py", &args);
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn the_web_page_registers_documents_answers_and_marks_what_was_recomputed() {
    let server = Server::start(&default_model_path(), &["--api-keys", "ui-key"]);
    let shots = tempfile::tempdir().unwrap();
    let shots = shots.path().to_string_lossy().into_owned();
    let tasks = workspace_root().join("tasks/dev-niah.jsonl");
    let tasks = tasks.to_string_lossy();
    let args = [
        "--base-url",
        server.base.as_str(),
        "--screenshots",
        &shots,
        "--api-key",
        "ui-key",
        "--tasks",
        &tasks,
    ];
    let stdout = run_venv_script("ui_check.py", &args);
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
