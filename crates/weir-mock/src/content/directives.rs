//! Directives: the knobs a request uses to script the mock's behaviour.
//!
//! They come from three places, in increasing precedence: the model name (`mock:key=value,...`),
//! the body's `x_mock` object, and `x-mock-<key>` headers. This module only parses and merges
//! them; [`content`](crate::content) acts on `content` and `chunks`, the server on the rest.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// Largest `chunks` accepted: a typo such as `chunks=10000000` would otherwise allocate gigabytes.
pub const MAX_CHUNKS: usize = 100_000;

/// Prefix that turns a model name into a list of directives, e.g. `mock:status=500,retry_after=2`.
pub const MODEL_PREFIX: &str = "mock:";

/// Prefix of the header form of a directive, e.g. `x-mock-latency-ms: 50`.
pub const HEADER_PREFIX: &str = "x-mock-";

/// Every directive a request may carry. `None` means "not given" (the default applies), so
/// sources can be layered with [`Directives::overlay`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directives {
    /// `status`: answer with this HTTP status and an OpenAI-shaped error body. Values below 400
    /// mean "no fault", which lets a higher-precedence source cancel a lower one.
    pub status: Option<u16>,
    /// `retry_after`: seconds (fractional allowed) for `Retry-After` / `retry-after-ms`.
    pub retry_after: Option<f64>,
    /// `fail_times`: only the first N requests carrying the same `fail_key` fail.
    pub fail_times: Option<u32>,
    /// `fail_key`: names the counter `fail_times` uses (default: the empty key).
    pub fail_key: Option<String>,
    /// `latency_ms`: delay before the response headers are sent.
    pub latency_ms: Option<u64>,
    /// `chunk_delay_ms`: delay between the SSE events of a stream.
    pub chunk_delay_ms: Option<u64>,
    /// `chunks`: number of content pieces in a stream (1..=[`MAX_CHUNKS`], default 5).
    pub chunks: Option<usize>,
    /// `stop_after_chunks`: send this many SSE events, then end the body cleanly (no `[DONE]`).
    pub stop_after_chunks: Option<usize>,
    /// `drop_after_chunks`: send this many SSE events, then abort the connection.
    pub drop_after_chunks: Option<usize>,
    /// `drop_mid_body`: send half of a JSON body, then abort the connection.
    pub drop_mid_body: Option<bool>,
    /// `hang`: never answer.
    pub hang: Option<bool>,
    /// `content`: the assistant message text.
    pub content: Option<String>,
    /// `error_code`: the `code` of a fault's error body (e.g. `context_length_exceeded`).
    pub error_code: Option<String>,
    /// `error_after_chunks` (Anthropic streams): after this many events, an `error` event
    /// (type `error_code`, default `overloaded_error`) ends the stream.
    pub error_after_chunks: Option<usize>,
    /// `malformed_after_chunks`: after this many SSE events, send one event whose `data` is not
    /// valid JSON (cut mid-object), then carry on with the rest of the stream, `[DONE]` included.
    pub malformed_after_chunks: Option<usize>,
}

/// A directive that could not be understood: an unknown key or a malformed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveError {
    /// The key as written by the caller.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for DirectiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid mock directive '{}': {}", self.key, self.message)
    }
}

impl std::error::Error for DirectiveError {}

/// A directive value before conversion: text (model name, header) or JSON (`x_mock`).
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Text(&'a str),
    Json(&'a Value),
}

impl Directives {
    /// The keys understood, in their canonical (underscore) spelling.
    pub const KEYS: &'static [&'static str] = &[
        "status",
        "retry_after",
        "fail_times",
        "fail_key",
        "latency_ms",
        "chunk_delay_ms",
        "chunks",
        "stop_after_chunks",
        "drop_after_chunks",
        "drop_mid_body",
        "hang",
        "content",
        "error_code",
        "error_after_chunks",
        "malformed_after_chunks",
    ];

    /// True when no directive is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Sets one directive from its text form (model name or header). Dashes in `key` count as
    /// underscores. For boolean keys an empty value means `true` (so `mock:hang` works).
    pub fn set_text(&mut self, key: &str, value: &str) -> Result<(), DirectiveError> {
        self.set(key, Raw::Text(value))
    }

    /// Sets one directive from a JSON value (an `x_mock` member). Numbers and booleans may also
    /// be given as strings.
    pub fn set_json(&mut self, key: &str, value: &Value) -> Result<(), DirectiveError> {
        self.set(key, Raw::Json(value))
    }

    /// Parses a model name. Names without the `mock:` prefix carry no directives.
    ///
    /// `mock:status=500,retry_after=2` sets two keys; a bare key (`mock:hang`) means `true`.
    pub fn from_model(model: &str) -> Result<Self, DirectiveError> {
        let mut directives = Self::default();
        let Some(list) = model.strip_prefix(MODEL_PREFIX) else {
            return Ok(directives);
        };
        for item in list.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            directives.set_text(key.trim(), value.trim())?;
        }
        Ok(directives)
    }

    /// Parses an `x_mock` value, which must be a JSON object (`null` counts as empty).
    pub fn from_x_mock(value: &Value) -> Result<Self, DirectiveError> {
        let mut directives = Self::default();
        match value {
            Value::Null => {}
            Value::Object(map) => {
                for (key, value) in map {
                    directives.set_json(key, value)?;
                }
            }
            _ => {
                return Err(DirectiveError {
                    key: "x_mock".to_owned(),
                    message: "must be a JSON object".to_owned(),
                });
            }
        }
        Ok(directives)
    }

    /// Reads the directives a request body carries: its model name, overlaid by its `x_mock`
    /// object. A body that is not a JSON object carries none (it is not an error here: the
    /// endpoint decides whether such a body is acceptable).
    pub fn from_body(body: &[u8]) -> Result<Self, DirectiveError> {
        // Only the two interesting fields are materialised; serde skips the rest cheaply.
        #[derive(Deserialize)]
        struct Peek<'a> {
            #[serde(default, borrow)]
            model: Option<Cow<'a, str>>,
            #[serde(default)]
            x_mock: Option<Value>,
        }
        if body.is_empty() {
            return Ok(Self::default());
        }
        let Ok(peek) = serde_json::from_slice::<Peek<'_>>(body) else {
            return Ok(Self::default());
        };
        Self::from_parts(peek.model.as_deref(), peek.x_mock.as_ref())
    }

    /// Combines a model name and an optional `x_mock` value, `x_mock` winning.
    pub fn from_parts(model: Option<&str>, x_mock: Option<&Value>) -> Result<Self, DirectiveError> {
        let mut directives = match model {
            Some(model) => Self::from_model(model)?,
            None => Self::default(),
        };
        if let Some(x_mock) = x_mock {
            directives.overlay(&Self::from_x_mock(x_mock)?);
        }
        Ok(directives)
    }

    /// Overwrites every directive that `higher` sets (higher precedence wins).
    pub fn overlay(&mut self, higher: &Directives) {
        fn take<T: Clone>(slot: &mut Option<T>, higher: &Option<T>) {
            if higher.is_some() {
                slot.clone_from(higher);
            }
        }
        take(&mut self.status, &higher.status);
        take(&mut self.retry_after, &higher.retry_after);
        take(&mut self.fail_times, &higher.fail_times);
        take(&mut self.fail_key, &higher.fail_key);
        take(&mut self.latency_ms, &higher.latency_ms);
        take(&mut self.chunk_delay_ms, &higher.chunk_delay_ms);
        take(&mut self.chunks, &higher.chunks);
        take(&mut self.stop_after_chunks, &higher.stop_after_chunks);
        take(&mut self.drop_after_chunks, &higher.drop_after_chunks);
        take(&mut self.drop_mid_body, &higher.drop_mid_body);
        take(&mut self.hang, &higher.hang);
        take(&mut self.content, &higher.content);
        take(&mut self.error_code, &higher.error_code);
        take(&mut self.error_after_chunks, &higher.error_after_chunks);
        take(&mut self.malformed_after_chunks, &higher.malformed_after_chunks);
    }

    fn set(&mut self, key: &str, raw: Raw<'_>) -> Result<(), DirectiveError> {
        let canonical: Cow<'_, str> = if key.contains('-') {
            Cow::Owned(key.replace('-', "_"))
        } else {
            Cow::Borrowed(key)
        };
        let err = |message: String| DirectiveError {
            key: key.to_owned(),
            message,
        };
        match canonical.as_ref() {
            "status" => {
                let status = to_u64(raw).map_err(err)?;
                if !(200..=599).contains(&status) {
                    return Err(err(format!("expected an HTTP status in 200..=599, got {status}")));
                }
                self.status = u16::try_from(status).ok();
            }
            "retry_after" => {
                let secs = to_f64(raw).map_err(err)?;
                if !secs.is_finite() || !(0.0..=1.0e9).contains(&secs) {
                    return Err(err(format!("expected seconds >= 0, got {secs}")));
                }
                self.retry_after = Some(secs);
            }
            "fail_times" => {
                let n = to_u64(raw).map_err(err)?;
                self.fail_times = Some(u32::try_from(n).map_err(|_| err(format!("{n} is too large")))?);
            }
            "fail_key" => self.fail_key = Some(to_string(raw).map_err(err)?),
            "latency_ms" => self.latency_ms = Some(to_u64(raw).map_err(err)?),
            "chunk_delay_ms" => self.chunk_delay_ms = Some(to_u64(raw).map_err(err)?),
            "chunks" => {
                let n = to_usize(raw).map_err(err)?;
                if !(1..=MAX_CHUNKS).contains(&n) {
                    return Err(err(format!("expected 1..={MAX_CHUNKS}, got {n}")));
                }
                self.chunks = Some(n);
            }
            "stop_after_chunks" => self.stop_after_chunks = Some(to_usize(raw).map_err(err)?),
            "drop_after_chunks" => self.drop_after_chunks = Some(to_usize(raw).map_err(err)?),
            "drop_mid_body" => self.drop_mid_body = Some(to_bool(raw).map_err(err)?),
            "hang" => self.hang = Some(to_bool(raw).map_err(err)?),
            "content" => self.content = Some(to_string(raw).map_err(err)?),
            "error_code" => self.error_code = Some(to_string(raw).map_err(err)?),
            "error_after_chunks" => self.error_after_chunks = Some(to_usize(raw).map_err(err)?),
            "malformed_after_chunks" => self.malformed_after_chunks = Some(to_usize(raw).map_err(err)?),
            _ => {
                return Err(err(format!("unknown key; known keys: {}", Self::KEYS.join(", "))));
            }
        }
        Ok(())
    }
}

fn to_u64(raw: Raw<'_>) -> Result<u64, String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("expected a non-negative integer, got {s:?}"))
    };
    match raw {
        Raw::Text(s) => parse(s),
        Raw::Json(Value::String(s)) => parse(s),
        Raw::Json(value) => value
            .as_u64()
            .ok_or_else(|| format!("expected a non-negative integer, got {value}")),
    }
}

fn to_usize(raw: Raw<'_>) -> Result<usize, String> {
    let n = to_u64(raw)?;
    usize::try_from(n).map_err(|_| format!("{n} is too large"))
}

fn to_f64(raw: Raw<'_>) -> Result<f64, String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|_| format!("expected a number, got {s:?}"))
    };
    match raw {
        Raw::Text(s) => parse(s),
        Raw::Json(Value::String(s)) => parse(s),
        Raw::Json(value) => value
            .as_f64()
            .ok_or_else(|| format!("expected a number, got {value}")),
    }
}

fn to_bool(raw: Raw<'_>) -> Result<bool, String> {
    let parse = |s: &str| match s.trim().to_ascii_lowercase().as_str() {
        // An empty text value is the bare-key form (`mock:hang`).
        "" | "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("expected a boolean, got {other:?}")),
    };
    match raw {
        Raw::Text(s) => parse(s),
        Raw::Json(Value::Bool(b)) => Ok(*b),
        Raw::Json(Value::String(s)) if !s.trim().is_empty() => parse(s),
        Raw::Json(value) => Err(format!("expected a boolean, got {value}")),
    }
}

fn to_string(raw: Raw<'_>) -> Result<String, String> {
    match raw {
        Raw::Text(s) => Ok(s.to_owned()),
        Raw::Json(Value::String(s)) => Ok(s.clone()),
        Raw::Json(value) => Err(format!("expected a string, got {value}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_name_directives() {
        let d = Directives::from_model("mock:status=500, retry_after=1.5,hang,chunk-delay-ms=3").unwrap();
        assert_eq!(d.status, Some(500));
        assert_eq!(d.retry_after, Some(1.5));
        assert_eq!(d.hang, Some(true));
        assert_eq!(d.chunk_delay_ms, Some(3));
        assert!(Directives::from_model("gpt-4o-mini").unwrap().is_empty());
        assert!(Directives::from_model("mock-model").unwrap().is_empty());
        assert!(Directives::from_model("mock:").unwrap().is_empty());
    }

    #[test]
    fn bad_directives_are_errors() {
        let e = Directives::from_model("mock:nope=1").unwrap_err();
        assert_eq!(e.key, "nope");
        assert!(Directives::from_model("mock:status=abc").is_err());
        assert!(Directives::from_model("mock:status=99").is_err());
        assert!(Directives::from_model("mock:chunks=0").is_err());
        assert!(Directives::from_model("mock:latency_ms").is_err());
        assert!(Directives::from_x_mock(&json!([1])).is_err());
        assert!(Directives::from_x_mock(&json!({"content": 3})).is_err());
        assert!(Directives::from_x_mock(&json!({"retry_after": -1})).is_err());
    }

    #[test]
    fn x_mock_accepts_numbers_as_strings() {
        let d = Directives::from_x_mock(&json!({
            "status": "429", "latency_ms": 5, "drop_mid_body": "true", "hang": false, "content": "hi"
        }))
        .unwrap();
        assert_eq!(d.status, Some(429));
        assert_eq!(d.latency_ms, Some(5));
        assert_eq!(d.drop_mid_body, Some(true));
        assert_eq!(d.hang, Some(false));
        assert_eq!(d.content.as_deref(), Some("hi"));
    }

    #[test]
    fn body_overlays_model_with_x_mock() {
        let body = br#"{"model":"mock:status=500,chunks=3","x_mock":{"status":503},"messages":[]}"#;
        let d = Directives::from_body(body).unwrap();
        assert_eq!(d.status, Some(503));
        assert_eq!(d.chunks, Some(3));
        assert!(Directives::from_body(b"not json").unwrap().is_empty());
        assert!(Directives::from_body(b"").unwrap().is_empty());
        assert!(Directives::from_body(br#"{"x_mock":{"bogus":1}}"#).is_err());
    }
}
