//! Faults under the store, each over real HTTP against the real binary on the
//! tiny model: the registry damaged at rest, SIGKILL during streaming and
//! during registration, Redis killed mid-request and restarted, and a full
//! disk during registration and serving. After each: no panic, the server
//! answers, no document registered before the fault is lost or served
//! wrong, and a failed write is reported, not half-kept.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{agent, free_port, streamed_text, TINY_ARGS};
use prophetkv_model::testing::{tiny_text, tokens, write_tiny, Tiny};
use prophetkv_store::testing::RedisServer;
use serde_json::{json, Value};

/// `prophetkv serve` on the tiny model over a data directory that outlives
/// it, so that it can be killed and started again on the same state.
struct Daemon {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(model: &Path, data: &Path, log: &Path, extra: &[&str]) -> Daemon {
        let port = free_port();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_prophetkv"))
            .arg("serve")
            .arg("--model")
            .arg(model)
            .arg("--data-dir")
            .arg(data)
            .args(["--port", &port.to_string()])
            .args(TINY_ARGS)
            .args(extra)
            .env_remove("PROPHETKV_REDIS_URL")
            .env_remove("PROPHETKV_API_KEYS")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        let daemon = Daemon {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !daemon.answers() {
            assert!(
                Instant::now() < deadline,
                "the server did not become ready:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn answers(&self) -> bool {
        agent()
            .get(format!("{}/ready", self.base))
            .call()
            .is_ok_and(|r| r.status() == 200)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as an OOM killer or a power cut would end it.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let agent = agent();
        let response = match (method, body) {
            ("GET", _) => agent.get(&url).call(),
            ("DELETE", _) => agent.delete(&url).call(),
            (_, Some(body)) => agent.post(&url).send_json(body),
            (_, None) => agent.post(&url).send_empty(),
        };
        let mut r = response.unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn register(&self, id: &str, text: &str) -> (u16, Value) {
        self.request(
            "POST",
            "/v1/documents",
            Some(&json!({"id": id, "text": text})),
        )
    }

    /// The greedy answer to a question over `documents` (ids).
    fn answer(&self, documents: &[&str]) -> String {
        let docs: Vec<Value> = documents.iter().map(|id| json!({"id": id})).collect();
        let body = json!({
            "prompt": tiny_text(&tokens(4, 3)), "max_tokens": 8, "temperature": 0,
            "documents": docs,
        });
        let (status, v) = self.request("POST", "/v1/completions", Some(&body));
        assert_eq!(status, 200, "{v}");
        v["choices"][0]["text"].as_str().unwrap().to_string()
    }

    /// Ids and texts of every registered document, page by page.
    fn listed(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let (status, v) = self.request("GET", &format!("/v1/documents?limit=100{after}"), None);
            assert_eq!(status, 200, "{v}");
            for d in v["data"].as_array().unwrap() {
                let id = d["id"].as_str().unwrap().to_string();
                let (_, full) = self.request("GET", &format!("/v1/documents/{id}"), None);
                out.push((id, full["text"].as_str().unwrap_or_default().to_string()));
            }
            match v["last_id"].as_str() {
                Some(last) if v["has_more"] == json!(true) => after = format!("&after={last}"),
                _ => return out,
            }
        }
    }

    fn assert_no_panic(&self) {
        let log = self.log_text();
        assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    }
}

/// The tiny model, a data dir and a log file, kept for the test's length.
struct Fixture {
    model: tempfile::TempDir,
    data: tempfile::TempDir,
    log: PathBuf,
    _logs: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let model = tempfile::tempdir().unwrap();
        write_tiny(model.path(), Tiny::Gemma3);
        let logs = tempfile::tempdir().unwrap();
        Fixture {
            model,
            data: tempfile::tempdir().unwrap(),
            log: logs.path().join("server.log"),
            _logs: logs,
        }
    }

    fn start(&self, extra: &[&str]) -> Daemon {
        self.start_in(self.data.path(), extra)
    }

    fn start_in(&self, data: &Path, extra: &[&str]) -> Daemon {
        Daemon::start(self.model.path(), data, &self.log, extra)
    }
}

fn doc_text(i: u64) -> String {
    tiny_text(&tokens(30, 100 + i))
}

/// Registers `n` documents `doc-0..n` and returns each one's answer.
fn register_documents(d: &Daemon, n: u64) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let id = format!("doc-{i}");
            let (status, v) = d.register(&id, &doc_text(i));
            assert_eq!(status, 201, "{v}");
            let answer = d.answer(&[&id]);
            (id, answer)
        })
        .collect()
}

/// Every document is listed with its text and answers as before.
fn assert_all_served(d: &Daemon, before: &[(String, String)]) {
    let listed = d.listed();
    for (i, (id, answer)) in before.iter().enumerate() {
        let text = listed
            .iter()
            .find(|(l, _)| l == id)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("{id} was lost; listed: {listed:?}"));
        assert_eq!(text, doc_text(i as u64), "{id}'s text changed");
        assert_eq!(&d.answer(&[id]), answer, "{id} is served differently");
    }
}

fn registry(data: &Path) -> PathBuf {
    data.join("registry.redb")
}

#[test]
fn a_registry_truncated_at_rest_is_rebuilt_with_every_document() {
    for keep in [0.5, 0.0] {
        let f = Fixture::new();
        let d = f.start(&[]);
        let before = register_documents(&d, 6);
        d.kill();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(registry(f.data.path()))
            .unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len((len as f64 * keep) as u64).unwrap();
        drop(file);

        let d = f.start(&[]);
        assert_all_served(&d, &before);
        d.assert_no_panic();
        let (status, _) = d.register("after", &doc_text(99));
        assert_eq!(status, 201, "registering after the rebuild");
        println!("ok: registry cut to {keep} of {len} bytes: all 6 documents served as before");
    }
}

#[test]
fn a_registry_overwritten_at_rest_is_rebuilt_and_never_serves_a_damaged_record() {
    // Garbage over a stored record's text, and over the file's header.
    for target in ["a record", "the header"] {
        let f = Fixture::new();
        let d = f.start(&[]);
        let before = register_documents(&d, 6);
        d.kill();
        let path = registry(f.data.path());
        let bytes = std::fs::read(&path).unwrap();
        // Every copy of the record (copy-on-write pages keep older ones).
        let text = doc_text(3);
        let at: Vec<usize> = match target {
            "a record" => (0..bytes.len() - text.len())
                .filter(|&i| bytes[i..].starts_with(text.as_bytes()))
                .collect(),
            _ => vec![0],
        };
        assert!(!at.is_empty(), "the record's text is in the file");
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let garbage: Vec<u8> = tokens(64, 5).iter().map(|&t| t as u8 ^ 0x5a).collect();
        for &offset in &at {
            file.seek(SeekFrom::Start(offset as u64)).unwrap();
            file.write_all(&garbage).unwrap();
        }
        drop(file);

        let d = f.start(&[]);
        assert_all_served(&d, &before);
        d.assert_no_panic();
        let kept = std::fs::read_dir(f.data.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("damaged")
            })
            .count();
        assert_eq!(kept, 1, "the damaged file is kept beside the rebuilt one");
        println!("ok: 64 bytes of garbage over {target} (at bytes {at:?}): rebuilt, all 6 documents served as before");
    }
}

#[test]
fn sigkill_during_streaming_loses_no_document_and_the_restarted_server_answers_the_same() {
    let f = Fixture::new();
    let d = f.start(&[]);
    let before = register_documents(&d, 4);
    let base = d.base.clone();
    let streaming = std::thread::spawn(move || {
        let body = json!({
            "prompt": tiny_text(&tokens(4, 8)), "max_tokens": 200, "stream": true,
            "documents": [{"id": "doc-0"}, {"text": doc_text(50)}],
        });
        // The stream is cut by the kill: any outcome but a hang is fine here.
        let _ = agent()
            .post(format!("{base}/v1/completions"))
            .send_json(&body)
            .map(|r| {
                let _ = std::io::read_to_string(r.into_body().into_reader());
            });
    });
    std::thread::sleep(Duration::from_millis(300));
    d.kill();
    streaming.join().unwrap();

    let d = f.start(&[]);
    assert_all_served(&d, &before);
    d.assert_no_panic();
    println!("ok: killed while streaming: 4 documents served as before");
}

#[test]
fn sigkill_during_registration_keeps_every_acknowledged_document_and_no_half_one() {
    let f = Fixture::new();
    let d = f.start(&[]);
    let base = d.base.clone();
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let registering = {
        let acknowledged = acknowledged.clone();
        std::thread::spawn(move || {
            for i in 0..10_000u64 {
                let body = json!({"id": format!("doc-{i}"), "text": doc_text(i)});
                match agent()
                    .post(format!("{base}/v1/documents"))
                    .send_json(&body)
                {
                    Ok(r) if r.status() == 201 => acknowledged.lock().unwrap().push(i),
                    _ => return,
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < 20 {
        assert!(Instant::now() < deadline, "registration made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill();
    registering.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();

    let d = f.start(&[]);
    let listed = d.listed();
    for i in &acknowledged {
        let id = format!("doc-{i}");
        assert!(
            listed.iter().any(|(l, _)| *l == id),
            "{id} was acknowledged, then lost"
        );
    }
    for (id, text) in &listed {
        let i: u64 = id.trim_start_matches("doc-").parse().unwrap();
        assert_eq!(text, &doc_text(i), "{id} is kept with another text");
        d.answer(&[id]);
    }
    d.assert_no_panic();
    println!(
        "ok: killed during registration: {} acknowledged, {} listed after restart, each whole",
        acknowledged.len(),
        listed.len()
    );
}

/// A Redis on a fixed port that can be killed and started again there.
struct Redis {
    server: Option<RedisServer>,
}

impl Redis {
    fn port(url: &str) -> u16 {
        url.trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn keys(url: &str) -> usize {
        let out = Command::new("redis-cli")
            .args(["-p", &Self::port(url).to_string(), "dbsize"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

#[test]
fn redis_killed_mid_request_and_restarted_costs_no_answer_and_is_used_again() {
    let f = Fixture::new();
    let mut redis = Redis {
        server: Some(RedisServer::start()),
    };
    let url = redis.server.as_ref().unwrap().url.clone();
    let d = f.start(&["--redis-url", &url]);
    let before = register_documents(&d, 3);
    assert!(Redis::keys(&url) > 0, "documents did not reach Redis");

    // Requests with new inline documents keep going while Redis dies.
    let stop = Arc::new(AtomicBool::new(false));
    let base = d.base.clone();
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            let mut i = 200;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({
                    "prompt": tiny_text(&tokens(4, 1)), "max_tokens": 6, "temperature": 0,
                    "stream": true, "documents": [{"text": doc_text(i)}, {"id": "doc-1"}],
                });
                let r = agent()
                    .post(format!("{base}/v1/completions"))
                    .send_json(&body);
                outcomes.push(match r {
                    Ok(r) if r.status() == 200 => {
                        let text = std::io::read_to_string(r.into_body().into_reader()).unwrap();
                        text.contains("[DONE]")
                    }
                    _ => false,
                });
                i += 1;
            }
            outcomes
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    drop(redis.server.take()); // killed mid-request
    std::thread::sleep(Duration::from_millis(1500));
    assert_all_served(&d, &before);
    let mut restarted = Command::new("redis-server")
        .args([
            "--port",
            &Redis::port(&url).to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let outcomes = load.join().unwrap();
    assert!(
        outcomes.iter().all(|&ok| ok),
        "{} of {} requests failed while Redis was down",
        outcomes.iter().filter(|&&ok| !ok).count(),
        outcomes.len()
    );

    // Back: a new document reaches the restarted (empty) Redis.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 300;
    while Redis::keys(&url) == 0 {
        assert!(
            Instant::now() < deadline,
            "the server never used Redis again"
        );
        let (status, v) = d.register(&format!("new-{n}"), &doc_text(n));
        assert_eq!(status, 201, "{v}");
        d.answer(&[&format!("new-{n}")]);
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_all_served(&d, &before);
    d.assert_no_panic();
    let _ = restarted.kill();
    let _ = restarted.wait();
    println!(
        "ok: {} requests while Redis died and came back, all complete; Redis used again",
        outcomes.len()
    );
}

/// A tmpfs of `mb` MiB mounted on a new directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mb: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN): run the tests as root, as CI does"
        );
        SmallDisk { dir }
    }

    /// Fills what is free with a ballast file; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.path().join("ballast");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        let mut byte = [0u8; 1];
        while file.write_all(&byte).is_ok() {
            byte[0] ^= 1;
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_refuses_registration_clearly_keeps_nothing_half_and_still_serves() {
    let f = Fixture::new();
    let disk = SmallDisk::mount(16);
    let data = disk.dir.path().join("data");
    let d = f.start_in(&data, &[]);
    let before = register_documents(&d, 4);

    let ballast = disk.fill();
    // Registration while full: refused with a clear error, nothing kept.
    // (Its metadata needs more than the slack in the files' last pages.)
    let body = json!({"id": "while-full", "text": doc_text(40), "metadata": {"notes": "n".repeat(1 << 17)}});
    let (status, v) = d.request("POST", "/v1/documents", Some(&body));
    assert!(
        status == 507 || status == 503,
        "registering on a full disk: {status} {v}"
    );
    let message = v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.to_lowercase().contains("space") || message.to_lowercase().contains("full"),
        "the error does not say the disk is full: {message}"
    );
    let (status, _) = d.request("GET", "/v1/documents/while-full", None);
    assert_eq!(status, 404, "a refused document was kept");
    // Serving while full: registered documents and new inline ones.
    assert_all_served(&d, &before);
    let body = json!({
        "prompt": tiny_text(&tokens(4, 2)), "max_tokens": 6, "temperature": 0, "stream": true,
        "documents": [{"text": doc_text(41)}, {"id": "doc-2"}],
    });
    let (chunks, done) = common_stream(&d, &body);
    assert!(
        done && !streamed_text(&chunks).is_empty(),
        "a request on a full disk failed"
    );

    // Space again: registration works, everything is still there.
    std::fs::remove_file(ballast).unwrap();
    let (status, v) = d.register("after-full", &doc_text(42));
    assert_eq!(status, 201, "after space was freed: {v}");
    assert_all_served(&d, &before);
    d.assert_no_panic();
    d.kill();
    let d = f.start_in(&data, &[]);
    assert_all_served(&d, &before);
    assert!(!d.answer(&["after-full"]).is_empty());
    println!("ok: full disk: registration refused with {message:?}, serving unaffected, recovered");
}

/// A streamed completion's chunks and whether `[DONE]` came.
fn common_stream(d: &Daemon, body: &Value) -> (Vec<Value>, bool) {
    let r = agent()
        .post(format!("{}/v1/completions", d.base))
        .send_json(body)
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = std::io::read_to_string(r.into_body().into_reader()).unwrap();
    let mut chunks = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("data: ") {
            Some("[DONE]") => return (chunks, true),
            Some(data) => chunks.push(serde_json::from_str(data).unwrap()),
            None => {}
        }
    }
    (chunks, false)
}
