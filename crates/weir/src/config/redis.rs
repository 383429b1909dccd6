//! The top-level `redis:` section: the Redis that several gateway instances share, so that their
//! rate limits hold across all of them (`policy::limit::shared` enforces them there).

use std::{fmt, str::FromStr, time::Duration};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConfigDuration, EnvString, FieldError, Secret};

/// What shared rate limits do while Redis is unreachable (or slower than `redis.timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisOnError {
    /// Each instance enforces its own share of every limit in process (the limit divided by
    /// `redis.instances`), logs a warning and counts it in a metric. The default: the upstream
    /// quota stays protected (within the per-instance split) and a Redis outage does not become
    /// a gateway outage.
    #[default]
    Local,
    /// Admit everything the shared limits would have decided: traffic flows, the upstream's own
    /// 429s (and the cooldowns they start) are the only brake.
    FailOpen,
    /// Refuse every request a shared limit governs with a 429 until Redis answers again: for
    /// quotas that must never be exceeded.
    FailClosed,
}

impl RedisOnError {
    /// The name used in config (and in metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            RedisOnError::Local => "local",
            RedisOnError::FailOpen => "fail_open",
            RedisOnError::FailClosed => "fail_closed",
        }
    }
}

impl fmt::Display for RedisOnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RedisOnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "local" => RedisOnError::Local,
            "fail_open" => RedisOnError::FailOpen,
            "fail_closed" => RedisOnError::FailClosed,
            other => {
                return Err(format!(
                    "unknown on_error `{other}`: use local, fail_open or fail_closed"
                ));
            }
        })
    }
}

/// Default `redis.key_prefix`.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "weir";
/// Default `redis.timeout`: an admission check is one round trip, well under a millisecond on a
/// local network; 50 ms means Redis is in trouble.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// Default `redis.max_backoff`.
pub const DEFAULT_REDIS_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A validated `redis:` section.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]` or `rediss://`. A [`Secret`]: never logged.
    pub url: Secret,
    /// Prefix of every key, so several gateways can share one Redis (default `weir`).
    pub key_prefix: String,
    /// Longest any single Redis call may take; then it counts as failed and `on_error` applies.
    pub timeout: Duration,
    /// Longest Redis is left alone after a failure (the wait doubles from `timeout` up to this);
    /// meanwhile `on_error` decides without trying Redis.
    pub max_backoff: Duration,
    /// What shared limits do while Redis is unreachable.
    pub on_error: RedisOnError,
    /// How many instances share the limits: with `on_error: local`, each enforces
    /// `limit / instances` (rounded up) while Redis is down. Default 1 (each enforces the whole
    /// limit, so N instances may admit up to N times it during an outage).
    pub instances: u32,
    /// Whether a 429's cooldown seen by one instance rests the deployment on all of them
    /// (default true; costs one Redis round trip per attempt).
    pub share_cooldowns: bool,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("max_backoff", &self.max_backoff)
            .field("on_error", &self.on_error)
            .field("instances", &self.instances)
            .field("share_cooldowns", &self.share_cooldowns)
            .finish()
    }
}

impl RedisConfig {
    /// A config for `url` with every default.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: Secret::new(url),
            key_prefix: DEFAULT_REDIS_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_REDIS_TIMEOUT,
            max_backoff: DEFAULT_REDIS_MAX_BACKOFF,
            on_error: RedisOnError::default(),
            instances: 1,
            share_cooldowns: true,
        }
    }

    /// Checks the settings, naming the first bad one relative to the `redis:` section. The URL is
    /// parsed as the limiter will parse it; the message never repeats it (it may carry a
    /// password).
    pub fn validate(&self) -> Result<(), FieldError> {
        if redis::Client::open(self.url.expose()).is_err() {
            return Err(FieldError::new(
                "url",
                "not a valid Redis URL; write e.g. redis://127.0.0.1:6379 or ${REDIS_URL}",
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(5) {
            return Err(FieldError::new(
                "timeout",
                "must be between 1ms and 5s (every limited request waits for it when Redis hangs)",
            ));
        }
        if self.max_backoff < self.timeout {
            return Err(FieldError::new(
                "max_backoff",
                "must not be shorter than redis.timeout",
            ));
        }
        if self.key_prefix.is_empty()
            || self
                .key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c == '{' || c == '}')
        {
            return Err(FieldError::new(
                "key_prefix",
                "must be non-empty, without spaces or braces (braces are Redis Cluster hash tags)",
            ));
        }
        if self.instances == 0 {
            return Err(FieldError::new("instances", "must be at least 1"));
        }
        Ok(())
    }
}

/// `redis:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedisSection {
    url: Spanned<EnvString>,
    key_prefix: Option<Spanned<String>>,
    timeout: Option<Spanned<ConfigDuration>>,
    max_backoff: Option<Spanned<ConfigDuration>>,
    on_error: Option<Spanned<String>>,
    instances: Option<Spanned<u32>>,
    share_cooldowns: Option<bool>,
}

impl TryFrom<RawRedisSection> for RedisConfig {
    type Error = FieldError;

    /// The section over the defaults, then [`RedisConfig::validate`]; an error is placed on its
    /// field's line.
    fn try_from(raw: RawRedisSection) -> Result<Self, FieldError> {
        let line = |field: &str| -> u64 {
            match field {
                "url" => raw.url.referenced.line(),
                "key_prefix" => raw.key_prefix.as_ref().map_or(0, |v| v.referenced.line()),
                "timeout" => raw.timeout.as_ref().map_or(0, |v| v.referenced.line()),
                "max_backoff" => raw.max_backoff.as_ref().map_or(0, |v| v.referenced.line()),
                "on_error" => raw.on_error.as_ref().map_or(0, |v| v.referenced.line()),
                "instances" => raw.instances.as_ref().map_or(0, |v| v.referenced.line()),
                _ => 0,
            }
        };
        let d = RedisConfig::new(raw.url.value.0.trim());
        let on_error = match &raw.on_error {
            Some(text) => text
                .value
                .parse()
                .map_err(|m| FieldError::new("on_error", m).at_line(line("on_error")))?,
            None => d.on_error,
        };
        let config = RedisConfig {
            key_prefix: raw
                .key_prefix
                .as_ref()
                .map_or(d.key_prefix.clone(), |v| v.value.clone()),
            timeout: raw.timeout.as_ref().map_or(d.timeout, |t| t.value.0),
            max_backoff: raw.max_backoff.as_ref().map_or(d.max_backoff, |t| t.value.0),
            on_error,
            instances: raw.instances.as_ref().map_or(d.instances, |v| v.value),
            share_cooldowns: raw.share_cooldowns.unwrap_or(d.share_cooldowns),
            url: d.url,
        };
        config.validate().map_err(|e| {
            let at = line(&e.field);
            e.at_line(at)
        })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(redis: &str) -> Result<Config, crate::config::ConfigError> {
        let yaml =
            format!("models:\n  - name: m\n    deployments:\n      - provider: mock\nredis:\n{redis}\n");
        Config::from_yaml(&yaml, Some("c.yaml"))
    }

    #[test]
    fn defaults_and_every_setting() {
        let none = Config::from_yaml(
            "models:\n  - name: m\n    deployments:\n      - provider: mock\n",
            None,
        )
        .unwrap();
        assert!(none.redis.is_none());
        let r = parse("  url: redis://127.0.0.1:6379").unwrap().redis.unwrap();
        assert_eq!(r.key_prefix, "weir");
        assert_eq!(r.timeout, DEFAULT_REDIS_TIMEOUT);
        assert_eq!(r.on_error, RedisOnError::Local);
        assert_eq!(r.instances, 1);
        assert!(r.share_cooldowns);
        let r = parse(
            "  url: redis://:pw@10.0.0.1:6380/2\n  key_prefix: prod\n  timeout: 20ms\n  max_backoff: 2s\n  \
             on_error: fail_closed\n  instances: 3\n  share_cooldowns: false",
        )
        .unwrap()
        .redis
        .unwrap();
        assert_eq!(
            (
                r.key_prefix.as_str(),
                r.timeout,
                r.max_backoff,
                r.on_error,
                r.instances
            ),
            (
                "prod",
                Duration::from_millis(20),
                Duration::from_secs(2),
                RedisOnError::FailClosed,
                3
            )
        );
    }

    #[test]
    fn the_url_takes_env_and_is_never_shown() {
        let r = parse("  url: ${WEIR_TEST_UNSET_REDIS_URL:-redis://:hunter2@127.0.0.1:6390}")
            .unwrap()
            .redis
            .unwrap();
        assert_eq!(r.url.expose(), "redis://:hunter2@127.0.0.1:6390");
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    #[test]
    fn errors_are_placed_and_typed() {
        // The file's line 5 is `redis:`; each error is on its field's line.
        let cases = [
            ("  url: notredis://:hunter2@x", "redis.url", 6),
            ("  url: redis://x\n  timeout: 30s", "redis.timeout", 7),
            (
                "  url: redis://x\n  timeout: 1s\n  max_backoff: 10ms",
                "redis.max_backoff",
                8,
            ),
            ("  url: redis://x\n  key_prefix: 'a{b}'", "redis.key_prefix", 7),
            ("  url: redis://x\n  on_error: sometimes", "redis.on_error", 7),
            ("  url: redis://x\n  instances: 0", "redis.instances", 7),
        ];
        for (yaml, field, line) in cases {
            let err = parse(yaml).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{err}");
            assert_eq!(err.line, Some(line), "{err}");
            assert!(
                err.to_string().starts_with(&format!("c.yaml:{line}: {field}: ")),
                "{err}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        // Unknown keys are rejected with their line.
        let err = parse("  url: redis://x\n  prefix: p").unwrap_err();
        assert!(err.to_string().contains("prefix") && err.line == Some(7), "{err}");
    }
}
