//! [`serve`]: the gateway on a bound listener, with connection limits, a graceful drain and a
//! hard deadline; [`shutdown_signal`] for the binary.
//!
//! Embedders who serve [`crate::router()`] themselves get the routes but not this drain, nor the
//! connection limits; see the crate docs.

mod conn;

use std::{future::Future, sync::Arc, sync::atomic::Ordering, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};

use crate::{router::router, state::AppState};

/// Serves the gateway on `listener` until `shutdown` completes, then drains: stops accepting,
/// lets in-flight requests and streams finish for up to `shutdown_timeout`, and returns. Dropping
/// the state afterwards closes the upstream connection pools.
///
/// Each connection is closed when it stays idle for `server.idle_timeout`, or takes longer than
/// `server.header_read_timeout` to send a request's headers; at most `server.max_connections`
/// are served at once (see `conn`).
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
    // Connection limits are read once: a reload does not rebind the listener either.
    let (limits, max_connections) = {
        let engine = state.engine();
        let server = &engine.config().server;
        let limits = conn::Limits {
            header_read: server.header_read_timeout,
            idle: server.idle_timeout,
        };
        (limits, server.max_connections)
    };
    let cut_off = state.cut_off.clone();
    let app = router(state);
    let server = accept(listener, app, limits, max_connections, signal);
    let deadline = async move {
        match started_rx.await {
            Ok(grace) => tokio::time::sleep(grace).await,
            // The server stopped without a shutdown signal; nothing to enforce.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => {
            tracing::info!("all in-flight requests finished");
            Ok(())
        }
        () = deadline => {
            tracing::warn!("shutdown deadline reached: ending the streams still in flight");
            cut_off.cancel();
            // Streams now end with an error event, and requests still waiting for an upstream
            // answer with a 503; give their connections a moment to flush it.
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut server).await;
            Ok(())
        }
    }
}

/// Accepts connections until `signal`, then closes the listener (new connections are refused),
/// asks every connection to finish gracefully, and returns once all are closed.
async fn accept(
    listener: TcpListener,
    app: axum::Router,
    limits: conn::Limits,
    max_connections: usize,
    signal: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection holds a receiver; the sender's `closed` resolves when the last is gone.
    let (open_tx, open_rx) = watch::channel(());
    tokio::pin!(signal);
    loop {
        // At the limit, new connections wait in the listen backlog until one closes (idle ones
        // close by themselves after `idle_timeout`).
        let slot = tokio::select! {
            () = &mut signal => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let tcp = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors, say: wait a little instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Without TCP_NODELAY, Nagle's algorithm holds the last small write of a response (the
        // end of an SSE stream, say) until the client's delayed ACK: ~40 ms added to every stream.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        tokio::spawn(conn::serve(
            tcp,
            app.clone(),
            limits,
            stop_rx.clone(),
            open_rx.clone(),
            slot,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
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
