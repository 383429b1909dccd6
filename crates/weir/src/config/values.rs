//! Scalar types of the config file: durations, byte sizes, secrets and `${ENV}`-interpolated strings.

use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer, de};

/// A duration written as `"30s"`, `"250ms"`, `"1m 30s"` or a number of seconds (`30`, `0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Seconds(f64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Seconds(secs) => seconds(secs).map(ConfigDuration).map_err(de::Error::custom),
            Repr::Text(text) => parse_duration(&text)
                .map(ConfigDuration)
                .map_err(de::Error::custom),
        }
    }
}

/// Parses `"30s"`, `"1m"`, `"250ms"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return seconds(secs);
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration `{text}` ({e}); write e.g. \"30s\", \"500ms\" or \"2m\""))
}

fn seconds(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("invalid duration {secs}: must be a non-negative number of seconds"))
}

/// A size in bytes written as a number or with a unit: `"16MiB"`, `"512KiB"`, `"1MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteSize(pub usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Bytes(u64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Bytes(n) => usize::try_from(n).map(ByteSize).map_err(de::Error::custom),
            Repr::Text(text) => parse_byte_size(&text).map(ByteSize).map_err(de::Error::custom),
        }
    }
}

/// Parses `"16MiB"`, `"10 KB"`, `"1024"`.
pub fn parse_byte_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("invalid size `{text}`: write e.g. 16MiB or 1048576"))?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`: use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// A secret (API key). Its `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct Secret {
    value: String,
    /// Written as `${VAR:-fallback}` with `VAR` unset: the file's fallback, most likely a
    /// placeholder such as `sk-placeholder` rather than a real key.
    fallback: bool,
}

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret {
            value: value.into(),
            fallback: false,
        }
    }
    /// The value, for building an upstream request header. Never log it.
    pub fn expose(&self) -> &str {
        &self.value
    }
    /// Whether the value is the fallback of a `${VAR:-fallback}` reference whose variable was
    /// unset (or empty) when the file was loaded, or a placeholder the shipped examples use
    /// (`change-me`): `weir check` and `weir serve` warn that this is not a real key.
    pub fn is_placeholder(&self) -> bool {
        self.fallback || matches!(self.value.trim(), "change-me" | "changeme" | "placeholder")
    }
}

// Equality is the value's: how it was written does not make two keys differ.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Secret {}

impl std::hash::Hash for Secret {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let (value, fallback) = expand(&raw, |name| std::env::var(name).ok()).map_err(de::Error::custom)?;
        Ok(Secret { value, fallback })
    }
}

/// A string in which `${VAR}` is replaced by the environment variable `VAR` (an error if unset),
/// `${VAR:-fallback}` falls back when unset or empty, and `$${` stands for a literal `${`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvString(pub String);

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        interpolate(&raw, |name| std::env::var(name).ok())
            .map(EnvString)
            .map_err(de::Error::custom)
    }
}

/// Expands `${VAR}` references using `lookup`.
pub fn interpolate(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    expand(raw, lookup).map(|(text, _)| text)
}

/// [`interpolate`], and whether a `${VAR:-fallback}` used its fallback.
fn expand(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<(String, bool), String> {
    let mut used_fallback = false;
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{raw}`"))?;
            let expr = &body[..end];
            let (name, fallback) = match expr.split_once(":-") {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{expr}}}` is not a valid environment variable reference"
                ));
            }
            match (lookup(name).filter(|v| !v.is_empty()), fallback) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(fallback)) => {
                    used_fallback = true;
                    out.push_str(fallback);
                }
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (write `${{{name}:-default}}` to make it optional)"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok((out, used_fallback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation() {
        let env = |name: &str| (name == "KEY").then(|| "sk-123".to_owned());
        assert_eq!(interpolate("Bearer ${KEY}", env).unwrap(), "Bearer sk-123");
        assert_eq!(interpolate("${MISSING:-x}", env).unwrap(), "x");
        assert_eq!(interpolate("$${KEY} $5", env).unwrap(), "${KEY} $5");
        assert!(interpolate("${MISSING}", env).unwrap_err().contains("MISSING"));
        assert!(interpolate("${KEY", env).is_err());
        assert!(interpolate("${A B}", env).is_err());
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_byte_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_byte_size("1 KB").unwrap(), 1000);
        assert_eq!(parse_byte_size("42").unwrap(), 42);
        assert!(parse_byte_size("3 parsecs").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("sk-very-secret");
        assert!(!format!("{s:?} {s}").contains("very"));
    }
}
