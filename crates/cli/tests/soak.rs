//! Load soak of `prophetkv serve` over real HTTP: many concurrent streaming
//! clients for minutes, the server's memory sampled every second.
//!
//! `make soak` runs 64 clients for 10 minutes on a tiny random model;
//! `make soak-real` 8 clients for 5 minutes on the default model. Both are
//! `#[ignore]`d (minutes long); `SOAK_SECS` and `SOAK_CLIENTS` override the
//! length and the number of clients.
//!
//! Each client loops over streaming chat and completion requests with
//! documents (inline texts, registered ids, and both), of four kinds:
//!
//! - repeats: greedy cases whose answers were fetched once, non-streamed,
//!   before the soak; each streamed answer must equal its reference;
//! - new documents: greedy, over an inline document no request sent before,
//!   so the tiers keep evicting (the host tier to its budget, the disk tier
//!   deleting files);
//! - re-asks: the same request as a new-document one from `lag` new documents
//!   earlier, by when its cache has left the host tier and is read back from
//!   disk: the answer must equal the first one;
//! - sampled: a repeat at temperature 0.8 (only checked to complete).
//!
//! Asserted at the end: no error (every request 200, no error chunk,
//! `[DONE]` last) and no wrong answer; the server's peak RSS (`VmHWM`, read
//! from /proc) at most the host tier's budget plus a stated constant for the
//! model, the runtime and the running sequences; no leak trend (the
//! least-squares slope of the RSS floors, see [`FLOOR_WINDOW_SECS`], over the
//! second half of the window after warm-up, under a bound in MB/min); TTFT
//! p99 of the last third of that window within twice the first third's.
//!
//! Results go to docs/results/soak{,_real}.md, `_rss.csv` and `_rss.png`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{agent, streamed_text, Server, TINY_ARGS};
use prophetkv_eval::plot::{draw, Chart, Series};
use prophetkv_eval::task::load_tasks;
use prophetkv_model::testing::{
    default_model_path, tiny_text, tokens, workspace_root, write_tiny, Tiny,
};
use serde_json::{json, Value};

/// What a request of the soak is (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Greedy case `i`, checked against its reference.
    Repeat(usize),
    /// Greedy, over new document `e`.
    NewDocument(u64),
    /// New document `e`'s request again, checked against its first answer.
    Reasked(u64),
    /// Case `i` sampled with this seed.
    Sampled(usize, u64),
}

impl Kind {
    /// Request `n` of the soak: every fourth is churn, alternately a new
    /// document and a re-ask of the one `lag` new documents back (sampled
    /// while there is none that far back); one in eight is sampled; the rest
    /// cycle the `cases` repeats.
    fn of(n: u64, cases: usize, lag: u64) -> Kind {
        let case = (n as usize) % cases;
        if n % 4 == 3 {
            let (churn, e) = (n / 4, n / 8);
            match churn % 2 {
                0 => Kind::NewDocument(e),
                _ if e >= lag => Kind::Reasked(e - lag),
                _ => Kind::Sampled(case, n),
            }
        } else if n % 8 == 1 {
            Kind::Sampled(case, n)
        } else {
            Kind::Repeat(case)
        }
    }
}

/// One streamed request's outcome, as the client saw it.
#[derive(Debug, Clone)]
struct Record {
    kind: Kind,
    /// Seconds from the start of the soak to sending the request.
    start: f64,
    /// Seconds to the first chunk with generated text or a finish reason.
    ttft: Option<f64>,
    /// The server's own arrival-to-first-token time in seconds (the last
    /// chunk's `prophetkv.timeline.first_token_ms`).
    server_ttft: Option<f64>,
    /// Documents of the request read from the disk tier and computed (the
    /// last chunk's `prophetkv.cache_hits`).
    disk_hits: u64,
    computed: u64,
    /// What went wrong: a status other than 200, an error chunk, no `[DONE]`.
    error: Option<String>,
    /// Compared with a reference (a re-ask whose first answer is not in yet
    /// is not).
    checked: bool,
    /// Checked and different from the reference: (reference, answer).
    wrong: Option<(String, String)>,
}

/// A request: the route and the body (streaming).
#[derive(Debug, Clone)]
struct Case {
    path: &'static str,
    body: Value,
}

/// What a soak runs against: the model, the server's flags, documents to
/// register first, the greedy cases and the new documents.
struct Workload {
    name: &'static str,
    model: PathBuf,
    flags: Vec<String>,
    /// The host tier budget passed with `--host-budget-mb`.
    host_budget_mb: f64,
    /// The stated constant: RSS beyond the host tier's budget may not exceed
    /// `base_mb + sequence_mb * min(clients, MAX_BATCH)` (see `tiny` and `real`
    /// for the measurements behind them).
    base_mb: f64,
    /// See `base_mb`: memory per running sequence.
    sequence_mb: f64,
    /// The leak bound: the largest RSS trend allowed, MB per minute.
    leak_mb_per_min: f64,
    register: Value,
    cases: Vec<Case>,
    /// The request over new document `e` (greedy).
    new_document: Box<dyn Fn(u64) -> Case + Sync>,
    /// How many new documents back a re-ask goes: past what the host tier
    /// keeps, within what the disk tier holds.
    lag: u64,
    _model_dir: Option<tempfile::TempDir>,
}

/// Soak length and clients: `SOAK_SECS` and `SOAK_CLIENTS`, else the test's own.
struct Settings {
    secs: u64,
    clients: usize,
}

impl Settings {
    fn from_env(secs: u64, clients: usize) -> Settings {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name}={v:?}")))
        };
        Settings {
            secs: var("SOAK_SECS").unwrap_or(secs),
            clients: var("SOAK_CLIENTS").map_or(clients, |c| c as usize),
        }
    }

    /// The first tenth of the run (at least 30 s) fills the host tier and
    /// warms the allocator; the bounds are judged on the rest.
    fn warmup(&self) -> f64 {
        (self.secs as f64 / 10.0).max(30.0)
    }
}

/// Most sequences per decode step in both soaks (the server's default):
/// the running sequences, whatever the number of clients.
const MAX_BATCH: usize = 16;

/// Flags as owned strings, then `--max-batch MAX_BATCH` and `--max-queue
/// clients`: every client's request fits in the queue, so a 429 is an error.
fn flags(flags: &[&str], clients: usize) -> Vec<String> {
    flags
        .iter()
        .map(|s| s.to_string())
        .chain(["--max-batch".into(), MAX_BATCH.to_string()])
        .chain(["--max-queue".into(), clients.to_string()])
        .collect()
}

/// Every request of the tiny model asks for this many tokens.
const TINY_MAX_TOKENS: usize = 16;

/// The tiny model: 8 registered documents of 60 tokens; 12 greedy cases
/// (completions and chats; documents inline, by id, and both); new
/// documents of 100 tokens next to a registered one. A tiny document cache
/// is 768 bytes per token in memory (3 layers, K and V, 2 heads of 16, f32)
/// and 384 on disk (f16): the 32 MiB host tier holds about 430 new
/// documents (one in eight requests brings one: full within the first two
/// minutes at ~40 requests/s) and the 64 MiB disk tier about 1,700, so a
/// re-ask 600 back reads from disk. (Not more than half the disk tier: a
/// re-ask's read makes its blob the most recently used, so the disk keeps
/// the last `lag` re-asked ones and evicts, least recently used, the
/// oldest of those not yet re-asked: with a lag of 1,000, a 10-minute run
/// computed about 400 of its 1,183 re-asks again.)
fn tiny(clients: usize) -> Workload {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), Tiny::Gemma3);
    let doc = |seed: u64, n: usize| tiny_text(&tokens(n, seed));
    let register: Vec<Value> = (0..8)
        .map(|i| json!({"id": format!("doc-{i}"), "text": doc(1000 + i, 60)}))
        .collect();
    let id = |i: u64| json!({"id": format!("doc-{}", i % 8)});
    let cases = (0..12u64)
        .map(|i| {
            let documents = match i % 3 {
                0 => json!([{"text": doc(2000 + i, 50)}, {"text": doc(2100 + i, 40)}]),
                1 => json!([id(i), id(i + 3)]),
                _ => json!([id(i), {"text": doc(2200 + i, 45)}]),
            };
            greedy(
                i.is_multiple_of(2),
                &doc(3000 + i, 6),
                documents,
                TINY_MAX_TOKENS,
            )
        })
        .collect();
    let new_document = move |e: u64| {
        let documents = json!([id(e), {"text": doc(1_000_000 + e, 100)}]);
        greedy(
            e.is_multiple_of(2),
            &doc(4000 + e % 16, 6),
            documents,
            TINY_MAX_TOKENS,
        )
    };
    Workload {
        name: "soak",
        model: dir.path().to_path_buf(),
        flags: flags(
            &[
                &TINY_ARGS[..],
                &["--host-budget-mb", "32", "--disk-budget-mb", "64"],
            ]
            .concat(),
            clients,
        ),
        host_budget_mb: 32.0,
        // Measured with a 1 MiB host tier: 20 MB idle, 32 MB under 64
        // clients (binary, tokio and worker threads, buffers, the registry).
        base_mb: 64.0,
        // A tiny sequence holds 1,152 bytes per slot (pre-RoPE K, rotated
        // K and V, f32, 3 layers, 2 heads of 16); at most ~600 slots (a
        // ~300-token context, capacity doubled), 0.7 MB.
        sequence_mb: 1.0,
        // ~600 bytes per request at the ~27 requests/s of the 10-minute run
        // on the shared 2-core machine; three leak-free 10-minute runs fit
        // +0.013 to +0.036 MB/min once the host tier was full.
        leak_mb_per_min: 1.0,
        register: json!({ "documents": register }),
        cases,
        new_document: Box::new(new_document),
        lag: 600,
        _model_dir: Some(dir),
    }
}

/// The default model's answers are a 5-digit code (a token per digit).
const REAL_MAX_TOKENS: usize = 10;

/// The default model: the 4 documents (~250 tokens each) of 4 dev tasks
/// registered; 12 greedy cases (each task's question over its documents by
/// id, inline, and half of each); a new document is a task's last one made
/// new by a serial number, next to the other three by id. A Gemma 3 270M
/// document cache is 36 KiB per token in memory (18 layers, K and V, one
/// head of 256, f32) and half that on disk: ~9 MB per document in the
/// 64 MiB host tier (7 fit: the 16 registered ones do not all stay), ~4.6 MB
/// in the 256 MiB disk tier (55 fit), so a re-ask 3 back (after ~24 other
/// requests over the 16 registered documents) reads from disk.
fn real(clients: usize) -> Workload {
    let tasks: Vec<_> = load_tasks(&workspace_root().join("tasks/dev-niah.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|t| t.id.starts_with("code-s101-n4-t1000-"))
        .take(4)
        .collect();
    assert_eq!(tasks.len(), 4, "dev tasks code-s101-n4-t1000-* missing");
    let id = |t: usize, d: usize| json!({"id": format!("t{t}-d{d}")});
    let register: Vec<Value> = tasks
        .iter()
        .enumerate()
        .flat_map(|(t, task)| {
            task.documents
                .iter()
                .enumerate()
                .map(move |(d, text)| json!({"id": format!("t{t}-d{d}"), "text": text}))
        })
        .collect();
    let cases = (0..12usize)
        .map(|i| {
            let (t, task) = (i % 4, &tasks[i % 4]);
            let documents: Vec<Value> = (0..task.documents.len())
                .map(|d| match i / 4 {
                    0 => id(t, d),
                    1 => json!({"text": task.documents[d]}),
                    _ if d.is_multiple_of(2) => id(t, d),
                    _ => json!({"text": task.documents[d]}),
                })
                .collect();
            greedy(
                i.is_multiple_of(2),
                &task.question,
                json!(documents),
                REAL_MAX_TOKENS,
            )
        })
        .collect();
    let new_document = move |e: u64| {
        let (t, task) = ((e % 4) as usize, &tasks[(e % 4) as usize]);
        let last = task.documents.len() - 1;
        let mut documents: Vec<Value> = (0..last).map(|d| id(t, d)).collect();
        let text = task.documents[last].trim_end();
        documents.push(json!({"text": format!("{text} Its serial number is {e}.\n\n")}));
        greedy(
            e.is_multiple_of(2),
            &task.question,
            json!(documents),
            REAL_MAX_TOKENS,
        )
    };
    Workload {
        name: "soak_real",
        model: default_model_path(),
        flags: flags(
            &["--host-budget-mb", "64", "--disk-budget-mb", "256"],
            clients,
        ),
        host_budget_mb: 64.0,
        // Measured: 818 MB idle (the quantized weights and the f32 copies
        // of the projections), 1,186 MB after the references.
        base_mb: 1280.0,
        // A running sequence holds 55 KiB per slot (pre-RoPE K, rotated K
        // and V, f32, 18 layers, one head of 256), in buffers whose
        // capacity doubles as they grow: up to ~2,200 slots for a
        // ~1,100-token context, 122 MB (the peak measured under 8 clients,
        // 2,143 MB, is 1,186 + 8 x 120).
        sequence_mb: 140.0,
        // Coarse, as 5 minutes allow: glibc's heap keeps freed tensor memory
        // and grows by steps of up to ~120 MB while it converges (an
        // 8-minute run: flat at 2,034 MB from minute 2.4 on, its floors'
        // trend -5 MB/min; with MALLOC_MMAP_THRESHOLD_=131072 no growth at
        // all). A leaked sequence (~120 MB per request, ~30 requests/min)
        // shows many times over, a leaked cache per new document (9 MB, ~4
        // a minute) just does; smaller leaks on the same code paths are the
        // tiny soak's to find.
        leak_mb_per_min: 30.0,
        register: json!({ "documents": register }),
        cases,
        new_document: Box::new(new_document),
        lag: 3,
        _model_dir: None,
    }
}

/// A streaming greedy chat (`chat`) or completion asking `prompt` over
/// `documents`.
fn greedy(chat: bool, prompt: &str, documents: Value, max_tokens: usize) -> Case {
    let (path, mut body) = if chat {
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": prompt}]}),
        )
    } else {
        ("/v1/completions", json!({ "prompt": prompt }))
    };
    body["documents"] = documents;
    body["max_tokens"] = json!(max_tokens);
    body["temperature"] = json!(0);
    body["stream"] = json!(true);
    Case { path, body }
}

/// Registers the workload's documents; each case's reference answer,
/// non-streamed.
fn prepare(server: &Server, workload: &Workload) -> Vec<String> {
    let (status, body) = server.post("/v1/documents", &workload.register);
    assert_eq!(status, 201, "{body}");
    let reference = |case: &Case| {
        let mut once = case.body.clone();
        once["stream"] = json!(false);
        let (status, body) = server.post(case.path, &once);
        assert_eq!(status, 200, "{body}");
        let choice = &body["choices"][0];
        let text = choice["text"]
            .as_str()
            .or_else(|| choice["message"]["content"].as_str());
        text.unwrap_or_else(|| panic!("no text in {body}"))
            .to_string()
    };
    workload.cases.iter().map(reference).collect()
}

/// The text of a streamed request, or why it failed.
type Streamed = Result<String, String>;

/// Sends `case`, streamed, as `record` (whose times it fills in).
fn send(agent: &ureq::Agent, base: &str, case: &Case, record: &mut Record) -> Streamed {
    let sent = Instant::now();
    let response = agent
        .post(format!("{base}{}", case.path))
        .send_json(&case.body)
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = response.into_body().read_to_string().unwrap_or_default();
        return Err(format!("status {status}: {body}"));
    }
    let (mut text, mut done) = (String::new(), false);
    for line in BufReader::new(response.into_body().into_reader()).lines() {
        let line = line.map_err(|e| format!("read: {e}"))?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if done {
            return Err(format!("data after [DONE]: {data}"));
        }
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|e| format!("chunk {data:?}: {e}"))?;
        if chunk.get("error").is_some() {
            return Err(format!("error chunk: {data}"));
        }
        let piece = streamed_text(std::slice::from_ref(&chunk));
        let finished = chunk["choices"][0]["finish_reason"].is_string();
        if record.ttft.is_none() && (!piece.is_empty() || finished) {
            record.ttft = Some(sent.elapsed().as_secs_f64());
        }
        text.push_str(&piece);
        let report = &chunk["prophetkv"];
        if let Some(ms) = report["timeline"]["first_token_ms"].as_f64() {
            record.server_ttft = Some(ms / 1000.0);
            let hits = &report["cache_hits"];
            record.disk_hits = hits["disk"].as_u64().unwrap_or(0);
            record.computed = hits["computed"].as_u64().unwrap_or(0);
        }
    }
    if !done {
        return Err("stream ended without [DONE]".into());
    }
    Ok(text)
}

/// What the clients share: the workload, the references, and the first
/// answers of new documents.
struct Clients<'a> {
    base: &'a str,
    workload: &'a Workload,
    references: &'a [String],
    first_answers: Mutex<HashMap<u64, String>>,
    epoch: Instant,
}

impl Clients<'_> {
    /// Sends request `n` and checks its answer.
    fn request(&self, agent: &ureq::Agent, n: u64) -> Record {
        let w = self.workload;
        let kind = Kind::of(n, w.cases.len(), w.lag);
        let mut case = match kind {
            Kind::Repeat(i) | Kind::Sampled(i, _) => w.cases[i].clone(),
            Kind::NewDocument(e) | Kind::Reasked(e) => (w.new_document)(e),
        };
        if let Kind::Sampled(_, seed) = kind {
            // Sampling, not greedy: any answer is right.
            case.body["temperature"] = json!(0.8);
            case.body["seed"] = json!(seed);
        }
        let reference = match kind {
            Kind::Repeat(i) => Some(self.references[i].clone()),
            Kind::Reasked(e) => self.first_answers.lock().unwrap().get(&e).cloned(),
            Kind::NewDocument(_) | Kind::Sampled(..) => None,
        };
        let mut record = Record {
            kind,
            start: self.epoch.elapsed().as_secs_f64(),
            ttft: None,
            server_ttft: None,
            disk_hits: 0,
            computed: 0,
            error: None,
            checked: reference.is_some(),
            wrong: None,
        };
        match send(agent, self.base, &case, &mut record) {
            Err(why) => record.error = Some(why),
            Ok(text) => {
                record.wrong = reference.filter(|r| *r != text).map(|r| (r, text.clone()));
                if let Kind::NewDocument(e) = kind {
                    self.first_answers.lock().unwrap().insert(e, text);
                }
            }
        }
        record
    }
}

/// Runs `clients` threads sending requests until `secs` have passed since
/// `epoch`; every record, by start time. Client `c`'s `k`th request is
/// number `k * clients + c`.
fn load(
    server: &Server,
    workload: &Workload,
    references: &[String],
    s: &Settings,
    epoch: Instant,
) -> Vec<Record> {
    let shared = Clients {
        base: &server.base,
        workload,
        references,
        first_answers: Mutex::new(HashMap::new()),
        epoch,
    };
    let end = epoch + Duration::from_secs(s.secs);
    let mut records: Vec<Record> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..s.clients)
            .map(|c| {
                let shared = &shared;
                scope.spawn(move || {
                    let agent = agent();
                    (0..)
                        .map(|k| (k * s.clients + c) as u64)
                        .take_while(|_| Instant::now() < end)
                        .map(|n| shared.request(&agent, n))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    records.sort_by(|a, b| a.start.total_cmp(&b.start));
    records
}

/// A `/proc/<pid>/status` field in MB (the kernel writes kB).
fn proc_status_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1000.0)
}

/// CPU seconds the process has used (user and system), from
/// `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // 3rd field of the line, utime the 14th and stime the 15th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / per_second)
}

/// The machine's 1-minute load average.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// One second's reading of the server and the machine.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds from the start of the load.
    t: f64,
    rss_mb: f64,
    /// The server's CPU seconds so far.
    cpu_s: f64,
    /// The machine's 1-minute load average (other work shares it).
    load: f64,
}

/// Samples the server every second until `stop`, times from `epoch`.
fn sample(pid: u32, epoch: Instant, stop: &AtomicBool) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let (Some(rss_mb), Some(cpu_s)) = (proc_status_mb(pid, "VmRSS:"), cpu_seconds(pid)) {
            samples.push(Sample {
                t: epoch.elapsed().as_secs_f64(),
                rss_mb,
                cpu_s,
                load: load_average().unwrap_or(0.0),
            });
        }
        next += Duration::from_secs(1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    samples
}

/// The `p`th percentile (nearest rank) of `values`; 0 when empty.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The least-squares line through `points`: (slope, intercept).
fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (slope, my - slope * mx)
}

/// The leak trend is fitted to RSS floors: the smallest sample of each
/// window this long. A leak raises the floor; transient memory (a prefill's
/// scratch, a burst of documents) raises only peaks, which the peak bound
/// covers, and would tilt a fit to every sample by where in the window it
/// falls.
const FLOOR_WINDOW_SECS: f64 = 15.0;

/// The floor of each whole `FLOOR_WINDOW_SECS` window of `rss` in
/// `[from, to)`: (minutes at the window's middle, MB).
fn floors(rss: &[(f64, f64)], from: f64, to: f64) -> Vec<(f64, f64)> {
    let windows = ((to - from) / FLOOR_WINDOW_SECS).floor() as usize;
    (0..windows)
        .filter_map(|i| {
            let start = from + i as f64 * FLOOR_WINDOW_SECS;
            let inside = rss
                .iter()
                .filter(|p| p.0 >= start && p.0 < start + FLOOR_WINDOW_SECS);
            let floor = inside.map(|p| p.1).min_by(f64::total_cmp)?;
            Some(((start + FLOOR_WINDOW_SECS / 2.0) / 60.0, floor))
        })
        .collect()
}

/// TTFT p99 of the last third of the window may be at most this times the
/// first third's: a queue or a cache that degrades over time shows here.
const TTFT_P99_GROWTH: f64 = 2.0;

/// What the soak measured, for the report and the assertions.
struct Summary {
    clients: usize,
    secs: u64,
    warmup: f64,
    requests: usize,
    /// Requests of each kind: repeats, new documents, re-asks, sampled.
    kinds: [usize; 4],
    /// Answers compared with a reference.
    checked: usize,
    errors: Vec<String>,
    /// The wrong answers: (kind, start, disk hits, reference, answer).
    wrong: Vec<String>,
    ttft_all: (f64, f64),
    /// The server's own TTFT (p50, p99) over all requests.
    server_ttft: (f64, f64),
    ttft_thirds: [(f64, f64); 3],
    /// Requests sent in each third.
    sent_thirds: [usize; 3],
    samples: Vec<Sample>,
    /// Server CPU (cores) and the machine's load average, means over the
    /// measured window.
    cpu_cores: f64,
    load: f64,
    rss_start: f64,
    rss_baseline: f64,
    rss_max: f64,
    rss_peak: f64,
    rss_end: f64,
    /// The least-squares line through the RSS floors of the second half of
    /// the measured window (MB/min, MB), and where that half starts.
    slope: (f64, f64),
    slope_from: f64,
    leak_bound: f64,
    bound_mb: f64,
    /// Re-asks whose new document came from the disk tier, and those that
    /// computed it again.
    reasked_from_disk: usize,
    reasked_computed: usize,
    cache: String,
}

/// TTFT (p50, p99) in seconds of the records in `[from, to)`.
fn ttft(records: &[Record], from: f64, to: f64) -> (f64, f64) {
    let values: Vec<f64> = records
        .iter()
        .filter(|r| r.start >= from && r.start < to)
        .filter_map(|r| r.ttft)
        .collect();
    (percentile(&values, 50.0), percentile(&values, 99.0))
}

/// Requests of each kind: repeats, new documents, re-asks, sampled.
fn count_kinds(records: &[Record]) -> [usize; 4] {
    let mut counts = [0; 4];
    for r in records {
        counts[match r.kind {
            Kind::Repeat(_) => 0,
            Kind::NewDocument(_) => 1,
            Kind::Reasked(_) => 2,
            Kind::Sampled(..) => 3,
        }] += 1;
    }
    counts
}

fn summarize(
    s: &Settings,
    w: &Workload,
    records: &[Record],
    samples: Vec<Sample>,
    peak: f64,
    cache: String,
) -> Summary {
    let (warmup, end) = (s.warmup(), s.secs as f64);
    let rss: Vec<(f64, f64)> = samples.iter().map(|x| (x.t, x.rss_mb)).collect();
    let measured: Vec<&Sample> = samples.iter().filter(|x| x.t >= warmup).collect();
    let (cpu_cores, load) = match (measured.first(), measured.last()) {
        (Some(a), Some(b)) if b.t > a.t => (
            (b.cpu_s - a.cpu_s) / (b.t - a.t),
            measured.iter().map(|x| x.load).sum::<f64>() / measured.len() as f64,
        ),
        _ => (0.0, 0.0),
    };
    let third = (end - warmup) / 3.0;
    let ttft_thirds =
        [0.0, 1.0, 2.0].map(|i| ttft(records, warmup + i * third, warmup + (i + 1.0) * third));
    let sent_thirds = [0.0, 1.0, 2.0].map(|i| {
        let (from, to) = (warmup + i * third, warmup + (i + 1.0) * third);
        records
            .iter()
            .filter(|r| r.start >= from && r.start < to)
            .count()
    });
    let slope_from = warmup + (end - warmup) / 2.0;
    let sequences = s.clients.min(MAX_BATCH) as f64;
    let baseline = rss.iter().find(|p| p.0 >= warmup).map_or(0.0, |p| p.1);
    Summary {
        clients: s.clients,
        secs: s.secs,
        warmup,
        requests: records.len(),
        kinds: count_kinds(records),
        checked: records.iter().filter(|r| r.checked).count(),
        errors: records.iter().filter_map(|r| r.error.clone()).collect(),
        wrong: records
            .iter()
            .filter_map(|r| {
                let (reference, answer) = r.wrong.as_ref()?;
                Some(format!(
                    "{:?} at {:.1} s ({} documents from disk): {reference:?}, streamed {answer:?}",
                    r.kind, r.start, r.disk_hits
                ))
            })
            .collect(),
        ttft_all: ttft(records, 0.0, f64::INFINITY),
        server_ttft: {
            let values: Vec<f64> = records.iter().filter_map(|r| r.server_ttft).collect();
            (percentile(&values, 50.0), percentile(&values, 99.0))
        },
        ttft_thirds,
        sent_thirds,
        rss_start: rss.first().map_or(0.0, |p| p.1),
        rss_baseline: baseline,
        rss_max: rss.iter().map(|p| p.1).fold(0.0, f64::max),
        // VmRSS is read from per-CPU counters that VmHWM may not have
        // caught up with: the peak is the larger of the two.
        rss_peak: peak.max(rss.iter().map(|p| p.1).fold(0.0, f64::max)),
        rss_end: rss.last().map_or(0.0, |p| p.1),
        slope: fit(&floors(&rss, slope_from, end)),
        slope_from,
        leak_bound: w.leak_mb_per_min,
        bound_mb: w.host_budget_mb + w.base_mb + w.sequence_mb * sequences,
        reasked_from_disk: records
            .iter()
            .filter(|r| matches!(r.kind, Kind::Reasked(_)) && r.disk_hits > 0)
            .count(),
        reasked_computed: records
            .iter()
            .filter(|r| matches!(r.kind, Kind::Reasked(_)) && r.computed > 0)
            .count(),
        cache,
        samples,
        cpu_cores,
        load,
    }
}

/// Document cache lookups over the soak, from `/metrics`.
fn cache_counts(server: &Server) -> String {
    let hits = |tier: &str| {
        server.metric(&format!(
            "prophetkv_document_cache_hits_total{{tier=\"{tier}\"}}"
        ))
    };
    format!(
        "{} host hits, {} disk hits, {} computed; {} integrity failures, {} tier errors",
        hits("host"),
        hits("disk"),
        server.metric("prophetkv_document_cache_misses_total"),
        server.metric("prophetkv_store_integrity_failures_total"),
        server.metric("prophetkv_store_tier_errors_total")
    )
}

fn ms(seconds: f64) -> String {
    format!("{:.0}", seconds * 1000.0)
}

/// Writes `{name}.md`, `{name}_rss.csv` and `{name}_rss.png` into `dir`.
fn write_report(dir: &Path, name: &str, command: &str, model: &str, s: &Summary) {
    std::fs::create_dir_all(dir).unwrap();
    let csv: String = std::iter::once("seconds,rss_mb,server_cpu_s,load_average\n".to_string())
        .chain(
            s.samples
                .iter()
                .map(|x| format!("{:.1},{:.1},{:.2},{:.2}\n", x.t, x.rss_mb, x.cpu_s, x.load)),
        )
        .collect();
    std::fs::write(dir.join(format!("{name}_rss.csv")), csv).unwrap();
    let third = (s.secs as f64 - s.warmup) / 3.0;
    let thirds = (0..3).map(|i| {
        let (from, (p50, p99)) = (s.warmup + i as f64 * third, s.ttft_thirds[i]);
        (
            format!("TTFT p50 / p99, {from:.0}–{:.0} s (ms)", from + third),
            format!("{} / {} ({} requests)", ms(p50), ms(p99), s.sent_thirds[i]),
        )
    });
    let rows = [
        ("clients".to_string(), s.clients.to_string()),
        (
            "duration".into(),
            format!("{} s (the first {:.0} s warm-up)", s.secs, s.warmup),
        ),
        (
            "requests".into(),
            format!(
                "{} ({} repeats, {} new documents, {} re-asks, {} sampled)",
                s.requests, s.kinds[0], s.kinds[1], s.kinds[2], s.kinds[3]
            ),
        ),
        ("errors".into(), s.errors.len().to_string()),
        (
            "wrong greedy answers".into(),
            format!(
                "{} of {} checked (re-asks: {} read back from disk, {} computed again)",
                s.wrong.len(),
                s.checked,
                s.reasked_from_disk,
                s.reasked_computed
            ),
        ),
        (
            "TTFT p50 / p99, all (ms)".into(),
            format!("{} / {}", ms(s.ttft_all.0), ms(s.ttft_all.1)),
        ),
        (
            "server's TTFT p50 / p99, all (ms)".into(),
            format!("{} / {}", ms(s.server_ttft.0), ms(s.server_ttft.1)),
        ),
        (
            "RSS idle / after warm-up / max sampled / end (MB)".into(),
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1}",
                s.rss_start, s.rss_baseline, s.rss_max, s.rss_end
            ),
        ),
        (
            "RSS peak, VmHWM (MB)".into(),
            format!("{:.1} (bound {:.0})", s.rss_peak, s.bound_mb),
        ),
        (
            format!(
                "RSS trend, {:.0}–{} s (MB/min, fitted to {FLOOR_WINDOW_SECS} s floors)",
                s.slope_from, s.secs
            ),
            format!("{:+.3} (bound {})", s.slope.0, s.leak_bound),
        ),
        ("document caches".into(), s.cache.clone()),
        (
            "server CPU / machine load average, means after warm-up".into(),
            format!("{:.2} cores / {:.1}", s.cpu_cores, s.load),
        ),
    ];
    let rows = rows[..7]
        .iter()
        .cloned()
        .chain(thirds)
        .chain(rows[7..].iter().cloned());
    let table: String = rows.map(|(k, v)| format!("| {k} | {v} |\n")).collect();
    let md = format!(
        "# Soak: {} streaming clients for {} s on {model}\n\n`{command}` \
         (crates/cli/tests/soak.rs) writes this file, `{name}_rss.csv` and `{name}_rss.png`.\n\n\
         | what | value |\n|---|---:|\n{table}\n![RSS over time]({name}_rss.png)\n{}",
        s.clients,
        s.secs,
        failures(s)
    );
    std::fs::write(dir.join(format!("{name}.md")), md).unwrap();
    draw(&rss_chart(s, model), &dir.join(format!("{name}_rss.png"))).unwrap();
}

/// The wrong answers and the first errors, as Markdown lists (empty when
/// there are none).
fn failures(s: &Summary) -> String {
    let list = |title: &str, items: &[String]| {
        if items.is_empty() {
            return String::new();
        }
        let shown: String = items.iter().take(20).map(|i| format!("- {i}\n")).collect();
        format!("\n{title} ({}, the first 20):\n\n{shown}", items.len())
    };
    list("Wrong answers", &s.wrong) + &list("Errors", &s.errors)
}

/// RSS over time with the bound and the fitted trend.
fn rss_chart(s: &Summary, model: &str) -> Chart {
    let minutes = |t: f64| t / 60.0;
    // One point per 5 s keeps the markers apart on a 10-minute run.
    let points = s
        .samples
        .iter()
        .step_by(5)
        .map(|x| (minutes(x.t), x.rss_mb))
        .collect();
    let (slope, intercept) = s.slope;
    let from = minutes(s.slope_from);
    let to = minutes(s.secs as f64);
    Chart {
        title: format!("{model}: server RSS, {} streaming clients", s.clients),
        x_label: "minutes".into(),
        y_label: "RSS (MB)".into(),
        series: vec![
            Series {
                label: "RSS".into(),
                points,
                horizontal: false,
            },
            Series {
                label: format!("trend {slope:+.3} MB/min"),
                points: vec![
                    (from, intercept + slope * from),
                    (to, intercept + slope * to),
                ],
                horizontal: false,
            },
            Series {
                label: "bound".into(),
                points: vec![(0.0, s.bound_mb)],
                horizontal: true,
            },
        ],
        y_range: Some((0.0, s.bound_mb * 1.1)),
        legend_upper_left: false,
    }
}

/// Held by a running soak: `cargo test -- --ignored` would otherwise run
/// both at once, and each would measure the other's load.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Starts the server, prepares the workload, runs the soak with the RSS
/// sampler, writes the report and asserts the bounds.
fn soak(settings: &Settings, workload: Workload, command: &str, model: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let flags: Vec<&str> = workload.flags.iter().map(String::as_str).collect();
    let server = Server::start(&workload.model, &flags);
    let pid = server.child.id();
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let (records, rss, epoch) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample(pid, started, &stop));
        let references = prepare(&server, &workload);
        let epoch = Instant::now();
        let records = load(&server, &workload, &references, settings, epoch);
        stop.store(true, Ordering::Relaxed);
        (records, sampler.join().unwrap(), epoch)
    });
    // Sample times from the start of the load; before it (negative) the
    // server registered the documents and answered the references.
    let offset = epoch.duration_since(started).as_secs_f64();
    let samples: Vec<Sample> = rss
        .into_iter()
        .map(|x| Sample {
            t: x.t - offset,
            ..x
        })
        .collect();
    let peak = proc_status_mb(pid, "VmHWM:").unwrap();
    let cache = cache_counts(&server);
    let s = summarize(settings, &workload, &records, samples, peak, cache);
    write_report(
        &workspace_root().join("docs/results"),
        workload.name,
        command,
        model,
        &s,
    );
    let mut shown = s.errors.clone();
    shown.dedup();
    assert!(
        s.errors.is_empty(),
        "{} errors, first ones: {:?}",
        s.errors.len(),
        &shown[..shown.len().min(5)]
    );
    assert!(
        s.wrong.is_empty(),
        "{} greedy streamed answers differ from their references:\n{}",
        s.wrong.len(),
        s.wrong.join("\n")
    );
    assert!(
        s.rss_peak <= s.bound_mb,
        "peak RSS {:.1} MB over the bound {:.0} MB",
        s.rss_peak,
        s.bound_mb
    );
    assert!(
        s.slope.0 <= s.leak_bound,
        "RSS grows {:.3} MB/min over the second half",
        s.slope.0
    );
    let (first, last) = (s.ttft_thirds[0].1, s.ttft_thirds[2].1);
    assert!(
        last <= TTFT_P99_GROWTH * first,
        "TTFT p99 rose from {first:.3} s to {last:.3} s"
    );
}

#[test]
#[ignore = "10 minutes; `make soak`"]
fn sixty_four_streaming_clients_on_the_tiny_model_stay_correct_within_the_memory_bound_and_leak_free(
) {
    let settings = Settings::from_env(600, 64);
    soak(
        &settings,
        tiny(settings.clients),
        "make soak",
        "tiny random Gemma 3",
    );
}

#[test]
#[ignore = "5 minutes, needs the default model; `make soak-real`"]
fn streaming_clients_on_the_default_model_stay_correct_within_the_memory_bound_and_leak_free() {
    let settings = Settings::from_env(300, 8);
    soak(
        &settings,
        real(settings.clients),
        "make soak-real",
        "gemma-3-270m-q4_k_m",
    );
}
