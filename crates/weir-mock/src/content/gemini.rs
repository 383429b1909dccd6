//! Google Gemini API (`/v1beta/...`): `generateContent`, `streamGenerateContent` (`alt=sse`
//! events, or a JSON array without it), `embedContent`, `batchEmbedContents`, `GET models` and
//! `GET models/{id}`, with errors in Gemini's shape (`{"error":{"code","message","status"}}`).
//!
//! Function calling: when the request declares functions, the calling mode allows a call
//! (`AUTO`, `ANY`, or no `toolConfig`) and the last turn is not a function response, the model
//! "calls" the first allowed function with arguments made up from its parameter schema (each
//! required property gets a placeholder of its type). After a function response it answers in
//! text. The same `content`/`chunks` directives as the OpenAI endpoints apply; the model name in
//! the path may carry them (`models/mock:chunks=3:generateContent`).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::chat::{split_even, truncate};
use super::embeddings::{fnv1a, unit_vector};
use super::{DEFAULT_CHUNKS, DEFAULT_CONTENT, DEFAULT_DIMENSIONS, Directives, Reply, ReplyBody, word_count};

/// The models `GET /v1beta/models` lists: `(id, methods)`.
pub const GEMINI_MODELS: &[(&str, &[&str])] = &[
    ("gemini-2.0-flash", &["generateContent", "countTokens"]),
    ("gemini-2.5-pro", &["generateContent", "countTokens"]),
    ("text-embedding-004", &["embedContent"]),
];

/// The RPC status name Google pairs with an HTTP status.
pub fn rpc_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// A Gemini-shaped error; with `retry_after`, a `RetryInfo` detail as Google sends on quota errors.
pub fn error_reply(status: u16, message: &str, retry_after: Option<f64>) -> Reply {
    let mut error = json!({"code": status, "message": message, "status": rpc_status(status)});
    if let Some(secs) = retry_after {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{secs}s"),
        }]);
    }
    Reply {
        status,
        body: ReplyBody::Json(Bytes::from(json!({ "error": error }).to_string())),
    }
}

fn invalid(message: &str) -> Reply {
    error_reply(400, message, None)
}

fn ok(value: &Value) -> Reply {
    Reply {
        status: 200,
        body: ReplyBody::Json(Bytes::from(value.to_string())),
    }
}

/// The model named in a `models/{model}:{method}` path, split at the last `:` (a directive
/// model such as `mock:chunks=3` has colons of its own).
pub fn split_model_method(route: &str) -> Option<(&str, &str)> {
    route.strip_prefix("models/")?.rsplit_once(':')
}

/// Answers one request under `/v1beta/` (`path` relative to it, query included).
pub fn respond(method: &str, path: &str, body: &[u8], directives: &Directives) -> Reply {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let route = route.trim_matches('/');
    let is = |m: &str| method.eq_ignore_ascii_case(m);
    if route == "models" && is("GET") {
        let models: Vec<Value> = GEMINI_MODELS.iter().map(|(id, m)| model(id, m)).collect();
        return ok(&json!({ "models": models }));
    }
    if let Some((name, action)) = split_model_method(route)
        && is("POST")
    {
        return match action {
            "generateContent" => generate(name, body, directives, None),
            "streamGenerateContent" => {
                let sse = query.split('&').any(|p| p == "alt=sse");
                generate(name, body, directives, Some(sse))
            }
            "embedContent" => embed(body, false),
            "batchEmbedContents" => embed(body, true),
            other => error_reply(
                404,
                &format!("Method `{other}` is not modelled by the mock."),
                None,
            ),
        };
    }
    if let Some(id) = route.strip_prefix("models/")
        && is("GET")
    {
        return match GEMINI_MODELS.iter().find(|(m, _)| *m == id) {
            Some((id, methods)) => ok(&model(id, methods)),
            None => error_reply(
                404,
                &format!("models/{id} is not found for API version v1beta."),
                None,
            ),
        };
    }
    error_reply(
        404,
        &format!("{method} /v1beta/{route} is not modelled by the mock."),
        None,
    )
}

fn model(id: &str, methods: &[&str]) -> Value {
    json!({
        "name": format!("models/{id}"),
        "version": "001",
        "displayName": id,
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 8192,
        "supportedGenerationMethods": methods,
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Request {
    #[serde(default)]
    contents: Vec<Content>,
    system_instruction: Option<Content>,
    #[serde(default)]
    tools: Vec<Value>,
    tool_config: Option<Value>,
    #[serde(default)]
    generation_config: GenerationConfig,
    #[serde(rename = "x_mock")]
    x_mock: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Content {
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    max_output_tokens: Option<u64>,
    candidate_count: Option<u64>,
}

/// What the model produces for one request.
enum Answer {
    Text(String, &'static str),
    Call(String, Value),
}

fn generate(name: &str, body: &[u8], overrides: &Directives, stream: Option<bool>) -> Reply {
    let request: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return invalid(&format!("Invalid JSON payload received. {e}")),
    };
    if request.contents.is_empty() {
        return invalid("* GenerateContentRequest.contents: contents is not specified");
    }
    if let Some(bad) = request
        .contents
        .iter()
        .filter_map(|c| c.role.as_deref())
        .find(|r| !matches!(*r, "user" | "model" | "function"))
    {
        return invalid(&format!("Please use a valid role: user, model. Got `{bad}`."));
    }
    let mut directives = match Directives::from_parts(Some(name), request.x_mock.as_ref()) {
        Ok(d) => d,
        Err(e) => return invalid(&e.to_string()),
    };
    directives.overlay(overrides);
    let n = request.generation_config.candidate_count.unwrap_or(1).clamp(1, 8);
    let prompt_tokens = request
        .contents
        .iter()
        .chain(request.system_instruction.iter())
        .flat_map(|c| &c.parts)
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .map(word_count)
        .sum::<u64>()
        .max(1);
    let answer = match function_to_call(&request) {
        Some((function, args)) => Answer::Call(function, args),
        None => {
            let full = directives.content.as_deref().unwrap_or(DEFAULT_CONTENT);
            let (text, reason) = truncate(full, request.generation_config.max_output_tokens);
            Answer::Text(text, if reason == "length" { "MAX_TOKENS" } else { "STOP" })
        }
    };
    let output_tokens = match &answer {
        Answer::Text(text, _) => word_count(text).max(1),
        Answer::Call(..) => 5,
    } * n;
    let usage = json!({
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": output_tokens,
        "totalTokenCount": prompt_tokens + output_tokens,
    });
    let candidate = |parts: Value, finish: Option<&str>, index: u64| {
        let mut c = json!({"content": {"parts": parts, "role": "model"}, "index": index});
        if let Some(finish) = finish {
            c["finishReason"] = json!(finish);
        }
        c
    };
    let response = |candidates: Vec<Value>, with_usage: bool| {
        let mut r = json!({"candidates": candidates, "modelVersion": name, "responseId": "mock-response"});
        if with_usage {
            r["usageMetadata"] = usage.clone();
        }
        r
    };
    let events: Vec<Value> = match &answer {
        Answer::Call(function, args) => {
            let part = json!([{"functionCall": {"name": function, "args": args}}]);
            vec![response(
                (0..n).map(|i| candidate(part.clone(), Some("STOP"), i)).collect(),
                true,
            )]
        }
        Answer::Text(text, finish) => {
            let pieces = if stream.is_some() {
                split_even(text, directives.chunks.unwrap_or(DEFAULT_CHUNKS))
            } else {
                vec![text.as_str()]
            };
            let last = pieces.len().saturating_sub(1);
            pieces
                .iter()
                .enumerate()
                .map(|(k, piece)| {
                    let finish = (k == last).then_some(*finish);
                    let parts = json!([{ "text": piece }]);
                    // Google reports usage on every event; the last one has the final counts.
                    response(
                        (0..n).map(|i| candidate(parts.clone(), finish, i)).collect(),
                        true,
                    )
                })
                .collect()
        }
    };
    match stream {
        None => ok(events.first().unwrap_or(&Value::Null)),
        Some(false) => ok(&Value::Array(events)),
        Some(true) => Reply {
            status: 200,
            body: ReplyBody::Events(events.iter().map(sse_event).collect()),
        },
    }
}

/// One `alt=sse` event; Google ends its events with CRLF pairs.
fn sse_event(value: &Value) -> Bytes {
    let mut out = BytesMut::with_capacity(256).writer();
    out.get_mut().put_slice(b"data: ");
    if serde_json::to_writer(&mut out, value).is_err() {
        out.get_mut().put_slice(b"{}");
    }
    out.get_mut().put_slice(b"\r\n\r\n");
    out.into_inner().freeze()
}

/// The function the mock model calls, if this turn calls one.
fn function_to_call(request: &Request) -> Option<(String, Value)> {
    let last = request.contents.last()?;
    if last.parts.iter().any(|p| p.get("functionResponse").is_some()) {
        return None;
    }
    let config = request
        .tool_config
        .as_ref()
        .and_then(|c| c.get("functionCallingConfig"));
    let mode = config
        .and_then(|c| c.get("mode"))
        .and_then(Value::as_str)
        .unwrap_or("AUTO");
    if mode == "NONE" {
        return None;
    }
    let allowed: Vec<&str> = config
        .and_then(|c| c.get("allowedFunctionNames"))
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let declaration = request
        .tools
        .iter()
        .filter_map(|t| t.get("functionDeclarations").and_then(Value::as_array))
        .flatten()
        .find(|d| {
            let name = d.get("name").and_then(Value::as_str).unwrap_or_default();
            allowed.is_empty() || allowed.contains(&name)
        })?;
    let name = declaration.get("name")?.as_str()?.to_owned();
    Some((name, placeholder_args(declaration.get("parameters"))))
}

/// Arguments for a schema: each required property gets a placeholder of its type.
fn placeholder_args(schema: Option<&Value>) -> Value {
    let mut args = Map::new();
    let Some(schema) = schema else {
        return Value::Object(args);
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let kind = properties
            .and_then(|p| p.get(name))
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("string")
            .to_ascii_lowercase();
        let value = match kind.as_str() {
            "integer" | "number" => json!(1),
            "boolean" => json!(true),
            "array" => json!([]),
            "object" => json!({}),
            _ => json!("mock"),
        };
        args.insert(name.to_owned(), value);
    }
    Value::Object(args)
}

fn embed(body: &[u8], batch: bool) -> Reply {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return invalid("Invalid JSON payload received.");
    };
    let vector = |item: &Value| -> Result<Value, Reply> {
        let text: String = item
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("* EmbedContentRequest.content: content is not specified"))?
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let dims = item
            .get("outputDimensionality")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_DIMENSIONS, |d| d.clamp(1, 4096) as usize);
        Ok(json!({ "values": unit_vector(fnv1a(0, text.as_bytes()), dims) }))
    };
    let result = if batch {
        let Some(requests) = request.get("requests").and_then(Value::as_array) else {
            return invalid("* BatchEmbedContentsRequest.requests: requests is not specified");
        };
        if requests.iter().any(|r| r.get("model").is_none()) {
            return invalid("* BatchEmbedContentsRequest.requests[0].model: model is required");
        }
        requests
            .iter()
            .map(vector)
            .collect::<Result<Vec<_>, _>>()
            .map(|e| json!({ "embeddings": e }))
    } else {
        vector(&request).map(|e| json!({ "embedding": e }))
    };
    match result {
        Ok(value) => ok(&value),
        Err(reply) => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(path: &str, body: Value) -> (u16, Value) {
        let reply = respond("POST", path, body.to_string().as_bytes(), &Directives::default());
        (
            reply.status,
            serde_json::from_slice(&reply.to_bytes()).unwrap_or(Value::Null),
        )
    }

    #[test]
    fn generate_text_and_usage() {
        let (status, v) = call(
            "models/gemini-2.0-flash:generateContent",
            json!({"contents": [{"role": "user", "parts": [{"text": "two words"}]}]}),
        );
        assert_eq!(status, 200);
        assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], DEFAULT_CONTENT);
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        assert_eq!(v["usageMetadata"]["promptTokenCount"], 2);
        assert_eq!(v["modelVersion"], "gemini-2.0-flash");
    }

    #[test]
    fn directives_in_the_path_model_and_max_tokens() {
        let (_, v) = call(
            "models/mock:content=a b c:generateContent",
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": 2}}),
        );
        assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "a b");
        assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    }

    #[test]
    fn function_calls_then_text_after_the_response() {
        let tools = json!([{"functionDeclarations": [{"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"]}}]}]);
        let (_, v) = call(
            "models/gemini-2.0-flash:generateContent",
            json!({"contents": [{"role": "user", "parts": [{"text": "weather?"}]}], "tools": tools}),
        );
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["functionCall"],
            json!({"name": "get_weather", "args": {"city": "mock", "days": 1}})
        );
        let (_, v) = call(
            "models/gemini-2.0-flash:generateContent",
            json!({"contents": [
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 1}}}]}
            ], "tools": tools}),
        );
        assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], DEFAULT_CONTENT);
        let (_, v) = call(
            "models/gemini-2.0-flash:generateContent",
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "tools": tools,
                   "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}),
        );
        assert!(v["candidates"][0]["content"]["parts"][0]["text"].is_string());
    }

    #[test]
    fn stream_events_and_array_form() {
        let body = json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "x_mock": {"chunks": 3}});
        let reply = respond(
            "POST",
            "models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            body.to_string().as_bytes(),
            &Directives::default(),
        );
        let ReplyBody::Events(events) = reply.body else {
            panic!("not a stream")
        };
        assert_eq!(events.len(), 3);
        assert!(
            events
                .iter()
                .all(|e| e.starts_with(b"data: {") && e.ends_with(b"\r\n\r\n"))
        );
        let last: Value = serde_json::from_slice(&events[2][6..]).unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        let (status, v) = call("models/gemini-2.0-flash:streamGenerateContent", body);
        assert_eq!(status, 200);
        assert_eq!(v.as_array().unwrap().len(), 3);
    }

    #[test]
    fn embeddings_models_and_errors() {
        let (_, one) = call(
            "models/text-embedding-004:embedContent",
            json!({"content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 4}),
        );
        assert_eq!(one["embedding"]["values"].as_array().unwrap().len(), 4);
        let (_, batch) = call(
            "models/text-embedding-004:batchEmbedContents",
            json!({"requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 4},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "yo"}]}}
            ]}),
        );
        assert_eq!(batch["embeddings"][0], one["embedding"]);
        assert_eq!(
            batch["embeddings"][1]["values"].as_array().unwrap().len(),
            DEFAULT_DIMENSIONS
        );
        let list = respond("GET", "models", b"", &Directives::default());
        let v: Value = serde_json::from_slice(&list.to_bytes()).unwrap();
        assert_eq!(v["models"][0]["name"], "models/gemini-2.0-flash");
        let (status, v) = call("models/gemini-2.0-flash:generateContent", json!({"contents": []}));
        assert_eq!(status, 400);
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(v["error"]["code"], 400);
        let v: Value = serde_json::from_slice(&error_reply(429, "quota", Some(2.0)).to_bytes()).unwrap();
        assert_eq!(v["error"]["details"][0]["retryDelay"], "2s");
    }
}
