//! [`serve`]: the gateway on a bound listener, with a graceful drain and a hard deadline;
//! [`shutdown_signal`] for the binary.
//!
//! Embedders who serve [`crate::router()`] themselves get the routes but not this drain; see the
//! crate docs.

use std::{future::Future, sync::atomic::Ordering, time::Duration};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::{router::router, state::AppState};

/// Serves the gateway on `listener` until `shutdown` completes, then drains: stops accepting,
/// lets in-flight requests and streams finish for up to `shutdown_timeout`, and returns. Dropping
/// the state afterwards closes the upstream connection pools.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = state.draining.clone();
    let live = state.live.clone();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Duration>();
    let signal = async move {
        shutdown.await;
        draining.store(true, Ordering::Relaxed);
        // Read now, not at startup: a reload may have changed it.
        let grace = live.engine().config().server.shutdown_timeout;
        tracing::info!(deadline = %humantime_secs(grace), "shutting down: no new connections, finishing in-flight requests");
        let _ = started_tx.send(grace);
    };
    let cut_off = state.cut_off.clone();
    let app = router(state);
    // Without TCP_NODELAY, Nagle's algorithm holds the last small write of a response (the end of
    // an SSE stream, say) until the client's delayed ACK: ~40 ms added to every stream.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let deadline = async move {
        match started_rx.await {
            Ok(grace) => tokio::time::sleep(grace).await,
            // The server stopped without a shutdown signal; nothing to enforce.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => {
            tracing::info!("all in-flight requests finished");
            result
        }
        () = deadline => {
            tracing::warn!("shutdown deadline reached: ending the streams still in flight");
            cut_off.cancel();
            // Streams now end with an error event; give their connections a moment to flush it.
            match tokio::time::timeout(Duration::from_secs(1), &mut server).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
