//! Which requests a strategy caches. Pure functions of the config and the request body.
//!
//! What is cacheable at all: `POST` chat completions, legacy completions and embeddings; image
//! generations only under `aggressive` (every call is meant to draw a new picture, and the URLs
//! in the answer expire). Every other path (files, batches, model listings...) is never cached.
//!
//! - **Embeddings** are a function of their input: every strategy but `disabled` caches them.
//! - **conservative**: deterministic requests only — `temperature` 0 or a `seed`; one choice (`n`
//!   absent or 1); and no tool the model could call, unless every declared tool is listed in
//!   `cache.safe_tools` (or `tool_choice` is `"none"`). A cached tool call would make the client run
//!   the tool again without the model being asked: fine for a lookup, wrong for "send the email".
//! - **selective**: conservative, or: one choice, no unsafe tools, `temperature` at most
//!   `selective_max_temperature` (default 0.3; absent counts as 1, the API's default), and no
//!   message text that asks about the moment (see [`TIME_WORDS`]) or for something random.
//! - **aggressive**: every cacheable request.

use serde_json::Value;

use super::config::{CacheConfig, CacheStrategy};
use crate::request::Endpoint;

/// Words and phrases that make an answer depend on when (or how often) it is asked. Matched
/// case-insensitively on word boundaries in every message's text.
pub const TIME_WORDS: &[&str] = &[
    "today",
    "tonight",
    "tomorrow",
    "yesterday",
    "now",
    "currently",
    "current",
    "latest",
    "recent",
    "recently",
    "this week",
    "this month",
    "this year",
    "news",
    "weather",
    "stock price",
    "price of",
    "live",
    "up to date",
    "up-to-date",
    "random",
    "randomly",
    "surprise me",
    "what time",
    "what date",
    "what day",
];

/// What kind of API call, for the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Chat completions (streamable; entries convert between streamed and whole).
    Chat,
    /// Legacy text completions.
    Completion,
    /// Embeddings (deterministic).
    Embedding,
    /// Image generation.
    Image,
}

/// The cacheable kind of a request, if any.
pub fn kind_of(endpoint: Endpoint, method: &http::Method, path: &str) -> Option<Kind> {
    if method != http::Method::POST {
        return None;
    }
    match endpoint {
        Endpoint::ChatCompletions => Some(Kind::Chat),
        Endpoint::Embeddings => Some(Kind::Embedding),
        Endpoint::ImageGenerations => Some(Kind::Image),
        Endpoint::Passthrough if path == "completions" => Some(Kind::Completion),
        Endpoint::Passthrough => None,
    }
}

/// Whether `strategy` caches this request; `Err` says why not (for logs).
pub fn decide(config: &CacheConfig, kind: Kind, body: &Value) -> Result<(), &'static str> {
    let strategy = config.strategy;
    match (strategy, kind) {
        (CacheStrategy::Disabled, _) => return Err("cache disabled"),
        (CacheStrategy::Aggressive, _) => return Ok(()),
        (_, Kind::Embedding) => return Ok(()),
        (_, Kind::Image) => return Err("image generations are cached only by the aggressive strategy"),
        _ => {}
    }
    if n_choices(body) != 1 {
        return Err("n > 1 asks for varied answers");
    }
    if !tools_are_safe(config, body) {
        return Err("the request declares tools with possible side effects");
    }
    let temperature = number(body, "temperature");
    let deterministic = temperature == Some(0.0) || body.get("seed").is_some_and(|s| !s.is_null());
    if deterministic {
        return Ok(());
    }
    if strategy == CacheStrategy::Conservative {
        return Err("not deterministic (needs temperature 0 or a seed)");
    }
    // Selective: stable enough to reuse.
    if temperature.unwrap_or(1.0) > config.selective_max_temperature {
        return Err("temperature above selective_max_temperature");
    }
    if mentions_time(body) {
        return Err("the prompt depends on when it is asked");
    }
    Ok(())
}

fn number(body: &Value, field: &str) -> Option<f64> {
    body.get(field).and_then(Value::as_f64)
}

fn n_choices(body: &Value) -> u64 {
    body.get("n").and_then(Value::as_u64).unwrap_or(1)
}

/// No callable tool unless every one is declared safe. `functions` is the legacy form of `tools`.
fn tools_are_safe(config: &CacheConfig, body: &Value) -> bool {
    if body.get("tool_choice").and_then(Value::as_str) == Some("none") {
        return true;
    }
    let mut names = Vec::new();
    for field in ["tools", "functions"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(tools)) => {
                for tool in tools {
                    let name = tool
                        .pointer("/function/name")
                        .or_else(|| tool.get("name"))
                        .and_then(Value::as_str);
                    match name {
                        Some(name) => names.push(name),
                        // Built-in tools (web search, code interpreter...) have no name to vouch for.
                        None => return false,
                    }
                }
            }
            Some(_) => return false,
        }
    }
    names.iter().all(|n| config.safe_tools.iter().any(|s| s == n))
}

/// Whether any message's text contains one of [`TIME_WORDS`] as whole words.
fn mentions_time(body: &Value) -> bool {
    let mut text = String::new();
    for field in ["messages", "prompt", "input"] {
        collect_text(body.get(field), &mut text);
    }
    let lower = text.to_lowercase();
    TIME_WORDS.iter().any(|w| contains_word(&lower, w))
}

fn collect_text(value: Option<&Value>, out: &mut String) {
    match value {
        Some(Value::String(s)) => {
            out.push(' ');
            out.push_str(s);
        }
        Some(Value::Array(items)) => items.iter().for_each(|i| collect_text(Some(i), out)),
        Some(Value::Object(map)) => {
            // Message content, content parts' text; not roles, ids or image URLs.
            for key in ["content", "text"] {
                collect_text(map.get(key), out);
            }
        }
        _ => {}
    }
}

fn contains_word(haystack: &str, word: &str) -> bool {
    let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    let mut start = 0;
    while let Some(pos) = haystack[start..].find(word) {
        let at = start + pos;
        let end = at + word.len();
        if boundary(haystack[..at].chars().next_back()) && boundary(haystack[end..].chars().next()) {
            return true;
        }
        start = at + word.len().max(1);
        if start >= haystack.len() {
            break;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(strategy: CacheStrategy) -> CacheConfig {
        CacheConfig {
            strategy,
            safe_tools: vec!["lookup".to_owned()],
            ..CacheConfig::default()
        }
    }

    fn chat(extra: Value) -> Value {
        let mut body =
            json!({"model": "m", "messages": [{"role": "user", "content": "Name the capital of France."}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    #[test]
    fn conservative_caches_only_deterministic_requests() {
        let c = config(CacheStrategy::Conservative);
        assert!(decide(&c, Kind::Chat, &chat(json!({"temperature": 0}))).is_ok());
        assert!(decide(&c, Kind::Chat, &chat(json!({"seed": 7, "temperature": 0.9}))).is_ok());
        assert!(
            decide(&c, Kind::Chat, &chat(json!({}))).is_err(),
            "default temperature is 1"
        );
        assert!(decide(&c, Kind::Chat, &chat(json!({"temperature": 0.2}))).is_err());
        assert!(decide(&c, Kind::Chat, &chat(json!({"temperature": 0, "n": 2}))).is_err());
        let tool = |name: &str| json!([{"type": "function", "function": {"name": name}}]);
        assert!(
            decide(
                &c,
                Kind::Chat,
                &chat(json!({"temperature": 0, "tools": tool("send_email")}))
            )
            .is_err()
        );
        assert!(
            decide(
                &c,
                Kind::Chat,
                &chat(json!({"temperature": 0, "tools": tool("lookup")}))
            )
            .is_ok()
        );
        assert!(
            decide(
                &c,
                Kind::Chat,
                &chat(json!({"temperature": 0, "tools": tool("send_email"), "tool_choice": "none"}))
            )
            .is_ok()
        );
        assert!(
            decide(
                &c,
                Kind::Chat,
                &chat(json!({"temperature": 0, "tools": [{"type": "web_search"}]}))
            )
            .is_err()
        );
        assert!(decide(&c, Kind::Embedding, &json!({"input": "x", "model": "e"})).is_ok());
        assert!(decide(&c, Kind::Image, &json!({"prompt": "x"})).is_err());
    }

    #[test]
    fn selective_adds_stable_low_temperature_prompts() {
        let c = config(CacheStrategy::Selective);
        assert!(decide(&c, Kind::Chat, &chat(json!({"temperature": 0.2}))).is_ok());
        assert!(decide(&c, Kind::Chat, &chat(json!({"temperature": 0.7}))).is_err());
        assert!(decide(&c, Kind::Chat, &chat(json!({}))).is_err());
        let asks = |text: &str| json!({"model": "m", "temperature": 0.1, "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]});
        assert!(decide(&c, Kind::Chat, &asks("What is the latest news?")).is_err());
        assert!(decide(&c, Kind::Chat, &asks("What's the weather TODAY")).is_err());
        assert!(decide(&c, Kind::Chat, &asks("Pick a random number")).is_err());
        // Whole words only: "knowledge" contains "now", "delivered" contains "live".
        assert!(
            decide(
                &c,
                Kind::Chat,
                &asks("Define knowledge. Summarise the delivered text.")
            )
            .is_ok()
        );
    }

    #[test]
    fn aggressive_caches_everything_cacheable_and_disabled_nothing() {
        let c = config(CacheStrategy::Aggressive);
        assert!(decide(&c, Kind::Chat, &chat(json!({"temperature": 1.5, "n": 3}))).is_ok());
        assert!(decide(&c, Kind::Image, &json!({"prompt": "x"})).is_ok());
        let off = config(CacheStrategy::Disabled);
        assert!(decide(&off, Kind::Embedding, &json!({"input": "x"})).is_err());
    }

    #[test]
    fn only_posts_to_answer_producing_paths_are_cacheable() {
        let post = http::Method::POST;
        assert_eq!(
            kind_of(Endpoint::ChatCompletions, &post, "chat/completions"),
            Some(Kind::Chat)
        );
        assert_eq!(
            kind_of(Endpoint::Passthrough, &post, "completions"),
            Some(Kind::Completion)
        );
        assert_eq!(kind_of(Endpoint::Passthrough, &post, "files"), None);
        assert_eq!(kind_of(Endpoint::Passthrough, &http::Method::GET, "models"), None);
    }
}
