//! Per-request controls a client sends as headers: cache directives and its own deadline.

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, header};

/// Per-request cache controls (the client's `Cache-Control`) and whose cache it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheDirectives {
    /// `no-cache`: don't answer from the cache (the fresh answer may still be stored).
    pub no_cache: bool,
    /// `no-store`: don't store this answer.
    pub no_store: bool,
    /// `max-age=N`: only accept a cached answer at most this old.
    pub max_age: Option<Duration>,
    /// Whose cache: entries of one tenant are never served to another. `None` falls back to the
    /// request's client identity (`ProxyRequest::client`), then to one shared anonymous tenant.
    /// The gateway sets it to [`tenant_for_key`](crate::cache::tenant_for_key) of the client's key.
    pub tenant: Option<Arc<str>>,
}

impl CacheDirectives {
    /// Reads `Cache-Control` (and the HTTP/1.0 `Pragma: no-cache`). Unknown directives are ignored.
    pub fn from_headers(headers: &HeaderMap) -> CacheDirectives {
        let mut d = CacheDirectives::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(text) = value.to_str() else { continue };
            for directive in text.split(',') {
                let directive = directive.trim().to_ascii_lowercase();
                match directive.split_once('=') {
                    None if directive == "no-cache" => d.no_cache = true,
                    None if directive == "no-store" => d.no_store = true,
                    Some((name, value)) if name.trim() == "max-age" => {
                        if let Ok(secs) = value.trim().trim_matches('"').parse::<u64>() {
                            d.max_age = Some(Duration::from_secs(secs));
                        }
                    }
                    _ => {}
                }
            }
        }
        if headers
            .get(header::PRAGMA)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"))
        {
            d.no_cache = true;
        }
        d
    }
}

/// Reads a client's deadline header (`x-weir-timeout`, else OpenAI SDKs' `x-stainless-timeout`):
/// seconds (`30`, `2.5`) or a duration (`30s`, `500ms`). Invalid or non-positive values are ignored.
pub fn client_deadline(headers: &HeaderMap) -> Option<Duration> {
    ["x-weir-timeout", "x-stainless-timeout"].iter().find_map(|name| {
        let text = headers.get(*name)?.to_str().ok()?;
        crate::config::parse_duration(text).ok().filter(|d| !d.is_zero())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_is_parsed_leniently() {
        let parse = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CACHE_CONTROL, v.parse().unwrap());
            }
            CacheDirectives::from_headers(&h)
        };
        assert_eq!(parse(&[]), CacheDirectives::default());
        let d = parse(&["No-Cache, max-age=\"30\"", "no-store"]);
        assert!(d.no_cache && d.no_store);
        assert_eq!(d.max_age, Some(Duration::from_secs(30)));
        let d = parse(&["max-age=abc, private, no-transform"]);
        assert_eq!(d, CacheDirectives::default());
        let mut h = HeaderMap::new();
        h.insert(header::PRAGMA, "no-cache".parse().unwrap());
        assert!(CacheDirectives::from_headers(&h).no_cache);
    }

    #[test]
    fn client_deadline_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(client_deadline(&h), None);
        h.insert("x-stainless-timeout", "600".parse().unwrap());
        assert_eq!(client_deadline(&h), Some(Duration::from_secs(600)));
        h.insert("x-weir-timeout", "2.5s".parse().unwrap());
        assert_eq!(client_deadline(&h), Some(Duration::from_millis(2500)));
        h.insert("x-weir-timeout", "soon".parse().unwrap());
        assert_eq!(
            client_deadline(&h),
            Some(Duration::from_secs(600)),
            "invalid values are ignored"
        );
    }
}
