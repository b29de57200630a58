//! `prophetkv serve` over real HTTP on a tiny model: answers, streaming,
//! concurrency with batched decode, cancellation, overload, SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{agent, run_venv_script, streamed_text, Server, TinyServer};
use prophetkv_model::testing::{tiny_text, tokens};
use serde_json::{json, Value};

fn start(extra: &[&str]) -> TinyServer {
    TinyServer::start(extra, &[], None)
}

fn completion(max_tokens: usize, seed: u64) -> Value {
    json!({
        "prompt": tiny_text(&tokens(4, seed)), "max_tokens": max_tokens, "temperature": 0,
        "documents": [{"text": tiny_text(&tokens(40, 1))}, {"text": tiny_text(&tokens(30, 2))}],
    })
}

#[test]
fn sixteen_concurrent_streams_complete_with_batched_decode_and_match_the_non_streamed_text() {
    let server = start(&["--max-batch", "16"]);
    let (status, whole) = server.post("/v1/completions", &completion(10, 3));
    assert_eq!(status, 200, "{whole}");
    let expected = whole["choices"][0]["text"].as_str().unwrap().to_string();
    let mut streamed = completion(10, 3);
    streamed["stream"] = json!(true);
    let results: Vec<(String, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let (chunks, done) = server.stream("/v1/completions", &streamed);
                    (streamed_text(&chunks), done)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (text, done) in &results {
        assert!(done, "a stream ended without [DONE]");
        assert_eq!(
            text, &expected,
            "greedy streams must match the non-streamed text"
        );
    }
    assert!(
        server.metric("prophetkv_decode_batch_max") > 1.0,
        "decode batch never exceeded 1"
    );
}

#[test]
fn a_client_that_disconnects_mid_stream_frees_its_slot() {
    let server = start(&["--max-batch", "1"]);
    // Nearly the whole 1,024-token context of the tiny model. A raw socket,
    // so that dropping it really closes the connection mid-stream.
    let mut body = completion(900, 4);
    body["stream"] = json!(true);
    let body = body.to_string();
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut socket = std::net::TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).unwrap();
    socket.write_all(body.as_bytes()).unwrap();
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    while !line.contains("data: ") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended before its first chunk"
        );
    }
    drop(reader); // disconnect
                  // With a batch of one, this request runs only once the first is cancelled.
    let (status, body) = server.post("/v1/completions", &completion(3, 5));
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("prophetkv_running_sequences") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the disconnected stream still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let generated = server.metric("prophetkv_generated_tokens_total");
    assert!(
        generated < 900.0,
        "the cancelled stream ran to the end ({generated} tokens)"
    );
}

#[test]
fn overload_gets_429_with_retry_after_and_the_rest_succeed() {
    let server = start(&["--max-batch", "1", "--max-queue", "2"]);
    let statuses: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let server = &*server;
                s.spawn(move || {
                    let r = agent()
                        .post(format!("{}/v1/completions", server.base))
                        .send_json(completion(20, 10 + i))
                        .unwrap();
                    let retry = r
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap_or_default().to_string());
                    (r.status().as_u16(), retry)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|s| s.0 == 200).count();
    let refused: Vec<_> = statuses.iter().filter(|s| s.0 == 429).collect();
    assert!(ok >= 1 && !refused.is_empty(), "{statuses:?}");
    assert_eq!(ok + refused.len(), 12, "{statuses:?}");
    assert!(
        refused.iter().all(|s| s.1.is_some()),
        "429 without Retry-After"
    );
    // Still healthy afterwards.
    assert_eq!(server.post("/v1/completions", &completion(2, 30)).0, 200);
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut tiny = start(&[]);
    let pid = tiny.server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = tiny.server.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `body` (raw bytes) to `path` over a plain socket with an optional
/// bearer key; the status and the error message (the whole body when it is
/// not an OpenAI error). The response is read while the body is still being
/// written: a server may answer 413 before it has read a large body and
/// close the connection, and a client that only reads after writing would
/// then see a reset instead of the answer.
fn raw(server: &Server, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut socket = std::net::TcpStream::connect(&addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut writer = socket.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        // May fail once the server has answered and closed: that is fine.
        let _ = writer.write_all(request.as_bytes());
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match std::io::Read::read(&mut socket, &mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if !response.is_empty() => {
                eprintln!("read ended with {e} after the response");
                break;
            }
            Err(e) => panic!("{path}: no response: {e}"),
        }
        if complete(&response) {
            break;
        }
    }
    drop(socket);
    let _ = sending.join();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{path}: not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string());
    (status, message)
}

/// Whether `response` holds the head and the whole body its Content-Length announces.
fn complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .is_some_and(|n| body.len() >= n)
}

#[test]
fn malformed_requests_over_http_get_the_right_status_and_a_clear_message() {
    let server = start(&["--api-keys", "k1"]);
    let key = Some("k1");
    let doc = tiny_text(&tokens(20, 1));
    let long = tiny_text(&tokens(1100, 2)); // the tiny model's context is 1,024
    let big = format!(r#"{{"prompt": "{}"}}"#, "t7 ".repeat((10 << 20) / 3));
    let cases: Vec<(&str, &str, Option<&str>, String, u16)> = vec![
        ("bad JSON", "/v1/completions", key, r#"{"prompt": "#.into(), 400),
        ("wrong-typed field", "/v1/completions", key, r#"{"prompt": "t3", "max_tokens": "ten"}"#.into(), 400),
        ("missing API key", "/v1/completions", None, r#"{"prompt": "t3"}"#.into(), 401),
        ("wrong API key", "/v1/completions", Some("nope"), r#"{"prompt": "t3"}"#.into(), 401),
        ("unknown document id", "/v1/completions", key, r#"{"prompt": "t3", "documents": [{"id": "missing"}]}"#.into(), 404),
        ("unknown model", "/v1/completions", key, r#"{"prompt": "t3", "model": "gpt-4o"}"#.into(), 404),
        ("unknown route", "/v1/embeddings", key, r#"{"input": "t3"}"#.into(), 404),
        ("10 MB body", "/v1/completions", key, big, 413),
        ("context too long", "/v1/completions", key, json!({"prompt": long}).to_string(), 400),
        ("recompute_ratio 2", "/v1/completions", key, json!({"prompt": "t3", "documents": [{"text": doc}], "kv_reuse": {"recompute_ratio": 2}}).to_string(), 400),
        ("unknown strategy", "/v1/completions", key, json!({"prompt": "t3", "kv_reuse": {"strategy": "magic"}}).to_string(), 400),
        ("empty message list", "/v1/chat/completions", key, r#"{"messages": []}"#.into(), 400),
        ("last message not from the user", "/v1/chat/completions", key, r#"{"messages": [{"role": "assistant", "content": "t3"}]}"#.into(), 400),
        ("document with id and text", "/v1/completions", key, r#"{"prompt": "t3", "documents": [{"id": "a", "text": "t4"}]}"#.into(), 400),
        ("empty document list to register", "/v1/documents", key, r#"{"documents": []}"#.into(), 400),
        ("document longer than the context", "/v1/documents", key, json!({"text": long}).to_string(), 422),
        ("an unknown field", "/v1/completions", key, r#"{"prompt": "t3", "temprature": 0}"#.into(), 400),
        ("two choices", "/v1/completions", key, r#"{"prompt": "t3", "n": 2}"#.into(), 400),
        ("penalty out of range", "/v1/completions", key, r#"{"prompt": "t3", "frequency_penalty": 5}"#.into(), 400),
    ];
    println!("| request | status | message |\n|---|---:|---|");
    for (what, path, key, body, expected) in &cases {
        let (status, message) = raw(&server, path, *key, body);
        println!("| {what} | {status} | {message} |");
        assert_eq!(status, *expected, "{what}: {message}");
        assert!(
            !message.is_empty() && !message.starts_with('{'),
            "{what}: {message}"
        );
    }
    // Nothing was lost: the server still answers.
    let (status, message) = raw(
        &server,
        "/v1/completions",
        key,
        r#"{"prompt": "t3", "max_tokens": 2}"#,
    );
    assert_eq!(status, 200, "{message}");
}

#[test]
fn the_openapi_document_passes_openapi_spec_validator() {
    let server = start(&[]);
    let stdout = run_venv_script("openapi_check.py", &["--base-url", &server.base]);
    assert!(stdout.contains("openapi document valid"), "{stdout}");
}

#[test]
fn the_health_subcommand_passes_on_a_ready_server_and_fails_on_a_closed_port() {
    let server = start(&[]);
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let ready = Command::new(env!("CARGO_BIN_EXE_prophetkv"))
        .args(["health", "--port", &port])
        .output()
        .unwrap();
    assert!(ready.status.success(), "{ready:?}");
    assert_eq!(String::from_utf8_lossy(&ready.stdout).trim(), "/ready 200");
    let closed = common::free_port().to_string();
    let down = Command::new(env!("CARGO_BIN_EXE_prophetkv"))
        .args(["health", "--port", &closed])
        .output()
        .unwrap();
    assert!(!down.status.success());
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: connecting to 127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn random_weights_are_served_one_byte_a_token_and_named_in_the_model_list() {
    let shape = tempfile::tempdir().unwrap();
    let config = shape.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 300, "max_position_embeddings": 2048}"#,
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // No model file at --model: the random weights replace it.
    let server = Server::start(
        shape.path(),
        &[
            "--random-weights",
            config,
            "--instruction",
            "Read: ",
            "--model-name",
            "rnd",
        ],
    );
    let mut r = agent()
        .get(format!("{}/v1/models", server.base))
        .call()
        .unwrap();
    let models: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(models["data"][0]["id"], "rnd");
    assert_eq!(models["data"][0]["random_weights"], config);
    let (status, body) = server.post(
        "/v1/completions",
        &json!({"prompt": "Paris?", "max_tokens": 3, "temperature": 0,
                "documents": [{"text": "France's capital is Paris."}]}),
    );
    assert_eq!(status, 200, "{body}");
    // BOS, then one token per byte of the instruction, the document and the prompt.
    let bytes = "Read: ".len() + "France's capital is Paris.".len() + "Paris?".len();
    let prompt_tokens = body["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert!(
        (1 + bytes..=1 + bytes + 8).contains(&prompt_tokens),
        "{prompt_tokens} tokens for {bytes} bytes"
    );
}
