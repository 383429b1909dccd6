//! `POST messages`: Anthropic's Messages API, whole or as its SSE event sequence, with tool use.
//!
//! Validation is strict where a translating gateway can get things wrong: `model`, `max_tokens`
//! and non-empty `messages` are required, roles must alternate between `user` and `assistant`,
//! text blocks must not be empty, images need a complete source, and a `tool_result` must answer
//! a `tool_use` of the assistant turn just before it. Errors use Anthropic's shape,
//! `{"type":"error","error":{"type","message"}}`.
//!
//! Answers are deterministic:
//! - When the request has tools, `tool_choice` is not `none`, and the last user turn is not
//!   answering tool calls, the mock calls tools: `tool` → that tool, `any` → the first tool,
//!   `auto` → a text block then every tool (only the first with `disable_parallel_tool_use`).
//!   Inputs are built from each tool's schema (required properties: strings `"mock"`, numbers
//!   `1`, booleans `true`). `stop_reason` is `tool_use`.
//! - Otherwise the text (the `content` directive, or the default) cut to `max_tokens` words
//!   (`stop_reason` `max_tokens` when cut, else `end_turn`).
//! - Usage counts words: `input_tokens` for text without `cache_control`; text with it counts as
//!   `cache_read_input_tokens` in `system` and `cache_creation_input_tokens` in `messages`.
//!
//! Streams follow Anthropic's sequence: `message_start`, per block `content_block_start` (a
//! `ping` after the first), deltas (`text_delta` in `chunks` pieces, `input_json_delta` in two),
//! `content_block_stop`, then `message_delta` and `message_stop`. `error_after_chunks=N` ends the
//! stream after N events with an `error` event of type `error_code` (default `overloaded_error`).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{DEFAULT_CHUNKS, DEFAULT_CONTENT, Directives, Reply, ReplyBody, next_id, word_count};

/// The mock's API path for the Messages API (relative to `/v1`).
pub const MESSAGES_PATH: &str = "messages";

#[derive(Deserialize)]
struct Request {
    model: Option<String>,
    max_tokens: Option<Value>,
    messages: Option<Value>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    x_mock: Option<Value>,
}

/// The models the mock lists in Anthropic's shape.
pub const CLAUDE_MODELS: &[&str] = &["claude-sonnet-4-5", "claude-haiku-4-5"];

/// `GET models` and `GET models/{id}` in Anthropic's shape (the server answers so when the
/// request carries `anthropic-version`); `None` for any other request.
pub fn models(method: &str, path: &str) -> Option<Reply> {
    let route = path
        .split_once('?')
        .map_or(path, |(route, _)| route)
        .trim_matches('/');
    if !method.eq_ignore_ascii_case("GET") {
        return None;
    }
    let info = |id: &str| json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-09-29T00:00:00Z"});
    let body = if route == "models" {
        json!({
            "data": CLAUDE_MODELS.iter().map(|id| info(id)).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": CLAUDE_MODELS.first(),
            "last_id": CLAUDE_MODELS.last(),
        })
    } else {
        let id = route.strip_prefix("models/")?;
        if !CLAUDE_MODELS.contains(&id) {
            return Some(error_reply(404, "not_found_error", &format!("model: {id}")));
        }
        info(id)
    };
    Some(Reply {
        status: 200,
        body: ReplyBody::Json(super::to_json_bytes(&body)),
    })
}

/// Anthropic's error `type` for a status.
fn kind_of(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An Anthropic-shaped error reply.
pub fn error_reply(status: u16, kind: &str, message: &str) -> Reply {
    Reply {
        status,
        body: ReplyBody::Json(super::to_json_bytes(
            &json!({"type": "error", "error": {"type": kind, "message": message}}),
        )),
    }
}

fn invalid(message: &str) -> Reply {
    error_reply(400, "invalid_request_error", message)
}

/// Rewrites an OpenAI-shaped error reply (faults, directive errors) in Anthropic's shape when
/// `path` is the Messages API; other replies and paths are returned unchanged. The error's
/// `code` becomes the type when it is an Anthropic type (`error_code=overloaded_error`), else
/// the type follows the status.
pub fn restyle(path: &str, reply: Reply) -> Reply {
    let route = path.split_once('?').map_or(path, |(route, _)| route);
    if route.trim_matches('/') != MESSAGES_PATH || reply.status < 400 {
        return reply;
    }
    let ReplyBody::Json(body) = &reply.body else {
        return reply;
    };
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return reply;
    };
    let message = value["error"]["message"].as_str().unwrap_or("mock error");
    let kind = match value["error"]["code"].as_str() {
        Some(code) if code.ends_with("_error") || code == "request_too_large" => code,
        _ => kind_of(reply.status),
    };
    error_reply(reply.status, kind, message)
}

pub(super) fn respond(body: &[u8], overrides: &Directives) -> Reply {
    let request: Request = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return invalid(&format!("Invalid request body: {err}")),
    };
    let Some(model) = request.model.as_deref() else {
        return invalid("model: Field required");
    };
    let max_tokens = match &request.max_tokens {
        None => return invalid("max_tokens: Field required"),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => return invalid("max_tokens: Input should be a positive integer"),
        },
    };
    let messages = match request.messages.as_ref().and_then(Value::as_array) {
        None => return invalid("messages: Field required (an array)"),
        Some(list) if list.is_empty() => return invalid("messages: at least one message is required"),
        Some(list) => list,
    };
    let mut usage = Usage::default();
    if let Err(message) = validate(messages, request.system.as_ref(), &mut usage) {
        return invalid(&message);
    }
    let tools = request.tools.as_deref().unwrap_or_default();
    for (i, tool) in tools.iter().enumerate() {
        if tool["name"].as_str().is_none() || !tool["input_schema"].is_object() {
            return invalid(&format!(
                "tools.{i}: a custom tool needs 'name' and 'input_schema'"
            ));
        }
    }
    let mut directives = match Directives::from_parts(Some(model), request.x_mock.as_ref()) {
        Ok(d) => d,
        Err(err) => return invalid(&err.to_string()),
    };
    directives.overlay(overrides);

    let answering_tools = messages.last().is_some_and(|m| {
        m["content"]
            .as_array()
            .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
    });
    let choice = request.tool_choice.as_ref();
    let choice_kind = choice.and_then(|c| c["type"].as_str()).unwrap_or("auto");
    let mut blocks = Vec::new();
    let full = directives.content.as_deref().unwrap_or(DEFAULT_CONTENT);
    let (text, mut stop_reason) = truncate(full, max_tokens);
    let calls: Vec<&Value> = if tools.is_empty() || answering_tools || choice_kind == "none" {
        Vec::new()
    } else {
        match choice_kind {
            "tool" => {
                let name = choice.and_then(|c| c["name"].as_str()).unwrap_or_default();
                match tools.iter().find(|t| t["name"] == name) {
                    Some(tool) => vec![tool],
                    None => return invalid(&format!("tool_choice: no tool named '{name}'")),
                }
            }
            "any" => tools.iter().take(1).collect(),
            _ => {
                blocks.push(json!({"type": "text", "text": text}));
                let parallel = choice.and_then(|c| c["disable_parallel_tool_use"].as_bool()) != Some(true);
                tools.iter().take(if parallel { 3 } else { 1 }).collect()
            }
        }
    };
    if calls.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    } else {
        stop_reason = "tool_use";
        let call_id = next_id();
        for (k, tool) in calls.iter().enumerate() {
            blocks.push(json!({
                "type": "tool_use",
                "id": format!("toolu_mock_{call_id}_{k}"),
                "name": tool["name"],
                "input": input_for(&tool["input_schema"]),
            }));
        }
    }
    usage.output = (word_count(&text) + calls.len() as u64).max(1);
    let id = format!("msg_mock_{}", next_id());
    let message = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage.json(usage.output),
    });
    if request.stream != Some(true) {
        return Reply {
            status: 200,
            body: ReplyBody::Json(super::to_json_bytes(&message)),
        };
    }
    let mut events = stream_events(
        message,
        &blocks,
        directives.chunks.unwrap_or(DEFAULT_CHUNKS),
        &usage,
    );
    if let Some(n) = directives.error_after_chunks {
        events.truncate(n);
        let kind = directives.error_code.as_deref().unwrap_or("overloaded_error");
        events.push(event(
            &json!({"type": "error", "error": {"type": kind, "message": "Overloaded"}}),
        ));
    }
    Reply {
        status: 200,
        body: ReplyBody::Events(events),
    }
}

#[derive(Default)]
struct Usage {
    input: u64,
    cache_read: u64,
    cache_creation: u64,
    output: u64,
}

impl Usage {
    fn json(&self, output: u64) -> Value {
        json!({
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": output,
        })
    }
}

/// Checks the conversation's structure, counting its words into `usage`.
fn validate(messages: &[Value], system: Option<&Value>, usage: &mut Usage) -> Result<(), String> {
    match system {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => usage.input += word_count(s),
        Some(Value::Array(blocks)) => {
            for (j, block) in blocks.iter().enumerate() {
                let text = block["text"]
                    .as_str()
                    .filter(|_| block["type"] == "text")
                    .ok_or_else(|| format!("system.{j}: system blocks must be text blocks"))?;
                if block.get("cache_control").is_some() {
                    usage.cache_read += word_count(text);
                } else {
                    usage.input += word_count(text);
                }
            }
        }
        Some(_) => return Err("system: must be a string or an array of text blocks".to_owned()),
    }
    let mut previous_role = "";
    let mut previous_tool_ids: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
        if role == previous_role {
            return Err(format!(
                "messages.{i}: roles must alternate between \"user\" and \"assistant\", but found \
                 multiple \"{role}\" roles in a row"
            ));
        }
        let blocks = match &message["content"] {
            Value::String(s) => {
                usage.input += word_count(s);
                Vec::new()
            }
            Value::Array(blocks) if !blocks.is_empty() => blocks.clone(),
            _ => {
                return Err(format!(
                    "messages.{i}.content: must be a string or a non-empty array"
                ));
            }
        };
        let mut tool_ids = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            match block["type"].as_str().unwrap_or_default() {
                "text" => {
                    let text = block["text"].as_str().unwrap_or_default();
                    if text.is_empty() {
                        return Err(format!("{at}: text content blocks must be non-empty"));
                    }
                    if block.get("cache_control").is_some() {
                        usage.cache_creation += word_count(text);
                    } else {
                        usage.input += word_count(text);
                    }
                }
                "image" => {
                    let source = &block["source"];
                    let ok = match source["type"].as_str() {
                        Some("base64") => source["media_type"].is_string() && source["data"].is_string(),
                        Some("url") => source["url"].is_string(),
                        _ => false,
                    };
                    if !ok || role != "user" {
                        return Err(format!("{at}.source: invalid image source"));
                    }
                }
                "tool_use" if role == "assistant" => {
                    let id = block["id"].as_str().unwrap_or_default();
                    if id.is_empty() || !block["name"].is_string() || !block["input"].is_object() {
                        return Err(format!("{at}: tool_use needs 'id', 'name' and an object 'input'"));
                    }
                    tool_ids.push(id.to_owned());
                }
                "tool_result" if role == "user" => {
                    let id = block["tool_use_id"].as_str().unwrap_or_default();
                    if !previous_tool_ids.iter().any(|t| t == id) {
                        return Err(format!(
                            "{at}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each \
                             `tool_result` block must have a corresponding `tool_use` block in the \
                             previous message."
                        ));
                    }
                }
                "document" | "thinking" | "redacted_thinking" => {}
                other => return Err(format!("{at}.type: unexpected block type '{other}' for {role}")),
            }
        }
        previous_role = role;
        previous_tool_ids = tool_ids;
    }
    Ok(())
}

/// A tool input satisfying the schema's required properties.
fn input_for(schema: &Value) -> Value {
    let mut input = serde_json::Map::new();
    for name in schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let value = match schema["properties"][name]["type"].as_str() {
            Some("number" | "integer") => json!(1),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => json!("mock"),
        };
        input.insert(name.to_owned(), value);
    }
    Value::Object(input)
}

fn truncate(text: &str, max_tokens: u64) -> (String, &'static str) {
    let max = usize::try_from(max_tokens).unwrap_or(usize::MAX);
    if text.split_whitespace().nth(max).is_none() {
        return (text.to_owned(), "end_turn");
    }
    (
        text.split_whitespace().take(max).collect::<Vec<_>>().join(" "),
        "max_tokens",
    )
}

fn event(data: &Value) -> Bytes {
    let kind = data["type"].as_str().unwrap_or("message");
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// The event sequence for a complete message.
fn stream_events(mut message: Value, blocks: &[Value], pieces: usize, usage: &Usage) -> Vec<Bytes> {
    let stop_reason = message["stop_reason"].take();
    message["content"] = json!([]);
    message["usage"] = usage.json(1);
    let mut events = vec![event(&json!({"type": "message_start", "message": message}))];
    for (index, block) in blocks.iter().enumerate() {
        let (start, deltas) = if block["type"] == "tool_use" {
            let mut start = block.clone();
            start["input"] = json!({});
            let json_text = block["input"].to_string();
            let deltas: Vec<Value> = super::chat::split_even(&json_text, 2)
                .into_iter()
                .map(|piece| json!({"type": "input_json_delta", "partial_json": piece}))
                .collect();
            (start, deltas)
        } else {
            let text = block["text"].as_str().unwrap_or_default();
            let deltas = super::chat::split_even(text, pieces)
                .into_iter()
                .map(|piece| json!({"type": "text_delta", "text": piece}))
                .collect();
            (json!({"type": "text", "text": ""}), deltas)
        };
        events.push(event(
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        if index == 0 {
            events.push(event(&json!({"type": "ping"})));
        }
        for delta in deltas {
            events.push(event(
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        events.push(event(&json!({"type": "content_block_stop", "index": index})));
    }
    events.push(event(&json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": usage.output},
    })));
    events.push(event(&json!({"type": "message_stop"})));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(body: Value) -> Reply {
        super::super::respond("POST", "messages", body.to_string().as_bytes())
    }

    fn json_of(reply: &Reply) -> Value {
        serde_json::from_slice(&reply.to_bytes()).unwrap()
    }

    #[test]
    fn text_answer_and_validation() {
        let reply = call(
            json!({"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello there"}]}),
        );
        assert_eq!(reply.status, 200);
        let v = json_of(&reply);
        assert_eq!(v["type"], "message");
        assert_eq!(v["content"][0]["text"], DEFAULT_CONTENT);
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["usage"]["input_tokens"], 2);

        for (body, needle) in [
            (
                json!({"model": "c", "messages": [{"role": "user", "content": "x"}]}),
                "max_tokens",
            ),
            (
                json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}),
                "alternate",
            ),
            (
                json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}),
                "non-empty",
            ),
            (
                json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]}]}),
                "tool_use_id",
            ),
        ] {
            let reply = call(body);
            assert_eq!(reply.status, 400);
            let v = json_of(&reply);
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], "invalid_request_error");
            assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{v}");
        }
    }

    #[test]
    fn tools_and_stream_sequence() {
        let tools = json!([{"name": "get_weather", "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}},
                           {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}]);
        let v = json_of(&call(
            json!({"model": "c", "max_tokens": 50, "tools": tools, "messages": [{"role": "user", "content": "Weather?"}]}),
        ));
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["content"][0]["type"], "text");
        assert_eq!(v["content"][1]["name"], "get_weather");
        assert_eq!(v["content"][1]["input"], json!({"location": "mock"}));
        assert_eq!(v["content"][2]["name"], "get_time");

        let reply = call(
            json!({"model": "c", "max_tokens": 50, "stream": true, "tools": tools,
            "tool_choice": {"type": "tool", "name": "get_time"}, "messages": [{"role": "user", "content": "t?"}]}),
        );
        let ReplyBody::Events(events) = reply.body else {
            panic!("not a stream")
        };
        let kinds: Vec<String> = events
            .iter()
            .map(|e| {
                String::from_utf8_lossy(e)
                    .lines()
                    .next()
                    .unwrap()
                    .trim_start_matches("event: ")
                    .to_owned()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }

    #[test]
    fn models_in_anthropic_shape() {
        let v = json_of(&models("GET", "models?limit=1000").unwrap());
        assert_eq!(v["data"][0]["id"], "claude-sonnet-4-5");
        assert_eq!(v["data"][0]["type"], "model");
        assert_eq!(v["has_more"], false);
        assert_eq!(models("GET", "models/nope").unwrap().status, 404);
        assert!(models("POST", "models").is_none());
        assert!(models("GET", "chat/completions").is_none());
    }

    #[test]
    fn faults_are_restyled_on_the_messages_path() {
        let v = json_of(&restyle("messages", super::super::fault_reply(529)));
        assert_eq!(v["error"]["type"], "overloaded_error");
        let openai = restyle("chat/completions", super::super::fault_reply(529));
        assert!(json_of(&openai)["error"]["code"].is_null());
    }
}
