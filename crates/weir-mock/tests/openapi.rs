//! Every generated body checked against OpenAI's published OpenAPI description
//! (`../shared/specs/openai-openapi.yaml` from the project root): required fields, types, enums,
//! nullability. The spec ships beside the repo (`shared/`), in CI too: a missing file fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_json::{Value, json};
use weir_mock::content::{Reply, ReplyBody, error_reply, fault_reply, respond};

fn spec() -> Option<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs/openai-openapi.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("OpenAPI spec not readable at {}: {e}", path.display()));
    Some(serde_saphyr::from_str(&text).unwrap())
}

/// A small JSON-Schema subset, enough for the response schemas: $ref, anyOf/oneOf/allOf,
/// type (incl. "null" and `nullable`), required, properties, items, enum.
fn check(spec: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    // OpenAPI 3.0 style `nullable` may sit next to a `$ref`, so it is checked first.
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.trim_start_matches("#/components/schemas/");
        let target = &spec["components"]["schemas"][name];
        assert!(!target.is_null(), "unresolved {reference}");
        return check(spec, target, value, at, errors);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            let fits = branches.iter().any(|branch| {
                let mut branch_errors = Vec::new();
                check(spec, branch, value, at, &mut branch_errors);
                branch_errors.is_empty()
            });
            if !fits {
                errors.push(format!("{at}: matches no branch of {key}: {value}"));
            }
        }
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            check(spec, part, value, at, errors);
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} not in {allowed:?}"));
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("null") => value.is_null(),
        _ => true,
    };
    if !type_ok {
        errors.push(format!("{at}: expected {ty:?}, got {value}"));
        return;
    }
    if let Some(object) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = required.as_str().unwrap();
            if !object.contains_key(key) {
                errors.push(format!("{at}: missing required '{key}'"));
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (key, sub) in object {
                if let Some(sub_schema) = properties.get(key) {
                    check(spec, sub_schema, sub, &format!("{at}.{key}"), errors);
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(spec, items, item, &format!("{at}[{i}]"), errors);
        }
    }
}

fn assert_fits(spec: &Value, schema_name: &str, value: &Value) {
    let schema = json!({"$ref": format!("#/components/schemas/{schema_name}")});
    let mut errors = Vec::new();
    check(spec, &schema, value, schema_name, &mut errors);
    assert!(errors.is_empty(), "{schema_name}: {errors:#?}\n{value:#}");
}

fn body(reply: &Reply) -> Value {
    match &reply.body {
        ReplyBody::Json(bytes) => serde_json::from_slice(bytes).unwrap(),
        ReplyBody::Events(_) => panic!("expected JSON, got a stream"),
    }
}

fn post(path: &str, request: Value) -> Reply {
    respond("POST", path, request.to_string().as_bytes())
}

#[test]
fn responses_match_the_openai_spec() {
    let Some(spec) = spec() else { return };
    let messages = json!([{"role": "user", "content": "hi"}]);

    let reply = post(
        "chat/completions",
        json!({"model": "m", "messages": messages, "n": 2, "max_tokens": 3}),
    );
    assert_fits(&spec, "CreateChatCompletionResponse", &body(&reply));

    let reply = post(
        "chat/completions",
        json!({"model": "m", "messages": messages, "stream": true, "stream_options": {"include_usage": true}}),
    );
    let ReplyBody::Events(events) = &reply.body else {
        panic!("expected a stream")
    };
    let (done, chunks) = events.split_last().unwrap();
    assert_eq!(&done[..], b"data: [DONE]\n\n");
    for event in chunks {
        let text = std::str::from_utf8(event).unwrap();
        let json = text.strip_prefix("data: ").unwrap().strip_suffix("\n\n").unwrap();
        assert_fits(
            &spec,
            "CreateChatCompletionStreamResponse",
            &serde_json::from_str(json).unwrap(),
        );
    }

    for input in [
        json!("a b"),
        json!(["a", "b"]),
        json!([1, 2]),
        json!([[1], [2, 3]]),
    ] {
        let reply = post("embeddings", json!({"model": "m", "input": input}));
        assert_fits(&spec, "CreateEmbeddingResponse", &body(&reply));
    }

    for format in ["url", "b64_json"] {
        let reply = post(
            "images/generations",
            json!({"prompt": "p", "n": 2, "response_format": format}),
        );
        assert_fits(&spec, "ImagesResponse", &body(&reply));
    }

    assert_fits(&spec, "ListModelsResponse", &body(&respond("GET", "models", b"")));
    assert_fits(&spec, "Model", &body(&respond("GET", "models/gpt-4o", b"")));

    let errors = [
        respond("GET", "models/nope", b""),
        post("chat/completions", json!({"model": "m"})),
        respond("POST", "chat/completions", b"{"),
        fault_reply(429),
        fault_reply(503),
        error_reply(401, "no", None, Some("invalid_api_key")),
    ];
    for reply in &errors {
        assert!(reply.status >= 400);
        assert_fits(&spec, "ErrorResponse", &body(reply));
    }
}

#[test]
fn the_checker_catches_mistakes() {
    let Some(spec) = spec() else { return };
    let fails = |name: &str, value: Value| {
        let mut errors = Vec::new();
        check(
            &spec,
            &json!({"$ref": format!("#/components/schemas/{name}")}),
            &value,
            name,
            &mut errors,
        );
        assert!(!errors.is_empty(), "{name} accepted {value}");
    };
    fails("Model", json!({"id": "x", "object": "model", "created": 1}));
    fails(
        "Model",
        json!({"id": "x", "object": "mode", "created": 1, "owned_by": "o"}),
    );
    fails(
        "ErrorResponse",
        json!({"error": {"message": "m", "type": "t", "param": null}}),
    );
    fails(
        "CreateChatCompletionStreamResponse",
        json!({"id": "i", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "bogus"}]}),
    );
}
