//! Hostile and broken HTTP clients against `prophetkv serve` on a tiny
//! model, over real sockets: a slow SSE reader, a client that never sends
//! the body it announced, slowloris headers, a thousand idle connections,
//! running out of file descriptors, and SIGTERM with a stream still being
//! read. After each the server has printed no panic and, unless told to
//! stop, still answers, and answers correctly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{agent, raise_open_file_limit, streamed_text, Server, TINY_ARGS};
use prophetkv_model::testing::{tiny_text, tokens, write_tiny, Tiny};
use serde_json::{json, Value};

/// A server on the tiny model whose output goes to a log file; the model
/// and the log outlive it.
struct TinyServer {
    server: Server,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TinyServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

/// Starts the server with `extra` flags and, when given, a soft open-file
/// limit.
fn start(extra: &[&str], max_open_files: Option<u64>) -> TinyServer {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    write_tiny(&model, Tiny::Gemma3);
    let log = dir.path().join("server.log");
    let mut args = TINY_ARGS.to_vec();
    args.extend_from_slice(extra);
    let server = match max_open_files {
        Some(limit) => Server::start_with_open_file_limit(&model, &args, &log, limit),
        None => Server::start_logging(&model, &args, &[], Some(&log)),
    };
    TinyServer {
        server,
        log,
        _dir: dir,
    }
}

impl TinyServer {
    /// `host:port`.
    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// What the server has printed so far.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server is alive, printed no panic, and answers `/health` and a
    /// completion (the same text as `expected`) within `within`.
    fn assert_healthy(&self, expected: &str, within: Duration) {
        let output = self.output();
        assert!(
            !output.contains("panicked"),
            "the server panicked:\n{output}"
        );
        let started = Instant::now();
        let health = agent().get(format!("{}/health", self.base)).call().unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(completion_text(self, &completion(8, 3)), expected);
        assert!(
            started.elapsed() < within,
            "/health and a completion took {:?}",
            started.elapsed()
        );
    }
}

/// A greedy completion over two inline documents.
fn completion(max_tokens: usize, seed: u64) -> Value {
    json!({
        "prompt": tiny_text(&tokens(4, seed)), "max_tokens": max_tokens, "temperature": 0,
        "documents": [{"text": tiny_text(&tokens(40, 1))}, {"text": tiny_text(&tokens(30, 2))}],
    })
}

/// The text of a non-streamed completion, which must succeed.
fn completion_text(server: &Server, body: &Value) -> String {
    let (status, answer) = server.post("/v1/completions", body);
    assert_eq!(status, 200, "{answer}");
    answer["choices"][0]["text"].as_str().unwrap().to_string()
}

/// The head of a POST of `body` to `path` (`Connection: close`).
fn request_head(addr: &str, path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
}

/// A response read off a raw socket: status, head, and the body with any
/// chunked transfer encoding removed.
fn parse_response(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let body = &raw[end + 4..];
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        head,
        if chunked {
            dechunk(body)
        } else {
            body.to_vec()
        },
    )
}

/// The payload of a chunked HTTP/1.1 body, which must end with its last
/// (empty) chunk.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("truncated chunk size line");
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        assert!(raw.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// The text of an SSE body of completion chunks and whether it ended with
/// `[DONE]`.
fn sse_text(body: &[u8]) -> (String, bool) {
    let body = String::from_utf8(body.to_vec()).unwrap();
    let mut chunks = Vec::new();
    let mut done = false;
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        assert!(!done, "data after [DONE]");
        if data == "[DONE]" {
            done = true;
        } else {
            chunks.push(serde_json::from_str::<Value>(data).unwrap());
        }
    }
    (streamed_text(&chunks), done)
}

/// Waits up to `within` for `condition`.
fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

/// Whether the peer has closed `socket` (EOF or reset) within `within`;
/// anything it sent before is returned too.
fn closed_within(socket: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return (true, received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (true, received),
            Err(_) => return (false, received),
        }
        if Instant::now() >= deadline {
            return (false, received);
        }
    }
}

/// Streams `body` as a completion over a socket with a 4 KiB receive
/// buffer, reading 64 bytes every 50 ms until `release`, then the rest at
/// full speed; returns (once the answer has begun) the reading thread, which
/// gives everything received and how much came before release.
fn slow_sse_reader(
    addr: &str,
    body: &Value,
    release: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<u8>, usize)> {
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let text = streamed.to_string();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let peer: std::net::SocketAddr = addr.parse().unwrap();
    socket.connect(&peer.into()).unwrap();
    let mut slow: TcpStream = socket.into();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        slow,
        "{}{text}",
        request_head(addr, "/v1/completions", &text)
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = slow.read(&mut buf).unwrap();
    let mut received = buf[..n].to_vec();
    std::thread::spawn(move || {
        while !release.load(Ordering::SeqCst) {
            match slow.read(&mut buf).unwrap() {
                0 => break,
                n => received.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let read_slowly = received.len();
        slow.read_to_end(&mut received).unwrap();
        (received, read_slowly)
    })
}

#[test]
fn a_slow_sse_reader_neither_delays_other_clients_nor_is_cut_by_the_read_timeouts() {
    // Timeouts far shorter than the slow stream: neither may cut it.
    let server = start(
        &[
            "--header-read-timeout-secs",
            "1",
            "--body-read-timeout-secs",
            "1",
        ],
        None,
    );
    let expected = completion_text(&server, &completion(8, 3));
    let slow_body = completion(300, 7);
    let slow_expected = completion_text(&server, &slow_body);
    let fast_bodies: Vec<Value> = (10..14).map(|seed| completion(12, seed)).collect();
    let fast_expected: Vec<String> = fast_bodies
        .iter()
        .map(|b| completion_text(&server, b))
        .collect();

    let release = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let reader = slow_sse_reader(&server.addr(), &slow_body, release.clone());

    // Meanwhile other clients are answered at once, with the same text.
    std::thread::sleep(Duration::from_millis(300));
    std::thread::scope(|s| {
        let handles: Vec<_> = fast_bodies
            .iter()
            .map(|body| {
                s.spawn(|| {
                    let begun = Instant::now();
                    let mut body = body.clone();
                    body["stream"] = json!(true);
                    let (chunks, done) = server.stream("/v1/completions", &body);
                    (streamed_text(&chunks), done, begun.elapsed())
                })
            })
            .collect();
        for (handle, expected) in handles.into_iter().zip(&fast_expected) {
            let (text, done, took) = handle.join().unwrap();
            assert!(done, "a fast stream ended without [DONE]");
            assert_eq!(&text, expected);
            assert!(took < Duration::from_secs(5), "a fast stream took {took:?}");
        }
    });
    // The engine finishes the slow request without waiting for its reader.
    assert!(
        eventually(Duration::from_secs(20), || server
            .metric("prophetkv_running_sequences")
            == 0.0),
        "the slow request's sequence is still running"
    );
    assert!(
        !reader.is_finished(),
        "the slow reader already has the whole stream: it did not hold the server back"
    );
    // Outlast both timeouts before letting the reader catch up.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(started.elapsed()));
    release.store(true, Ordering::SeqCst);
    let (received, read_slowly) = reader.join().unwrap();
    let (status, head, body) = parse_response(&received);
    assert_eq!(status, 200, "{head}");
    assert!(
        read_slowly < body.len() / 2,
        "the stream ({} bytes) was mostly read before release ({read_slowly} bytes)",
        body.len()
    );
    let (text, done) = sse_text(&body);
    assert!(done, "the slow stream did not end with [DONE]");
    assert_eq!(text, slow_expected);
    server.assert_healthy(&expected, Duration::from_secs(5));
}

#[test]
fn a_client_that_never_sends_its_body_gets_408_and_is_closed_while_others_are_served() {
    let server = start(&["--body-read-timeout-secs", "3"], None);
    let expected = completion_text(&server, &completion(8, 3));
    let body = completion(8, 3).to_string();
    let head = request_head(&server.addr(), "/v1/completions", &body);
    // One sends only the head, one the head and half the body.
    let mut silent = TcpStream::connect(server.addr()).unwrap();
    silent.write_all(head.as_bytes()).unwrap();
    let mut halfway = TcpStream::connect(server.addr()).unwrap();
    write!(halfway, "{head}{}", &body[..body.len() / 2]).unwrap();
    let stalled_at = Instant::now();

    // Others are answered meanwhile, before the stalled ones time out.
    assert_eq!(completion_text(&server, &completion(8, 3)), expected);
    assert!(
        stalled_at.elapsed() < Duration::from_secs(3),
        "a completion took {:?} while two clients stalled",
        stalled_at.elapsed()
    );

    for socket in [&mut silent, &mut halfway] {
        let (closed, received) = closed_within(socket, Duration::from_secs(10));
        let waited = stalled_at.elapsed();
        assert!(closed, "the stalled connection was not closed");
        let (status, response_head, answer) = parse_response(&received);
        assert_eq!(status, 408, "{response_head}");
        let error: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(error["error"]["code"], "timeout", "{error}");
        assert!(
            waited >= Duration::from_millis(2900) && waited < Duration::from_secs(8),
            "answered 408 after {waited:?} for a 3 s timeout"
        );
    }
    server.assert_healthy(&expected, Duration::from_secs(5));
}

#[test]
fn slowloris_connections_are_closed_after_the_header_read_timeout() {
    let server = start(&["--header-read-timeout-secs", "1"], None);
    let expected = completion_text(&server, &completion(8, 3));
    // One never sends a byte; one sends a header a byte every 100 ms.
    let mut silent = TcpStream::connect(server.addr()).unwrap();
    let trickle = TcpStream::connect(server.addr()).unwrap();
    let opened = Instant::now();
    let writer = {
        let mut trickle = trickle.try_clone().unwrap();
        std::thread::spawn(move || {
            let head = format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
                "a".repeat(200)
            );
            for byte in head.bytes() {
                if trickle.write_all(&[byte]).is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })
    };
    // Others are answered meanwhile.
    assert_eq!(completion_text(&server, &completion(8, 3)), expected);

    let mut trickle = trickle;
    for (name, socket) in [("silent", &mut silent), ("trickling", &mut trickle)] {
        let (closed, received) = closed_within(socket, Duration::from_secs(10));
        let waited = opened.elapsed();
        assert!(closed, "the {name} connection was not closed");
        assert!(
            received.is_empty() || received.starts_with(b"HTTP/1.1 408"),
            "the {name} connection got {:?}",
            String::from_utf8_lossy(&received)
        );
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "the {name} connection was closed after {waited:?} for a 1 s timeout"
        );
    }
    assert!(
        writer.join().unwrap(),
        "the trickling client could keep writing its header"
    );
    server.assert_healthy(&expected, Duration::from_secs(5));
}

/// Sockets `pid` has open (Linux): its listener and its connections.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_thousand_idle_connections_do_not_delay_health_or_completions() {
    const IDLE: usize = 1000;
    // This process holds the client ends; the server, which inherits the
    // limit, the other ends.
    let limit = raise_open_file_limit(4096);
    assert!(
        limit >= 2 * IDLE as u64,
        "open-file limit {limit} too low for {IDLE} connections"
    );
    let server = start(&[], None);
    let expected = completion_text(&server, &completion(8, 3));
    let pid = server.child.id();
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    // Taken by the server (the listener counts too), not left in the backlog.
    assert!(
        eventually(Duration::from_secs(10), || open_sockets(pid) > IDLE),
        "the server holds {} sockets for {IDLE} connections",
        open_sockets(pid)
    );
    server.assert_healthy(&expected, Duration::from_secs(3));
    drop(idle);
    assert!(
        eventually(Duration::from_secs(10), || open_sockets(pid) < 10),
        "the server still holds {} sockets after the clients left",
        open_sockets(pid)
    );
    server.assert_healthy(&expected, Duration::from_secs(3));
}

#[test]
fn the_server_accepts_again_after_running_out_of_file_descriptors() {
    raise_open_file_limit(4096);
    // Room for the server's own files and a few connections, not for 300.
    let server = start(&[], Some(128));
    let expected = completion_text(&server, &completion(8, 3));
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || server
            .output()
            .contains("accept failed")),
        "the server never ran out of descriptors"
    );
    drop(idle);
    // Within a few accept retries of the descriptors coming free.
    server.assert_healthy(&expected, Duration::from_secs(5));
}

#[test]
fn sigterm_lets_a_slowly_read_stream_finish_and_does_not_wait_for_idle_connections() {
    let mut server = start(&[], None);
    let slow_body = completion(300, 7);
    let slow_expected = completion_text(&server, &slow_body);
    let _idle = TcpStream::connect(server.addr()).unwrap();
    let release = Arc::new(AtomicBool::new(false));
    let reader = slow_sse_reader(&server.addr(), &slow_body, release.clone());
    // Once the answer has begun, long before the reader has it all.
    // SAFETY: kill only sends a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    std::thread::sleep(Duration::from_millis(700));
    // The stream ends complete (whether the server is still writing it or
    // the kernel holds its tail); the idle connection holds nothing up.
    release.store(true, Ordering::SeqCst);
    let (received, _) = reader.join().unwrap();
    let (status, head, body) = parse_response(&received);
    assert_eq!(status, 200, "{head}");
    let (text, done) = sse_text(&body);
    assert!(done, "the drained stream did not end with [DONE]");
    assert_eq!(text, slow_expected);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = server.server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after its last stream"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    let output = server.output();
    assert!(!output.contains("panicked"), "{output}");
}
