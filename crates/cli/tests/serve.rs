//! `prophetkv serve` over real HTTP on a tiny model: answers, streaming,
//! concurrency with batched decode, cancellation, overload, SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prophetkv_model::testing::{tiny_text, tokens, write_tiny, Tiny};
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

fn start(extra: &[&str]) -> Server {
    let model = tempfile::tempdir().unwrap();
    write_tiny(model.path(), Tiny::Gemma3);
    let data = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_prophetkv"))
        .arg("serve")
        .arg("--model")
        .arg(model.path())
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--port",
            &port.to_string(),
            "--dtype",
            "f32",
            "--instruction",
            "t5 ",
            "--model-name",
            "tiny",
        ])
        .args(extra)
        .env_remove("PROPHETKV_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let server = Server {
        child,
        base,
        _dirs: (model, data),
    };
    wait_ready(&server);
    server
}

fn wait_ready(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = agent().get(format!("{}/ready", server.base)).call() {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let mut r = agent()
        .post(format!("{}{path}", server.base))
        .send_json(&body)
        .unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Streams a completion; returns the concatenated text and whether [DONE] came.
fn stream_text(server: &Server, body: Value) -> (String, bool) {
    let r = agent()
        .post(format!("{}/v1/completions", server.base))
        .send_json(&body)
        .unwrap();
    assert_eq!(r.status(), 200);
    let reader = BufReader::new(r.into_body().into_reader());
    let mut text = String::new();
    for line in reader.lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            return (text, true);
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        text.push_str(chunk["choices"][0]["text"].as_str().unwrap_or_default());
    }
    (text, false)
}

fn metric(server: &Server, name: &str) -> f64 {
    let mut r = agent()
        .get(format!("{}/metrics", server.base))
        .call()
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
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
    let (status, whole) = post(&server, "/v1/completions", completion(10, 3));
    assert_eq!(status, 200, "{whole}");
    let expected = whole["choices"][0]["text"].as_str().unwrap().to_string();
    let mut streamed = completion(10, 3);
    streamed["stream"] = json!(true);
    let results: Vec<(String, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| s.spawn(|| stream_text(&server, streamed.clone())))
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
        metric(&server, "prophetkv_decode_batch_max") > 1.0,
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
    let (status, body) = post(&server, "/v1/completions", completion(3, 5));
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&server, "prophetkv_running_sequences") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the disconnected stream still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let generated = metric(&server, "prophetkv_generated_tokens_total");
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
                let server = &server;
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
    assert_eq!(post(&server, "/v1/completions", completion(2, 30)).0, 200);
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut server = start(&[]);
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
