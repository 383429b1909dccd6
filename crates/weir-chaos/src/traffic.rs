//! The traffic: which request each index sends, the gateway config it runs against, and one
//! request sent and judged.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::json;

use crate::classify::{self, Face, Outcome, Verdict};

/// The model groups of the chaos gateway, one per provider kind the mock speaks.
pub const MODELS: [&str; 3] = ["chaos-openai", "chaos-anthropic", "chaos-gemini"];

/// One request of the mix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shot {
    /// Index in the run.
    pub index: u64,
    /// The face it is sent on.
    pub face: Face,
    /// Its model group (see [`MODELS`]).
    pub model: &'static str,
    /// Streamed or unary.
    pub stream: bool,
    /// A prompt unique in the run, so its answer and its call count are its own.
    pub prompt: String,
}

impl Shot {
    /// The `index`-th request of a run seeded with `seed`: face, model and streaming drawn
    /// from an RNG of the pair, so a run is the same whatever the concurrency.
    pub fn pick(seed: u64, index: u64) -> Shot {
        let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index);
        let face = if rng.bool() { Face::Chat } else { Face::Messages };
        let model = MODELS[rng.usize(..MODELS.len())];
        Shot {
            index,
            face,
            model,
            stream: rng.bool(),
            prompt: format!("chaos prompt {seed}/{index}/{:08x}", rng.u32(..)),
        }
    }

    /// The request body.
    pub fn body(&self) -> serde_json::Value {
        let messages = json!([{"role": "user", "content": self.prompt}]);
        match self.face {
            Face::Chat => json!({"model": self.model, "messages": messages, "stream": self.stream}),
            Face::Messages => json!({
                "model": self.model, "max_tokens": 256, "messages": messages, "stream": self.stream,
            }),
        }
    }
}

/// The gateway config of a chaos run: the three [`MODELS`] on the mock at `mock`, retries fast
/// (3 attempts), a short read timeout so stalls end, and `deployment_extra` under each
/// deployment (indented by 8 spaces).
pub fn gateway_yaml(mock: SocketAddr, read_timeout: Duration, deployment_extra: &str) -> String {
    let read = format!("{}ms", read_timeout.as_millis().max(1));
    let deployment = |id: &str, provider: &str, base: String| {
        format!(
            "    deployments:\n      - id: {id}\n        provider: {provider}\n        base_url: {base}\n        api_key: chaos-upstream-key\n{deployment_extra}\n"
        )
    };
    format!(
        "logging:\n  level: error\n\
         resilience:\n  request_deadline: 20s\n  retry_budget: {{ ratio: 1.0, min_per_second: 1000 }}\n\
         upstream_defaults:\n  timeouts: {{ connect: 2s, read: {read}, total: 10s }}\n  \
         retry: {{ max_retries: 2, base_delay: 5ms, max_delay: 20ms, max_retry_after: 1s }}\n\
         models:\n  - name: {}\n{}  - name: {}\n{}  - name: {}\n{}",
        MODELS[0],
        deployment("mock-openai", "openai", format!("http://{mock}/v1")),
        MODELS[1],
        deployment("mock-anthropic", "anthropic", format!("http://{mock}")),
        MODELS[2],
        deployment("mock-gemini", "gemini", format!("http://{mock}")),
    )
}

/// Sends `shot` to the gateway at `base` (`http://host:port`) and judges the answer. A
/// client-side timeout (the client's configured bound) is a [`Outcome::Hang`].
pub async fn send(client: &reqwest::Client, base: &str, shot: &Shot) -> Verdict {
    let expected = weir_mock::content::derived_content(&shot.prompt);
    let mut request = client
        .post(format!("{base}{}", shot.face.path()))
        .json(&shot.body());
    if shot.face == Face::Messages {
        request = request.header("anthropic-version", "2023-06-01");
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => return transport(&err),
    };
    let status = response.status().as_u16();
    let is_stream = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut body = Vec::new();
    let mut broken = None;
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => body.extend_from_slice(&bytes),
            Err(err) => {
                broken = Some(err);
                break;
            }
        }
    }
    if let Some(err) = broken.as_ref().filter(|err| err.is_timeout()) {
        return Verdict {
            outcome: Outcome::Hang,
            detail: Some(format!("body not finished: {err}")),
        };
    }
    match status {
        200 if is_stream => classify::stream(shot.face, &body, broken.is_some(), &expected),
        200 if broken.is_some() => Verdict {
            outcome: Outcome::TransportError,
            detail: Some("200 body cut".to_owned()),
        },
        200 => classify::unary(shot.face, &body, &expected),
        _ if broken.is_some() => Verdict {
            outcome: Outcome::TransportError,
            detail: Some(format!("{status} body cut")),
        },
        _ => classify::error_status(shot.face, status, &body),
    }
}

fn transport(err: &reqwest::Error) -> Verdict {
    let outcome = if err.is_timeout() {
        Outcome::Hang
    } else {
        Outcome::TransportError
    };
    Verdict {
        outcome,
        detail: Some(format!("{err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shots_are_reproducible_and_mixed() {
        assert_eq!(Shot::pick(3, 10), Shot::pick(3, 10));
        assert_ne!(Shot::pick(3, 10).prompt, Shot::pick(3, 11).prompt);
        let shots: Vec<Shot> = (0..200).map(|i| Shot::pick(1, i)).collect();
        for face in [Face::Chat, Face::Messages] {
            for model in MODELS {
                for stream in [false, true] {
                    assert!(
                        shots
                            .iter()
                            .any(|s| s.face == face && s.model == model && s.stream == stream),
                        "{face:?} {model} {stream} never drawn"
                    );
                }
            }
        }
    }

    #[test]
    fn the_config_loads() {
        let yaml = gateway_yaml("127.0.0.1:9".parse().unwrap(), Duration::from_millis(500), "");
        let config = weir::Config::from_yaml(&yaml, Some("chaos.yaml"));
        assert!(config.is_ok(), "{yaml}\n{config:?}");
    }
}
