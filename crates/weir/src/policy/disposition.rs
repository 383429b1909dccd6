//! What a failure means for everything that reacts to it: the one place errors are judged.
//!
//! Before a failed upstream call is retried, sent to another model group, counted against a
//! circuit breaker, refunded to a rate limit or turned into a cooldown, something has to decide
//! what kind of failure it was. [`classify`] is that decision, made once per error; the retry
//! loop, the fallback logic, the breaker layer, the rate-limit layers and the cooldown all read the
//! [`Disposition`] it returns instead of matching on errors themselves.
//!
//! | error                                   | retry        | fall back      | breaker  | spent         | cooldown |
//! |-----------------------------------------|--------------|----------------|----------|---------------|----------|
//! | upstream 429                            | yes (after Retry-After) | yes | ignored  | request only  | Retry-After, else 1 s (≤ 300 s) |
//! | upstream 5xx                            | yes          | yes            | failure  | request only  | –        |
//! | upstream 5xx of type `invalid_request_error` | no      | no             | ignored  | request only  | –        |
//! | upstream 400 "context length exceeded"  | no           | context window | ignored  | request only  | –        |
//! | other upstream 4xx (incl. 401/403)      | no           | no             | ignored  | request only  | –        |
//! | connect failure                         | yes          | yes            | failure  | not delivered | –        |
//! | connect/read/total timeout, transport   | yes          | yes            | failure  | request only  | –        |
//! | invalid upstream answer                 | no           | yes            | failure  | request only  | –        |
//! | pool exhausted (our side)               | no           | yes            | ignored  | not delivered | –        |
//! | request deadline (configured)           | no           | no             | failure  | request only  | –        |
//! | request deadline (shortened by client)  | no           | no             | ignored  | unknown       | –        |
//! | gateway rate limit, request too large   | no           | yes / no       | ignored  | nothing       | –        |
//! | no deployment available, unavailable    | no           | yes            | ignored  | request only  | –        |
//! | anything else (client errors, internal) | no           | no             | ignored  | request only  | –        |
//!
//! Streams that break after their first event are judged by [`stream_outcome`]: the client
//! already has a 200, so they are never retried, but they count against the breaker.

use std::time::Duration;

use crate::{
    error::{Error, ErrorKind, TimeoutPhase},
    policy::breaker::Outcome,
    sse::StreamEnd,
};

/// How long a deployment rests after a 429 that came without `Retry-After`.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(1);
/// A sanity cap on an upstream's `Retry-After`, so a bogus value can't bench a deployment for days.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(300);

/// Everything the engine's policies need to know about one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disposition {
    /// Whether another attempt could succeed, and when the upstream asked us to come back.
    pub retry: Retry,
    /// Whether another model group could succeed where this one failed.
    pub fall_back: FallBack,
    /// How the failure counts towards the deployment's circuit breaker.
    pub breaker: Outcome,
    /// What the failed call consumed, for rate-limit reservations.
    pub spent: Spent,
    /// How long the deployment should rest before it is used again (a 429).
    pub cooldown: Option<Duration>,
}

/// Whether a failure is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Another attempt would fail the same way.
    No,
    /// Another attempt may succeed, after the backoff the retry policy chooses.
    Backoff,
    /// Another attempt may succeed, but not before the upstream's `Retry-After`.
    After(Duration),
}

/// Whether a model group's failure should hand the request to other groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallBack {
    /// The request itself is the problem (or time is up): every group would fail it.
    No,
    /// The group failed or had nothing usable: try the `fallbacks` groups.
    Groups,
    /// The prompt is too long for this group's upstreams: try its `context_window_fallbacks`.
    ContextWindow,
}

/// What a failed call consumed, which decides how rate-limit reservations are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// Refused by the gateway itself before anything was sent: give everything back.
    Nothing,
    /// Never delivered to the upstream (no connection, no pool slot): the upstream's quota is
    /// untouched, though the client did make a request.
    NotDelivered,
    /// Reached the upstream, which produced nothing: the request counts, the tokens go back.
    RequestOnly,
    /// Unknown (the client gave up waiting): keep the estimate charged, the safe assumption.
    Unknown,
}

impl Spent {
    /// Whether a deployment's reservation (its upstream key's quota) should be refunded.
    pub fn refunds_deployment(self) -> bool {
        matches!(self, Spent::Nothing | Spent::NotDelivered)
    }

    /// Whether a client's reservation (its share of the gateway) should be refunded.
    pub fn refunds_client(self) -> bool {
        matches!(self, Spent::Nothing)
    }
}

/// Judges one error: see the table in the [module docs](self).
pub fn classify(error: &Error) -> Disposition {
    if blames_the_request(error) {
        // The upstream failed *because of this request* (it says so): another attempt would fail
        // the same way, and counting it would let one client's bad request open the breaker for
        // everyone.
        return Disposition {
            retry: Retry::No,
            fall_back: FallBack::No,
            breaker: Outcome::Ignored,
            spent: Spent::RequestOnly,
            cooldown: None,
        };
    }
    let kind = error.kind();
    let retry = match error {
        Error::Upstream {
            retry_after: Some(wait),
            ..
        } if retryable(kind) => Retry::After(*wait),
        _ if retryable(kind) => Retry::Backoff,
        _ => Retry::No,
    };
    let fall_back = match error {
        Error::Timeout {
            phase: TimeoutPhase::Deadline | TimeoutPhase::ClientDeadline,
            ..
        } => FallBack::No,
        _ if is_context_window_error(error) => FallBack::ContextWindow,
        // What a retry could fix, another group can too; and so can a group with capacity left
        // when this one had nothing usable, was over its own limits, or had no pool slot.
        _ if retry != Retry::No
            || matches!(
                kind,
                ErrorKind::BadUpstreamResponse
                    | ErrorKind::Unavailable
                    | ErrorKind::RateLimited
                    | ErrorKind::PoolExhausted
            ) =>
        {
            FallBack::Groups
        }
        _ => FallBack::No,
    };
    let breaker = match error {
        // The client shortened the deadline: that says nothing about the upstream, and counting
        // it would let any client open the breaker for everyone with a tiny timeout.
        Error::Timeout {
            phase: TimeoutPhase::ClientDeadline,
            ..
        } => Outcome::Ignored,
        _ => breaker_outcome(kind),
    };
    let spent = match error {
        Error::RateLimited { .. } | Error::RequestTooLarge { .. } => Spent::Nothing,
        Error::Connect { .. } | Error::PoolExhausted { .. } => Spent::NotDelivered,
        Error::Timeout {
            phase: TimeoutPhase::ClientDeadline,
            ..
        } => Spent::Unknown,
        _ => Spent::RequestOnly,
    };
    let cooldown = match error {
        // A 429 means "not now", not "broken": the deployment rests instead of counting a failure.
        Error::Upstream {
            status, retry_after, ..
        } if status.as_u16() == 429 => Some(retry_after.unwrap_or(DEFAULT_COOLDOWN).min(MAX_COOLDOWN)),
        _ => None,
    };
    Disposition {
        retry,
        fall_back,
        breaker,
        spent,
        cooldown,
    }
}

/// Whether another attempt could succeed where this one failed: 429, 5xx, timeouts and broken
/// connections. A request the upstream refused as invalid never is, nor is a full pool on our
/// side (waiting for it already took the connect timeout; retrying would queue more work behind it).
fn retryable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::UpstreamRateLimited
            | ErrorKind::UpstreamServerError
            | ErrorKind::Timeout
            | ErrorKind::Connect
            | ErrorKind::Transport
    )
}

/// How a failure of this kind counts towards the circuit breaker. Exhaustive on purpose: a new
/// error kind must be placed in this table deliberately.
fn breaker_outcome(kind: ErrorKind) -> Outcome {
    match kind {
        ErrorKind::UpstreamServerError
        | ErrorKind::Timeout
        | ErrorKind::Connect
        | ErrorKind::Transport
        | ErrorKind::BadUpstreamResponse => Outcome::Failure,
        // A 429 already sends the deployment into its own cooldown; tripping the breaker too
        // would keep it out for `open_timeout` on top, and a busy upstream is not a broken one.
        ErrorKind::UpstreamRateLimited
        // The upstream answered sensibly to a request it did not like (or to our key, which
        // waiting out an open breaker would not fix).
        | ErrorKind::UpstreamClientError
        | ErrorKind::UpstreamAuth
        // Our own pool is saturated: that says nothing about the upstream.
        | ErrorKind::PoolExhausted
        // Failures on the gateway's side: the upstream never saw the request.
        | ErrorKind::RateLimited
        | ErrorKind::InvalidRequest
        | ErrorKind::ModelNotFound
        | ErrorKind::PayloadTooLarge
        | ErrorKind::Unauthenticated
        | ErrorKind::NotFound
        | ErrorKind::Unavailable
        | ErrorKind::Internal => Outcome::Ignored,
    }
}

/// A 5xx whose body says the request was at fault (`"type": "invalid_request_error"`): some
/// OpenAI-compatible servers answer input they choke on (a body nested too deep, a malformed
/// tool schema) with a 500 of that type.
fn blames_the_request(err: &Error) -> bool {
    matches!(err, Error::Upstream { status, error_type: Some(t), .. }
        if status.is_server_error() && t == "invalid_request_error")
}

/// Whether the upstream refused the prompt as longer than its context window (OpenAI's
/// `context_length_exceeded`, or the usual wording of compatible servers).
fn is_context_window_error(err: &Error) -> bool {
    let Error::Upstream {
        status,
        code,
        message,
        ..
    } = err
    else {
        return false;
    };
    if status.as_u16() != 400 {
        return false;
    }
    let message = message.to_ascii_lowercase();
    code.as_deref() == Some("context_length_exceeded")
        || message.contains("context length")
        || message.contains("context window")
        || message.contains("maximum context")
}

/// How a stream that was already answering counts towards the breaker when it ends: completed is
/// a success, broken (transport error, idle timeout, cut short, a malformed event) a failure, and
/// a client that went away says nothing about the upstream.
pub fn stream_outcome(end: &StreamEnd) -> Outcome {
    match (end.completed, end.error) {
        (true, _) => Outcome::Success,
        (false, Some(_)) => Outcome::Failure,
        (false, None) => Outcome::Ignored,
    }
}
