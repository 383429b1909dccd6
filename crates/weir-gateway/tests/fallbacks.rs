//! Fallback groups: tried in order once a group is exhausted, sharing one attempt budget; a prompt
//! too long for a group goes to its context-window fallbacks.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use weir_mock::server::MockServer;

/// Groups `a`, `b`, `c`, one deployment each on its own mock; `a_model` scripts `a`'s upstream.
fn three_groups(mocks: &[MockServer; 3], models: [&str; 3], a_extra: &str, retries: u32) -> String {
    let mut yaml = String::from("models:\n");
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: {name}\n{extra}    deployments:\n      - id: {name}-dep\n        provider: openai\n        base_url: {}\n        model: \"{}\"\n        retry: {{ max_retries: {retries} }}\n",
            mocks[i].base_url(),
            models[i],
            extra = if i == 0 { a_extra } else { "" },
        ));
    }
    yaml
}

async fn ask_a(gw: &Gateway) -> reqwest::Response {
    http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "a", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap()
}

async fn mocks() -> [MockServer; 3] {
    [
        MockServer::start().await.unwrap(),
        MockServer::start().await.unwrap(),
        MockServer::start().await.unwrap(),
    ]
}

#[tokio::test]
async fn a_group_that_is_down_falls_back_to_the_next() {
    let m = mocks().await;
    let yaml = three_groups(
        &m,
        ["mock:status=500", "gpt-4o-mini", "gpt-4o"],
        "    fallbacks: [b, c]\n",
        2,
    );
    let gw = Gateway::start(&yaml).await;
    let resp = ask_a(&gw).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-weir-deployment"], "b-dep");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["model"], "gpt-4o-mini",
        "the fallback group's upstream model was used"
    );
    let counts: Vec<u64> = m.iter().map(|m| m.state().request_count()).collect();
    assert_eq!(
        counts,
        [1, 1, 0],
        "a is exhausted after one try when a fallback exists"
    );
}

#[tokio::test]
async fn retries_and_fallbacks_share_one_attempt_budget() {
    let m = mocks().await;
    let all_down = ["mock:status=500", "mock:status=502", "mock:status=503"];
    // max_retries 2: three attempts in all, one per group.
    let gw = Gateway::start(&three_groups(&m, all_down, "    fallbacks: [b, c]\n", 2)).await;
    assert_eq!(ask_a(&gw).await.status(), 502);
    assert_eq!(m.iter().map(|m| m.state().request_count()).sum::<u64>(), 3);

    // max_retries 1: two attempts; `c` is never called.
    let m = mocks().await;
    let gw = Gateway::start(&three_groups(&m, all_down, "    fallbacks: [b, c]\n", 1)).await;
    assert_eq!(ask_a(&gw).await.status(), 502);
    let counts: Vec<u64> = m.iter().map(|m| m.state().request_count()).collect();
    assert_eq!(counts, [1, 1, 0]);
}

#[tokio::test]
async fn client_errors_do_not_fall_back() {
    let m = mocks().await;
    let gw = Gateway::start(&three_groups(
        &m,
        ["mock:status=400", "gpt-4o", "gpt-4o"],
        "    fallbacks: [b]\n",
        2,
    ))
    .await;
    assert_eq!(ask_a(&gw).await.status(), 400);
    assert_eq!(m[1].state().request_count(), 0);
}

#[tokio::test]
async fn a_prompt_too_long_goes_to_the_context_window_fallback() {
    let m = mocks().await;
    let a = "mock:status=400,error_code=context_length_exceeded";
    let extra = "    fallbacks: [b]\n    context_window_fallbacks: [c]\n";
    let gw = Gateway::start(&three_groups(&m, [a, "gpt-4o", "gpt-4.1-long"], extra, 2)).await;
    let resp = ask_a(&gw).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-weir-deployment"], "c-dep");
    let counts: Vec<u64> = m.iter().map(|m| m.state().request_count()).collect();
    assert_eq!(
        counts,
        [1, 0, 1],
        "the ordinary fallback is not used for context-window errors"
    );
}

#[tokio::test]
async fn three_keys_in_the_list_shorthand_route_round_robin() {
    let mock = MockServer::start().await.unwrap();
    let yaml = format!(
        "models:\n  - name: m\n    deployments:\n      - id: key\n        provider: openai\n        base_url: {}\n        api_keys: [k-one, k-two, k-three]\n",
        mock.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    let mut served = Vec::new();
    for _ in 0..6 {
        let resp = http()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        served.push(resp.headers()["x-weir-deployment"].to_str().unwrap().to_owned());
    }
    assert_eq!(served, ["key-1", "key-2", "key-3", "key-1", "key-2", "key-3"]);
    let keys: Vec<String> = mock
        .state()
        .recorded()
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys[..3], ["Bearer k-one", "Bearer k-two", "Bearer k-three"]);
}

#[tokio::test]
async fn an_unusable_sibling_does_not_keep_a_group_from_falling_back() {
    let (a1, a2, b) = (
        MockServer::start().await.unwrap(),
        MockServer::start().await.unwrap(),
        MockServer::start().await.unwrap(),
    );
    let yaml = format!(
        "models:\n  - name: a\n    fallbacks: [b]\n    deployments:\n      - id: a1\n        provider: openai\n        base_url: {}\n        model: \"mock:status=500\"\n      - id: a2\n        provider: openai\n        base_url: {}\n  - name: b\n    deployments:\n      - id: b-dep\n        provider: openai\n        base_url: {}\n",
        a1.base_url(),
        a2.base_url(),
        b.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    gw.state
        .engine()
        .deployment("a2")
        .unwrap()
        .breaker()
        .unwrap()
        .force_open();
    let resp = ask_a(&gw).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-weir-deployment"], "b-dep");
    assert_eq!(
        (
            a1.state().request_count(),
            a2.state().request_count(),
            b.state().request_count()
        ),
        (1, 0, 1)
    );
}
