//! `GET models` and `GET models/{id}`: a fixed catalogue.

use serde::Serialize;

use super::{Reply, error, ok_json};

/// The models the mock lists, in order.
pub const MODELS: &[&str] = &[
    "mock-model",
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "dall-e-3",
];

/// A fixed creation time, so listings are byte-for-byte stable (2023-11-14).
const CREATED: u64 = 1_700_000_000;

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

fn model(id: &str) -> Model<'_> {
    Model {
        id,
        object: "model",
        created: CREATED,
        owned_by: "weir-mock",
    }
}

pub(super) fn list() -> Reply {
    ok_json(&ModelList {
        object: "list",
        data: MODELS.iter().map(|id| model(id)).collect(),
    })
}

pub(super) fn retrieve(id: &str) -> Reply {
    if MODELS.contains(&id) {
        ok_json(&model(id))
    } else {
        error::error_reply(
            404,
            &format!("The model '{id}' does not exist or you do not have access to it."),
            Some("model"),
            Some("model_not_found"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::respond;
    use serde_json::{Value, json};

    fn call(path: &str) -> (u16, Value) {
        let reply = respond("GET", path, b"");
        (reply.status, serde_json::from_slice(&reply.to_bytes()).unwrap())
    }

    #[test]
    fn list_and_retrieve() {
        let (status, v) = call("models");
        assert_eq!(status, 200);
        assert_eq!(v["object"], "list");
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, super::MODELS);
        assert_eq!(v["data"][0]["owned_by"], "weir-mock");
        let (status, v) = call("models/gpt-4o");
        assert_eq!(status, 200);
        assert_eq!(
            v,
            json!({"id": "gpt-4o", "object": "model", "created": 1_700_000_000, "owned_by": "weir-mock"})
        );
        let (status, v) = call("models/nope");
        assert_eq!(status, 404);
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
}
