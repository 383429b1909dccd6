//! `POST images/generations`: placeholder URLs or a tiny valid PNG.

use serde::{Deserialize, Serialize};

use super::{Reply, error, ok_json, unix_now};

/// A valid 1x1 PNG (grey + alpha), base64-encoded: small enough to inline, real enough to decode.
pub const PNG_1X1_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

/// OpenAI's ceiling for `n` on image generation.
const MAX_N: u64 = 10;

#[derive(Deserialize)]
struct ImageRequest {
    prompt: Option<String>,
    n: Option<u64>,
    response_format: Option<String>,
}

#[derive(Serialize)]
struct ImagesResponse {
    created: u64,
    data: Vec<Image>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Image {
    Url { url: String },
    B64 { b64_json: &'static str },
}

pub(super) fn respond(body: &[u8]) -> Reply {
    let request: ImageRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return error::from_serde(&err),
    };
    match request.prompt.as_deref() {
        None => return error::missing("prompt"),
        Some(prompt) if prompt.trim().is_empty() => {
            return error::invalid(
                "Invalid 'prompt': empty string.",
                Some("prompt"),
                Some("empty_string"),
            );
        }
        Some(_) => {}
    }
    let n = request.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return error::invalid(
            &format!("Invalid 'n': expected a value between 1 and {MAX_N}, got {n}."),
            Some("n"),
            Some("integer_out_of_range"),
        );
    }
    let b64 = match request.response_format.as_deref() {
        None | Some("url") => false,
        Some("b64_json") => true,
        Some(other) => {
            return error::invalid(
                &format!("Invalid 'response_format': expected 'url' or 'b64_json', got '{other}'."),
                Some("response_format"),
                None,
            );
        }
    };
    let data = (0..n)
        .map(|i| {
            if b64 {
                Image::B64 {
                    b64_json: PNG_1X1_BASE64,
                }
            } else {
                Image::Url {
                    url: format!("https://mock.invalid/image/{i}.png"),
                }
            }
        })
        .collect();
    ok_json(&ImagesResponse {
        created: unix_now(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::super::respond as content_respond;
    use serde_json::{Value, json};

    fn call(body: Value) -> (u16, Value) {
        let reply = content_respond("POST", "images/generations", body.to_string().as_bytes());
        (reply.status, serde_json::from_slice(&reply.to_bytes()).unwrap())
    }

    #[test]
    fn urls_by_default() {
        let (status, v) = call(json!({"prompt": "a cat", "n": 2}));
        assert_eq!(status, 200);
        assert!(v["created"].as_u64().is_some());
        assert_eq!(
            v["data"],
            json!([
                {"url": "https://mock.invalid/image/0.png"},
                {"url": "https://mock.invalid/image/1.png"},
            ])
        );
    }

    #[test]
    fn b64_json() {
        let (_, v) = call(json!({"prompt": "a cat", "response_format": "b64_json", "model": "dall-e-3"}));
        assert_eq!(v["data"][0]["b64_json"], super::PNG_1X1_BASE64);
        assert!(v["data"][0].get("url").is_none());
    }

    #[test]
    fn errors() {
        assert_eq!(call(json!({})).1["error"]["param"], "prompt");
        assert_eq!(call(json!({"prompt": " "})).0, 400);
        assert_eq!(call(json!({"prompt": "x", "n": 11})).1["error"]["param"], "n");
        assert_eq!(call(json!({"prompt": "x", "response_format": "png"})).0, 400);
    }
}
