//! Anthropic Messages request → OpenAI chat completion request.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::error::Error;

/// A translated inbound request.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The OpenAI chat completion body.
    pub body: Bytes,
    /// Whether the client asked for a stream.
    pub stream: bool,
}

fn bad(param: impl Into<String>, message: impl Into<String>) -> Error {
    Error::InvalidRequest {
        message: message.into(),
        param: Some(param.into()),
        code: Some("invalid_request"),
    }
}

fn required<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a Value, Error> {
    obj.get(key)
        .filter(|v| !v.is_null())
        .ok_or_else(|| bad(key, format!("{key}: Field required")))
}

/// Translates a Messages API body. System text becomes a leading system message; `tool_result`
/// blocks become `tool` messages (before the rest of their user turn); `tool_use` blocks become
/// assistant `tool_calls` (input serialised as the arguments string); images become `image_url`
/// parts (base64 as data URLs). `top_k` and `thinking` have no OpenAI equivalent and are dropped;
/// document blocks and server tools are refused. Streams always ask for usage, so the final
/// `message_delta` can report it.
pub fn to_openai(body: &[u8]) -> Result<Inbound, Error> {
    crate::body::check_depth(body)?;
    let value: Value = serde_json::from_slice(body).map_err(|e| Error::InvalidRequest {
        message: format!("The request body is not valid JSON: {e}"),
        param: None,
        code: Some("invalid_json"),
    })?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("body", "The request body must be a JSON object."))?;
    let model = required(obj, "model")?
        .as_str()
        .ok_or_else(|| bad("model", "model: Input should be a valid string"))?;
    let max_tokens = required(obj, "max_tokens")?
        .as_u64()
        .ok_or_else(|| bad("max_tokens", "max_tokens: Input should be a positive integer"))?;
    let messages = required(obj, "messages")?
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("messages", "messages: Input should be a non-empty list"))?;

    let mut out_messages = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = obj.get("system").filter(|v| !v.is_null()) {
        out_messages.push(json!({"role": "system", "content": system_content(system)?}));
    }
    for (i, message) in messages.iter().enumerate() {
        translate_message(message, i, &mut out_messages)?;
    }

    let mut out = Map::new();
    out.insert("model".to_owned(), json!(model));
    out.insert("messages".to_owned(), Value::Array(out_messages));
    out.insert("max_tokens".to_owned(), json!(max_tokens));
    for key in ["temperature", "top_p", "x_mock"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    if let Some(stop) = obj.get("stop_sequences").filter(|v| !v.is_null()) {
        out.insert("stop".to_owned(), stop.clone());
    }
    if let Some(user) = obj
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".to_owned(), json!(user));
    }
    if let Some(tools) = obj.get("tools").filter(|v| !v.is_null()) {
        out.insert("tools".to_owned(), translate_tools(tools)?);
    }
    if let Some(choice) = obj.get("tool_choice").filter(|v| !v.is_null()) {
        let (choice, parallel) = translate_tool_choice(choice)?;
        out.insert("tool_choice".to_owned(), choice);
        if !parallel {
            out.insert("parallel_tool_calls".to_owned(), json!(false));
        }
    }
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if stream {
        out.insert("stream".to_owned(), json!(true));
        out.insert("stream_options".to_owned(), json!({"include_usage": true}));
    }
    let body = serde_json::to_vec(&Value::Object(out)).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Inbound {
        body: Bytes::from(body),
        stream,
    })
}

/// `system` as OpenAI content: a string stays one; text blocks join into one string, unless one
/// carries `cache_control`, which only survives as a part (for Anthropic upstreams).
fn system_content(system: &Value) -> Result<Value, Error> {
    match system {
        Value::String(_) => Ok(system.clone()),
        Value::Array(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (j, block) in blocks.iter().enumerate() {
                let text = block
                    .get("text")
                    .and_then(Value::as_str)
                    .filter(|_| block.get("type").and_then(Value::as_str) == Some("text"))
                    .ok_or_else(|| bad(format!("system.{j}"), "system blocks must be text blocks"))?;
                parts.push(text_part(text, block.get("cache_control")));
            }
            if parts.iter().any(|p| p.get("cache_control").is_some()) {
                Ok(Value::Array(parts))
            } else {
                let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
                Ok(json!(texts.join("\n\n")))
            }
        }
        _ => Err(bad("system", "system: must be a string or a list of text blocks")),
    }
}

fn text_part(text: &str, cache_control: Option<&Value>) -> Value {
    let mut part = json!({"type": "text", "text": text});
    if let (Some(cc), Some(obj)) = (cache_control, part.as_object_mut()) {
        obj.insert("cache_control".to_owned(), cc.clone());
    }
    part
}

fn translate_message(message: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), Error> {
    let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
    if role != "user" && role != "assistant" {
        return Err(bad(
            format!("messages.{i}.role"),
            format!("messages.{i}.role: Input should be 'user' or 'assistant'"),
        ));
    }
    let blocks = match message.get("content") {
        Some(Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(bad(
                format!("messages.{i}.content"),
                format!("messages.{i}.content: must be a string or a list of content blocks"),
            ));
        }
    };
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        let kind = block.get("type").and_then(Value::as_str).unwrap_or_default();
        match (role, kind) {
            (_, "text") => {
                let t = block.get("text").and_then(Value::as_str).unwrap_or_default();
                if role == "assistant" {
                    text.push_str(t);
                } else {
                    parts.push(text_part(t, block.get("cache_control")));
                }
            }
            ("user", "image") => parts.push(image_part(block, &at)?),
            ("user", "tool_result") => out.push(tool_message(block, &at)?),
            ("assistant", "tool_use") => {
                let id = block.get("id").and_then(Value::as_str);
                let name = block.get("name").and_then(Value::as_str);
                let (Some(id), Some(name)) = (id, name) else {
                    return Err(bad(at, "a tool_use block needs 'id' and 'name'"));
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(json!({
                    "id": id, "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            // Reasoning from an earlier turn: OpenAI chat has no place for it.
            ("assistant", "thinking" | "redacted_thinking") => {}
            (_, other) => {
                return Err(bad(
                    at,
                    format!(
                        "content blocks of type '{other}' are not supported in {role} messages by this gateway"
                    ),
                ));
            }
        }
    }
    if role == "assistant" {
        if text.is_empty() && tool_calls.is_empty() {
            return Ok(());
        }
        let mut msg =
            json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
        if !tool_calls.is_empty()
            && let Some(obj) = msg.as_object_mut()
        {
            obj.insert("tool_calls".to_owned(), Value::Array(tool_calls));
        }
        out.push(msg);
    } else if !parts.is_empty() {
        let plain = parts.len() == 1 && parts[0]["type"] == "text" && parts[0].get("cache_control").is_none();
        let content = if plain {
            parts[0]["text"].clone()
        } else {
            Value::Array(parts)
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

fn image_part(block: &Value, at: &str) -> Result<Value, Error> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source.get("media_type").and_then(Value::as_str);
            let data = source.get("data").and_then(Value::as_str);
            let (Some(media), Some(data)) = (media, data) else {
                return Err(bad(
                    format!("{at}.source"),
                    "a base64 image needs 'media_type' and 'data'",
                ));
            };
            format!("data:{media};base64,{data}")
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{at}.source"), "a url image needs 'url'"))?
            .to_owned(),
        _ => return Err(bad(format!("{at}.source"), "image sources must be base64 or url")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A `tool_result` block → a `tool` message. Its content (text or text blocks) becomes text; an
/// error result is marked in the text, since OpenAI tool messages have no error flag.
fn tool_message(block: &Value, at: &str) -> Result<Value, Error> {
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{at}.tool_use_id"), "tool_use_id: Field required"))?;
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let mut texts = Vec::with_capacity(items.len());
            for item in items {
                match (
                    item.get("type").and_then(Value::as_str),
                    item.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => texts.push(t),
                    _ => {
                        return Err(bad(
                            format!("{at}.content"),
                            "only text is supported inside tool_result content by this gateway",
                        ));
                    }
                }
            }
            texts.join("\n")
        }
        Some(_) => {
            return Err(bad(
                format!("{at}.content"),
                "tool_result content must be text or blocks",
            ));
        }
    };
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = format!("[tool error] {text}");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn translate_tools(tools: &Value) -> Result<Value, Error> {
    let list = tools
        .as_array()
        .ok_or_else(|| bad("tools", "tools: Input should be a list"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("custom");
        let (Some(name), Some(schema)) = (tool.get("name").and_then(Value::as_str), tool.get("input_schema"))
        else {
            return Err(bad(
                format!("tools.{i}"),
                format!(
                    "tools.{i}: only custom tools with 'name' and 'input_schema' are supported (got '{kind}')"
                ),
            ));
        };
        let mut function = json!({"name": name, "parameters": schema});
        if let (Some(d), Some(obj)) = (tool.get("description"), function.as_object_mut()) {
            obj.insert("description".to_owned(), d.clone());
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

/// `tool_choice` → OpenAI's, and whether parallel calls stay allowed.
fn translate_tool_choice(choice: &Value) -> Result<(Value, bool), Error> {
    let parallel = choice.get("disable_parallel_tool_use").and_then(Value::as_bool) != Some(true);
    let mapped = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.name", "tool_choice.name: Field required"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => {
            return Err(bad(
                "tool_choice",
                "tool_choice.type must be auto, any, tool or none",
            ));
        }
    };
    Ok((mapped, parallel))
}
