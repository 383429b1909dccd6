//! A JSON request body kept as raw values, so the gateway can read the few fields it routes on
//! and rewrite `model` without re-serialising (or losing) anything else.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use serde_json::value::RawValue;

use crate::error::Error;

/// A JSON object as `(key, raw value)` pairs, in the order received.
#[derive(Debug)]
pub(crate) struct RawObject {
    fields: Vec<(String, Box<RawValue>)>,
}

impl RawObject {
    /// Parses a request body; a 400 naming the problem if it is not a JSON object.
    pub(crate) fn parse(bytes: &[u8]) -> Result<RawObject, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidRequest {
            message: format!(
                "We could not parse the JSON body of your request ({e}). The body must be a JSON object."
            ),
            param: None,
            code: Some("invalid_json"),
        })
    }

    /// The raw value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// `key` as a string; a 400 naming `key` if it has another type. `null` counts as absent.
    pub(crate) fn get_str(&self, key: &str) -> Result<Option<String>, Error> {
        self.get_typed(key, "a string")
    }

    /// `key` as a bool; a 400 naming `key` if it has another type.
    pub(crate) fn get_bool(&self, key: &str) -> Result<Option<bool>, Error> {
        self.get_typed(key, "a boolean")
    }

    /// `key` as a non-negative integer; a 400 naming `key` if it has another type.
    pub(crate) fn get_u64(&self, key: &str) -> Result<Option<u64>, Error> {
        self.get_typed(key, "a non-negative integer")
    }

    fn get_typed<T: serde::de::DeserializeOwned>(&self, key: &str, what: &str) -> Result<Option<T>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| {
                Error::invalid_param(key, format!("'{key}' must be {what}"), Some("invalid_type"))
            }),
        }
    }

    /// The number of top-level fields.
    pub(crate) fn len(&self) -> usize {
        self.fields.len()
    }

    /// The fields, in the order received.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_ref()))
    }

    /// Whether `key` is present and is a non-empty JSON array.
    pub(crate) fn is_non_empty_array(&self, key: &str) -> bool {
        self.get(key).is_some_and(|raw| {
            let text = raw.get().trim_start();
            text.starts_with('[') && text[1..].trim_start() != "]"
        })
    }

    /// The object serialised again with `key` set to the JSON string `value`; every other field is
    /// written back byte for byte.
    pub(crate) fn to_bytes_with_str(&self, key: &str, value: &str) -> Result<Bytes, Error> {
        let encoded = serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))?;
        let mut out = BytesMut::with_capacity(
            self.fields
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + 2,
        );
        out.put_u8(b'{');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            let key_json = serde_json::to_string(k).map_err(|e| Error::Internal(e.to_string()))?;
            out.put_slice(key_json.as_bytes());
            out.put_u8(b':');
            if k == key {
                out.put_slice(encoded.as_bytes())
            } else {
                out.put_slice(v.get().as_bytes())
            }
        }
        out.put_u8(b'}');
        Ok(out.freeze())
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut fields: Vec<(String, Box<RawValue>)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    // We route on the first `model`, an upstream would run the last: a duplicate
                    // key would let a client reach a model the gateway never allowed.
                    if fields.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(format!("duplicate key `{k}`")));
                    }
                    fields.push((k, v));
                }
                Ok(RawObject { fields })
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

/// How deeply a request body's JSON may nest (objects and arrays, the top-level object counting
/// as 1). Real requests stay far below it — a tool's JSON schema or a structured-output schema is
/// a dozen levels at most — while a body nested thousands deep is only good for knocking over a
/// parser: ours reads such a body with a fixed stack, but an upstream may answer it with a 500,
/// which would then be retried and counted against the deployment's breaker, for everyone.
pub(crate) const MAX_JSON_DEPTH: usize = 64;

/// Checks that `bytes` nest no deeper than [`MAX_JSON_DEPTH`]: one pass over the bytes, strings
/// skipped, no allocation. Malformed JSON is not this check's business (the parser reports it);
/// a 400 names the top-level field whose value is too deep.
pub(crate) fn check_depth(bytes: &[u8]) -> Result<(), Error> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // The last string closed at depth 1 (a top-level key, once a `:` follows it), and the key.
    let mut last_string: (usize, usize) = (0, 0);
    let mut key: (usize, usize) = (0, 0);
    let mut string_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => {
                    in_string = false;
                    if depth == 1 {
                        last_string = (string_start, i);
                    }
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = i + 1;
            }
            b':' if depth == 1 => key = last_string,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    let field = std::str::from_utf8(&bytes[key.0..key.1]).unwrap_or_default();
                    let field: String = field.chars().take(64).collect();
                    let message = format!(
                        "The request body nests JSON more than {MAX_JSON_DEPTH} levels deep{}; \
                         flatten it.",
                        if field.is_empty() {
                            String::new()
                        } else {
                            format!(" (in '{field}')")
                        }
                    );
                    return Err(Error::InvalidRequest {
                        message,
                        param: (!field.is_empty()).then_some(field),
                        code: Some("json_too_deep"),
                    });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_model() {
        let body = br#"{"model":"public","messages":[{"role":"user","content":"hi \u00e9"}],"logprobs":true,"x":{"deep":[1,2.50]}}"#;
        let obj = RawObject::parse(body).unwrap();
        assert_eq!(obj.get_str("model").unwrap().as_deref(), Some("public"));
        let out = obj.to_bytes_with_str("model", "upstream-\"m\"").unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"model":"upstream-\"m\"","messages":[{"role":"user","content":"hi \u00e9"}],"logprobs":true,"x":{"deep":[1,2.50]}}"#
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let obj = RawObject::parse(br#"{"model":5,"stream":"yes","messages":[]}"#).unwrap();
        let err = obj.get_str("model").unwrap_err();
        assert!(matches!(err, Error::InvalidRequest { param: Some(ref p), .. } if p == "model"));
        assert!(obj.get_bool("stream").is_err());
        assert!(!obj.is_non_empty_array("messages"));
        assert!(RawObject::parse(b"[1]").is_err());
        assert!(RawObject::parse(b"{\"a\":").is_err());
        let dup = RawObject::parse(br#"{"model":"cheap","messages":[],"model":"expensive"}"#).unwrap_err();
        assert!(dup.to_string().contains("duplicate key `model`"), "{dup}");
    }

    #[test]
    fn depth_is_checked_through_the_whole_body() {
        let nested = |n: usize| {
            format!(
                "{{\"model\":\"m\",\"tools\":{}1{}}}",
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(check_depth(nested(MAX_JSON_DEPTH - 1).as_bytes()).is_ok());
        let Err(Error::InvalidRequest { param, code, message }) = check_depth(nested(100_000).as_bytes())
        else {
            panic!("a body nested 100 000 deep passed");
        };
        assert_eq!(param.as_deref(), Some("tools"));
        assert_eq!(code, Some("json_too_deep"));
        assert!(message.contains("64"), "{message}");
        // Brackets inside strings are text, not nesting.
        let text = format!("{{\"messages\":\"{}\\\"{}\"}}", "[".repeat(500), "{".repeat(500));
        assert!(check_depth(text.as_bytes()).is_ok());
    }
}
