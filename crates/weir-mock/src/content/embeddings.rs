//! `POST embeddings`: deterministic unit vectors derived from a hash of each input.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DEFAULT_DIMENSIONS, Reply, error, ok_json, word_count};

/// Ceiling for `dimensions`, well above OpenAI's largest model (3072) yet bounded.
const MAX_DIMENSIONS: u64 = 4096;

#[derive(Deserialize)]
struct EmbeddingRequest {
    model: Option<String>,
    input: Option<Value>,
    dimensions: Option<u64>,
    encoding_format: Option<String>,
}

#[derive(Serialize)]
struct EmbeddingResponse<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// One input item: text, or a list of token ids.
enum Item<'a> {
    Text(&'a str),
    Tokens(&'a [Value]),
}

pub(super) fn respond(body: &[u8]) -> Reply {
    let request: EmbeddingRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return error::from_serde(&err),
    };
    let Some(model) = request.model.as_deref() else {
        return error::missing("model");
    };
    let Some(input) = request.input.as_ref() else {
        return error::missing("input");
    };
    let items = match items(input) {
        Ok(items) => items,
        Err(reply) => return reply,
    };
    let dimensions = request.dimensions.unwrap_or(DEFAULT_DIMENSIONS as u64);
    if !(1..=MAX_DIMENSIONS).contains(&dimensions) {
        return error::invalid(
            &format!(
                "Invalid 'dimensions': expected a value between 1 and {MAX_DIMENSIONS}, got {dimensions}."
            ),
            Some("dimensions"),
            Some("integer_out_of_range"),
        );
    }
    let dimensions = usize::try_from(dimensions).unwrap_or(DEFAULT_DIMENSIONS);
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return error::invalid(
                &format!("Invalid 'encoding_format': expected 'float' or 'base64', got '{other}'."),
                Some("encoding_format"),
                None,
            );
        }
    };

    let mut prompt_tokens = 0;
    let data = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let (seed, tokens) = match item {
                Item::Text(text) => (fnv1a(0, text.as_bytes()), word_count(text)),
                Item::Tokens(tokens) => {
                    // A marker byte keeps the token form of an input from colliding with its text.
                    let seed = tokens.iter().fold(fnv1a(0, b"\x00tokens"), |h, t| {
                        fnv1a(h, &t.as_u64().unwrap_or(0).to_le_bytes())
                    });
                    (seed, tokens.len() as u64)
                }
            };
            prompt_tokens += tokens.max(1);
            let vector = unit_vector(seed, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Vector::Base64(base64_encode(&bytes))
            } else {
                Vector::Float(vector)
            };
            Embedding {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    ok_json(&EmbeddingResponse {
        object: "list",
        data,
        model,
        usage: Usage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

/// Accepts what OpenAI accepts: a string, an array of strings, an array of token ids, or an
/// array of token-id arrays.
fn items(input: &Value) -> Result<Vec<Item<'_>>, Reply> {
    let invalid = || {
        error::invalid(
            "Invalid 'input': expected a string, an array of strings, an array of integers, or an \
             array of integer arrays.",
            Some("input"),
            Some("invalid_type"),
        )
    };
    let is_token = |v: &Value| v.as_u64().is_some();
    match input {
        Value::String(text) => Ok(vec![Item::Text(text)]),
        Value::Array(list) if list.is_empty() => Err(error::invalid(
            "Invalid 'input': empty array. Expected an array with minimum length 1.",
            Some("input"),
            Some("empty_array"),
        )),
        Value::Array(list) if list.iter().all(Value::is_string) => {
            Ok(list.iter().filter_map(Value::as_str).map(Item::Text).collect())
        }
        Value::Array(list) if list.iter().all(is_token) => Ok(vec![Item::Tokens(list)]),
        Value::Array(list) => list
            .iter()
            .map(|v| match v.as_array() {
                Some(tokens) if !tokens.is_empty() && tokens.iter().all(is_token) => Ok(Item::Tokens(tokens)),
                _ => Err(invalid()),
            })
            .collect(),
        _ => Err(invalid()),
    }
}

/// FNV-1a: tiny and stable across processes and platforms (std's hasher is randomly seeded).
pub(super) fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET ^ seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// `dimensions` pseudo-random components from splitmix64, scaled to unit length.
pub(super) fn unit_vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    // 53 random bits mapped to [-1, 1).
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    let norm = if norm > 0.0 { norm } else { 1.0 };
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// Standard base64 with padding (RFC 4648), for `encoding_format: base64` embeddings; public so
/// the `weir` library's Gemini adapter encodes the same way without a dependency.
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group.first().copied().unwrap_or(0),
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // Each index is masked to 6 bits, so it is always within the 64-entry alphabet.
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if group.len() > 1 { sextet(6) } else { '=' });
        out.push(if group.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::respond as content_respond;
    use super::*;
    use serde_json::json;

    fn call(body: Value) -> (u16, Value) {
        let reply = content_respond("POST", "embeddings", body.to_string().as_bytes());
        (reply.status, serde_json::from_slice(&reply.to_bytes()).unwrap())
    }

    fn decode_f32_base64(s: &str) -> Vec<f32> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let mut bytes = Vec::new();
        for quad in s.as_bytes().chunks(4) {
            let n = quad
                .iter()
                .filter(|c| **c != b'=')
                .enumerate()
                .fold(0u32, |n, (i, c)| n | u32::from(value(*c)) << (18 - 6 * i));
            let keep = quad.iter().filter(|c| **c != b'=').count() - 1;
            bytes.extend_from_slice(&n.to_be_bytes()[1..1 + keep]);
        }
        bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    #[test]
    fn base64_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"M"), "TQ==");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"hello world"), "aGVsbG8gd29ybGQ=");
    }

    #[test]
    fn shape_and_determinism() {
        let (status, v) = call(json!({"model": "text-embedding-3-small", "input": "hello there"}));
        assert_eq!(status, 200);
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "text-embedding-3-small");
        assert_eq!(v["data"][0]["object"], "embedding");
        assert_eq!(v["data"][0]["index"], 0);
        let vector: Vec<f64> = v["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(vector.len(), DEFAULT_DIMENSIONS);
        let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(v["usage"], json!({"prompt_tokens": 2, "total_tokens": 2}));
        let (_, again) = call(json!({"model": "x", "input": ["hello there", "other"], "dimensions": 3}));
        assert_eq!(again["data"].as_array().unwrap().len(), 2);
        assert_eq!(again["data"][1]["index"], 1);
        assert_eq!(again["data"][0]["embedding"].as_array().unwrap().len(), 3);
        assert_ne!(again["data"][0]["embedding"], again["data"][1]["embedding"]);
        let (_, same) = call(json!({"model": "y", "input": "hello there"}));
        assert_eq!(same["data"][0]["embedding"], v["data"][0]["embedding"]);
    }

    #[test]
    fn token_inputs() {
        let (status, v) = call(json!({"model": "m", "input": [1, 2, 3]}));
        assert_eq!(status, 200);
        assert_eq!(v["data"].as_array().unwrap().len(), 1);
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        let (status, v) = call(json!({"model": "m", "input": [[1, 2], [3]]}));
        assert_eq!(status, 200);
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["usage"]["prompt_tokens"], 3);
    }

    #[test]
    fn base64_format_round_trips() {
        let (_, floats) = call(json!({"model": "m", "input": "abc", "dimensions": 4}));
        let (_, b64) =
            call(json!({"model": "m", "input": "abc", "dimensions": 4, "encoding_format": "base64"}));
        let decoded = decode_f32_base64(b64["data"][0]["embedding"].as_str().unwrap());
        let expected: Vec<f32> = floats["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn errors() {
        assert_eq!(call(json!({"input": "x"})).1["error"]["param"], "model");
        assert_eq!(call(json!({"model": "m"})).1["error"]["param"], "input");
        assert_eq!(call(json!({"model": "m", "input": []})).0, 400);
        assert_eq!(call(json!({"model": "m", "input": [1, "a"]})).0, 400);
        assert_eq!(call(json!({"model": "m", "input": 5})).0, 400);
        assert_eq!(call(json!({"model": "m", "input": "x", "dimensions": 0})).0, 400);
        assert_eq!(
            call(json!({"model": "m", "input": "x", "encoding_format": "hex"})).0,
            400
        );
    }
}
