//! `weir check`: what a config file would serve, section by section (server, auth, routing,
//! resilience, cache), and warnings about what would surprise at serve time (placeholder keys,
//! a default gateway key, no models).

use std::fmt::Write as _;

use weir::{
    Config,
    config::{CacheStrategy, DeploymentConfig, ModelGroupConfig, ProviderKind, Strategy},
    policy::limit::{LimitMode, RateLimitConfig},
};

/// Why a config cannot be served at all: `weir check` and `weir serve` refuse it.
pub(crate) fn refusal(config: &Config) -> Option<String> {
    config.models.is_empty().then(|| {
        format!(
            "{}: no models are configured, so every request would be a 404. Add at least one under \
             `models:` (see docs/configuration.md), or run `weir serve` without --config for the \
             zero-config setup",
            config.source
        )
    })
}

/// What would surprise at serve time, one line each: keys that are the file's placeholders,
/// gateway authentication that only looks on.
pub(crate) fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let placeholders = config
        .server
        .api_keys
        .iter()
        .filter(|k| k.is_placeholder())
        .count();
    if placeholders > 0 {
        out.push(format!(
            "{placeholders} of the {} server.api_keys is a placeholder (`change-me` or a \
             `${{VAR:-default}}` whose VAR is unset): anyone who reads the file can call this gateway; \
             set the variable to a real secret",
            config.server.api_keys.len()
        ));
    }
    if config
        .server
        .admin_key
        .as_ref()
        .is_some_and(|k| k.is_placeholder())
    {
        out.push("server.admin_key is a placeholder: set a real secret (or WEIR_ADMIN_KEY)".to_owned());
    }
    for group in &config.models {
        for d in &group.deployments {
            if d.api_key.as_ref().is_some_and(|k| k.is_placeholder()) {
                out.push(format!(
                    "deployment `{}` uses a placeholder API key (a `${{VAR:-default}}` whose VAR is unset): \
                     its upstream will answer 401 until the variable is set",
                    d.id
                ));
            }
        }
    }
    out
}

/// The whole report printed by `weir check` for a valid config.
pub(crate) fn report(name: &str, config: &Config) -> String {
    let mut o = String::new();
    let s = &config.server;
    let _ = writeln!(o, "{name}: OK");
    let _ = writeln!(
        o,
        "server: http://{}:{}  max body {} bytes  shutdown timeout {:?}",
        s.host, s.port, s.max_body_bytes, s.shutdown_timeout
    );
    let real_keys = s.api_keys.iter().filter(|k| !k.is_placeholder()).count();
    let auth = match (s.api_keys.len(), real_keys) {
        (0, _) => "off (no server.api_keys)".to_owned(),
        (n, r) if r == n => format!("{n} gateway key(s)"),
        (n, 0) => format!("{n} gateway key(s), all placeholders: effectively OFF (see the warnings)"),
        (n, r) => format!("{n} gateway key(s), {} of them placeholders", n - r),
    };
    let _ = writeln!(o, "auth: {auth}");
    let admin = match &s.admin_key {
        Some(k) if k.is_placeholder() => "on, with a placeholder key (see the warnings)",
        Some(_) => "on (server.admin_key)",
        None => "off (no server.admin_key; WEIR_ADMIN_KEY can set one at serve time)",
    };
    let _ = writeln!(o, "admin API: {admin}");
    let _ = writeln!(
        o,
        "logging: {:?} at `{}`",
        config.logging.format, config.logging.level
    );
    let _ = writeln!(o, "models:");
    for group in &config.models {
        describe_group(&mut o, group);
    }
    let r = &config.resilience;
    let _ = writeln!(
        o,
        "resilience: request deadline {:?}; retry budget {}% of first attempts over {:?} (+{}/s)",
        r.request_deadline,
        r.retry_budget.ratio * 100.0,
        r.retry_budget.window,
        r.retry_budget.min_per_second
    );
    if let Some(limits) = &s.client_rate_limits {
        let _ = writeln!(
            o,
            "client rate limits (each gateway key): {}",
            describe_limits(limits)
        );
    }
    describe_cache(&mut o, config);
    match &config.default_model {
        Some(m) => {
            let _ = writeln!(o, "default model (for requests without one): {m}");
        }
        None => {
            let _ = writeln!(o, "default model: none (pass-through requests must name a model)");
        }
    }
    o
}

fn describe_group(o: &mut String, group: &ModelGroupConfig) {
    let kind = if group.is_wildcard() { " (pattern)" } else { "" };
    let _ = writeln!(o, "  {}{kind}", group.name);
    let strategy = match group.strategy {
        Strategy::WeightedRandom => format!("{} (by weight)", group.strategy),
        other => other.to_string(),
    };
    let tiers: std::collections::BTreeSet<u32> = group.deployments.iter().map(|d| d.priority).collect();
    let tiers = if tiers.len() > 1 {
        format!(
            "; priority tiers {} (lower first; the next tier only when a tier is unusable)",
            tiers.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        )
    } else {
        String::new()
    };
    let _ = writeln!(o, "    routing: strategy {strategy}{tiers}");
    let list = |names: &[String]| {
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(" -> ")
        }
    };
    let _ = writeln!(
        o,
        "    fallbacks: {}; context-window fallbacks: {}",
        list(&group.fallbacks),
        list(&group.context_window_fallbacks)
    );
    for d in &group.deployments {
        describe_deployment(o, d);
    }
}

fn describe_deployment(o: &mut String, d: &DeploymentConfig) {
    let target = match d.provider {
        ProviderKind::Mock => "in-process mock".to_owned(),
        _ => d.base_url.to_string(),
    };
    let model = d.model.as_deref().unwrap_or("<client's model>");
    let key = match &d.api_key {
        Some(k) if k.is_placeholder() => "PLACEHOLDER key",
        Some(_) => "key set",
        None => "no key",
    };
    let _ = writeln!(
        o,
        "    - {} -> {} {target} model={model} ({key}; weight {}, priority {}; timeouts connect {:?} read {:?} total {:?}; pool {}/{} per host)",
        d.id,
        d.provider.as_str(),
        d.weight,
        d.priority,
        d.timeouts.connect,
        d.timeouts.read,
        d.timeouts.total,
        d.pool.max_connections,
        d.pool.max_connections_per_host,
    );
    let breaker = match &d.circuit_breaker {
        Some(b) => format!(
            "opens after {} failures for {:?}",
            b.failure_threshold, b.open_timeout
        ),
        None => "off".to_owned(),
    };
    let limits = d
        .rate_limits
        .as_ref()
        .map_or_else(|| "none".to_owned(), describe_limits);
    let _ = writeln!(
        o,
        "      retries {} (backoff {:?}..{:?}); breaker {breaker}; rate limits {limits}",
        d.retry.max_retries, d.retry.base_delay, d.retry.max_delay
    );
    let health = match &d.health_check {
        Some(h) => format!(
            "every {:?} (timeout {:?}; unhealthy after {} failures, healthy again after {} successes)",
            h.interval, h.timeout, h.unhealthy_threshold, h.healthy_threshold
        ),
        None => "off".to_owned(),
    };
    let _ = writeln!(o, "      health checks: {health}");
}

fn describe_cache(o: &mut String, config: &Config) {
    let c = &config.cache;
    if !c.enabled() {
        let why = if c.strategy == CacheStrategy::Disabled {
            "off (no cache: section, or strategy disabled)"
        } else {
            "off (neither memory nor redis is enabled)"
        };
        let _ = writeln!(o, "cache: {why}");
        return;
    }
    let mut tiers = Vec::new();
    if c.memory.enabled {
        tiers.push(format!("memory up to {} bytes", c.memory.max_bytes));
    }
    if let Some(redis) = &c.redis {
        // The URL may carry a password: show where it points, not who logs in.
        let host = redis
            .url
            .split_once("://")
            .map_or(redis.url.as_str(), |(_, rest)| rest);
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        tiers.push(format!(
            "redis at {host} (prefix {}, timeout {:?})",
            redis.key_prefix, redis.timeout
        ));
    }
    let _ = writeln!(
        o,
        "cache: strategy {}; ttl {:?}; entries up to {} bytes; coalescing {}; {}",
        c.strategy.as_str(),
        c.ttl,
        c.max_entry_bytes,
        if c.coalesce { "on" } else { "off" },
        tiers.join(" + ")
    );
}

/// A rate limit section in words.
pub(crate) fn describe_limits(l: &RateLimitConfig) -> String {
    let mut parts = Vec::new();
    if let Some(rps) = l.requests_per_second {
        parts.push(format!("{rps}/s (burst {})", l.burst_or_default()));
    }
    for (value, unit) in [
        (l.requests_per_minute, "requests/min"),
        (l.input_tokens_per_minute, "input tokens/min"),
        (l.output_tokens_per_minute, "output tokens/min"),
    ] {
        if let Some(v) = value {
            parts.push(format!("{v} {unit}"));
        }
    }
    let mode = match l.mode {
        LimitMode::FailFast => "fail fast".to_owned(),
        LimitMode::Wait { max_wait } => format!("wait up to {max_wait:?}"),
    };
    format!("{} ({mode})", parts.join(", "))
}
