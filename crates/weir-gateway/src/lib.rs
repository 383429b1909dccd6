//! Weir's HTTP face: an OpenAI-compatible gateway over the [`weir`] engine.
//!
//! This crate only serves HTTP and authenticates clients; routing, calling upstreams, pooling and
//! error semantics live in the `weir` library so that in-process users get exactly the same.
//!
//! Tests and embedders drive the real server with [`serve`]: it takes an already bound listener
//! (bind `127.0.0.1:0` in tests) and a shutdown future, as tokio's mini-redis does.

mod admin;
mod error;
mod messages;
mod middleware;
pub mod reload;
mod routes;
pub mod telemetry;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use weir::{Config, Engine};

pub use error::ApiError;
pub use routes::router;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The running engine (and with it the config: keys, limits, models), swapped whole by a
    /// config reload. Use [`AppState::engine`].
    pub live: Arc<reload::Live>,
    /// Set once shutdown starts: `/ready` turns 503 so load balancers stop sending traffic.
    pub draining: Arc<AtomicBool>,
    /// Fired when the drain deadline passes: streams still running end with an error event.
    pub cut_off: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// Builds the engine (and its connection pools) for a config. Such a state cannot reload
    /// (it has no file to re-read): see [`AppState::with_loader`].
    pub fn new(config: Config) -> Result<AppState, weir::Error> {
        Ok(AppState::with_live(reload::Live::new(Engine::new(config)?, None)))
    }

    /// Builds the engine for `config`, which `loader` loaded; reloads re-read it the same way.
    pub fn with_loader(config: Config, loader: reload::ConfigLoader) -> Result<AppState, weir::Error> {
        Ok(AppState::with_live(reload::Live::new(
            Engine::new(config)?,
            Some(loader),
        )))
    }

    fn with_live(live: reload::Live) -> AppState {
        telemetry::install_metrics();
        AppState {
            live: Arc::new(live),
            draining: Arc::new(AtomicBool::new(false)),
            cut_off: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// The engine a new request should use, and keep for its whole life: a config reload swaps
    /// in another engine for the requests that start after it, never under a running one.
    pub fn engine(&self) -> Arc<Engine> {
        self.live.engine()
    }

    /// Reloads the config file (see [`reload`]); on error the running config stays.
    pub async fn reload(&self) -> Result<reload::ReloadReport, reload::ReloadError> {
        self.live.reload().await
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

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
