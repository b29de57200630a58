//! Starting `prophetkv serve` as a child process and talking to it over real HTTP.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The flags every tiny-model server starts with: exact f32 weights, a
/// one-token instruction, the name `tiny`.
pub const TINY_ARGS: [&str; 6] = [
    "--dtype",
    "f32",
    "--instruction",
    "t5 ",
    "--model-name",
    "tiny",
];

/// The tiny model's directory and a server on it (the model dir must outlive it).
pub struct TinyServer {
    pub server: Server,
    _model: tempfile::TempDir,
}

impl std::ops::Deref for TinyServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl TinyServer {
    /// A server on a fresh tiny Gemma 3 with [`TINY_ARGS`], `extra` flags and
    /// `env`, its output written to `log` when given.
    pub fn start(extra: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> TinyServer {
        let model = tempfile::tempdir().unwrap();
        prophetkv_model::testing::write_tiny(model.path(), prophetkv_model::testing::Tiny::Gemma3);
        let mut args = TINY_ARGS.to_vec();
        args.extend_from_slice(extra);
        TinyServer {
            server: Server::start_logging(model.path(), &args, env, log),
            _model: model,
        }
    }
}

/// A running server, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free local port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts `prophetkv serve --model model` on a free port with a fresh
    /// data dir, no Redis, and `extra` flags; waits until `/ready`.
    pub fn start(model: &Path, extra: &[&str]) -> Server {
        Self::start_logging(model, extra, &[], None)
    }

    /// [`Server::start`] with `env` set and, when `log` is given, the
    /// server's stdout and stderr written to that file.
    pub fn start_logging(
        model: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Server {
        Self::spawn(model, extra, env, log, None)
    }

    /// [`Server::start`] with the server's stdout and stderr written to
    /// `log` and its soft open-file limit (`RLIMIT_NOFILE`) set to
    /// `max_open_files`, so that it runs out of file descriptors early.
    pub fn start_with_open_file_limit(
        model: &Path,
        extra: &[&str],
        log: &Path,
        max_open_files: u64,
    ) -> Server {
        Self::spawn(model, extra, &[], Some(log), Some(max_open_files))
    }

    fn spawn(
        model: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
        max_open_files: Option<u64>,
    ) -> Server {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::File::create(path).unwrap();
                (Stdio::from(file.try_clone().unwrap()), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_prophetkv"));
        if let Some(limit) = max_open_files {
            set_open_file_limit_on_exec(&mut command, limit);
        }
        let child = command
            .arg("serve")
            .arg("--model")
            .arg(model)
            .arg("--data-dir")
            .arg(data.path())
            .args(["--port", &port.to_string()])
            .args(extra)
            .env_remove("PROPHETKV_REDIS_URL")
            .env_remove("PROPHETKV_API_KEYS")
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _data: data,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = agent().get(format!("{}/ready", self.base)).call() {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// POSTs JSON; the status and the body (as JSON when it parses).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut r = agent()
            .post(format!("{}{path}", self.base))
            .send_json(body)
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POSTs a streaming request; the SSE chunks and whether `[DONE]` came.
    pub fn stream(&self, path: &str, body: &Value) -> (Vec<Value>, bool) {
        let r = agent()
            .post(format!("{}{path}", self.base))
            .send_json(body)
            .unwrap();
        assert_eq!(r.status(), 200);
        let reader = BufReader::new(r.into_body().into_reader());
        let mut chunks = Vec::new();
        for line in reader.lines() {
            let line = line.unwrap();
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                return (chunks, true);
            }
            chunks.push(serde_json::from_str(data).unwrap());
        }
        (chunks, false)
    }

    /// The value of an unlabelled metric in `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let mut r = agent()
            .get(format!("{}/metrics", self.base))
            .call()
            .unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    }
}

/// Makes `command`'s process start with a soft `RLIMIT_NOFILE` of `limit`
/// (its hard limit unchanged).
fn set_open_file_limit_on_exec(command: &mut Command, limit: u64) {
    use std::os::unix::process::CommandExt;
    let set = move || {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit are async-signal-safe and only read
        // and write the struct passed to them.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            current.rlim_cur = limit.min(current.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &current) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: `set` runs in the child between fork and exec and calls only
    // async-signal-safe functions (no allocation, no locks).
    unsafe {
        command.pre_exec(set);
    }
}

/// Raises this process's soft open-file limit to at least `needed` (up to
/// its hard limit) and returns the soft limit now in force. Children
/// started afterwards inherit it.
pub fn raise_open_file_limit(needed: u64) -> u64 {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read and write the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut current), 0);
        if current.rlim_cur < needed {
            current.rlim_cur = needed.min(current.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &current), 0);
        }
    }
    current.rlim_cur
}

/// An HTTP client that returns error statuses instead of failing on them.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// The text of a stream of completion chunks (`choices[0].text`) or chat
/// chunks (`choices[0].delta.content`).
pub fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            let choice = c["choices"].get(0)?;
            choice["text"]
                .as_str()
                .or_else(|| choice["delta"]["content"].as_str())
        })
        .collect()
}

/// Runs `tests/SCRIPT` with the workspace's `.venv` Python (`make venv`
/// installs its packages) and `args`; asserts it succeeded and returns
/// what it printed.
pub fn run_venv_script(script: &str, args: &[&str]) -> String {
    let root = prophetkv_model::testing::workspace_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: `make venv` (part of `make test`) installs it",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("tests").join(script))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
