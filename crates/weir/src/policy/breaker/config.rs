//! The breaker's reading of its settings: out-of-range values are clamped rather than refused, so
//! that building a breaker never fails. The settings type itself lives with the rest of the
//! configuration schema (`crate::config`), which validates it when the file is loaded.

pub use crate::config::CircuitBreakerConfig;

impl CircuitBreakerConfig {
    /// A copy with every out-of-range value clamped: counts of zero become 1 and a rate threshold
    /// that is not a number is dropped. Zero durations are kept; they are odd but harmless (an
    /// `open_timeout` of zero half-opens at once).
    pub fn sanitized(mut self) -> Self {
        self.failure_threshold = self.failure_threshold.max(1);
        self.min_requests = self.min_requests.max(1);
        self.half_open_max_probes = self.half_open_max_probes.max(1);
        self.success_threshold = self.success_threshold.max(1);
        self.failure_rate_threshold = self
            .failure_rate_threshold
            .filter(|rate| !rate.is_nan())
            .map(|rate| rate.clamp(0.0, 1.0));
        self
    }
}
