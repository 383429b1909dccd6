//! Spec conformance: what a client receives through the gateway (in front of the real mock upstream)
//! is checked against the component schemas of OpenAI's published OpenAPI 3.1 description
//! (`shared/specs/openai-openapi.yaml`, beside the repository).
//!
//! Longer than the usual ~600 lines: the small schema checker and the endpoints it checks belong
//! together (a checker module shared by one file would be indirection without a second user).
//!
//! The schema checker below is deliberately small. It understands `$ref` (`#/...` pointers into the
//! spec), `allOf` (every branch must hold), `anyOf`/`oneOf` (at least one branch must hold), `type`
//! (a name or a list of names, `"null"` included), OpenAPI 3.0's `nullable: true` (which this 3.1
//! spec still uses, e.g. for stream chunks' `finish_reason`, `logprobs` and `usage`), `required`,
//! `properties` (recursing into the properties that are present), `items` and `enum`. Every other
//! keyword (`format`, `additionalProperties`, `minimum`, ...) is accepted without checking.
//! Two deliberate strictnesses: `integer` means a JSON number without fraction or exponent (what a
//! typed client parses as an int), and a schema with `required` rejects non-objects.
//! A mismatch names the JSON path of the first offending value.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fmt;
use std::sync::OnceLock;

use common::*;
use serde_json::{Map, Value, json};
use weir_mock::server::MockServer;

/// The spec lives in `shared/`, a sibling of the repository checkout.
const SPEC_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/specs/openai-openapi.yaml"
);

/// These tests check the shape of one answer; retries are tested in `retries.rs`.
const NO_RETRIES: &str = "        retry: { max_retries: 0 }";

/// A `$ref` chain (or `allOf` nesting) deeper than this is treated as a cycle.
const MAX_SCHEMA_DEPTH: usize = 200;

/// The parsed spec, read once per test binary (it is ~3 MB of YAML).
fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::fs::read_to_string(SPEC_PATH).unwrap_or_else(|e| {
            panic!("cannot read the OpenAI spec at {SPEC_PATH}: {e} (shared/ must sit beside the repository)")
        });
        serde_saphyr::from_str::<Value>(&text)
            .unwrap_or_else(|e| panic!("cannot parse the OpenAI spec at {SPEC_PATH}: {e}"))
    })
}

// ---------------------------------------------------------------------------------------------
// The schema checker
// ---------------------------------------------------------------------------------------------

/// The first place where a value disagrees with a schema.
#[derive(Debug)]
struct Mismatch {
    /// JSON path of the offending value, e.g. `$.choices[0].finish_reason`.
    path: String,
    message: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.path, self.message)
    }
}

fn mismatch(path: &str, message: impl Into<String>) -> Mismatch {
    Mismatch {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The JSON type name of a value, as JSON Schema spells it (`integer` for whole numbers).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value shortened for messages.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 100 {
        text
    } else {
        format!("{}…", text.chars().take(100).collect::<String>())
    }
}

fn type_matches(name: &str, value: &Value, path: &str) -> Result<bool, Mismatch> {
    Ok(match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        // A JSON number written without a fraction or exponent, i.e. what a client parses as an int.
        "integer" => value.is_i64() || value.is_u64(),
        other => return Err(mismatch(path, format!("schema names unknown type `{other}`"))),
    })
}

struct Checker<'s> {
    spec: &'s Value,
}

impl<'s> Checker<'s> {
    fn new(spec: &'s Value) -> Self {
        Checker { spec }
    }

    /// `#/components/schemas/{name}`; a missing schema is a broken test, not a mismatch.
    fn component(&self, name: &str) -> &'s Value {
        self.spec
            .pointer(&format!("/components/schemas/{name}"))
            .unwrap_or_else(|| panic!("the spec has no component schema `{name}`"))
    }

    /// Checks `value` against the component schema `name`.
    fn check_component(&self, name: &str, value: &Value) -> Result<(), Mismatch> {
        self.check(self.component(name), value, "$", 0)
    }

    fn check(&self, schema: &'s Value, value: &Value, path: &str, depth: usize) -> Result<(), Mismatch> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(mismatch(path, "schema nesting too deep (a $ref cycle?)"));
        }
        let schema = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(mismatch(path, "the schema `false` accepts nothing")),
            Value::Object(schema) => schema,
            other => return Err(mismatch(path, format!("malformed schema {}", short(other)))),
        };
        // OpenAPI 3.0's spelling of "or null"; the spec still uses it next to `type` and `$ref`.
        if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        if let Some(reference) = schema.get("$ref") {
            self.check_ref(reference, value, path, depth)?;
        }
        if let Some(types) = schema.get("type") {
            Self::check_type(types, value, path)?;
        }
        if let Some(allowed) = schema.get("enum") {
            let allowed = allowed
                .as_array()
                .ok_or_else(|| mismatch(path, "schema `enum` is not a list"))?;
            if !allowed.contains(value) {
                let names: Vec<String> = allowed.iter().map(short).collect();
                return Err(mismatch(
                    path,
                    format!(
                        "{} is not one of the enum values [{}]",
                        short(value),
                        names.join(", ")
                    ),
                ));
            }
        }
        if let Some(branches) = schema.get("allOf") {
            for branch in Self::branches(branches, "allOf", path)? {
                self.check(branch, value, path, depth + 1)?;
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(branches) = schema.get(keyword) {
                self.check_any(
                    keyword,
                    Self::branches(branches, keyword, path)?,
                    value,
                    path,
                    depth,
                )?;
            }
        }
        match value {
            Value::Object(object) => self.check_object(schema, object, path, depth)?,
            _ if schema.contains_key("required") => {
                return Err(mismatch(
                    path,
                    format!(
                        "expected an object (the schema lists required properties), got {} {}",
                        kind(value),
                        short(value)
                    ),
                ));
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &format!("{path}[{i}]"), depth + 1)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check_ref(&self, reference: &Value, value: &Value, path: &str, depth: usize) -> Result<(), Mismatch> {
        let reference = reference
            .as_str()
            .ok_or_else(|| mismatch(path, "schema `$ref` is not a string"))?;
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| self.spec.pointer(pointer))
            .ok_or_else(|| mismatch(path, format!("unresolvable $ref `{reference}`")))?;
        self.check(target, value, path, depth + 1)
    }

    fn check_type(types: &Value, value: &Value, path: &str) -> Result<(), Mismatch> {
        let names: Vec<&str> = match types {
            Value::String(name) => vec![name.as_str()],
            Value::Array(names) => names
                .iter()
                .map(|n| {
                    n.as_str()
                        .ok_or_else(|| mismatch(path, "schema `type` list holds a non-string"))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(mismatch(path, "schema `type` is neither a string nor a list")),
        };
        for name in &names {
            if type_matches(name, value, path)? {
                return Ok(());
            }
        }
        Err(mismatch(
            path,
            format!(
                "expected type {}, got {} {}",
                names.join(" or "),
                kind(value),
                short(value)
            ),
        ))
    }

    fn branches<'v>(branches: &'v Value, keyword: &str, path: &str) -> Result<&'v [Value], Mismatch> {
        branches
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| mismatch(path, format!("schema `{keyword}` is not a list")))
    }

    /// At least one branch must hold (used for `oneOf` too: exclusivity is not checked).
    fn check_any(
        &self,
        keyword: &str,
        branches: &'s [Value],
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<(), Mismatch> {
        let mut failures = Vec::with_capacity(branches.len());
        for branch in branches {
            match self.check(branch, value, path, depth + 1) {
                Ok(()) => return Ok(()),
                Err(failure) => failures.push(failure.to_string()),
            }
        }
        Err(mismatch(
            path,
            format!(
                "{} matches none of the {} `{keyword}` branches: [{}]",
                short(value),
                branches.len(),
                failures.join("; ")
            ),
        ))
    }

    fn check_object(
        &self,
        schema: &'s Map<String, Value>,
        object: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<(), Mismatch> {
        if let Some(required) = schema.get("required") {
            let required = required
                .as_array()
                .ok_or_else(|| mismatch(path, "schema `required` is not a list"))?;
            for name in required {
                let name = name
                    .as_str()
                    .ok_or_else(|| mismatch(path, "schema `required` holds a non-string"))?;
                if !object.contains_key(name) {
                    return Err(mismatch(path, format!("missing required property `{name}`")));
                }
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in object {
                if let Some(property_schema) = properties.get(name) {
                    self.check(property_schema, property, &format!("{path}.{name}"), depth + 1)?;
                }
            }
        }
        Ok(())
    }
}

fn checker() -> Checker<'static> {
    Checker::new(spec())
}

/// Panics with the first mismatch between `value` and the component schema `schema`.
#[track_caller]
fn assert_conforms(schema: &str, value: &Value, what: &str) {
    if let Err(m) = checker().check_component(schema, value) {
        panic!("{what} does not conform to {schema}: {m}\nbody: {}", {
            let body = value.to_string();
            body.chars().take(2000).collect::<String>()
        });
    }
}

/// The mismatch `value` must produce against `schema`.
#[track_caller]
fn expect_mismatch(schema: &str, value: &Value) -> Mismatch {
    match checker().check_component(schema, value) {
        Ok(()) => panic!("{schema} accepted a value it must reject: {}", short(value)),
        Err(m) => m,
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to the gateway
// ---------------------------------------------------------------------------------------------

/// `config_for` plus a wildcard group whose model list comes from the upstream.
fn config_with_wildcard(mock: &MockServer, deployment_extra: &str) -> String {
    format!(
        "{}  - name: \"gpt-*\"\n    deployments:\n      - id: mock-wild\n        provider: openai\n        base_url: {}\n        api_key: upstream-secret-key\n",
        config_for(mock, deployment_extra, ""),
        mock.base_url()
    )
}

/// POSTs `body` to `path`, returning status and parsed JSON.
async fn post(gw: &Gateway, path: &str, body: &Value) -> (u16, Value) {
    let resp = http().post(gw.url(path)).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path} gave non-JSON ({e}): {text}"));
    (status, json)
}

async fn get(gw: &Gateway, path: &str) -> (u16, Value) {
    let resp = http().get(gw.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path} gave non-JSON ({e}): {text}"));
    (status, json)
}

/// A streamed chat completion: the JSON payload of every `data:` event before `[DONE]`.
async fn stream_events(gw: &Gateway, extra: Value) -> (u16, Vec<Value>, bool) {
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(extra))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status == 200 {
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    }
    let text = resp.text().await.unwrap();
    let mut events = Vec::new();
    let mut done = false;
    for data in text.lines().filter_map(|line| line.strip_prefix("data:")) {
        let data = data.trim_start();
        assert!(!done, "an event after [DONE]: {text}");
        if data == "[DONE]" {
            done = true;
        } else {
            events
                .push(serde_json::from_str(data).unwrap_or_else(|e| panic!("non-JSON event ({e}): {data}")));
        }
    }
    (status, events, done)
}

async fn chat_completion(gw: &Gateway, extra: Value) -> Value {
    let (status, body) = post(gw, "/v1/chat/completions", &chat_body(extra)).await;
    assert_eq!(status, 200, "{body}");
    body
}

// ---------------------------------------------------------------------------------------------
// The spec itself and the checker
// ---------------------------------------------------------------------------------------------

#[test]
fn the_spec_parses_and_has_every_schema_we_check() {
    let spec = spec();
    assert_eq!(spec["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true));
    for name in [
        "CreateChatCompletionResponse",
        "CreateChatCompletionStreamResponse",
        "CreateEmbeddingResponse",
        "ImagesResponse",
        "ListModelsResponse",
        "Model",
        "ErrorResponse",
    ] {
        let schema = checker().component(name);
        assert!(schema.is_object(), "{name}: {schema}");
    }
    // Spot-check that YAML scalars arrived as the JSON the schema means: `"null"` stays a type name.
    assert_eq!(
        spec.pointer("/components/schemas/Error/properties/code/anyOf/1/type"),
        Some(&json!("null"))
    );
    assert_eq!(
        spec.pointer("/components/schemas/CreateChatCompletionStreamResponse/properties/usage/nullable"),
        Some(&json!(true))
    );
}

#[test]
fn the_checker_understands_each_keyword() {
    let spec = json!({"components": {"schemas": {
        "Thing": {
            "type": "object",
            "required": ["id", "kind"],
            "properties": {
                "id": {"type": "integer"},
                "kind": {"type": "string", "enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "maybe": {"type": ["string", "null"]},
                "legacy": {"type": "string", "nullable": true},
                "child": {"$ref": "#/components/schemas/Child"},
                "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                "one": {"oneOf": [{"type": "boolean"}, {"type": "null"}]},
                "both": {"allOf": [{"required": ["x"]}, {"required": ["y"]}]},
                "dangling": {"$ref": "#/components/schemas/Nope"},
                "free": {"format": "uri", "minimum": 3, "additionalProperties": false},
            },
        },
        "Child": {"type": "object", "required": ["n"], "properties": {"n": {"type": "number"}}},
    }}});
    let checker = Checker::new(&spec);
    let check = |value: Value| {
        checker
            .check_component("Thing", &value)
            .map_err(|m| m.to_string())
    };

    let good = json!({
        "id": 1, "kind": "a", "tags": ["x"], "maybe": null, "legacy": null, "child": {"n": 1.5},
        "either": "s", "one": null, "both": {"x": 1, "y": 2}, "free": 42, "unlisted": [1, {}],
    });
    check(good.clone()).unwrap();
    let with = |key: &str, v: Value| {
        let mut body = good.clone();
        body[key] = v;
        body
    };

    let cases = [
        (json!({"kind": "a"}), "at $: missing required property `id`"),
        (json!("text"), "at $: expected type object, got string"),
        (
            with("id", json!("1")),
            "at $.id: expected type integer, got string",
        ),
        (
            with("id", json!(1.5)),
            "at $.id: expected type integer, got number",
        ),
        (
            with("kind", json!("c")),
            "at $.kind: \"c\" is not one of the enum values",
        ),
        (
            with("tags", json!(["x", 3])),
            "at $.tags[1]: expected type string, got integer",
        ),
        (
            with("maybe", json!(7)),
            "at $.maybe: expected type string or null, got integer",
        ),
        (
            with("legacy", json!(7)),
            "at $.legacy: expected type string, got integer",
        ),
        (
            with("child", json!({})),
            "at $.child: missing required property `n`",
        ),
        (
            with("child", json!({"n": "1"})),
            "at $.child.n: expected type number",
        ),
        (
            with("either", json!(true)),
            "at $.either: true matches none of the 2 `anyOf` branches",
        ),
        (
            with("one", json!(1)),
            "at $.one: 1 matches none of the 2 `oneOf` branches",
        ),
        (
            with("both", json!({"x": 1})),
            "at $.both: missing required property `y`",
        ),
        (
            with("dangling", json!(1)),
            "at $.dangling: unresolvable $ref `#/components/schemas/Nope`",
        ),
        (
            with("id", Value::Null),
            "at $.id: expected type integer, got null",
        ),
    ];
    for (value, expected) in cases {
        let err = check(value.clone()).expect_err(&format!("accepted {value}"));
        assert!(
            err.starts_with(expected),
            "for {value}:\n  got      {err}\n  expected {expected}…"
        );
    }
}

/// The conformance tests must be able to fail: real gateway answers, broken in small ways, are rejected.
#[tokio::test]
async fn broken_real_responses_are_rejected() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let chat = chat_completion(&gw, json!({})).await;
    assert_conforms("CreateChatCompletionResponse", &chat, "the untouched response");

    let mut no_choices = chat.clone();
    no_choices.as_object_mut().unwrap().remove("choices");
    let m = expect_mismatch("CreateChatCompletionResponse", &no_choices);
    assert_eq!(
        (m.path.as_str(), m.message.as_str()),
        ("$", "missing required property `choices`")
    );

    let mut created_as_string = chat.clone();
    created_as_string["created"] = json!(created_as_string["created"].to_string());
    let m = expect_mismatch("CreateChatCompletionResponse", &created_as_string);
    assert_eq!(m.path, "$.created");
    assert!(m.message.starts_with("expected type integer, got string"), "{m}");

    let mut bad_finish = chat.clone();
    bad_finish["choices"][0]["finish_reason"] = json!("done");
    let m = expect_mismatch("CreateChatCompletionResponse", &bad_finish);
    assert_eq!(m.path, "$.choices[0].finish_reason");

    // Through a $ref: the message lacks `role`.
    let mut no_role = chat.clone();
    no_role["choices"][0]["message"]
        .as_object_mut()
        .unwrap()
        .remove("role");
    let m = expect_mismatch("CreateChatCompletionResponse", &no_role);
    assert_eq!(
        (m.path.as_str(), m.message.as_str()),
        ("$.choices[0].message", "missing required property `role`")
    );

    // Through a $ref to CompletionUsage.
    let mut usage = chat.clone();
    usage["usage"]["total_tokens"] = json!(-0.5);
    assert_eq!(
        expect_mismatch("CreateChatCompletionResponse", &usage).path,
        "$.usage.total_tokens"
    );

    // A plain-text-ish error: `code` must be a string or null (anyOf).
    let (_, error) = post(&gw, "/v1/chat/completions", &json!({"model": "mock-model"})).await;
    assert_conforms("ErrorResponse", &error, "the untouched error");
    let mut numeric_code = error.clone();
    numeric_code["error"]["code"] = json!(400);
    let m = expect_mismatch("ErrorResponse", &numeric_code);
    assert_eq!(m.path, "$.error.code");
    assert!(
        m.message.contains("matches none of the 2 `anyOf` branches"),
        "{m}"
    );
    assert_eq!(
        expect_mismatch("ErrorResponse", &json!({"message": "x"})).path,
        "$"
    );

    // A stream chunk is not a completion, nor the other way round.
    let (_, events, _) = stream_events(&gw, json!({"stream": true})).await;
    let m = expect_mismatch("CreateChatCompletionResponse", &events[0]);
    assert_eq!(m.path, "$.object");
    assert!(
        m.message
            .starts_with("\"chat.completion.chunk\" is not one of the enum values"),
        "{m}"
    );
    let mut chunk_like = chat.clone();
    chunk_like["object"] = json!("chat.completion.chunk");
    let m = expect_mismatch("CreateChatCompletionStreamResponse", &chunk_like);
    assert_eq!(
        (m.path.as_str(), m.message.as_str()),
        ("$.choices[0]", "missing required property `delta`")
    );
}

/// Every other schema the conformance tests use also rejects a slightly broken real answer.
#[tokio::test]
async fn broken_real_answers_of_every_endpoint_are_rejected() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;

    // Stream chunks: `nullable` admits null, not other types; `usage` is checked through its $ref.
    let options = json!({"stream": true, "stream_options": {"include_usage": true}});
    let (_, events, _) = stream_events(&gw, options).await;
    let mut bad_finish = events[0].clone();
    bad_finish["choices"][0]["finish_reason"] = json!("finished");
    let m = expect_mismatch("CreateChatCompletionStreamResponse", &bad_finish);
    assert_eq!(m.path, "$.choices[0].finish_reason");
    let mut bad_logprobs = events[0].clone();
    bad_logprobs["choices"][0]["logprobs"] = json!("none");
    let m = expect_mismatch("CreateChatCompletionStreamResponse", &bad_logprobs);
    assert_eq!(m.path, "$.choices[0].logprobs");
    let mut bad_usage = events.last().unwrap().clone();
    assert!(bad_usage["usage"].is_object(), "{bad_usage}");
    bad_usage["usage"]
        .as_object_mut()
        .unwrap()
        .remove("prompt_tokens");
    let m = expect_mismatch("CreateChatCompletionStreamResponse", &bad_usage);
    assert_eq!(
        (m.path.as_str(), m.message.as_str()),
        ("$.usage", "missing required property `prompt_tokens`")
    );

    let (_, embeddings) = post(
        &gw,
        "/v1/embeddings",
        &json!({"model": "mock-model", "input": "x"}),
    )
    .await;
    let mut bad = embeddings.clone();
    bad["data"][0]["embedding"][1] = json!("0.5");
    let m = expect_mismatch("CreateEmbeddingResponse", &bad);
    assert_eq!(m.path, "$.data[0].embedding[1]");
    let mut bad = embeddings.clone();
    bad.as_object_mut().unwrap().remove("usage");
    assert_eq!(
        expect_mismatch("CreateEmbeddingResponse", &bad).message,
        "missing required property `usage`"
    );

    let request = json!({"model": "mock-model", "prompt": "p"});
    let (_, images) = post(&gw, "/v1/images/generations", &request).await;
    let mut bad = images.clone();
    bad["data"][0]["url"] = json!(1);
    assert_eq!(expect_mismatch("ImagesResponse", &bad).path, "$.data[0].url");
    let mut bad = images.clone();
    bad["created"] = json!(null);
    assert_eq!(expect_mismatch("ImagesResponse", &bad).path, "$.created");

    let (_, models) = get(&gw, "/v1/models").await;
    let mut bad = models.clone();
    bad["data"][1]["created"] = json!("2024-01-01");
    assert_eq!(
        expect_mismatch("ListModelsResponse", &bad).path,
        "$.data[1].created"
    );
    let mut bad = models["data"][0].clone();
    bad["object"] = json!("list");
    assert_eq!(expect_mismatch("Model", &bad).path, "$.object");
    let mut bad = models["data"][0].clone();
    bad.as_object_mut().unwrap().remove("owned_by");
    assert_eq!(
        expect_mismatch("Model", &bad).message,
        "missing required property `owned_by`"
    );
}

// ---------------------------------------------------------------------------------------------
// What the gateway sends
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn chat_completions_conform() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    for extra in [
        json!({}),
        json!({"n": 3}),
        json!({"max_tokens": 2}),
        json!({"model": "renamed", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi there"}]},
        ]}),
    ] {
        let body = chat_completion(&gw, extra.clone()).await;
        assert_conforms(
            "CreateChatCompletionResponse",
            &body,
            &format!("chat completion for {extra}"),
        );
    }
    // The `length` case really was exercised.
    let body = chat_completion(&gw, json!({"max_tokens": 2})).await;
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn every_streamed_chunk_conforms() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    for extra in [
        json!({"stream": true, "stream_options": {"include_usage": true}, "x_mock": {"chunks": 4}}),
        json!({"stream": true, "stream_options": {"include_usage": true}, "n": 2, "max_tokens": 3}),
        json!({"stream": true}),
    ] {
        let (status, events, done) = stream_events(&gw, extra.clone()).await;
        assert_eq!(status, 200, "{extra}");
        assert!(done, "no [DONE] for {extra}");
        for (i, event) in events.iter().enumerate() {
            assert_conforms(
                "CreateChatCompletionStreamResponse",
                event,
                &format!("chunk {i} of {extra}"),
            );
        }
        // Every kind of chunk was among those checked: role, content, finish and (if asked) usage.
        assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant", "{extra}");
        assert!(
            events.iter().any(|e| e["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())),
            "{extra}"
        );
        assert!(
            events
                .iter()
                .any(|e| e["choices"][0]["finish_reason"].is_string()),
            "{extra}"
        );
        let with_usage = extra["stream_options"]["include_usage"] == json!(true);
        let last = events.last().unwrap();
        assert_eq!(
            last["choices"] == json!([]) && last["usage"].is_object(),
            with_usage,
            "{extra}"
        );
    }
}

#[tokio::test]
async fn embeddings_conform() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    for input in [json!("one line"), json!(["a", "b", "c"])] {
        let (status, body) = post(
            &gw,
            "/v1/embeddings",
            &json!({"model": "mock-model", "input": input}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_conforms(
            "CreateEmbeddingResponse",
            &body,
            &format!("embeddings for {input}"),
        );
        assert!(!body["data"].as_array().unwrap().is_empty());
    }
}

#[tokio::test]
async fn image_generations_conform() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    for extra in [json!({}), json!({"n": 2}), json!({"response_format": "b64_json"})] {
        let mut request = json!({"model": "mock-model", "prompt": "a weir at dawn"});
        request
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, body) = post(&gw, "/v1/images/generations", &request).await;
        assert_eq!(status, 200, "{body}");
        assert_conforms("ImagesResponse", &body, &format!("images for {extra}"));
        assert!(!body["data"].as_array().unwrap().is_empty());
    }
}

#[tokio::test]
async fn models_conform() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_with_wildcard(&mock, "")).await;
    let (status, list) = get(&gw, "/v1/models").await;
    assert_eq!(status, 200, "{list}");
    assert_conforms("ListModelsResponse", &list, "the model list");
    let ids: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    // Named groups (answered by the gateway) and wildcard matches (listed by the upstream).
    assert!(
        ids.contains(&"mock-model".to_owned()) && ids.contains(&"gpt-4o".to_owned()),
        "{ids:?}"
    );
    for id in &ids {
        let (status, model) = get(&gw, &format!("/v1/models/{id}")).await;
        assert_eq!(status, 200, "{model}");
        assert_conforms("Model", &model, &format!("model {id}"));
        assert_eq!(&model["id"], id);
    }
}

#[tokio::test]
async fn error_bodies_conform() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, NO_RETRIES, "server:\n  max_body_size: 4KiB")).await;
    let chat = |extra: Value| chat_body(extra);
    let cases: Vec<(&str, &str, Value, u16)> = vec![
        (
            "missing messages",
            "/v1/chat/completions",
            json!({"model": "mock-model"}),
            400,
        ),
        (
            "missing model",
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}]}),
            400,
        ),
        (
            "unknown model",
            "/v1/chat/completions",
            chat(json!({"model": "no-such-model"})),
            404,
        ),
        (
            "missing input",
            "/v1/embeddings",
            json!({"model": "mock-model"}),
            400,
        ),
        (
            "upstream 400",
            "/v1/chat/completions",
            chat(json!({"x_mock": {"status": 400}})),
            400,
        ),
        (
            "upstream 401",
            "/v1/chat/completions",
            chat(json!({"x_mock": {"status": 401}})),
            500,
        ),
        (
            "upstream 429",
            "/v1/chat/completions",
            chat(json!({"x_mock": {"status": 429}})),
            429,
        ),
        (
            "upstream 500",
            "/v1/chat/completions",
            chat(json!({"x_mock": {"status": 500}})),
            502,
        ),
        (
            "upstream 503",
            "/v1/chat/completions",
            chat(json!({"x_mock": {"status": 503}})),
            502,
        ),
        (
            "upstream empty messages",
            "/v1/chat/completions",
            chat(json!({"messages": []})),
            400,
        ),
        (
            "too large",
            "/v1/chat/completions",
            chat(json!({"padding": "x".repeat(5000)})),
            413,
        ),
        (
            "stream, upstream 500",
            "/v1/chat/completions",
            chat(json!({"stream": true, "x_mock": {"status": 500}})),
            502,
        ),
    ];
    for (what, path, body, expected) in cases {
        let (status, error) = post(&gw, path, &body).await;
        assert_eq!(status, expected, "{what}: {error}");
        assert_conforms("ErrorResponse", &error, what);
    }

    let bad_json = http()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    assert_conforms("ErrorResponse", &bad_json.json().await.unwrap(), "invalid JSON");

    let (status, error) = get(&gw, "/v1/models/no-such-model").await;
    assert_eq!(status, 404, "{error}");
    assert_conforms("ErrorResponse", &error, "GET an unknown model");
}

/// A stream that breaks after it started ends with an error event; its payload is an ErrorResponse.
#[tokio::test]
async fn a_mid_stream_error_event_conforms() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, NO_RETRIES, "")).await;
    for directive in [json!({"stop_after_chunks": 2}), json!({"drop_after_chunks": 2})] {
        let (status, events, done) = stream_events(&gw, json!({"stream": true, "x_mock": directive})).await;
        assert_eq!(status, 200, "{directive}");
        assert!(!done, "{directive}: a broken stream must not claim [DONE]");
        let (error, chunks) = events.split_last().unwrap();
        assert_eq!(chunks.len(), 2, "{directive}: {events:?}");
        for chunk in chunks {
            assert_conforms(
                "CreateChatCompletionStreamResponse",
                chunk,
                &format!("chunk before {directive}"),
            );
        }
        assert_conforms("ErrorResponse", error, &format!("error event after {directive}"));
    }
}
