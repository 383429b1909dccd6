//! Logs of a real `weir serve` run: one line per request carrying its id, in JSON when asked,
//! and never a key or a prompt, even at debug level.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::AsyncReadExt;
use weir_mock::server::MockServer;

#[tokio::test]
async fn json_logs_carry_request_ids_and_no_secrets() {
    let mock = MockServer::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("weir-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    let yaml = config_for(&mock, "", "server:\n  api_keys: [gw-secret-key-123]")
        .replace("level: warn", "level: debug");
    std::fs::write(&config, yaml).unwrap();

    let (mut child, base) = spawn_weir(&config, &["--log-format", "json"], true).await;
    let mut stderr = child.stderr.take().unwrap();

    let prompt = "my-very-private-prompt-text";
    let c = http();
    let ok = c
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("gw-secret-key-123")
        .header("x-request-id", "log-test-1")
        .json(&json!({"model": "mock-model", "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let rejected = c
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("wrong-secret-key-456")
        .json(&json!({"model": "mock-model", "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 401);
    let upstream_fail = c
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("gw-secret-key-123")
        .header("x-request-id", "log-test-2")
        .json(&json!({"model": "mock-model", "messages": [{"role": "user", "content": prompt}], "x_mock": {"status": 401}}))
        .send()
        .await
        .unwrap();
    assert_eq!(upstream_fail.status(), 500);

    let cut = c
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("gw-secret-key-123")
        .header("x-request-id", "log-test-3")
        .json(
            &json!({"model": "mock-model", "messages": [{"role": "user", "content": prompt}],
                      "stream": true, "x_mock": {"drop_after_chunks": 2}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(cut.status(), 200);
    let _ = cut.text().await;

    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut logs = String::new();
    stderr.read_to_string(&mut logs).await.unwrap();

    for secret in [
        "gw-secret-key-123",
        "wrong-secret-key-456",
        "upstream-secret-key",
        prompt,
    ] {
        assert!(!logs.contains(secret), "`{secret}` leaked into the logs:\n{logs}");
    }
    let entries: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let served: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["message"] == "request served" && e["span"]["request_id"] == "log-test-1")
        .collect();
    assert_eq!(
        served.len(),
        1,
        "exactly one end-of-request line per request: {logs}"
    );
    assert_eq!(served[0]["status"], 200);
    let failed = entries
        .iter()
        .find(|e| e["message"] == "request failed")
        .expect("a line for the failed request");
    assert_eq!(failed["span"]["request_id"], "log-test-2");
    assert_eq!(failed["error"], "upstream_auth");
    // The upstream-level warning is inside the request span too.
    assert!(
        entries
            .iter()
            .any(|e| e["message"] == "upstream answered with an error"
                && e["span"]["request_id"] == "log-test-2"),
        "{logs}"
    );
    // Lines logged while the body streams (after the handler returned) keep the request's id.
    let midway = entries
        .iter()
        .find(|e| e["message"] == "stream failed after it started")
        .unwrap_or_else(|| panic!("no line for the cut stream:\n{logs}"));
    assert_eq!(midway["span"]["request_id"], "log-test-3", "{logs}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `weir serve` (JSON logs at info) with `logging_extra` under `logging:`, sends one served
/// request, one refused as invalid and one whose body is a bare JSON string (the parse error
/// quotes it), and returns the log lines.
async fn logs_of(logging_extra: &str) -> (Vec<serde_json::Value>, String) {
    let mock = MockServer::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("weir-logs-{}-{}", std::process::id(), fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    let yaml = config_for(&mock, "", "server:\n  api_keys: [gw-secret-key-123]").replace(
        "  level: warn",
        &format!("  level: info\n  format: json\n{logging_extra}"),
    );
    std::fs::write(&config, yaml).unwrap();
    let (mut child, base) = spawn_weir(&config, &[], true).await;
    let mut stderr = child.stderr.take().unwrap();
    let c = http();
    let send = |body: String| {
        c.post(format!("{base}/v1/chat/completions"))
            .bearer_auth("gw-secret-key-123")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let ok =
        send(json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}).to_string());
    assert_eq!(ok.await.unwrap().status(), 200);
    let invalid = send(json!({"model": "mock-model"}).to_string());
    assert_eq!(invalid.await.unwrap().status(), 400);
    let quoted = send("\"my-very-private-prompt-text\"".to_owned());
    assert_eq!(quoted.await.unwrap().status(), 400);
    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut logs = String::new();
    stderr.read_to_string(&mut logs).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
    let entries = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (entries, logs)
}

fn lines_with<'a>(entries: &'a [serde_json::Value], message: &str) -> Vec<&'a serde_json::Value> {
    entries.iter().filter(|e| e["message"] == message).collect()
}

/// Issue 18 and issue 17's log volume: the per-request line names the client key and why a
/// request was refused (never the content), carries no trace-only span fields, and stays short.
#[tokio::test]
async fn the_request_line_is_compact_and_says_who_and_why() {
    let (entries, logs) = logs_of("").await;
    assert!(!logs.contains("my-very-private-prompt-text"), "{logs}");
    assert!(!logs.contains("gw-secret-key-123"), "{logs}");
    let served = lines_with(&entries, "request served");
    assert_eq!(served.len(), 1, "{logs}");
    assert_eq!(served[0]["client"], "key-0", "{logs}");
    assert_eq!(served[0]["span"]["request_id"].as_str().map(str::len), Some(36));
    let line = logs.lines().find(|l| l.contains("request served")).unwrap();
    assert!(!line.contains("otel.") && !line.contains("gen_ai."), "{line}");
    // About 1 KB before (every trace attribute of the span repeated on the line).
    assert!(line.len() < 600, "{} bytes: {line}", line.len());

    let rejected = lines_with(&entries, "request rejected");
    assert_eq!(rejected.len(), 2, "{logs}");
    assert_eq!(rejected[0]["client"], "key-0");
    assert_eq!(rejected[0]["error"], "invalid_request");
    assert!(
        rejected[0]["reason"].as_str().unwrap().contains("'messages'"),
        "{logs}"
    );
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap()
            .contains("could not parse"),
        "{logs}"
    );
}

#[tokio::test]
async fn the_request_line_can_be_sampled_or_turned_off() {
    // Served requests sampled at 0: only the refusals are logged.
    let (entries, logs) = logs_of("  request_sample_ratio: 0\n").await;
    assert!(lines_with(&entries, "request served").is_empty(), "{logs}");
    assert_eq!(lines_with(&entries, "request rejected").len(), 2, "{logs}");
    // Off: no request line at all (the startup lines remain).
    let (entries, logs) = logs_of("  requests: off\n").await;
    assert!(lines_with(&entries, "request served").is_empty(), "{logs}");
    assert!(lines_with(&entries, "request rejected").is_empty(), "{logs}");
    assert!(
        entries.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("weir gateway ready"))),
        "{logs}"
    );
}
