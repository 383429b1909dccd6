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
