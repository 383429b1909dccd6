//! OpenAI `chat/completions` request → Gemini `generateContent` request.
//!
//! What maps where (see docs/providers.md for the user-facing table):
//! - `system`/`developer` messages → `systemInstruction` (all of them, in order; Gemini has one).
//! - `user` → role `user`; `assistant` → role `model`; consecutive turns of one role are merged,
//!   so several `tool` results answering one assistant turn travel as one `user` turn.
//! - Text parts → `text`; `image_url` with a `data:` URL → `inlineData`; with an `http(s)` URL →
//!   `fileData.fileUri` (MIME type guessed from the extension); `input_audio` → `inlineData`.
//! - Assistant `tool_calls` → `functionCall` parts (arguments parsed from their JSON string);
//!   `tool` messages → `functionResponse` parts, named by looking up their `tool_call_id`.
//! - `tools` → `functionDeclarations` (schemas reduced to what Gemini accepts, see [`schema`]);
//!   `tool_choice` → `toolConfig.functionCallingConfig`.
//! - `temperature`, `top_p`, `max_completion_tokens`/`max_tokens`, `stop`, `n`, `seed`,
//!   `presence_penalty`, `frequency_penalty`, `response_format` → `generationConfig`.
//!
//! Not translated (dropped): `logprobs`, `logit_bias`, `user`, `store`, `metadata`,
//! `parallel_tool_calls`, `service_tier`, `audio`/`modalities`, `prediction`, `reasoning_effort`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{THOUGHT_SIGNATURE_SEPARATOR, schema};
use crate::{
    api::{
        ChatCompletionRequest, ChatMessage, ToolChoiceMode,
        gemini::{
            Blob, Content, FileData, FunctionCall, FunctionCallingConfig, FunctionDeclaration,
            FunctionResponse, GenerateContentRequest, GenerationConfig, Part, Tool, ToolConfig,
        },
    },
    error::Error,
};

fn invalid(param: impl Into<String>, message: impl Into<String>) -> Error {
    Error::InvalidRequest {
        message: message.into(),
        param: Some(param.into()),
        code: Some("invalid_value"),
    }
}

/// Translates a chat request. Errors are the client's (400 naming the field).
pub(crate) fn chat_request(req: &ChatCompletionRequest) -> Result<GenerateContentRequest, Error> {
    let mut system: Vec<Part> = Vec::new();
    let mut contents: Vec<Content> = Vec::new();
    // tool_call id → function name, for `tool` messages (Gemini names responses, OpenAI ids them).
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, message) in req.messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let (role, parts) = match message.role.as_str() {
            "system" | "developer" => {
                system.extend(content_parts(message, &param, false)?);
                continue;
            }
            "user" => ("user", content_parts(message, &param, true)?),
            "assistant" => ("model", assistant_parts(message, &param, &mut call_names)?),
            "tool" | "function" => ("user", vec![tool_result(message, &param, &call_names)?]),
            other => {
                return Err(invalid(
                    format!("{param}.role"),
                    format!("unknown role `{other}` (expected system, developer, user, assistant or tool)"),
                ));
            }
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
            _ => contents.push(Content {
                role: Some(role.to_owned()),
                parts,
            }),
        }
    }
    if contents.is_empty() {
        return Err(invalid(
            "messages",
            "Gemini needs at least one user or assistant message besides system messages",
        ));
    }
    let mut out = GenerateContentRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(Content {
            role: None,
            parts: system,
        }),
        tools: tools(req)?,
        tool_config: tool_config(req)?,
        generation_config: generation_config(req)?,
        extra: Map::new(),
    };
    // weir-mock's directive object: a real client never sends it, and forwarding it lets fault
    // tests drive the mock *through* the translation, as they do for OpenAI passthrough.
    if let Some(directives) = req.extra.get("x_mock") {
        out.extra.insert("x_mock".to_owned(), directives.clone());
    }
    Ok(out)
}

/// Text and media parts of a system or user message.
fn content_parts(message: &ChatMessage, param: &str, media: bool) -> Result<Vec<Part>, Error> {
    let text = |t: &str| Part {
        text: Some(t.to_owned()),
        ..Part::default()
    };
    match &message.content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![text(s)]),
        Some(Value::Array(items)) => {
            let mut parts = Vec::with_capacity(items.len());
            for (j, item) in items.iter().enumerate() {
                let param = format!("{param}.content[{j}]");
                let kind = item.get("type").and_then(Value::as_str).unwrap_or("text");
                match kind {
                    "text" => match item.get("text").and_then(Value::as_str) {
                        Some(t) => parts.push(text(t)),
                        None => return Err(invalid(param, "a text part needs `text`")),
                    },
                    "image_url" if media => {
                        let url = item
                            .get("image_url")
                            .and_then(|i| i.get("url").or(Some(i)))
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(&param, "an image_url part needs `image_url.url`"))?;
                        parts.push(media_part(url, &param)?);
                    }
                    "input_audio" if media => {
                        let audio = item.get("input_audio");
                        let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str);
                        let format = audio.and_then(|a| a.get("format")).and_then(Value::as_str);
                        let (Some(data), Some(format)) = (data, format) else {
                            return Err(invalid(param, "an input_audio part needs `data` and `format`"));
                        };
                        parts.push(Part {
                            inline_data: Some(Blob {
                                mime_type: format!("audio/{format}"),
                                data: data.to_owned(),
                            }),
                            ..Part::default()
                        });
                    }
                    other => {
                        return Err(invalid(
                            param,
                            format!(
                                "content part type `{other}` is not supported by the gemini provider here"
                            ),
                        ));
                    }
                }
            }
            Ok(parts)
        }
        Some(_) => Err(invalid(
            format!("{param}.content"),
            "content must be a string or an array of parts",
        )),
    }
}

/// An image by URL: inline for `data:` URLs, by reference for `http(s)` ones.
fn media_part(url: &str, param: &str) -> Result<Part, Error> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| invalid(param, "a data: URL needs a `,` before its data"))?;
        let mime_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| invalid(param, "only base64 data: URLs are supported"))?;
        return Ok(Part {
            inline_data: Some(Blob {
                mime_type: if mime_type.is_empty() {
                    "image/jpeg".to_owned()
                } else {
                    mime_type.to_owned()
                },
                data: data.to_owned(),
            }),
            ..Part::default()
        });
    }
    if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://") {
        return Ok(Part {
            file_data: Some(FileData {
                mime_type: Some(mime_from_extension(url).to_owned()),
                file_uri: url.to_owned(),
            }),
            ..Part::default()
        });
    }
    Err(invalid(
        param,
        "an image URL must be a data: URL or an http(s) URL",
    ))
}

/// Gemini wants a MIME type with every file; the URL's extension is the only hint we have.
fn mime_from_extension(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

/// An assistant turn: its text, then its tool calls as `functionCall` parts.
fn assistant_parts<'a>(
    message: &'a ChatMessage,
    param: &str,
    call_names: &mut HashMap<&'a str, &'a str>,
) -> Result<Vec<Part>, Error> {
    let mut parts = content_parts(message, param, false)?;
    for (k, call) in message.tool_calls.iter().flatten().enumerate() {
        let param = format!("{param}.tool_calls[{k}]");
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&param, "a tool call needs `function.name`"))?;
        let args = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
                invalid(
                    format!("{param}.function.arguments"),
                    format!("not valid JSON: {e}"),
                )
            })?,
            Some(other) => other.clone(),
        };
        let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
        if !id.is_empty() {
            call_names.insert(id, name);
        }
        // Ids we synthesised for thinking models carry the call's thought signature, which
        // Gemini requires back on the call (see `THOUGHT_SIGNATURE_SEPARATOR`).
        let thought_signature = id
            .split_once(THOUGHT_SIGNATURE_SEPARATOR)
            .map(|(_, sig)| sig.to_owned());
        parts.push(Part {
            function_call: Some(FunctionCall {
                id: None,
                name: name.to_owned(),
                args: Some(args),
            }),
            thought_signature,
            ..Part::default()
        });
    }
    Ok(parts)
}

/// A `tool` message as a `functionResponse` part.
fn tool_result(message: &ChatMessage, param: &str, call_names: &HashMap<&str, &str>) -> Result<Part, Error> {
    let id = message.tool_call_id.as_deref().unwrap_or_default();
    let name = match call_names.get(id) {
        Some(name) => (*name).to_owned(),
        // Legacy `function` messages name themselves.
        None => message.name.clone().ok_or_else(|| {
            invalid(
                format!("{param}.tool_call_id"),
                format!("`{id}` does not match a tool call of an earlier assistant message"),
            )
        })?,
    };
    let text = match &message.content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    // Gemini wants an object: a JSON object result is sent as it is, anything else under
    // `output` (the key its docs give for a function's output).
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(obj)) => Value::Object(obj),
        Ok(other) => json!({ "output": other }),
        Err(_) => json!({ "output": text }),
    };
    Ok(Part {
        function_response: Some(FunctionResponse {
            id: None,
            name,
            response,
        }),
        ..Part::default()
    })
}

fn tools(req: &ChatCompletionRequest) -> Result<Option<Vec<Tool>>, Error> {
    let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let mut declarations = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let param = format!("tools[{i}]");
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("function");
        if kind != "function" {
            return Err(invalid(
                format!("{param}.type"),
                format!("tool type `{kind}` is not supported by the gemini provider (only `function`)"),
            ));
        }
        let function = tool
            .get("function")
            .ok_or_else(|| invalid(&param, "a function tool needs `function`"))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{param}.function.name"), "a function needs a name"))?;
        declarations.push(FunctionDeclaration {
            name: name.to_owned(),
            description: function
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            parameters: function.get("parameters").and_then(schema::parameters),
        });
    }
    Ok(Some(vec![Tool {
        function_declarations: declarations,
    }]))
}

fn tool_config(req: &ChatCompletionRequest) -> Result<Option<ToolConfig>, Error> {
    let config = |mode: &str, names: Option<Vec<String>>| {
        Some(ToolConfig {
            function_calling_config: FunctionCallingConfig {
                mode: mode.to_owned(),
                allowed_function_names: names,
            },
        })
    };
    Ok(req.tool_choice_mode()?.and_then(|mode| match mode {
        ToolChoiceMode::Auto => config("AUTO", None),
        ToolChoiceMode::None => config("NONE", None),
        ToolChoiceMode::Required => config("ANY", None),
        ToolChoiceMode::Function(name) => config("ANY", Some(vec![name.to_owned()])),
    }))
}

fn generation_config(req: &ChatCompletionRequest) -> Result<Option<GenerationConfig>, Error> {
    let number = |key: &str| req.extra.get(key).and_then(Value::as_f64);
    let stop_sequences = match &req.stop {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| invalid("stop", "stop sequences must be strings"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(invalid("stop", "stop must be a string or an array of strings")),
    };
    let (response_mime_type, response_schema) = match &req.response_format {
        None | Some(Value::Null) => (None, None),
        Some(format) => match format.get("type").and_then(Value::as_str) {
            Some("text") => (None, None),
            Some("json_object") => (Some("application/json".to_owned()), None),
            Some("json_schema") => {
                let schema = format
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .and_then(schema::sanitize);
                (Some("application/json".to_owned()), schema)
            }
            _ => {
                return Err(invalid(
                    "response_format",
                    "response_format.type must be text, json_object or json_schema",
                ));
            }
        },
    };
    let config = GenerationConfig {
        stop_sequences,
        candidate_count: req.n.filter(|n| *n > 1).map(u64::from),
        max_output_tokens: req.max_completion_tokens.or(req.max_tokens).map(u64::from),
        temperature: req.temperature.map(widen),
        top_p: req.top_p.map(widen),
        seed: req.seed,
        presence_penalty: number("presence_penalty"),
        frequency_penalty: number("frequency_penalty"),
        response_mime_type,
        response_schema,
        extra: Map::new(),
    };
    Ok((config != GenerationConfig::default()).then_some(config))
}

/// `f32` → `f64` by its shortest decimal form, so `0.7` stays `0.7` (not `0.699999988...`).
fn widen(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}
