//! The `cache:` section of the config file: raw (serde) form and its validation into
//! [`CacheConfig`]. The cache that reads it is the `cache` module.

use std::{str::FromStr, time::Duration};

use serde::Deserialize;

use super::{ByteSize, ConfigDuration, EnvString, FieldError};

/// Which requests are cached (see `docs/caching.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheStrategy {
    /// Nothing is cached; every response says `x-weir-cache: bypass`.
    #[default]
    Disabled,
    /// Only deterministic requests: temperature 0 or a fixed `seed`, one choice, no tools that
    /// could be called (unless listed in `safe_tools`). Embeddings always. Short TTL.
    Conservative,
    /// Conservative, plus low-temperature requests whose text does not depend on when it is asked
    /// ("today", "latest", ...).
    Selective,
    /// Every cacheable endpoint, whatever its parameters. Long TTL.
    Aggressive,
}

impl CacheStrategy {
    /// The name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStrategy::Disabled => "disabled",
            CacheStrategy::Conservative => "conservative",
            CacheStrategy::Selective => "selective",
            CacheStrategy::Aggressive => "aggressive",
        }
    }

    /// How long entries live unless `cache.ttl` says otherwise.
    pub fn default_ttl(self) -> Duration {
        match self {
            CacheStrategy::Disabled => Duration::ZERO,
            CacheStrategy::Conservative => Duration::from_secs(10 * 60),
            CacheStrategy::Selective => Duration::from_secs(60 * 60),
            CacheStrategy::Aggressive => Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl FromStr for CacheStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "disabled" | "off" | "none" => CacheStrategy::Disabled,
            "conservative" => CacheStrategy::Conservative,
            "selective" => CacheStrategy::Selective,
            "aggressive" => CacheStrategy::Aggressive,
            other => {
                return Err(format!(
                    "unknown cache strategy `{other}`: use disabled, conservative, selective or aggressive"
                ));
            }
        })
    }
}

/// The in-process cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryCacheConfig {
    /// Whether entries are kept in process memory (in front of Redis, when Redis is set).
    pub enabled: bool,
    /// Bound on the bytes of cached answers held in memory (not a number of entries).
    pub max_bytes: u64,
}

/// The shared Redis cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisCacheConfig {
    /// `redis://[:password@]host:port[/db]` or `rediss://` (never logged: it may hold a password).
    pub url: String,
    /// Prefix of every key (`{prefix}:{hash}`), so several deployments can share one Redis.
    pub key_prefix: String,
    /// Longest any single Redis call may take before it counts as a miss and an error.
    pub timeout: Duration,
    /// Longest Redis is left alone after a failure (the wait doubles from `timeout` up to this).
    pub max_backoff: Duration,
}

/// A validated `cache:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Which requests are cached.
    pub strategy: CacheStrategy,
    /// Lifetime of an entry.
    pub ttl: Duration,
    /// Answers larger than this (uncompressed) are not cached.
    pub max_entry_bytes: usize,
    /// Entries at least this large are zstd-compressed (in Redis; memory holds them as-is).
    pub compression_threshold: usize,
    /// Whether concurrent identical misses wait for one upstream call.
    pub coalesce: bool,
    /// How long a coalesced request waits for the first before calling the upstream itself.
    pub coalesce_timeout: Duration,
    /// Tool names without side effects: requests whose tools are all listed here count as
    /// deterministic for the `conservative` and `selective` strategies.
    pub safe_tools: Vec<String>,
    /// `selective`: the highest temperature still considered stable.
    pub selective_max_temperature: f64,
    /// In-process cache.
    pub memory: MemoryCacheConfig,
    /// Shared cache; `None` for memory only.
    pub redis: Option<RedisCacheConfig>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            strategy: CacheStrategy::Disabled,
            ttl: Duration::ZERO,
            max_entry_bytes: 1 << 20,
            compression_threshold: 1 << 10,
            coalesce: true,
            coalesce_timeout: Duration::from_secs(30),
            safe_tools: Vec::new(),
            selective_max_temperature: 0.3,
            memory: MemoryCacheConfig {
                enabled: true,
                max_bytes: 256 << 20,
            },
            redis: None,
        }
    }
}

impl CacheConfig {
    /// Whether any request can be cached.
    pub fn enabled(&self) -> bool {
        self.strategy != CacheStrategy::Disabled && (self.memory.enabled || self.redis.is_some())
    }
}

/// `cache:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    strategy: Option<String>,
    ttl: Option<ConfigDuration>,
    max_entry_size: Option<ByteSize>,
    compression_threshold: Option<ByteSize>,
    coalesce: Option<bool>,
    coalesce_timeout: Option<ConfigDuration>,
    #[serde(default)]
    safe_tools: Vec<String>,
    selective_max_temperature: Option<f64>,
    #[serde(default)]
    memory: RawMemory,
    redis: Option<RawRedis>,
}

/// `cache.memory:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    enabled: Option<bool>,
    max_size: Option<ByteSize>,
}

/// `cache.redis:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: EnvString,
    key_prefix: Option<String>,
    timeout: Option<ConfigDuration>,
    max_backoff: Option<ConfigDuration>,
}

impl TryFrom<RawCache> for CacheConfig {
    type Error = FieldError;

    /// The section over the defaults, then [`CacheConfig::validate`].
    fn try_from(raw: RawCache) -> Result<Self, FieldError> {
        let d = CacheConfig::default();
        let strategy = match &raw.strategy {
            Some(s) => s.parse().map_err(|m| FieldError::new("strategy", m))?,
            // A `cache:` section without a strategy means "cache what is safe".
            None => CacheStrategy::Conservative,
        };
        let config = CacheConfig {
            strategy,
            ttl: raw.ttl.map_or(strategy.default_ttl(), |t| t.0),
            max_entry_bytes: raw.max_entry_size.map_or(d.max_entry_bytes, |b| b.0),
            compression_threshold: raw.compression_threshold.map_or(d.compression_threshold, |b| b.0),
            coalesce: raw.coalesce.unwrap_or(true),
            coalesce_timeout: raw.coalesce_timeout.map_or(d.coalesce_timeout, |t| t.0),
            safe_tools: raw.safe_tools,
            selective_max_temperature: raw
                .selective_max_temperature
                .unwrap_or(d.selective_max_temperature),
            memory: MemoryCacheConfig {
                enabled: raw.memory.enabled.unwrap_or(true),
                max_bytes: raw.memory.max_size.map_or(d.memory.max_bytes, |b| b.0 as u64),
            },
            redis: raw.redis.map(|r| RedisCacheConfig {
                url: r.url.0.trim().to_owned(),
                key_prefix: r.key_prefix.unwrap_or_else(|| "weir:cache:v1".to_owned()),
                timeout: r.timeout.map_or(Duration::from_millis(75), |t| t.0),
                max_backoff: r.max_backoff.map_or(Duration::from_secs(5), |t| t.0),
            }),
        };
        config.validate()?;
        Ok(config)
    }
}

impl CacheConfig {
    /// Checks every setting, naming the first bad one relative to the `cache:` section
    /// (`ttl`, `redis.url`). Config loading calls this; call it on a config built by hand: the
    /// cache itself does not re-check (an unparsable Redis URL, for one, only makes every Redis
    /// call fail).
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.strategy != CacheStrategy::Disabled && self.ttl < Duration::from_secs(1) {
            return Err(FieldError::new("ttl", "must be at least 1s"));
        }
        if self.max_entry_bytes == 0 {
            return Err(FieldError::new("max_entry_size", "must be greater than zero"));
        }
        if self.memory.enabled && self.memory.max_bytes == 0 {
            return Err(FieldError::new("memory.max_size", "must be greater than zero"));
        }
        let temperature = self.selective_max_temperature;
        if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
            return Err(FieldError::new(
                "selective_max_temperature",
                "must be a number between 0 and 2",
            ));
        }
        match &self.redis {
            Some(redis) => redis.validate().map_err(|e| e.within("redis")),
            None => Ok(()),
        }
    }
}

impl RedisCacheConfig {
    /// Checks the settings, naming the first bad one relative to the `redis:` section (`url`,
    /// `timeout`). The URL is parsed as the cache will parse it; the message never repeats it (it
    /// may carry a password).
    pub fn validate(&self) -> Result<(), FieldError> {
        if redis::Client::open(self.url.as_str()).is_err() {
            return Err(FieldError::new(
                "url",
                "not a valid Redis URL; write e.g. redis://127.0.0.1:6379",
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(5) {
            return Err(FieldError::new(
                "timeout",
                "must be between 1ms and 5s (a cache that waits longer than that costs more than it saves)",
            ));
        }
        if self.max_backoff < self.timeout {
            return Err(FieldError::new(
                "max_backoff",
                "must not be shorter than redis.timeout",
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.chars().any(char::is_whitespace) {
            return Err(FieldError::new(
                "key_prefix",
                "must be non-empty and without spaces",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(cache: &str) -> Result<Config, crate::config::ConfigError> {
        let yaml =
            format!("models:\n  - name: m\n    deployments:\n      - provider: mock\ncache:\n{cache}\n");
        Config::from_yaml(&yaml, Some("c.yaml"))
    }

    #[test]
    fn off_by_default_and_conservative_when_present() {
        let none = Config::from_yaml(
            "models:\n  - name: m\n    deployments:\n      - provider: mock\n",
            None,
        )
        .unwrap();
        assert_eq!(none.cache.strategy, CacheStrategy::Disabled);
        assert!(!none.cache.enabled());
        let c = parse("  memory: { max_size: 64MiB }").unwrap().cache;
        assert_eq!(c.strategy, CacheStrategy::Conservative);
        assert_eq!(c.ttl, Duration::from_secs(600));
        assert_eq!(c.memory.max_bytes, 64 << 20);
        assert!(c.redis.is_none());
    }

    #[test]
    fn every_setting_parses() {
        let c = parse(
            "  strategy: selective\n  ttl: 2h\n  max_entry_size: 512KiB\n  compression_threshold: 2KiB\n  \
             coalesce: false\n  coalesce_timeout: 5s\n  safe_tools: [lookup]\n  selective_max_temperature: 0.5\n  \
             memory:\n    enabled: false\n  redis:\n    url: redis://:pw@10.0.0.1:6380/2\n    key_prefix: app:c\n    \
             timeout: 50ms\n    max_backoff: 10s",
        )
        .unwrap()
        .cache;
        assert_eq!(c.strategy, CacheStrategy::Selective);
        assert_eq!(c.ttl, Duration::from_secs(7200));
        assert_eq!((c.max_entry_bytes, c.compression_threshold), (512 << 10, 2 << 10));
        assert!(!c.coalesce && !c.memory.enabled);
        assert_eq!(c.safe_tools, ["lookup"]);
        let r = c.redis.unwrap();
        assert_eq!(
            (r.key_prefix.as_str(), r.timeout),
            ("app:c", Duration::from_millis(50))
        );
    }

    #[test]
    fn env_substitution_works_in_the_redis_url() {
        // Unset variable: the default after `:-` applies.
        let c = parse("  redis:\n    url: ${WEIR_TEST_UNSET_REDIS_URL:-redis://127.0.0.1:6390}")
            .unwrap()
            .cache;
        assert_eq!(c.redis.unwrap().url, "redis://127.0.0.1:6390");
    }

    #[test]
    fn errors_name_the_field_and_line_and_hide_the_url() {
        let err = parse("  strategy: sometimes").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("cache.strategy"));
        assert!(err.line.is_some(), "{err}");
        assert!(err.to_string().contains("sometimes"), "{err}");
        let err = parse("  redis:\n    url: notredis://:hunter2@x").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("cache.redis.url"));
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = parse("  redis:\n    url: redis://x\n    timeout: 30s").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("cache.redis.timeout"));
        let err = parse("  ttl: 0s").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("cache.ttl"));
        // Unknown keys are rejected with their line.
        let err = parse("  strategy: aggressive\n  tll: 5m").unwrap_err();
        assert!(err.to_string().contains("tll") && err.line == Some(7), "{err}");
    }
}
