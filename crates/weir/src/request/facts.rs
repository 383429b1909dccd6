//! The facts of a request body: parsed once, validated, shared by every stage.

use std::sync::OnceLock;

use http::HeaderValue;
use serde_json::{Map, Value};

use super::Endpoint;
use crate::{body::RawObject, error::Error};

/// What a request body says, as far as the engine cares: read once from the bytes.
///
/// The body is split into its top-level fields as raw JSON (one pass over the bytes); the few
/// fields the engine routes on are read from those. Stages that need the whole tree (the cache's
/// key and strategy) get it from [`RequestFacts::json`], built once from the same fields.
#[derive(Debug)]
pub struct RequestFacts {
    /// The top-level fields, raw; `None` for a body that is not JSON (a multipart upload, an
    /// empty pass-through body).
    object: Option<RawObject>,
    /// `model`, when the body names one.
    model: Option<String>,
    /// `stream: true`.
    stream: bool,
    /// The body as a JSON tree, built on first use.
    json: OnceLock<Option<Value>>,
}

impl RequestFacts {
    /// Parses and validates a body: JSON object for the typed endpoints, with the fields each one
    /// requires (a 400 naming the field otherwise). Pass-through bodies are read if they are JSON
    /// and left alone if not.
    pub fn parse(
        endpoint: Endpoint,
        content_type: Option<&HeaderValue>,
        body: &[u8],
    ) -> Result<RequestFacts, Error> {
        let json_body =
            !body.is_empty() && content_type.is_none_or(|ct| ct.to_str().is_ok_and(|s| s.contains("json")));
        if json_body {
            // Before anything is parsed or forwarded, pass-through bodies included.
            crate::body::check_depth(body)?;
        }
        let object = match (endpoint, json_body) {
            (Endpoint::Passthrough, true) => RawObject::parse(body).ok(),
            (Endpoint::Passthrough, false) => None,
            (_, _) if body.is_empty() => {
                return Err(Error::InvalidRequest {
                    message: "The request body is empty; a JSON object is required.".to_owned(),
                    param: None,
                    code: Some("invalid_json"),
                });
            }
            (_, _) => Some(RawObject::parse(body)?),
        };
        let model = match &object {
            Some(obj) => obj.get_str("model")?,
            None => None,
        };
        let stream = match &object {
            Some(obj) => obj.get_bool("stream")?.unwrap_or(false),
            None => false,
        };
        match (endpoint, &object) {
            (Endpoint::ChatCompletions, Some(obj)) => {
                if model.is_none() {
                    return Err(Error::missing_param("model"));
                }
                if obj.get("messages").is_none_or(|m| m.get() == "null") {
                    return Err(Error::missing_param("messages"));
                }
                if !obj.is_non_empty_array("messages") {
                    return Err(Error::invalid_param(
                        "messages",
                        "'messages' must be a non-empty array of messages",
                        Some("invalid_type"),
                    ));
                }
            }
            (Endpoint::Embeddings, Some(obj)) => {
                if model.is_none() {
                    return Err(Error::missing_param("model"));
                }
                if obj.get("input").is_none_or(|m| m.get() == "null") {
                    return Err(Error::missing_param("input"));
                }
            }
            (Endpoint::ImageGenerations, Some(obj)) if obj.get_str("prompt")?.is_none() => {
                return Err(Error::missing_param("prompt"));
            }
            _ => {}
        }
        Ok(RequestFacts {
            object,
            model,
            stream,
            json: OnceLock::new(),
        })
    }

    /// The `model` the body names, if any (requests without one go to the default model group).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Whether the body asks for a stream (`stream: true`).
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// The top-level fields as raw JSON; `None` if the body is not a JSON object.
    pub(crate) fn object(&self) -> Option<&RawObject> {
        self.object.as_ref()
    }

    /// The body as a JSON tree, or `None` if it is not a JSON object. Built from the already split
    /// fields on first use, so the bytes are not scanned again.
    pub fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| {
                let object = self.object.as_ref()?;
                let mut map = Map::with_capacity(object.len());
                for (key, raw) in object.fields() {
                    map.insert(key.to_owned(), serde_json::from_str(raw.get()).ok()?);
                }
                Some(Value::Object(map))
            })
            .as_ref()
    }
}
