//! The `weir` command line: `check` on good and bad configs, and `WEIR_*` environment overrides.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;
use weir_mock::server::MockServer;

fn weir(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args(args).env_remove("RUST_LOG").env_remove("WEIR_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_prints_what_would_be_served() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/openai.yaml");
    let out = weir(&["check", "--config", examples], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "OK",
        "gpt-4o-mini",
        "openai-main",
        "breaker opens after 5 failures",
        "5000 requests/min",
    ] {
        assert!(text.contains(expected), "`{expected}` missing from:\n{text}");
    }
    assert!(!text.contains("sk-placeholder"), "check printed a key:\n{text}");
}

#[test]
fn check_names_file_line_and_field_and_exits_1() {
    let bad = temp_file(
        "bad.yaml",
        "models:\n  - name: a\n    deployments:\n      - provider: openai\n        base_url: ftp://nope/v1\n",
    );
    let out = weir(&["check", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.yaml:5: models[0].deployments[0].base_url:"),
        "{err}"
    );

    // The config file can come from WEIR_CONFIG instead of --config.
    let out = weir(&["check"], &[("WEIR_CONFIG", bad.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn help_explains_the_commands() {
    let out = weir(&["--help"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    for command in ["serve", "mock", "check"] {
        assert!(text.contains(command), "{text}");
    }
    let out = weir(&["serve", "--help"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("OPENAI_API_KEY") && text.contains("WEIR_PORT"),
        "{text}"
    );
    // Zero-config routes every provider key, not only OpenAI's (issue 18).
    for args in [&["--help"][..], &["serve", "--help"]] {
        let text = String::from_utf8(weir(args, &[]).stdout).unwrap();
        for expected in [
            "ANTHROPIC_API_KEY",
            "GEMINI_API_KEY",
            "claude-*",
            "gemini-*",
            "mock",
        ] {
            assert!(
                text.contains(expected),
                "`{expected}` missing from {args:?}:\n{text}"
            );
        }
    }
    let text = String::from_utf8(weir(&["mock", "--help"], &[]).stdout).unwrap();
    for expected in ["OpenAI", "Anthropic", "Gemini", "/v1/messages"] {
        assert!(
            text.contains(expected),
            "`{expected}` missing from mock --help:\n{text}"
        );
    }
}

#[test]
fn check_shows_routing_health_checks_and_cache_and_warns_on_placeholders() {
    let routing = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/routing.yaml");
    let out = weir(&["check", "--config", routing], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "routing: strategy",
        "weight ",
        "priority ",
        "fallbacks: ",
        "context-window fallbacks: ",
        "health checks: ",
        "cache: ",
    ] {
        assert!(text.contains(expected), "`{expected}` missing from:\n{text}");
    }

    // The shipped OpenAI example: `${WEIR_API_KEY:-change-me}` is no real auth, and
    // `${OPENAI_API_KEY:-sk-placeholder}` is no real key.
    let openai = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/openai.yaml");
    let out = weir(&["check", "--config", openai], &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("effectively OFF"), "{text}");
    assert!(text.contains("PLACEHOLDER key"), "{text}");
    assert!(
        text.contains("warnings:") && text.contains("placeholder"),
        "{text}"
    );
    assert!(!text.contains("sk-placeholder"), "check printed a key:\n{text}");
    // With the variables set, the same file has real keys and no warnings.
    let out = weir(
        &["check", "--config", openai],
        &[("WEIR_API_KEY", "gw-real-1"), ("OPENAI_API_KEY", "sk-real-1")],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("warnings:") && text.contains("key set"), "{text}");

    // A literal `change-me` counts as a placeholder too.
    let literal = temp_file(
        "literal.yaml",
        "server:\n  api_keys: [change-me]\nmodels:\n  - name: m\n    deployments: [{provider: mock}]\n",
    );
    let text =
        String::from_utf8(weir(&["check", "--config", literal.to_str().unwrap()], &[]).stdout).unwrap();
    assert!(
        text.contains("effectively OFF") && text.contains("warnings:"),
        "{text}"
    );
}

#[test]
fn an_empty_config_is_refused_by_check_and_serve() {
    let empty = temp_file("empty.yaml", "server:\n  port: 0\n");
    for args in [
        vec!["check", "--config", empty.to_str().unwrap()],
        vec!["serve", "--port", "0", "--config", empty.to_str().unwrap()],
    ] {
        let out = weir(&args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("no models are configured"), "{args:?}: {err}");
    }
}

#[test]
fn unknown_keys_and_bad_numbers_name_their_field() {
    let bad = temp_file(
        "typo.yaml",
        "models:\n  - name: a\n    deployments:\n      - provider: mock\n        wieght: 2\n",
    );
    let err = String::from_utf8(weir(&["check", "--config", bad.to_str().unwrap()], &[]).stderr).unwrap();
    assert!(
        err.contains("typo.yaml:5: models[0].deployments[0].wieght: unknown field `wieght`"),
        "{err}"
    );
    assert!(!err.contains("<input>") && !err.contains("column"), "{err}");
    let bad = temp_file(
        "negative.yaml",
        "models:\n  - name: a\n    deployments:\n      - provider: mock\n        weight: -1\n",
    );
    let err = String::from_utf8(weir(&["check", "--config", bad.to_str().unwrap()], &[]).stderr).unwrap();
    assert!(
        err.contains("negative.yaml:5: models[0].deployments[0].weight: must be a whole number"),
        "{err}"
    );
}

/// Zero-config with no key serves the offline mock and says so on its ready line, with the
/// address.
#[tokio::test]
async fn the_ready_line_says_where_and_what_is_served() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--port", "0"])
        .env_remove("RUST_LOG")
        .env_remove("WEIR_CONFIG")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("GEMINI_API_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let base = line.strip_prefix("listening on ").unwrap().to_owned();
    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    child.wait().await.unwrap();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    let ready = logs
        .lines()
        .find(|l| l.contains("weir gateway ready on"))
        .unwrap_or_else(|| panic!("no ready line:\n{logs}"));
    assert!(ready.contains(&format!("{base}/v1")), "{ready}");
    assert!(ready.contains("MOCK"), "{ready}");
}

#[tokio::test]
async fn environment_overrides_the_config_file() {
    let mock = MockServer::start().await.unwrap();
    // The file says port 1 (which would fail to bind); WEIR_PORT=0 wins.
    let config = temp_file("env.yaml", &config_for(&mock, "", "server:\n  port: 1"));
    let (_child, base) = spawn_weir_with(&config, &[], &[("WEIR_PORT", "0")], false).await;
    assert!(!base.ends_with(":1"), "{base}");
    assert_eq!(
        http()
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
