//! Config reload: re-read the config file, validate it, build a new engine and swap it in.
//!
//! The running [`Engine`] sits in an [`ArcSwap`]. Every request takes its own `Arc<Engine>`
//! ([`crate::AppState::engine`]) when it starts and keeps it for its whole life, streams included,
//! so a reload never drops or changes a request already under way: it finishes on the old engine,
//! and the old engine is freed when the last of them ends. New requests see the new one.
//!
//! A reload (`POST /admin/reload` or SIGHUP) goes:
//! 1. read the same file again (with the same command-line and `WEIR_*` overrides as at startup)
//!    and validate it; a bad file changes nothing and the error names the file, line and field;
//! 2. build the new engine from the old one ([`Engine::reload`]): deployments whose settings did
//!    not change carry over their breaker, cooldown, rate limits, health and latency state;
//! 3. start the new engine's background health checks, swap, then stop the old engine's.
//!
//! Settings that only take effect at startup (the listen address, logging) are reported as
//! needing a restart, and the running values stay in force, rather than being silently ignored.
//!
//! Without a config file (zero-config from the environment) there is nothing to reload: the
//! process's environment cannot change from outside, so a reload is refused with a message
//! saying so instead of pretending to re-read it.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use serde::Serialize;
use weir::{
    Config, Engine,
    config::{ConfigError, LogFormat, Secret},
    engine::HealthCheckHandle,
};

/// Where the config comes from and what overrides it: enough to load it again the same way.
#[derive(Debug, Clone, Default)]
pub struct ConfigLoader {
    /// The YAML file; `None` is zero-config (from the environment), which cannot be reloaded.
    pub path: Option<PathBuf>,
    /// `--host` / `WEIR_HOST`.
    pub host: Option<String>,
    /// `--port` / `WEIR_PORT`.
    pub port: Option<u16>,
    /// `--log-format` / `WEIR_LOG_FORMAT`.
    pub log_format: Option<LogFormat>,
    /// `--log-level` / `WEIR_LOG_LEVEL`.
    pub log_level: Option<String>,
}

/// The environment variable that sets (and overrides `server.admin_key`) the admin key.
pub const ADMIN_KEY_ENV: &str = "WEIR_ADMIN_KEY";

impl ConfigLoader {
    /// Loads and validates the config, then applies the overrides: flags and `WEIR_*` variables
    /// win over the file, as documented for `weir serve`.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.path {
            Some(path) => Config::load(path)?,
            None => Config::from_env()?,
        };
        if let Some(host) = &self.host {
            config.server.host = host.clone();
        }
        if let Some(port) = self.port {
            config.server.port = port;
        }
        if let Some(format) = self.log_format {
            config.logging.format = format;
        }
        if let Some(level) = &self.log_level {
            config.logging.level = level.clone();
        }
        if let Some(key) = std::env::var(ADMIN_KEY_ENV).ok().filter(|k| !k.trim().is_empty()) {
            let key = Secret::new(key);
            if config.server.api_keys.contains(&key) {
                return Err(ConfigError {
                    file: None,
                    line: None,
                    field: Some(ADMIN_KEY_ENV.to_owned()),
                    message: "must differ from every server.api_keys entry".to_owned(),
                });
            }
            config.server.admin_key = Some(key);
        }
        Ok(config)
    }
}

/// The running engine, swapped whole by a reload, and what a reload needs.
pub struct Live {
    engine: ArcSwap<Engine>,
    /// The running engine's background health checks; dropping them stops them.
    health_checks: parking_lot::Mutex<Vec<HealthCheckHandle>>,
    /// How to load the config again; `None` when the state was built from a `Config` value.
    loader: Option<ConfigLoader>,
    /// One reload at a time: two interleaved ones could start health checks for an engine that
    /// never serves.
    reloading: tokio::sync::Mutex<()>,
    /// 1 for the config loaded at startup, +1 per successful reload.
    generation: AtomicU64,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .field("loader", &self.loader)
            .finish_non_exhaustive()
    }
}

impl Live {
    /// Runs `engine`, starting its health checks if a runtime is there to run them.
    pub(crate) fn new(engine: Engine, loader: Option<ConfigLoader>) -> Live {
        let engine = Arc::new(engine);
        Live {
            health_checks: parking_lot::Mutex::new(start_health_checks(&engine)),
            engine: ArcSwap::new(engine),
            loader,
            reloading: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(1),
        }
    }

    /// The engine new requests use.
    pub(crate) fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// Which config is running: 1 at startup, +1 per successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Reloads the config (see the [module docs](self)). On error nothing changed.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let loader = self.loader.as_ref().ok_or(ReloadError::NoConfigFile)?;
        let loader_path = loader.path.as_ref().ok_or(ReloadError::NoConfigFile)?;
        let mut config = loader.load().map_err(ReloadError::Invalid)?;
        let old = self.engine();
        let restart_required = keep_startup_settings(old.config(), &mut config);
        let new = Arc::new(old.reload(config));
        let checks = start_health_checks(&new);
        self.engine.store(new.clone());
        // Swapped first, stopped after: the deployments carried over are never left unprobed.
        let stopped = std::mem::replace(&mut *self.health_checks.lock(), checks);
        drop(stopped);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let report = ReloadReport::new(generation, &old, &new, restart_required);
        tracing::info!(
            generation,
            file = %loader_path.display(),
            kept = report.deployments.kept.len(),
            changed = report.deployments.changed.len(),
            added = report.deployments.added.len(),
            removed = report.deployments.removed.len(),
            "config reloaded"
        );
        for setting in &report.restart_required {
            tracing::warn!(
                setting = setting.setting,
                running = %setting.running,
                configured = %setting.configured,
                "config reload: this setting only changes with a restart; the running value stays"
            );
        }
        Ok(report)
    }
}

fn start_health_checks(engine: &Arc<Engine>) -> Vec<HealthCheckHandle> {
    // Health checks run as tasks: they need the runtime the gateway serves on.
    match tokio::runtime::Handle::try_current() {
        Ok(_) => engine.start_health_checks(),
        Err(_) => Vec::new(),
    }
}

/// Puts the running values of startup-only settings back into `new` (so that the engine's config
/// says what is really in force) and lists the ones the file changed.
fn keep_startup_settings(running: &Config, new: &mut Config) -> Vec<RestartRequired> {
    let mut changed = Vec::new();
    let mut check = |setting: &'static str, running: String, configured: String| {
        if running != configured {
            changed.push(RestartRequired {
                setting,
                running,
                configured,
            });
        }
    };
    check(
        "server.host",
        running.server.host.clone(),
        new.server.host.clone(),
    );
    check(
        "server.port",
        running.server.port.to_string(),
        new.server.port.to_string(),
    );
    check(
        "logging.format",
        format!("{:?}", running.logging.format).to_lowercase(),
        format!("{:?}", new.logging.format).to_lowercase(),
    );
    check(
        "logging.level",
        running.logging.level.clone(),
        new.logging.level.clone(),
    );
    new.server.host.clone_from(&running.server.host);
    new.server.port = running.server.port;
    new.logging = running.logging.clone();
    changed
}

/// Why a reload changed nothing.
#[derive(Debug)]
pub enum ReloadError {
    /// The gateway runs without a config file.
    NoConfigFile,
    /// The file is unreadable or invalid.
    Invalid(ConfigError),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::NoConfigFile => f.write_str(
                "weir runs without a config file (zero-config from the environment): there is nothing to reload; \
                 start it with --config FILE to reload without a restart",
            ),
            ReloadError::Invalid(e) => {
                // The parser's message goes on with a snippet of the file around the error, which
                // can hold a key on a neighbouring line: this message is logged and sent, so only
                // its first line (file, line, field, what is wrong) is kept.
                let mut e = e.clone();
                if let Some((first, _snippet)) = e.message.split_once('\n') {
                    e.message = first.trim_end().to_owned();
                }
                write!(f, "the config was not reloaded: {e}")
            }
        }
    }
}

impl From<ReloadError> for weir::Error {
    fn from(e: ReloadError) -> Self {
        match e {
            ReloadError::NoConfigFile => weir::Error::InvalidRequest {
                message: e.to_string(),
                param: None,
                code: Some("nothing_to_reload"),
            },
            ReloadError::Invalid(_) => weir::Error::Config(e.to_string()),
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// The config generation now running.
    pub generation: u64,
    /// Where the config came from.
    pub source: String,
    /// Model groups now served.
    pub models: Vec<String>,
    /// What happened to each deployment.
    pub deployments: DeploymentChanges,
    /// Settings the file changed that only a restart applies; their running values stay.
    pub restart_required: Vec<RestartRequired>,
}

/// Deployment ids by what the reload did to them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeploymentChanges {
    /// Unchanged: carried over with their live state.
    pub kept: Vec<String>,
    /// Same id, new settings: rebuilt with fresh state.
    pub changed: Vec<String>,
    /// New ids.
    pub added: Vec<String>,
    /// Gone (requests still running on them finish).
    pub removed: Vec<String>,
}

/// A startup-only setting the file changed.
#[derive(Debug, Clone, Serialize)]
pub struct RestartRequired {
    /// Its config path.
    pub setting: &'static str,
    /// The value in force.
    pub running: String,
    /// The value in the file.
    pub configured: String,
}

impl ReloadReport {
    fn new(generation: u64, old: &Engine, new: &Engine, restart_required: Vec<RestartRequired>) -> Self {
        let mut deployments = DeploymentChanges::default();
        for d in new.deployments() {
            let id = d.id().to_owned();
            if new.shares_deployment(old, &id) {
                deployments.kept.push(id);
            } else if old.deployment(&id).is_some() {
                deployments.changed.push(id);
            } else {
                deployments.added.push(id);
            }
        }
        deployments.removed = old
            .deployments()
            .filter(|d| new.deployment(d.id()).is_none())
            .map(|d| d.id().to_owned())
            .collect();
        ReloadReport {
            generation,
            source: new.config().source.to_string(),
            models: new.config().models.iter().map(|m| m.name.clone()).collect(),
            deployments,
            restart_required,
        }
    }
}

/// Reloads on every SIGHUP until the returned future is dropped. Takes the signal stream already
/// registered (at startup, before the gateway announces itself, so that an early SIGHUP is never
/// the default "terminate").
#[cfg(unix)]
pub async fn reload_on_sighup(live: Arc<Live>, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        tracing::info!("received SIGHUP: reloading the config");
        if let Err(err) = live.reload().await {
            tracing::error!(error = %err, "config reload failed; the running config stays in force");
        }
    }
}
