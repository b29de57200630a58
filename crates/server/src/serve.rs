//! Binding, the accept loop, connection timeouts, and graceful shutdown.
//!
//! Each accepted connection is served by hyper (HTTP/1.1, or HTTP/2 when the
//! client speaks it) on its own task, so a slow or stuck client holds only its
//! own connection. Two timeouts bound what a client can hold without sending:
//!
//! - header read ([`ServeOptions::header_read_timeout`]): a connection whose
//!   first request head is not complete that long after it was accepted, or
//!   (HTTP/1, hyper's own timer) whose next request head is not complete that
//!   long after it began or after the previous response, is closed without an
//!   answer (slowloris, and idle keep-alive connections).
//! - body read ([`ServeOptions::body_read_timeout`]): when no piece of a
//!   request body arrives for that long, the request is answered 408 and the
//!   connection is closed. It is an idle timeout between reads, like nginx's
//!   `client_body_timeout`, not a deadline for the whole request: responses,
//!   streams included, are never cut by either timeout.
//!
//! The listen backlog is 1,024 connections (capped by `net.core.somaxconn`).
//! An accept that fails for lack of file descriptors (EMFILE/ENFILE) or
//! memory is logged and retried after a pause; the loop never ends on it, so
//! the server takes connections again as soon as descriptors are freed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::Service as _;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Notify;
use tower_http::timeout::RequestBodyTimeout;

use crate::state::AppState;

/// Connections the kernel queues for the accept loop (capped by
/// `net.core.somaxconn`). The 128 that std and mio ask for drops the SYNs of
/// a burst of clients, which then wait seconds for their retransmits.
const LISTEN_BACKLOG: u32 = 1024;

/// Pause after an accept error that is not the peer's doing (such as running
/// out of file descriptors) before accepting again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// How [`serve`] treats connections. `None` disables a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long running requests and streams get to finish after SIGTERM or
    /// SIGINT.
    pub shutdown_grace: Duration,
    /// How long an HTTP/1 client gets to send a complete request head once
    /// the connection is open or the previous response is done; the
    /// connection is then closed without an answer.
    pub header_read_timeout: Option<Duration>,
    /// Longest wait for the next piece of a request body; the request is then
    /// answered 408 and the connection closed.
    pub body_read_timeout: Option<Duration>,
}

impl Default for ServeOptions {
    /// 30 s grace, 30 s for headers (hyper's default), 60 s between body
    /// reads (nginx's `client_body_timeout`).
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Some(Duration::from_secs(30)),
            body_read_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// Serves `state` on `addr` until SIGTERM or SIGINT; then stops accepting,
/// lets running requests and streams finish for up to
/// `options.shutdown_grace`, and returns.
pub async fn serve(
    state: AppState,
    addr: SocketAddr,
    options: ServeOptions,
) -> std::io::Result<()> {
    let listener = bind(addr)?;
    tracing::info!(%addr, "listening");
    let accepting = state.accepting.clone();
    let engine = state.engine.clone();
    // No timeout is a deadline tokio clamps to the far future.
    let body_timeout = options.body_read_timeout.unwrap_or(Duration::MAX);
    let service = RequestBodyTimeout::new(crate::router(state), body_timeout);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(shutdown_signal());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        // Tokens go out as they are made, not when a segment fills.
        let _ = stream.set_nodelay(true);
        // hyper's timer starts only once the protocol is known (HTTP/1 or
        // HTTP/2's preface), so the first request head has its own deadline.
        let first_request = Arc::new(Notify::new());
        let service = {
            let first_request = first_request.clone();
            let service = TowerToHyperService::new(service.clone());
            hyper::service::service_fn(move |request| {
                first_request.notify_one();
                service.call(request)
            })
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(serve_connection(
            graceful.watch(connection),
            first_request,
            options.header_read_timeout,
        ));
    }
    tracing::info!("shutting down: draining running requests");
    accepting.store(false, Ordering::SeqCst);
    drop(listener);
    let grace = options.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
    }
    engine.close();
    Ok(())
}

/// A listener on `addr` with a [`LISTEN_BACKLOG`] queue.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // Restart without waiting for the last run's connections to time out.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs one connection to its end, or drops (closes) it when no request has
/// arrived `first_head_within` after it was accepted.
async fn serve_connection<C, E>(
    connection: C,
    first_request: Arc<Notify>,
    first_head_within: Option<Duration>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let late = async {
        if let Some(limit) = first_head_within {
            if tokio::time::timeout(limit, first_request.notified())
                .await
                .is_err()
            {
                return;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                // Clients that hang up, time out or send garbage.
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = late => tracing::debug!("no request head within the header read timeout; closing"),
    }
}

/// After a failed accept: nothing for errors about the one connection (the
/// peer reset it before it was taken), a logged pause for the rest, such as
/// EMFILE, which clears when connections close.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, pause = ?ACCEPT_ERROR_PAUSE, "accept failed; retrying");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
