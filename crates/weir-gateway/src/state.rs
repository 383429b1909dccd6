//! [`AppState`]: what every handler shares (the live engine, the drain flag, the cut-off token).
//!
//! It sits in its own module, below the router, the faces and the HTTP plumbing, so that all of
//! them can take it without importing each other.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use weir::{Config, Engine};

use crate::{reload, telemetry};

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

/// The state as handlers hold it: one `Arc` clone per request instead of one per field (a
/// cancellation token clone takes a lock).
pub(crate) type Shared = Arc<AppState>;

impl AppState {
    /// Builds the engine (and its connection pools) for a config. Such a state cannot reload
    /// (it has no file to re-read): see [`AppState::with_loader`].
    pub fn new(config: Config) -> AppState {
        AppState::with_live(reload::Live::new(Engine::new(config), None))
    }

    /// Builds the engine for `config`, which `loader` loaded; reloads re-read it the same way.
    pub fn with_loader(config: Config, loader: reload::ConfigLoader) -> AppState {
        AppState::with_live(reload::Live::new(Engine::new(config), Some(loader)))
    }

    /// Serves an engine built elsewhere — e.g. with layers of your own
    /// ([`weir::EngineBuilder::layer`]): the gateway's requests go through them too. Such a state
    /// cannot reload from a file; see [`AppState::from_engine_with_loader`].
    pub fn from_engine(engine: Engine) -> AppState {
        AppState::with_live(reload::Live::new(engine, None))
    }

    /// [`AppState::from_engine`], reloading its config with `loader`; a reload keeps the
    /// engine's layers.
    pub fn from_engine_with_loader(engine: Engine, loader: reload::ConfigLoader) -> AppState {
        AppState::with_live(reload::Live::new(engine, Some(loader)))
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
