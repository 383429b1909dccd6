//! Adaptive concurrency through the real gateway: a mock whose latency rises with load, a burst
//! far above the deployment's limit, and the calls over it shed at once with a shaped 503
//! (Retry-After) instead of queueing at the upstream.

mod common;

use common::{Gateway, chat_body, config_for, error_of, http};
use weir_mock::server::{ChaosConfig, MockConfig, MockServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_limit_is_shed_with_a_shaped_503() {
    let chaos = ChaosConfig {
        load_latency: Some("50+20".parse().unwrap()),
        ..ChaosConfig::default()
    };
    let mock = MockServer::start_chaos(MockConfig::default(), chaos)
        .await
        .unwrap();
    let extra =
        "        adaptive_concurrency: { initial_limit: 4, max_limit: 4 }\n        retry: { max_retries: 0 }";
    let gw = Gateway::start(&config_for(&mock, extra, "")).await;
    let client = http();
    let mut calls = Vec::new();
    for _ in 0..32 {
        let request = client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body(serde_json::json!({})))
            .send();
        calls.push(tokio::spawn(request));
    }
    let (mut ok, mut shed) = (0, 0);
    for call in calls {
        let resp = call.await.unwrap().unwrap();
        match resp.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert!(resp.headers().contains_key("retry-after"));
                let err = error_of(resp).await;
                let message = err["message"].as_str().unwrap();
                assert!(message.contains("adaptive concurrency limit of 4"), "{message}");
                shed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 4, "{ok} served");
    assert!(shed > 0, "nothing shed out of 32 with a limit of 4");
    // Shed calls never reached the upstream.
    assert_eq!(mock.state().count_for_path("/v1/chat/completions"), ok);
    // Every slot was given back when its answer was complete: a new request is served.
    let resp = client
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(serde_json::json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
