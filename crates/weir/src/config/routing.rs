//! Routing within a model group: the load-balancing [`Strategy`] and the `health_check:` section
//! ([`HealthCheckConfig`]). The balancer and the health checker that apply them are
//! `route::balance` and `route::health`.

use std::{fmt, str::FromStr, time::Duration};

use super::{
    ConfigDuration, FieldError,
    overlay::{Switch, section},
};

/// How the deployments of one priority tier are ordered (the balancer in `route::balance` applies
/// it; its module docs compare the strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Take turns: each request starts one deployment further (`round_robin`).
    #[default]
    RoundRobin,
    /// Random, in proportion to each deployment's weight; weight 0 is a last resort (`weighted`).
    WeightedRandom,
    /// Fewest requests in flight first, ties taking turns (`least_busy`).
    LeastBusy,
    /// Power of two choices by latency estimate × (in flight + 1) (`lowest_latency`).
    LowestLatency,
}

impl Strategy {
    /// Every strategy, in the order the docs list them.
    pub const ALL: [Strategy; 4] = [
        Strategy::RoundRobin,
        Strategy::WeightedRandom,
        Strategy::LeastBusy,
        Strategy::LowestLatency,
    ];

    /// The name used in configuration: `round_robin`, `weighted`, `least_busy` or
    /// `lowest_latency`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::WeightedRandom => "weighted",
            Strategy::LeastBusy => "least_busy",
            Strategy::LowestLatency => "lowest_latency",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|strategy| strategy.as_str() == s)
            .ok_or_else(|| UnknownStrategy { given: s.to_owned() })
    }
}

/// A strategy name that [`Strategy::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStrategy {
    /// The name as given.
    pub given: String,
}

impl fmt::Display for UnknownStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown load-balancing strategy {:?}; expected one of ",
            self.given
        )?;
        for (i, strategy) in Strategy::ALL.iter().enumerate() {
            let sep = match i {
                0 => "",
                i if i + 1 == Strategy::ALL.len() => " or ",
                _ => ", ",
            };
            write!(f, "{sep}{strategy}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownStrategy {}

/// Health-check settings of one deployment.
///
/// The module docs of `route::health` say what each field does and why the defaults are what
/// they are.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    /// Time between the starts of two probes, before jitter (up to 10 % more). Default 30 s.
    pub interval: Duration,
    /// How long a probe may take before it is abandoned and counted as a failure. Default 5 s.
    pub timeout: Duration,
    /// Consecutive failed probes that mark a healthy deployment unhealthy. Default 2.
    pub unhealthy_threshold: u32,
    /// Consecutive successful probes that mark an unhealthy deployment healthy again. Default 2.
    pub healthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            unhealthy_threshold: 2,
            healthy_threshold: 2,
        }
    }
}

impl HealthCheckConfig {
    /// Checks every field, naming the first bad one (`"interval must be longer than zero"`).
    ///
    /// A `timeout` as long as the `interval` or longer is allowed: probes never overlap, so it
    /// only means the next probe may start late.
    pub fn validate(&self) -> Result<(), String> {
        let durations = [("interval", self.interval), ("timeout", self.timeout)];
        for (field, value) in durations {
            if value.is_zero() {
                return Err(format!("{field} must be longer than zero"));
            }
        }
        let counts = [
            ("unhealthy_threshold", self.unhealthy_threshold),
            ("healthy_threshold", self.healthy_threshold),
        ];
        for (field, value) in counts {
            if value == 0 {
                return Err(format!("{field} must be at least 1"));
            }
        }
        Ok(())
    }
}

section! {
    /// `health_check:` as written (in a deployment or in `upstream_defaults`).
    pub(super) struct RawHealthCheck {
        pub(super) enabled: Option<bool>,
        pub(super) interval: Option<ConfigDuration>,
        pub(super) timeout: Option<ConfigDuration>,
        pub(super) unhealthy_threshold: Option<u32>,
        pub(super) healthy_threshold: Option<u32>,
    }
}

/// Background health checks are off unless `enabled: true` or any setting is given: probing
/// costs money on paid upstreams.
impl Switch for RawHealthCheck {
    type Config = HealthCheckConfig;

    fn is_on(&self) -> bool {
        self.enabled.unwrap_or(
            self.interval.is_some()
                || self.timeout.is_some()
                || self.unhealthy_threshold.is_some()
                || self.healthy_threshold.is_some(),
        )
    }
}

impl TryFrom<RawHealthCheck> for HealthCheckConfig {
    type Error = FieldError;

    /// The section over the defaults; a bad value is reported on the section, with the field's
    /// name in the message.
    fn try_from(raw: RawHealthCheck) -> Result<Self, FieldError> {
        let d = HealthCheckConfig::default();
        let config = HealthCheckConfig {
            interval: raw.interval.map_or(d.interval, |v| v.0),
            timeout: raw.timeout.map_or(d.timeout, |v| v.0),
            unhealthy_threshold: raw.unhealthy_threshold.unwrap_or(d.unhealthy_threshold),
            healthy_threshold: raw.healthy_threshold.unwrap_or(d.healthy_threshold),
        };
        config.validate().map_err(FieldError::section)?;
        Ok(config)
    }
}
