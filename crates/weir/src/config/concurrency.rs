//! The `adaptive_concurrency:` section of a deployment: [`AdaptiveConcurrencyConfig`], its
//! defaults and its validation. The limiter that reads it is `policy::concurrency`.

use std::time::Duration;

use super::{ConfigDuration, FieldError, overlay::Switch, overlay::section};

/// Settings of a deployment's adaptive concurrency limit (off unless configured).
///
/// The limit is the number of calls the deployment may have in flight. Every `window` it is
/// recomputed from the latency of the window's calls: above `tolerance` × the baseline (the
/// latency the upstream shows when lightly loaded), it shrinks in proportion; at or below, and
/// when the limit was reached, it grows by about its square root. Every `baseline_interval` one
/// window runs at `min_limit` to measure the baseline again, so a permanently slower upstream is
/// learned without letting latency creep up under load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConcurrencyConfig {
    /// The limit before anything was observed. Default 20.
    pub initial_limit: u32,
    /// The limit never goes below this. Default 1.
    pub min_limit: u32,
    /// The limit never goes above this. Default 100 (the default connection pool).
    pub max_limit: u32,
    /// How often the limit is recomputed. Default 1 s.
    pub window: Duration,
    /// Calls a window needs before its latency moves the limit. Default 10.
    pub min_samples: u32,
    /// Latency up to this multiple of the baseline counts as healthy. Default 2.0.
    pub tolerance: f64,
    /// How often the baseline is measured again. Default 60 s.
    pub baseline_interval: Duration,
}

impl Default for AdaptiveConcurrencyConfig {
    fn default() -> Self {
        AdaptiveConcurrencyConfig {
            initial_limit: 20,
            min_limit: 1,
            max_limit: 100,
            window: Duration::from_secs(1),
            min_samples: 10,
            tolerance: 2.0,
            baseline_interval: Duration::from_secs(60),
        }
    }
}

impl AdaptiveConcurrencyConfig {
    /// Checks every field; the error names the field (relative to the section).
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.min_limit == 0 {
            return Err(FieldError::new("min_limit", "must be at least 1"));
        }
        if self.max_limit < self.min_limit {
            return Err(FieldError::new(
                "max_limit",
                format!("must be at least min_limit ({})", self.min_limit),
            ));
        }
        if !(self.min_limit..=self.max_limit).contains(&self.initial_limit) {
            return Err(FieldError::new(
                "initial_limit",
                format!(
                    "must be between min_limit ({}) and max_limit ({})",
                    self.min_limit, self.max_limit
                ),
            ));
        }
        if self.window.is_zero() {
            return Err(FieldError::new("window", "must be longer than zero"));
        }
        if self.min_samples == 0 {
            return Err(FieldError::new("min_samples", "must be at least 1"));
        }
        if !self.tolerance.is_finite() || self.tolerance < 1.0 {
            return Err(FieldError::new(
                "tolerance",
                format!("must be a number of at least 1.0 (got {})", self.tolerance),
            ));
        }
        if self.baseline_interval <= self.window {
            return Err(FieldError::new("baseline_interval", "must be longer than window"));
        }
        Ok(())
    }
}

section! {
    /// `adaptive_concurrency:` as written in a deployment.
    pub(super) struct RawAdaptiveConcurrency {
        pub(super) enabled: Option<bool>,
        pub(super) initial_limit: Option<u32>,
        pub(super) min_limit: Option<u32>,
        pub(super) max_limit: Option<u32>,
        pub(super) window: Option<ConfigDuration>,
        pub(super) min_samples: Option<u32>,
        pub(super) tolerance: Option<f64>,
        pub(super) baseline_interval: Option<ConfigDuration>,
    }
}

/// Off unless `enabled: true` or any setting is given (like `health_check`).
impl Switch for RawAdaptiveConcurrency {
    type Config = AdaptiveConcurrencyConfig;

    fn is_on(&self) -> bool {
        match self.enabled {
            Some(enabled) => enabled,
            None => {
                self.initial_limit.is_some()
                    || self.min_limit.is_some()
                    || self.max_limit.is_some()
                    || self.window.is_some()
                    || self.min_samples.is_some()
                    || self.tolerance.is_some()
                    || self.baseline_interval.is_some()
            }
        }
    }
}

impl TryFrom<RawAdaptiveConcurrency> for AdaptiveConcurrencyConfig {
    type Error = FieldError;

    fn try_from(raw: RawAdaptiveConcurrency) -> Result<Self, FieldError> {
        let d = AdaptiveConcurrencyConfig::default();
        let min_limit = raw.min_limit.unwrap_or(d.min_limit);
        let max_limit = raw.max_limit.unwrap_or(d.max_limit);
        let config = AdaptiveConcurrencyConfig {
            // An unset start follows the bounds the section gives.
            initial_limit: raw
                .initial_limit
                .unwrap_or_else(|| d.initial_limit.clamp(min_limit, max_limit.max(min_limit))),
            min_limit,
            max_limit,
            window: raw.window.map_or(d.window, |v| v.0),
            min_samples: raw.min_samples.unwrap_or(d.min_samples),
            tolerance: raw.tolerance.unwrap_or(d.tolerance),
            baseline_interval: raw.baseline_interval.map_or(d.baseline_interval, |v| v.0),
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn load(section: &str) -> Result<Config, String> {
        let yaml = format!(
            "models:\n  - name: m\n    deployments:\n      - id: d\n        provider: mock\n        adaptive_concurrency: {section}\n"
        );
        Config::from_yaml(&yaml, Some("c.yaml")).map_err(|e| e.to_string())
    }

    fn section_of(config: &Config) -> Option<super::AdaptiveConcurrencyConfig> {
        config.models[0].deployments[0].adaptive_concurrency
    }

    #[test]
    fn off_by_default_on_with_any_setting() {
        let yaml = "models:\n  - name: m\n    deployments:\n      - id: d\n        provider: mock\n";
        let config = Config::from_yaml(yaml, None).unwrap();
        assert_eq!(section_of(&config), None);
        assert_eq!(
            section_of(&load("{ enabled: false, max_limit: 5 }").unwrap()),
            None
        );
        let on = section_of(&load("{ enabled: true }").unwrap()).unwrap();
        assert_eq!(on, super::AdaptiveConcurrencyConfig::default());
        let some = section_of(&load("{ max_limit: 8, window: 250ms }").unwrap()).unwrap();
        assert_eq!((some.max_limit, some.initial_limit), (8, 8));
        assert_eq!(some.window, std::time::Duration::from_millis(250));
    }

    #[test]
    fn bad_values_name_their_field() {
        for (section, field) in [
            ("{ min_limit: 0 }", "adaptive_concurrency.min_limit"),
            (
                "{ min_limit: 10, max_limit: 5 }",
                "adaptive_concurrency.max_limit",
            ),
            ("{ initial_limit: 500 }", "adaptive_concurrency.initial_limit"),
            ("{ window: 0s }", "adaptive_concurrency.window"),
            ("{ tolerance: 0.5 }", "adaptive_concurrency.tolerance"),
            ("{ min_samples: 0 }", "adaptive_concurrency.min_samples"),
            (
                "{ window: 10s, baseline_interval: 5s }",
                "adaptive_concurrency.baseline_interval",
            ),
        ] {
            let err = load(section).unwrap_err();
            assert!(err.contains(field), "{section}: {err}");
            assert!(err.contains("c.yaml:"), "{section}: {err}");
        }
        assert!(load("{ limit: 3 }").unwrap_err().contains("limit"));
    }
}
