//! The deploy artefacts (`deploy/`: Dockerfile, systemd unit, Kubernetes manifests) run the real
//! binary with command lines the binary accepts: each one's `weir` command is read out of its file,
//! its config checked with `weir check`, then run as written (only host and port are moved onto a
//! loopback port 0, through `WEIR_HOST`/`WEIR_PORT`) in front of the mock, probed on the paths the
//! manifests probe, and stopped with SIGTERM, which must drain and exit 0.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use weir_mock::server::MockServer;

/// Where the artefacts put the config; the test maps it to a file it can read.
const CONFIG_PATH: &str = "/etc/weir/weir.yaml";
const BINARY_PATH: &str = "/usr/local/bin/weir";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy_dir().join(path)).unwrap()
}

/// The JSON array after `prefix` on the line that starts with it (exec-form `CMD`, `args:`).
fn json_array_after(text: &str, prefix: &str) -> Vec<String> {
    let line = text
        .lines()
        .map(str::trim_start)
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with `{prefix}`"));
    serde_json::from_str(line[prefix.len()..].trim()).unwrap()
}

/// The Dockerfile's `ENTRYPOINT` + `CMD`, as the container runs them.
fn docker_command() -> Vec<String> {
    let dockerfile = read("Dockerfile");
    let mut command = json_array_after(&dockerfile, "ENTRYPOINT");
    command.extend(json_array_after(&dockerfile, "CMD"));
    command
}

/// The systemd unit's `ExecStart`.
fn systemd_command() -> Vec<String> {
    let unit = read("systemd/weir.service");
    let line = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .unwrap();
    line.split_whitespace().map(str::to_owned).collect()
}

/// The container's `args` (the image's entrypoint is the binary) and the ConfigMap's config.
fn kubernetes_command_and_config() -> (Vec<String>, String) {
    let manifest = read("kubernetes/weir.yaml");
    let mut command = vec![BINARY_PATH.to_owned()];
    command.extend(json_array_after(&manifest, "args:"));
    // The block scalar under `weir.yaml: |`, de-indented.
    let mut lines = manifest
        .lines()
        .skip_while(|line| line.trim() != "weir.yaml: |")
        .skip(1);
    let first = lines.next().unwrap();
    let indent = first.len() - first.trim_start().len();
    let mut config = format!("{}\n", &first[indent..]);
    for line in lines {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() < indent {
            break;
        }
        config.push_str(line.get(indent..).unwrap_or(""));
        config.push('\n');
    }
    (command, config)
}

/// The probe paths of the Deployment (`httpGet: { path: … }`).
fn kubernetes_probe_paths() -> Vec<String> {
    read("kubernetes/weir.yaml")
        .lines()
        .filter_map(|line| line.split_once("httpGet: { path: "))
        .map(|(_, rest)| rest.split([',', ' ']).next().unwrap().to_owned())
        .collect()
}

/// The environment the artefacts expect (the secrets), with the upstream moved to the mock and
/// the listener to a free loopback port.
fn environment(mock: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("WEIR_API_KEY", "deploy-test-client-key".to_owned()),
        ("WEIR_ADMIN_KEY", "deploy-test-admin-key".to_owned()),
        ("OPENAI_API_KEY", "deploy-test-upstream-key".to_owned()),
        ("OPENAI_BASE_URL", mock.base_url()),
        ("WEIR_HOST", "127.0.0.1".to_owned()),
        ("WEIR_PORT", "0".to_owned()),
    ]
}

/// Replaces the artefact's binary and config paths with the test's.
fn localise(command: &[String], config: &Path) -> Vec<String> {
    assert_eq!(command[0], BINARY_PATH, "the artefacts run {BINARY_PATH}");
    command[1..]
        .iter()
        .map(|arg| {
            if arg == CONFIG_PATH {
                config.display().to_string()
            } else {
                arg.clone()
            }
        })
        .collect()
}

async fn check_config(config: &Path, env: &[(&'static str, String)]) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", "--config"])
        .arg(config)
        .env_remove("WEIR_CONFIG")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "weir check rejected {}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `args` as the artefact would, sends a chat request and the probes, then SIGTERM.
async fn run_as_deployed(args: &[String], env: &[(&'static str, String)], probes: &[String]) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("WEIR_CONFIG")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("`weir {}` did not start", args.join(" ")))
        .unwrap()
        .unwrap();
    let base = line.strip_prefix("listening on ").unwrap().to_owned();

    let http = reqwest::Client::new();
    for path in probes {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "probe {path}");
    }
    let unauthorised = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401, "the artefact's config requires a key");
    let chat = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("deploy-test-client-key")
        .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    assert_eq!(chat.headers()["x-weir-deployment"], "openai-main");

    let pid = child.id().unwrap().to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("weir did not exit after SIGTERM")
        .unwrap();
    assert!(status.success(), "weir exited with {status} after SIGTERM");
}

#[tokio::test]
async fn dockerfile_command_runs() {
    let mock = MockServer::start().await.unwrap();
    let env = environment(&mock);
    let config = deploy_dir().join("weir.yaml");
    check_config(&config, &env).await;
    run_as_deployed(&localise(&docker_command(), &config), &env, &[]).await;
}

#[tokio::test]
async fn systemd_unit_command_runs() {
    let mock = MockServer::start().await.unwrap();
    let env = environment(&mock);
    let config = deploy_dir().join("weir.yaml");
    check_config(&config, &env).await;
    run_as_deployed(&localise(&systemd_command(), &config), &env, &[]).await;
}

#[tokio::test]
async fn kubernetes_deployment_runs_with_its_config_map_and_probes() {
    let (command, config_text) = kubernetes_command_and_config();
    // One config for every artefact: the ConfigMap carries deploy/weir.yaml less its comments.
    let uncommented = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
            .map(|line| line.split(" #").next().unwrap().trim_end().to_owned())
            .collect()
    };
    assert_eq!(
        uncommented(&config_text),
        uncommented(&read("weir.yaml")),
        "the ConfigMap and deploy/weir.yaml differ"
    );
    let dir = std::env::temp_dir().join(format!("weir-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("weir.yaml");
    std::fs::write(&config, config_text).unwrap();

    let probes = kubernetes_probe_paths();
    assert_eq!(probes, ["/health", "/ready"], "liveness and readiness probes");
    let mock = MockServer::start().await.unwrap();
    let env = environment(&mock);
    check_config(&config, &env).await;
    run_as_deployed(&localise(&command, &config), &env, &probes).await;
}
