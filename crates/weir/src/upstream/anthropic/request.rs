//! OpenAI chat request → Anthropic Messages request.
//!
//! What maps (see docs/providers.md for the table): system and developer messages are lifted
//! into `system`; consecutive turns of one role are merged so roles alternate; `tool` messages
//! become `tool_result` blocks of a user turn; assistant `tool_calls` become `tool_use` blocks;
//! images become base64 or URL image blocks; tools, `tool_choice`, `parallel_tool_calls`, `stop`,
//! `max_tokens`, temperature, top_p, `user` and `stream` map to their Anthropic forms.
//!
//! What cannot be honoured is refused with a 400 naming the field (`n` > 1, `logprobs`,
//! `top_logprobs`, audio, JSON response formats, non-function tools) rather than silently
//! answered differently. Sampling hints Anthropic has no equivalent for (`seed`,
//! `frequency_penalty`, `presence_penalty`, `logit_bias`) and OpenAI-only bookkeeping (`store`,
//! `metadata`, `service_tier`, ...) are dropped.

use serde_json::{Map, Value, json};

use crate::{
    api::{
        ChatCompletionRequest, ChatMessage, ToolChoiceMode,
        anthropic::{ContentBlock, ImageSource, Message, MessagesRequest, Tool, ToolChoice},
    },
    error::Error,
};

/// Output cap sent when the client gives none: Anthropic requires `max_tokens`, OpenAI does not.
pub(crate) const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A translated request and what the answer's translation needs to know.
#[derive(Debug)]
pub(crate) struct Translated {
    /// The Anthropic request.
    pub request: MessagesRequest,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether the client asked for a final usage chunk.
    pub include_usage: bool,
}

fn bad(param: impl Into<String>, message: impl Into<String>) -> Error {
    Error::InvalidRequest {
        message: message.into(),
        param: Some(param.into()),
        code: Some("unsupported_by_provider"),
    }
}

/// Translates an OpenAI chat completion body.
pub(crate) fn to_anthropic(body: &[u8]) -> Result<Translated, Error> {
    let req: ChatCompletionRequest = serde_json::from_slice(body).map_err(|e| Error::InvalidRequest {
        message: format!("Invalid chat completion request: {e}."),
        param: None,
        code: Some("invalid_request"),
    })?;
    refuse_unsupported(&req)?;

    let mut system = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let blocks = match m.role.as_str() {
            "system" | "developer" => {
                system.extend(content_blocks(m.content.as_ref(), i, false)?);
                continue;
            }
            "user" => content_blocks(m.content.as_ref(), i, true)?,
            "assistant" => assistant_blocks(m, i)?,
            "tool" => vec![tool_result(m, i)?],
            other => {
                return Err(bad(
                    format!("messages[{i}].role"),
                    format!("The Anthropic provider does not support messages with role '{other}'."),
                ));
            }
        };
        let role = if m.role == "assistant" {
            "assistant"
        } else {
            "user"
        };
        push_turn(&mut messages, role, blocks);
    }
    if messages.is_empty() {
        return Err(bad(
            "messages",
            "Anthropic needs at least one user or assistant message besides system messages.",
        ));
    }

    let (tools, tool_choice) = tools(&req)?;
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let stream = req.stream.unwrap_or(false);
    let mut extra = Map::new();
    // The mock upstream's directives travel in the body; the real API never sees them unless a
    // client sends them.
    if let Some(x_mock) = req.extra.get("x_mock") {
        extra.insert("x_mock".to_owned(), x_mock.clone());
    }
    let request = MessagesRequest {
        model: req.model,
        messages,
        max_tokens: req
            .max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(DEFAULT_MAX_TOKENS),
        system: system_value(system),
        stop_sequences: stop_sequences(req.stop.as_ref())?,
        stream: stream.then_some(true),
        temperature: req.temperature.map(widen),
        top_p: req.top_p.map(widen),
        top_k: None,
        tools,
        tool_choice,
        metadata: req.user.map(|user| json!({ "user_id": user })),
        extra,
    };
    Ok(Translated {
        request,
        stream,
        include_usage,
    })
}

/// The f64 a client wrote (`0.9`), not the f32's exact binary value (`0.8999999761581421`).
fn widen(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// Fields whose meaning Anthropic cannot deliver: a clear 400 beats a different answer.
fn refuse_unsupported(req: &ChatCompletionRequest) -> Result<(), Error> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(bad(
            "n",
            "The Anthropic provider returns one choice: 'n' must be 1.",
        ));
    }
    let set = |key: &str| {
        req.extra
            .get(key)
            .is_some_and(|v| !v.is_null() && *v != json!(false))
    };
    for key in ["logprobs", "top_logprobs", "audio"] {
        if set(key) {
            return Err(bad(
                key,
                format!("The Anthropic provider does not support '{key}'."),
            ));
        }
    }
    if let Some(modalities) = req.extra.get("modalities").and_then(Value::as_array)
        && modalities.iter().any(|m| m != "text")
    {
        return Err(bad(
            "modalities",
            "The Anthropic provider only produces text output.",
        ));
    }
    if let Some(format) = &req.response_format
        && format
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "text")
    {
        return Err(bad(
            "response_format",
            "The Anthropic provider does not support JSON response formats; describe the format in \
             the prompt or use a tool.",
        ));
    }
    Ok(())
}

/// Appends a turn, merging it into the previous one when the role repeats (Anthropic wants
/// alternating roles; OpenAI allows e.g. several tool results in a row, or user after tool).
fn push_turn(messages: &mut Vec<Message>, role: &str, blocks: Vec<ContentBlock>) {
    if blocks.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => messages.push(Message {
            role: role.to_owned(),
            content: blocks,
        }),
    }
}

/// The blocks of a message's `content`: a string or an array of parts.
fn content_blocks(content: Option<&Value>, i: usize, images: bool) -> Result<Vec<ContentBlock>, Error> {
    let text = |text: &str, cache_control: Option<&Value>| {
        // Anthropic rejects empty text blocks; an empty string carries nothing anyway.
        (!text.is_empty()).then(|| ContentBlock::Text {
            text: text.to_owned(),
            cache_control: cache_control.cloned(),
        })
    };
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(text(s, None).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let param = format!("messages[{i}].content[{j}]");
                let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
                match kind {
                    "text" | "refusal" => {
                        let s = part.get(kind).and_then(Value::as_str).ok_or_else(|| {
                            bad(&param, format!("A '{kind}' part needs a string '{kind}'."))
                        })?;
                        blocks.extend(text(s, part.get("cache_control")));
                    }
                    "image_url" if images => blocks.push(image(part, &param)?),
                    other => {
                        return Err(bad(
                            param,
                            format!("The Anthropic provider does not support '{other}' content parts here."),
                        ));
                    }
                }
            }
            Ok(blocks)
        }
        Some(_) => Err(bad(
            format!("messages[{i}].content"),
            "'content' must be a string or an array of parts.",
        )),
    }
}

/// `{"type":"image_url","image_url":{"url":...}}` → an image block: `data:` URLs inline, http(s)
/// URLs by reference.
fn image(part: &Value, param: &str) -> Result<ContentBlock, Error> {
    let url = part
        .get("image_url")
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
        .ok_or_else(|| bad(param, "An 'image_url' part needs 'image_url.url'."))?;
    let source = if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| bad(param, "The image data URL has no ','."))?;
        let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
            bad(
                param,
                "Image data URLs must be base64 (data:image/png;base64,...).",
            )
        })?;
        ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        }
    } else if url.starts_with("https://") || url.starts_with("http://") {
        ImageSource::Url { url: url.to_owned() }
    } else {
        return Err(bad(param, "Image URLs must be http(s) or base64 data URLs."));
    };
    Ok(ContentBlock::Image { source })
}

/// An assistant turn: its text, then its tool calls as `tool_use` blocks.
fn assistant_blocks(m: &ChatMessage, i: usize) -> Result<Vec<ContentBlock>, Error> {
    let mut blocks = content_blocks(m.content.as_ref(), i, false)?;
    for (j, call) in m.tool_calls.iter().flatten().enumerate() {
        let param = format!("messages[{i}].tool_calls[{j}]");
        let field = |path: &[&str]| {
            path.iter()
                .try_fold(call, |v, k| v.get(k))
                .and_then(Value::as_str)
        };
        let (Some(id), Some(name)) = (field(&["id"]), field(&["function", "name"])) else {
            return Err(bad(param, "A tool call needs 'id' and 'function.name'."));
        };
        let arguments = field(&["function", "arguments"]).unwrap_or_default();
        let input = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str::<Value>(arguments)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    bad(
                        format!("{param}.function.arguments"),
                        "Tool call arguments must be a JSON object for the Anthropic provider.",
                    )
                })?
        };
        blocks.push(ContentBlock::ToolUse {
            id: id.to_owned(),
            name: name.to_owned(),
            input,
        });
    }
    Ok(blocks)
}

/// A `tool` message → a `tool_result` block (text, or text blocks for an array of parts).
fn tool_result(m: &ChatMessage, i: usize) -> Result<ContentBlock, Error> {
    let id = m.tool_call_id.as_deref().ok_or_else(|| {
        bad(
            format!("messages[{i}].tool_call_id"),
            "A 'tool' message needs 'tool_call_id'.",
        )
    })?;
    let content = match &m.content {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Value::String(s.clone())),
        Some(other) => {
            let blocks = content_blocks(Some(other), i, false)?;
            Some(serde_json::to_value(blocks).map_err(|e| Error::Internal(e.to_string()))?)
        }
    };
    Ok(ContentBlock::ToolResult {
        tool_use_id: id.to_owned(),
        content,
        is_error: None,
    })
}

fn tools(req: &ChatCompletionRequest) -> Result<(Option<Vec<Tool>>, Option<ToolChoice>), Error> {
    let tools = match &req.tools {
        None => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, tool)| {
                    let function = tool
                        .get("function")
                        .filter(|_| tool.get("type").and_then(Value::as_str) == Some("function"))
                        .ok_or_else(|| {
                            bad(
                                format!("tools[{i}]"),
                                "The Anthropic provider supports only function tools.",
                            )
                        })?;
                    let name = function
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(format!("tools[{i}].function.name"), "A tool needs a name."))?;
                    Ok(Tool {
                        name: name.to_owned(),
                        description: function
                            .get("description")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        input_schema: function
                            .get("parameters")
                            .cloned()
                            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?,
        ),
    };
    let choice = |kind: &str, name: Option<&str>| ToolChoice {
        kind: kind.to_owned(),
        name: name.map(str::to_owned),
        disable_parallel_tool_use: None,
    };
    let mut tool_choice = req.tool_choice_mode()?.map(|mode| match mode {
        ToolChoiceMode::Auto => choice("auto", None),
        ToolChoiceMode::None => choice("none", None),
        ToolChoiceMode::Required => choice("any", None),
        ToolChoiceMode::Function(name) => choice("tool", Some(name)),
    });
    if req.extra.get("parallel_tool_calls") == Some(&Value::Bool(false)) && tools.is_some() {
        let tc = tool_choice.get_or_insert_with(|| choice("auto", None));
        if tc.kind != "none" {
            tc.disable_parallel_tool_use = Some(true);
        }
    }
    Ok((tools, tool_choice))
}

fn stop_sequences(stop: Option<&Value>) -> Result<Option<Vec<String>>, Error> {
    match stop {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad("stop", "'stop' must be a string or an array of strings."))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad("stop", "'stop' must be a string or an array of strings.")),
    }
}

/// One plain text stays a string; several texts, or any with a cache marker, become blocks.
fn system_value(blocks: Vec<ContentBlock>) -> Option<Value> {
    match blocks.as_slice() {
        [] => None,
        [
            ContentBlock::Text {
                text,
                cache_control: None,
            },
        ] => Some(Value::String(text.clone())),
        _ => serde_json::to_value(blocks).ok(),
    }
}
