//! JSON Schema (as OpenAI tools and `response_format` carry it) → the OpenAPI 3.0 subset Gemini
//! accepts for `parameters` and `responseSchema`.
//!
//! Gemini rejects a request over keys it does not know, so the schema is rebuilt from an allowlist
//! rather than patched: `type`, `format` (only the values Gemini documents per type), `title`,
//! `description`, `nullable`, `enum` (strings), `properties`, `required`, `items`, `anyOf`,
//! `minItems`/`maxItems`, `minProperties`/`maxProperties`, `minLength`/`maxLength`, `pattern`,
//! `minimum`/`maximum`, `default`, `example`, `propertyOrdering`. Rewritten on the way:
//! - `"type": ["string", "null"]` → `"type": "string", "nullable": true` (several non-null types
//!   become an `anyOf`);
//! - `const` → a one-value `enum`; `oneOf` → `anyOf`; a single-entry `allOf` → its entry;
//! - local `$ref`s (`#/$defs/...`, `#/definitions/...`) are inlined, up to [`MAX_DEPTH`] levels
//!   (a recursive schema is cut there to a bare `object`).
//!
//! Dropped: `additionalProperties`, `$schema`, `$id`, `strict`, `examples`, `patternProperties`,
//! `not`, `if`/`then`/`else`, `exclusiveMinimum`/`exclusiveMaximum`, `multipleOf`, `uniqueItems`,
//! multi-entry `allOf`, and non-string `enum`s.

use serde_json::{Map, Value};

/// How deep `$ref` inlining and nesting go before a schema is cut off.
const MAX_DEPTH: usize = 16;

/// Keys copied as they are.
const PLAIN_KEYS: &[&str] = &[
    "title",
    "description",
    "nullable",
    "required",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "default",
    "example",
    "propertyOrdering",
];

/// A function's `parameters`: sanitised, and omitted altogether for an object without properties
/// (Gemini refuses an `OBJECT` with empty `properties`; a function without parameters is fine).
pub(super) fn parameters(schema: &Value) -> Option<Value> {
    let out = sanitize(schema)?;
    let empty_object = out.get("type").and_then(Value::as_str) == Some("object")
        && out
            .get("properties")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty);
    (!empty_object).then_some(out)
}

/// The schema reduced to Gemini's subset; `None` for something that is not a schema object.
pub(super) fn sanitize(schema: &Value) -> Option<Value> {
    let root = schema.as_object()?;
    Some(convert(root, root, 0))
}

fn convert(node: &Map<String, Value>, root: &Map<String, Value>, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return serde_json::json!({ "type": "object" });
    }
    if let Some(target) = node.get("$ref").and_then(Value::as_str) {
        return match resolve(root, target) {
            // Sibling keys of a `$ref` (a description, say) win over the target's.
            Some(resolved) => {
                let mut merged = resolved.clone();
                for (k, v) in node {
                    if k != "$ref" {
                        merged.insert(k.clone(), v.clone());
                    }
                }
                convert(&merged, root, depth + 1)
            }
            None => serde_json::json!({ "type": "object" }),
        };
    }
    if let Some(Value::Array(all)) = node.get("allOf")
        && let [Value::Object(only)] = all.as_slice()
    {
        let mut merged = only.clone();
        for (k, v) in node {
            if k != "allOf" {
                merged.insert(k.clone(), v.clone());
            }
        }
        return convert(&merged, root, depth + 1);
    }
    let mut out = Map::new();
    let mut type_name: Option<String> = None;
    match node.get("type") {
        Some(Value::String(t)) => type_name = Some(t.clone()),
        Some(Value::Array(types)) => {
            let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            if names.contains(&"null") {
                out.insert("nullable".to_owned(), Value::Bool(true));
            }
            let non_null: Vec<&str> = names.into_iter().filter(|t| *t != "null").collect();
            match non_null.as_slice() {
                [one] => type_name = Some((*one).to_owned()),
                [] => {}
                many => {
                    let any: Vec<Value> = many.iter().map(|t| serde_json::json!({ "type": t })).collect();
                    out.insert("anyOf".to_owned(), Value::Array(any));
                }
            }
        }
        _ => {}
    }
    if let Some(t) = &type_name {
        out.insert("type".to_owned(), Value::String(t.clone()));
    }
    for key in PLAIN_KEYS {
        if let Some(v) = node.get(*key)
            && !(*key == "nullable" && out.contains_key("nullable"))
        {
            out.insert((*key).to_owned(), v.clone());
        }
    }
    if let Some(Value::String(format)) = node.get("format") {
        let allowed = match type_name.as_deref() {
            Some("string") => matches!(format.as_str(), "enum" | "date-time"),
            Some("integer") => matches!(format.as_str(), "int32" | "int64"),
            Some("number") => matches!(format.as_str(), "float" | "double"),
            _ => false,
        };
        if allowed {
            out.insert("format".to_owned(), Value::String(format.clone()));
        }
    }
    let enum_values = match (node.get("enum"), node.get("const")) {
        (Some(Value::Array(values)), _) => Some(values.clone()),
        (None, Some(value)) => Some(vec![value.clone()]),
        _ => None,
    };
    if let Some(values) = enum_values
        && !values.is_empty()
        && values.iter().all(Value::is_string)
    {
        out.insert("enum".to_owned(), Value::Array(values));
        out.entry("type")
            .or_insert_with(|| Value::String("string".to_owned()));
    }
    if let Some(Value::Object(props)) = node.get("properties") {
        let props: Map<String, Value> = props
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), convert(v.as_object()?, root, depth + 1))))
            .collect();
        out.insert("properties".to_owned(), Value::Object(props));
    }
    if let Some(Value::Object(items)) = node.get("items") {
        out.insert("items".to_owned(), convert(items, root, depth + 1));
    }
    let any_of = node.get("anyOf").or_else(|| node.get("oneOf"));
    if let Some(Value::Array(options)) = any_of {
        let options: Vec<Value> = options
            .iter()
            .filter_map(Value::as_object)
            .filter(|o| o.get("type").and_then(Value::as_str) != Some("null"))
            .map(|o| convert(o, root, depth + 1))
            .collect();
        if options.len() < options_len(any_of) {
            // A `{"type": "null"}` option is Gemini's `nullable`.
            out.insert("nullable".to_owned(), Value::Bool(true));
        }
        match options.len() {
            0 => {}
            // One option left (the usual `Optional[X]`): no need for a union.
            1 => {
                if let Some(Value::Object(only)) = options.into_iter().next() {
                    for (k, v) in only {
                        out.entry(k).or_insert(v);
                    }
                }
            }
            _ => {
                out.insert("anyOf".to_owned(), Value::Array(options));
            }
        }
    }
    Value::Object(out)
}

fn options_len(v: Option<&Value>) -> usize {
    v.and_then(Value::as_array).map_or(0, Vec::len)
}

/// A local JSON pointer (`#/$defs/Name`) into the root schema.
fn resolve<'a>(root: &'a Map<String, Value>, pointer: &str) -> Option<&'a Map<String, Value>> {
    let path = pointer.strip_prefix("#/")?;
    let mut node: &Map<String, Value> = root;
    for segment in path.split('/') {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        node = node.get(&segment)?.as_object()?;
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unsupported_keys_are_dropped_and_unions_rewritten() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "city": {"type": "string", "format": "uri", "description": "City"},
                "when": {"type": ["string", "null"], "format": "date-time"},
                "unit": {"enum": ["c", "f"]},
                "count": {"type": "integer", "format": "int32", "exclusiveMinimum": 0},
                "tag": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "kind": {"const": "fixed"}
            },
            "required": ["city"],
            "strict": true
        });
        assert_eq!(
            sanitize(&schema).unwrap(),
            json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City"},
                    "when": {"type": "string", "nullable": true, "format": "date-time"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                    "count": {"type": "integer", "format": "int32"},
                    "tag": {"type": "string", "nullable": true},
                    "kind": {"type": "string", "enum": ["fixed"]}
                },
                "required": ["city"]
            })
        );
    }

    #[test]
    fn local_refs_are_inlined_and_recursion_is_cut() {
        let schema = json!({
            "type": "object",
            "properties": {"pet": {"$ref": "#/$defs/Pet", "description": "the pet"}},
            "$defs": {"Pet": {"type": "object", "properties": {"name": {"type": "string"}}}}
        });
        assert_eq!(
            sanitize(&schema).unwrap(),
            json!({"type": "object", "properties": {"pet": {
                "type": "object", "description": "the pet", "properties": {"name": {"type": "string"}}
            }}})
        );
        let recursive = json!({
            "type": "object",
            "properties": {"child": {"$ref": "#"}}
        });
        // Terminates, with the recursion cut to a bare object at the depth limit.
        let out = sanitize(&recursive).unwrap();
        assert!(out.to_string().contains(r#"{"type":"object"}"#));
    }

    #[test]
    fn empty_object_parameters_are_omitted() {
        assert_eq!(parameters(&json!({"type": "object", "properties": {}})), None);
        assert_eq!(parameters(&json!({"type": "object"})), None);
        assert!(parameters(&json!({"type": "object", "properties": {"a": {"type": "string"}}})).is_some());
        assert_eq!(parameters(&json!("nope")), None);
    }
}
