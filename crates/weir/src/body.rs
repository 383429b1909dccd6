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
}
