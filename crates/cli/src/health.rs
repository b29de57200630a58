//! `prophetkv health`: asks a running server's `/ready` (or `/health`) and
//! exits 0 only on 200 — the container's HEALTHCHECK, with no curl in the image.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

/// Arguments of `prophetkv health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The server's port.
    #[arg(long, env = "PROPHETKV_PORT", default_value_t = 8080)]
    port: u16,
    /// Path to ask: /ready (accepting requests) or /health (alive).
    #[arg(long, default_value = "/ready")]
    path: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

pub fn run(args: HealthArgs) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        args.path
    )?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).context("reading the answer")?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!("{} answered {status:?}", args.path);
    }
    println!("{} 200", args.path);
    Ok(())
}
