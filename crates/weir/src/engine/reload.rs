//! Rebuilding the engine for a new config while keeping what users expect to survive.
//!
//! A config reload builds a whole new [`Engine`] (the gateway swaps it in atomically, and
//! requests already running finish on the old one). Building from scratch would also forget
//! everything the old engine learned: an open circuit breaker would close, a deployment resting
//! after a 429 would be hammered again, rate limits would hand out a fresh minute, the latency
//! estimates would start over. So a deployment whose settings did not change — same id, same
//! model group, equal [`DeploymentConfig`] — is carried over as it is (the same
//! `Arc<Deployment>`, with its breaker, cooldown, limiter, load, health state, pool and layer stack), and so
//! are the per-client limits when `server.client_rate_limits` did not change. The usage ledger
//! (requests, tokens, cost) is history rather than config: it always carries over. Anything else
//! is built new: a changed deployment starts with a closed breaker and empty limits, which is
//! what a changed key, URL or limit calls for.

use std::sync::Arc;

use super::{Deployment, Engine};
use crate::{
    config::{Config, DeploymentConfig},
    policy::limit::KeyedLimiter,
};

impl Engine {
    /// A new engine for `config` that keeps this one's live state where the config allows: a
    /// deployment whose settings did not change (same id, model group and settings) is carried
    /// over whole — breaker, cooldown, limits, load, health, pool — and so are the client limits
    /// when `server.client_rate_limits` did not change; the usage ledger always carries over
    /// (it is history, not config). This engine is left untouched and keeps serving whoever
    /// holds it.
    ///
    /// Layers added with [`EngineBuilder`](super::EngineBuilder) wrap the new engine too.
    ///
    /// Background health checks are not started: call [`Engine::start_health_checks`] on the
    /// result (and stop this engine's), as at startup.
    pub fn reload(&self, config: Config) -> Engine {
        Engine::build(config, Some(self), self.wrap.clone())
    }

    /// The deployment to carry over for `config` in group `group`, if it is unchanged.
    pub(super) fn reusable_deployment(
        &self,
        group: &str,
        config: &DeploymentConfig,
    ) -> Option<Arc<Deployment>> {
        let old = self.deployment(&config.id)?;
        (&*old.model_group == group && old.config == *config).then(|| old.clone())
    }

    /// The per-client limiter to carry over, if its settings are unchanged.
    pub(super) fn reusable_client_limiter(&self, config: &Config) -> Option<Arc<KeyedLimiter<Arc<str>>>> {
        let old = self.core.client_limiter.as_ref()?;
        (config.server.client_rate_limits.as_ref() == Some(old.config())).then(|| old.clone())
    }

    /// Whether `other` runs the very same deployment object for `id` (carried over by a reload).
    pub fn shares_deployment(&self, other: &Engine, id: &str) -> bool {
        match (self.deployment(id), other.deployment(id)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(second_url: &str, limits: &str) -> Config {
        let yaml = format!(
            r#"
server:
  client_rate_limits: {{ requests_per_minute: {limits} }}
models:
  - name: m
    deployments:
      - id: a
        provider: openai
        base_url: http://127.0.0.1:9/v1
        circuit_breaker: {{ failure_threshold: 1 }}
      - id: b
        provider: openai
        base_url: {second_url}
"#
        );
        Config::from_yaml(&yaml, None).unwrap()
    }

    #[tokio::test]
    async fn unchanged_deployments_keep_their_state_and_changed_ones_start_fresh() {
        let old = Engine::new(config("http://127.0.0.1:10/v1", "5"));
        old.deployment("a").unwrap().breaker().unwrap().force_open();
        let new = old.reload(config("http://127.0.0.1:11/v1", "5"));
        assert!(new.shares_deployment(&old, "a"));
        assert_eq!(
            new.deployment("a").unwrap().status().breaker,
            "forced_open",
            "an unchanged deployment keeps its breaker"
        );
        assert!(
            !new.shares_deployment(&old, "b"),
            "a changed URL builds a new deployment"
        );
        assert!(
            Arc::ptr_eq(&new.core.usage, &old.core.usage),
            "usage keeps counting"
        );
        assert!(Arc::ptr_eq(
            new.core.client_limiter.as_ref().unwrap(),
            old.core.client_limiter.as_ref().unwrap()
        ));
        let newer = new.reload(config("http://127.0.0.1:11/v1", "6"));
        assert!(!Arc::ptr_eq(
            newer.core.client_limiter.as_ref().unwrap(),
            new.core.client_limiter.as_ref().unwrap()
        ));
    }

    #[tokio::test]
    async fn a_renamed_group_builds_new_deployments() {
        let old = Engine::new(config("http://127.0.0.1:10/v1", "5"));
        let mut renamed = config("http://127.0.0.1:10/v1", "5");
        if let Some(group) = renamed.models.first_mut() {
            group.name = "m2".to_owned();
        }
        let new = old.reload(renamed);
        assert!(!new.shares_deployment(&old, "a"));
        assert_eq!(new.deployment("a").unwrap().model_group.as_ref(), "m2");
    }
}
