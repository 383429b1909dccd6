//! Faults the chaos suite found, pinned: a 200 whose JSON body was cut short (a clean end, a
//! matching Content-Length) or is garbage must not reach the client as a 200.

// Test helpers: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Gateway, chat_body, config_for, error_of, http};
use weir_mock::server::{ChaosConfig, MockConfig, MockServer};

async fn faulty(mix: &str) -> MockServer {
    let chaos = ChaosConfig {
        mix: mix.parse().unwrap(),
        derive_content: true,
        ..ChaosConfig::default()
    };
    MockServer::start_chaos(MockConfig::default(), chaos)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_truncated_or_malformed_json_answer_is_a_shaped_502_not_a_200() {
    for mix in ["truncate=1", "malformed=1"] {
        let mock = faulty(mix).await;
        let gw = Gateway::start(&config_for(&mock, "", "")).await;
        let resp = http()
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body(serde_json::json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502, "{mix}");
        let err = error_of(resp).await;
        assert!(
            err["message"].as_str().unwrap().contains("not valid JSON"),
            "{mix}: {err}"
        );
        assert_eq!(mock.state().calls_for_prompt("Hello"), 1, "{mix}: not retried");
    }
}

#[tokio::test]
async fn a_whole_answer_still_passes() {
    let mock = faulty("").await;
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(serde_json::json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        weir_mock::content::derived_content("Hello")
    );
}
