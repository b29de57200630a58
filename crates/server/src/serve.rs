//! Binding, serving, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::state::AppState;

/// Serves `state` on `addr` until SIGTERM or SIGINT; then stops accepting,
/// lets running requests and streams finish for up to `grace`, and returns.
pub async fn serve(state: AppState, addr: SocketAddr, grace: Duration) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "listening");
    let accepting = state.accepting.clone();
    let engine = state.engine.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, crate::router(state)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining running requests");
        accepting.store(false, Ordering::SeqCst);
        let _ = stop_tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    let _ = stop_rx.await;
    match tokio::time::timeout(grace, server).await {
        Ok(joined) => joined.map_err(std::io::Error::other)??,
        Err(_) => tracing::warn!(?grace, "grace period over; closing remaining connections"),
    }
    engine.close();
    Ok(())
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
