//! Cache keys: a blake3 hash of the tenant and the canonical request.
//!
//! Canonical means: the JSON body with object keys sorted at every depth, numbers written one way
//! (`0`, `0.0` and `0e0` are the same temperature), no insignificant whitespace, and the top-level
//! fields that cannot change the answer left out (see [`IGNORED_FIELDS`]). Two requests that differ
//! only in key order, spacing, `user`, `stream` or `metadata` share an entry; anything else — a
//! different message, temperature, tool list, `max_tokens` or model — gets its own.
//!
//! The tenant goes into the hash, not next to it: an entry's Redis key names neither the tenant
//! nor the request, and one tenant can't address another's entries.

use std::fmt::Write as _;

use serde_json::Value;

/// Top-level request fields that never change the answer, so they are not part of the key.
///
/// - `stream`, `stream_options`: the same answer, delivered differently (the cache converts).
/// - `user`, `safety_identifier`, `metadata`, `store`: who asked and what to remember, for the
///   upstream's abuse tracking and dashboards.
/// - `prompt_cache_key`, `prompt_cache_retention`: hints for the upstream's own prompt cache.
/// - `request_id`: a correlation id some clients put in the body.
pub const IGNORED_FIELDS: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "safety_identifier",
    "metadata",
    "store",
    "prompt_cache_key",
    "prompt_cache_retention",
    "request_id",
];

/// A cache key: 32 bytes of blake3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Lower-case hex, for Redis keys and logs.
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(out, "{b:02x}");
        }
        out
    }
}

/// The key of a request to `path` (e.g. `chat/completions`) for the model group `group`, asked by
/// `tenant`, with this JSON `body`.
pub fn request_key(tenant: &str, group: &str, path: &str, body: &Value) -> CacheKey {
    let mut hasher = blake3::Hasher::new();
    // Lengths before each part: "a" + "bc" and "ab" + "c" must not collide.
    for part in ["weir-cache-v1", tenant, group, path] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let mut canonical = String::with_capacity(256);
    match body {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map
                .iter()
                .filter(|(k, _)| !IGNORED_FIELDS.contains(&k.as_str()))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            write_object(&mut canonical, entries);
        }
        other => write_canonical(&mut canonical, other),
    }
    hasher.update(canonical.as_bytes());
    CacheKey(*hasher.finalize().as_bytes())
}

/// The tenant a gateway key stands for: a keyed hash of the key, so entries follow the key itself
/// (stable across instances and config reorderings, unlike its position in the list) while
/// nothing stored or logged can be turned back into the key.
pub fn tenant_for_key(key: &[u8]) -> String {
    let hash = blake3::derive_key("weir cache tenant v1", key);
    let mut out = String::with_capacity(34);
    out.push_str("k:");
    for b in &hash[..16] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            write_object(out, entries);
        }
    }
}

fn write_object(out: &mut String, entries: Vec<(&String, &Value)>) {
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, k);
        out.push(':');
        write_canonical(out, v);
    }
    out.push('}');
}

fn write_string(out: &mut String, s: &str) {
    // serde_json's escaping is deterministic for a given string; `\u00e9` and `é` in the client's
    // bytes are the same string once parsed.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        // Whole floats print as integers, so `1.0` and `1` hash the same.
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            let _ = write!(out, "{}", f as i64);
        } else {
            let _ = write!(out, "{f:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(body: Value) -> CacheKey {
        request_key("t", "g", "chat/completions", &body)
    }

    #[test]
    fn key_order_spacing_numbers_and_ignored_fields_do_not_matter() {
        let a = key(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}));
        let b: Value = serde_json::from_str(
            r#"{ "temperature": 0.0, "messages": [ {"content": "hi", "role": "user"} ], "model": "m",
                "user": "alice", "stream": true, "stream_options": {"include_usage": true}, "metadata": {"x": "y"} }"#,
        )
        .unwrap();
        assert_eq!(a, key(b));
    }

    #[test]
    fn anything_that_changes_the_answer_changes_the_key() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0});
        let k = key(base.clone());
        for (field, value) in [
            ("temperature", json!(0.5)),
            ("max_tokens", json!(10)),
            ("seed", json!(1)),
            ("model", json!("other")),
            ("messages", json!([{"role": "user", "content": "hello"}])),
            ("tools", json!([])),
        ] {
            let mut changed = base.clone();
            changed[field] = value;
            assert_ne!(k, key(changed), "{field} must be part of the key");
        }
        // Order inside arrays is meaning (message order), so it stays.
        let two = json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]});
        let swapped = json!({"model": "m", "messages": [{"role": "user", "content": "b"}, {"role": "user", "content": "a"}]});
        assert_ne!(key(two), key(swapped));
    }

    #[test]
    fn tenant_group_and_path_scope_the_key() {
        let body = json!({"model": "m", "messages": []});
        let k = request_key("t1", "g", "chat/completions", &body);
        assert_ne!(k, request_key("t2", "g", "chat/completions", &body));
        assert_ne!(k, request_key("t1", "h", "chat/completions", &body));
        assert_ne!(k, request_key("t1", "g", "embeddings", &body));
        // Length-prefixed parts: moving a character between parts is another key.
        assert_ne!(
            request_key("ab", "c", "p", &body),
            request_key("a", "bc", "p", &body)
        );
    }

    #[test]
    fn tenant_ids_hide_the_key_and_are_stable() {
        let t = tenant_for_key(b"sk-secret-123");
        assert_eq!(t, tenant_for_key(b"sk-secret-123"));
        assert_ne!(t, tenant_for_key(b"sk-secret-124"));
        assert!(
            !t.contains("secret") && t.starts_with("k:") && t.len() == 34,
            "{t}"
        );
    }
}
