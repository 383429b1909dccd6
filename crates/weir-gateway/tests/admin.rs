//! The admin API end to end: its key, `/admin/stats`, breaker control, and config reload (by
//! endpoint and by SIGHUP on the real binary), with real sockets and the mock upstream.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{path::PathBuf, time::Duration};

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use weir_mock::server::MockServer;

const ADMIN_KEY: &str = "admin-secret-key-42";
const CLIENT_KEY: &str = "client-key-1";

/// A group `m` with deployments `a` and `b` on the mock (breakers open after 2 failures, no
/// retries), and `plain` whose deployment has no breaker.
fn two_deployments(mock: &MockServer, server: &str) -> String {
    format!(
        r#"
server:
{server}
logging:
  level: warn
models:
  - name: m
    deployments:
      - id: a
        provider: openai
        base_url: {base}
        retry: {{ max_retries: 0 }}
        circuit_breaker: {{ failure_threshold: 2, open_timeout: 60s }}
        rate_limits: {{ requests_per_minute: 1000 }}
      - id: b
        provider: openai
        base_url: {base}
        retry: {{ max_retries: 0 }}
        circuit_breaker: {{ failure_threshold: 2, open_timeout: 60s }}
  - name: plain
    deployments:
      - id: no-breaker
        provider: openai
        base_url: {base}
        circuit_breaker: {{ enabled: false }}
"#,
        base = mock.base_url()
    )
}

fn admin_server() -> String {
    format!("  api_keys: [{CLIENT_KEY}]\n  admin_key: {ADMIN_KEY}")
}

async fn admin_get(gw_url: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = http().get(gw_url);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

async fn admin_post(url: &str) -> reqwest::Response {
    http().post(url).bearer_auth(ADMIN_KEY).send().await.unwrap()
}

async fn chat_to(base: &str, model: &str, extra: Value) -> reqwest::Response {
    let mut body = chat_body(extra);
    body["model"] = json!(model);
    http()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn deployment<'a>(stats: &'a Value, id: &str) -> &'a Value {
    stats["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deployment"] == id)
        .unwrap_or_else(|| panic!("no deployment {id} in {stats}"))
}

async fn stats_of(base: &str) -> Value {
    let resp = admin_get(&format!("{base}/admin/stats"), Some(ADMIN_KEY)).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// A config file in a directory of its own; removed with the directory by the caller.
fn temp_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-admin-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("weir.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn remove_config(path: &std::path::Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test]
async fn only_the_admin_key_opens_the_admin_api() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&two_deployments(&mock, &admin_server())).await;
    let url = gw.url("/admin/stats");
    for (key, why) in [
        (None, "no key"),
        (Some("wrong-key"), "wrong key"),
        (Some(CLIENT_KEY), "a gateway client key"),
        (Some("admin-secret-key-4"), "a prefix of the admin key"),
    ] {
        let resp = admin_get(&url, key).await;
        assert_eq!(resp.status(), 401, "{why}");
        let err = error_of(resp).await;
        assert_eq!(err["code"], "invalid_api_key", "{why}");
        let message = err["message"].as_str().unwrap();
        assert!(
            !message.contains(ADMIN_KEY) && !message.contains("wrong-key"),
            "{message}"
        );
    }
    // The other admin routes are guarded too.
    for path in ["/admin/reload", "/admin/deployments/a/open"] {
        let resp = http()
            .post(gw.url(path))
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
    }
    assert_eq!(
        gw.state.engine().deployment("a").unwrap().status().breaker,
        "closed",
        "a refused call changes nothing"
    );
    assert_eq!(admin_get(&url, Some(ADMIN_KEY)).await.status(), 200);
    // And the admin key is no gateway key.
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(ADMIN_KEY)
        .json(&chat_body(json!({"model": "m"})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn without_an_admin_key_the_admin_api_does_not_exist() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&two_deployments(&mock, &format!("  api_keys: [{CLIENT_KEY}]"))).await;
    for (method, path) in [
        (reqwest::Method::GET, "/admin/stats"),
        (reqwest::Method::POST, "/admin/reload"),
        (reqwest::Method::POST, "/admin/deployments/a/open"),
    ] {
        let resp = http()
            .request(method, gw.url(path))
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let err = error_of(resp).await;
        assert_eq!(err["code"], "not_found");
    }
}

#[test]
fn an_admin_key_equal_to_a_client_key_is_refused() {
    let yaml = "server:\n  api_keys: [same]\n  admin_key: same\nmodels: []\n";
    let err = weir::Config::from_yaml(yaml, Some("x.yaml")).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("server.admin_key"));
    assert_eq!(err.line, Some(3));
    let empty = weir::Config::from_yaml("server:\n  admin_key: ''\nmodels: []\n", None).unwrap_err();
    assert_eq!(empty.field.as_deref(), Some("server.admin_key"));
}

#[tokio::test]
async fn stats_report_each_deployment_after_traffic() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&two_deployments(&mock, &admin_server())).await;
    let base = gw.url("");
    // Round robin over a and b: 3 successes each, then two failures on each open both breakers.
    for _ in 0..6 {
        assert_eq!(chat_to(&base, "m", json!({})).await.status(), 200);
    }
    assert_eq!(chat_to(&base, "plain", json!({})).await.status(), 200);
    let stats = stats_of(&base).await;
    assert_eq!(stats["config"]["generation"], 1);
    assert_eq!(stats["config"]["models"], json!(["m", "plain"]));
    // The cache (off in this config) and the usage ledger by model and client key.
    assert!(stats["cache"].is_object(), "{stats}");
    assert_eq!(stats["usage"]["by_model"]["m"]["requests"], 6, "{stats}");
    assert_eq!(stats["usage"]["by_client"]["key-0"]["requests"], 7);
    assert!(
        stats["usage"]["by_model"]["plain"]["output_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    let a = deployment(&stats, "a");
    assert_eq!(a["model_group"], "m");
    assert_eq!(a["breaker"], "closed");
    assert_eq!(a["in_flight"], 0);
    assert_eq!(a["cooldown_remaining_ms"], Value::Null);
    assert_eq!(a["latency"]["samples"], 3, "{a}");
    let p50 = a["latency"]["p50_ms"].as_f64().unwrap();
    let p99 = a["latency"]["p99_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p99 >= p50, "{a}");
    let rpm = &a["rate_limits"]["requests_per_minute"];
    assert_eq!(rpm["limit"], 1000);
    assert_eq!(rpm["used"], 3, "{a}");
    assert_eq!(rpm["remaining"], 997);
    // Pools are shared process-wide by equal settings (other tests use this one too), so only
    // its size is certain here; `a_stream_in_flight_counts_in_the_stats` checks its use.
    assert_eq!(a["pool"]["max_connections"], 100);
    assert_eq!(a["breaker_detail"]["failure_threshold"], 2);
    assert_eq!(a["breaker_detail"]["rejected"], 0);
    assert_eq!(deployment(&stats, "b")["rate_limits"], Value::Null);
    let plain = deployment(&stats, "no-breaker");
    assert_eq!(plain["breaker"], "off");
    assert_eq!(plain["breaker_detail"], Value::Null);
    assert_eq!(plain["latency"]["samples"], 1);

    // Two failures on each deployment open both breakers, which the stats show.
    for _ in 0..4 {
        chat_to(&base, "m", json!({"x_mock": {"status": 500}})).await;
    }
    let stats = stats_of(&base).await;
    assert_eq!(stats["usage"]["by_model"]["m"]["errors"], 4);
    for id in ["a", "b"] {
        let d = deployment(&stats, id);
        assert_eq!(d["breaker"], "open", "{d}");
        assert!(
            d["breaker_detail"]["open_remaining_ms"].as_u64().unwrap() > 0,
            "{d}"
        );
        assert_eq!(d["breaker_detail"]["times_opened"], 1);
        // Failures are not latency samples.
        assert_eq!(d["latency"]["samples"], 3);
    }
}

#[tokio::test]
async fn a_stream_in_flight_counts_in_the_stats() {
    let mock = MockServer::start().await.unwrap();
    // A pool size of its own, so that no other test shares its pool.
    let yaml = two_deployments(&mock, &admin_server()).replace(
        "        circuit_breaker: { enabled: false }",
        "        circuit_breaker: { enabled: false }\n        pool: { max_connections: 4177 }",
    );
    let gw = Gateway::start(&yaml).await;
    let base = gw.url("");
    let resp = chat_to(
        &base,
        "plain",
        json!({"stream": true, "x_mock": {"chunks": 4, "chunk_delay_ms": 200}}),
    )
    .await;
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    let d = deployment(&stats_of(&base).await, "no-breaker").clone();
    assert_eq!(d["pool"]["max_connections"], 4177, "{d}");
    assert_eq!(d["in_flight"], 1, "{d}");
    assert_eq!(d["pool"]["in_flight"], 1, "{d}");
    while body.next().await.is_some() {}
    let d = deployment(&stats_of(&base).await, "no-breaker").clone();
    assert_eq!(d["in_flight"], 0, "{d}");
    assert_eq!(d["pool"]["in_flight"], 0, "{d}");
}

#[tokio::test]
async fn forcing_a_breaker_open_moves_traffic_then_close_and_reset_bring_it_back() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&two_deployments(&mock, &admin_server())).await;
    let base = gw.url("");

    let resp = admin_post(&gw.url("/admin/deployments/a/open")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"deployment": "a", "action": "open", "breaker": "forced_open"})
    );
    // Every request now goes to b, without touching a.
    for _ in 0..4 {
        let resp = chat_to(&base, "m", json!({})).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-weir-deployment"], "b");
    }
    // With b forced open too, requests fail fast with 503 and never reach the upstream.
    admin_post(&gw.url("/admin/deployments/b/open")).await;
    let before = mock.state().request_count();
    let resp = chat_to(&base, "m", json!({})).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(error_of(resp).await["code"], "no_available_deployment");
    assert_eq!(mock.state().request_count(), before);

    // Forced closed: failures no longer open it.
    let resp = admin_post(&gw.url("/admin/deployments/a/close")).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["breaker"], "forced_closed");
    for _ in 0..3 {
        let resp = chat_to(&base, "m", json!({"x_mock": {"status": 500}})).await;
        assert_eq!(resp.status(), 502);
    }
    let stats = stats_of(&base).await;
    assert_eq!(deployment(&stats, "a")["breaker"], "forced_closed");

    // Reset: back to normal, closed, and counting again (two failures open it).
    let resp = admin_post(&gw.url("/admin/deployments/a/reset")).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["breaker"], "closed");
    for _ in 0..2 {
        chat_to(&base, "m", json!({"x_mock": {"status": 500}})).await;
    }
    assert_eq!(deployment(&stats_of(&base).await, "a")["breaker"], "open");
}

#[tokio::test]
async fn breaker_control_errors_are_clear() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&two_deployments(&mock, &admin_server())).await;
    let resp = admin_post(&gw.url("/admin/deployments/nope/open")).await;
    assert_eq!(resp.status(), 404);
    let err = error_of(resp).await;
    assert!(err["message"].as_str().unwrap().contains("`nope`"), "{err}");

    let resp = admin_post(&gw.url("/admin/deployments/no-breaker/open")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_of(resp).await["code"], "circuit_breaker_disabled");

    let resp = admin_post(&gw.url("/admin/deployments/a/explode")).await;
    assert_eq!(resp.status(), 404);
    error_of(resp).await;
}

/// Config with a group `stable` (deployment `s`) and a group named `group` (deployment `r`).
fn reload_config(mock: &MockServer, group: &str, port: u16) -> String {
    format!(
        r#"
server:
  port: {port}
  api_keys: [{CLIENT_KEY}]
  admin_key: {ADMIN_KEY}
logging:
  level: warn
models:
  - name: stable
    deployments:
      - id: s
        provider: openai
        base_url: {base}
  - name: {group}
    deployments:
      - id: r
        provider: openai
        base_url: {base}
"#,
        base = mock.base_url()
    )
}

#[tokio::test]
async fn reload_swaps_routing_while_a_running_stream_finishes_on_the_old_config() {
    let mock = MockServer::start().await.unwrap();
    let path = temp_config("swap", &reload_config(&mock, "old-name", 8080));
    let gw = Gateway::start_file(&path).await;
    let base = gw.url("");
    let stream = chat_to(
        &base,
        "old-name",
        json!({"stream": true, "x_mock": {"chunks": 6, "chunk_delay_ms": 100}}),
    )
    .await;
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    let mut text = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    // State that must survive: the unchanged deployment's breaker, forced open by hand.
    admin_post(&gw.url("/admin/deployments/s/open")).await;

    std::fs::write(&path, reload_config(&mock, "new-name", 9999)).unwrap();
    let resp = admin_post(&gw.url("/admin/reload")).await;
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["generation"], 2);
    assert_eq!(report["models"], json!(["stable", "new-name"]));
    assert_eq!(report["deployments"]["kept"], json!(["s"]));
    assert_eq!(report["deployments"]["changed"], json!(["r"]));
    let restart = &report["restart_required"];
    assert_eq!(restart[0]["setting"], "server.port", "{report}");
    assert_eq!(restart[0]["configured"], "9999");

    // New requests see the new config...
    assert_eq!(chat_to(&base, "new-name", json!({})).await.status(), 200);
    let resp = chat_to(&base, "old-name", json!({})).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(error_of(resp).await["code"], "model_not_found");
    // ...the kept deployment kept its state, usage kept counting...
    let stats = stats_of(&base).await;
    assert_eq!(stats["config"]["generation"], 2);
    // (The stream; the 404 for an unknown model is no usage of any model.)
    assert_eq!(stats["usage"]["by_model"]["old-name"]["requests"], 1, "{stats}");
    assert_eq!(stats["usage"]["by_model"]["new-name"]["requests"], 1, "{stats}");
    assert_eq!(deployment(&stats, "s")["breaker"], "forced_open");
    assert_eq!(chat_to(&base, "stable", json!({})).await.status(), 503);
    // ...and the stream started before the reload ends whole.
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // Whole: as many chunks as the same stream started now.
    let after = chat_to(
        &base,
        "new-name",
        json!({"stream": true, "x_mock": {"chunks": 6, "chunk_delay_ms": 1}}),
    )
    .await
    .text()
    .await
    .unwrap();
    let chunks = |t: &str| t.matches("chat.completion.chunk").count();
    assert!(chunks(&after) >= 6, "{after}");
    assert_eq!(chunks(&text), chunks(&after), "{text}");
    remove_config(&path);
}

#[tokio::test]
async fn a_broken_config_file_leaves_the_running_config_serving() {
    let mock = MockServer::start().await.unwrap();
    let path = temp_config("broken", &reload_config(&mock, "one", 8080));
    let gw = Gateway::start_file(&path).await;
    let base = gw.url("");
    // Line 9 holds a misspelt field.
    let broken = reload_config(&mock, "two", 8080).replace("  - name: stable", "  - nmae: stable");
    assert!(broken.lines().nth(8).unwrap().contains("nmae"), "{broken}");
    std::fs::write(&path, broken).unwrap();
    let resp = admin_post(&gw.url("/admin/reload")).await;
    assert_eq!(resp.status(), 500);
    let err = error_of(resp).await;
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("weir.yaml:9"), "names file and line: {message}");
    assert!(message.contains("nmae"), "names the field: {message}");
    assert!(message.contains("not reloaded"), "{message}");
    // The parser's snippet of the file (whose neighbouring lines hold keys) is left out.
    assert!(
        !message.contains(ADMIN_KEY) && !message.contains(CLIENT_KEY),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");

    assert_eq!(chat_to(&base, "one", json!({})).await.status(), 200);
    assert_eq!(chat_to(&base, "two", json!({})).await.status(), 404);
    assert_eq!(stats_of(&base).await["config"]["generation"], 1);

    // A file that parses but can't be served (a fallback to a missing group) is refused too.
    let bad = reload_config(&mock, "two", 8080).replace(
        "  - name: stable\n",
        "  - name: stable\n    fallbacks: [missing]\n",
    );
    std::fs::write(&path, bad).unwrap();
    let resp = admin_post(&gw.url("/admin/reload")).await;
    assert_eq!(resp.status(), 500);
    assert!(
        error_of(resp).await["message"]
            .as_str()
            .unwrap()
            .contains("fallbacks")
    );
    assert_eq!(chat_to(&base, "one", json!({})).await.status(), 200);
    remove_config(&path);
}

#[tokio::test]
async fn without_a_config_file_there_is_nothing_to_reload() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&two_deployments(&mock, &admin_server())).await;
    let resp = admin_post(&gw.url("/admin/reload")).await;
    assert_eq!(resp.status(), 400);
    let err = error_of(resp).await;
    assert_eq!(err["code"], "nothing_to_reload");
    assert!(err["message"].as_str().unwrap().contains("--config"), "{err}");
}

#[tokio::test]
async fn reloading_rotates_the_admin_and_client_keys() {
    let mock = MockServer::start().await.unwrap();
    let path = temp_config("keys", &reload_config(&mock, "one", 8080));
    let gw = Gateway::start_file(&path).await;
    let rotated = reload_config(&mock, "one", 8080)
        .replace(ADMIN_KEY, "new-admin-key")
        .replace(CLIENT_KEY, "new-client-key");
    std::fs::write(&path, rotated).unwrap();
    assert_eq!(admin_post(&gw.url("/admin/reload")).await.status(), 200);
    assert_eq!(
        admin_get(&gw.url("/admin/stats"), Some(ADMIN_KEY)).await.status(),
        401
    );
    assert_eq!(
        admin_get(&gw.url("/admin/stats"), Some("new-admin-key"))
            .await
            .status(),
        200
    );
    assert_eq!(chat_to(&gw.url(""), "one", json!({})).await.status(), 401);
    remove_config(&path);
}

#[tokio::test]
async fn sighup_reloads_the_binary_and_the_env_admin_key_wins() {
    let mock = MockServer::start().await.unwrap();
    let path = temp_config("sighup", &reload_config(&mock, "one", 8080));
    let (mut child, base) = spawn_weir_with(
        &path,
        &["--port", "0"],
        &[("WEIR_ADMIN_KEY", "env-admin-key")],
        false,
    )
    .await;
    // WEIR_ADMIN_KEY overrides server.admin_key.
    assert_eq!(
        admin_get(&format!("{base}/admin/stats"), Some(ADMIN_KEY))
            .await
            .status(),
        401
    );
    let stats = |key: &'static str| {
        let url = format!("{base}/admin/stats");
        async move {
            let resp = admin_get(&url, Some(key)).await;
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(stats("env-admin-key").await["config"]["generation"], 1);
    assert_eq!(chat_to(&base, "one", json!({})).await.status(), 200);

    std::fs::write(&path, reload_config(&mock, "two", 8080)).unwrap();
    let pid = child.id().unwrap().to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    // The reload runs in the background: wait for the generation to move (bounded, not timed).
    let mut generation = 1;
    for _ in 0..200 {
        generation = stats("env-admin-key").await["config"]["generation"]
            .as_u64()
            .unwrap();
        if generation == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(generation, 2, "SIGHUP did not reload");
    assert_eq!(chat_to(&base, "two", json!({})).await.status(), 200);
    assert_eq!(chat_to(&base, "one", json!({})).await.status(), 404);
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the gateway"
    );
    child.kill().await.unwrap();
    remove_config(&path);
}
