//! What a limiter tells clients: OpenAI-style `x-ratelimit-*` headers.

use std::fmt::Write as _;
use std::time::Duration;

/// The state of one per-minute limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    /// The configured limit per 60 s.
    pub limit: u64,
    /// What is left of it now (0 when a reconcile overshot it).
    pub remaining: u64,
    /// How long until everything now counted against the limit has expired, i.e. until
    /// `remaining == limit` if nothing more is admitted. OpenAI's "time until the rate limit
    /// resets to its initial state".
    pub reset: Duration,
}

/// The per-minute limits as one decision left them, for response headers.
///
/// Taken after an admission (the request counted) or at a refusal. Limits that are not configured
/// are `None` and produce no headers. The per-second bucket has no headers: OpenAI's are
/// per-minute, and the bucket's state changes too fast to be worth reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitSnapshot {
    /// `requests_per_minute`.
    pub requests: Option<LimitStatus>,
    /// `input_tokens_per_minute`.
    pub input_tokens: Option<LimitStatus>,
    /// `output_tokens_per_minute`.
    pub output_tokens: Option<LimitStatus>,
    /// Set on refusals: how long until the request would fit.
    pub retry_after: Option<Duration>,
}

impl RateLimitSnapshot {
    /// Input and output tokens as one limit, as OpenAI reports them: limits and remainders add
    /// up, and the reset is the later of the two. `None` when neither token limit is set.
    ///
    /// With both set, `remaining` can overstate what one direction has left; the
    /// `x-ratelimit-*-input-tokens` / `-output-tokens` headers give each exactly.
    pub fn tokens(&self) -> Option<LimitStatus> {
        match (self.input_tokens, self.output_tokens) {
            (Some(input), Some(output)) => Some(LimitStatus {
                limit: input.limit.saturating_add(output.limit),
                remaining: input.remaining.saturating_add(output.remaining),
                reset: input.reset.max(output.reset),
            }),
            (one, None) | (None, one) => one,
        }
    }

    /// The response headers, in this order, each only when its limit is configured:
    ///
    /// - `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
    ///   `x-ratelimit-reset-requests`;
    /// - `x-ratelimit-limit-tokens`, `x-ratelimit-remaining-tokens`, `x-ratelimit-reset-tokens`
    ///   (input and output combined, see [`tokens`](Self::tokens));
    /// - the same three with `-input-tokens` and with `-output-tokens`, per direction;
    /// - on a refusal, `retry-after` (whole seconds, rounded up, as HTTP requires) and
    ///   `retry-after-ms` (which OpenAI's SDKs prefer).
    ///
    /// Resets are durations in OpenAI's (Go's) format, rounded up to the millisecond: `"20ms"`,
    /// `"1s"`, `"1.5s"`, `"6m0s"`, `"1h0m0s"`; see [`format_reset`].
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        let mut push = |names: [&'static str; 3], status: Option<LimitStatus>| {
            if let Some(status) = status {
                headers.push((names[0], status.limit.to_string()));
                headers.push((names[1], status.remaining.to_string()));
                headers.push((names[2], format_reset(status.reset)));
            }
        };
        push(
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
            self.requests,
        );
        push(
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
            self.tokens(),
        );
        push(
            [
                "x-ratelimit-limit-input-tokens",
                "x-ratelimit-remaining-input-tokens",
                "x-ratelimit-reset-input-tokens",
            ],
            self.input_tokens,
        );
        push(
            [
                "x-ratelimit-limit-output-tokens",
                "x-ratelimit-remaining-output-tokens",
                "x-ratelimit-reset-output-tokens",
            ],
            self.output_tokens,
        );
        if let Some(wait) = self.retry_after {
            let millis = ceil_millis(wait);
            headers.push(("retry-after", millis.div_ceil(1000).to_string()));
            headers.push(("retry-after-ms", millis.to_string()));
        }
        headers
    }
}

/// A duration as OpenAI writes `x-ratelimit-reset-*` (Go's `time.Duration` format), rounded up to
/// the millisecond so a client that waits that long finds the limit reset: `"0s"`, `"20ms"`,
/// `"1s"`, `"1.5s"`, `"6m0s"`, `"1h2m3.004s"`.
pub fn format_reset(duration: Duration) -> String {
    let millis = ceil_millis(duration);
    if millis == 0 {
        return "0s".to_owned();
    }
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let hours = millis / 3_600_000;
    let minutes = millis / 60_000 % 60;
    let seconds = millis / 1000 % 60;
    let fraction = millis % 1000;
    let mut out = String::new();
    // Writing to a String cannot fail.
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{seconds}");
    if fraction > 0 {
        let digits = format!("{fraction:03}");
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// Rounded up: a wait rounded down would send the client back a moment too early.
fn ceil_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}
