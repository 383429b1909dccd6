//! Test harness: the real gateway on 127.0.0.1:0, in front of the real mock upstream.
// Test support: a failed unwrap here is a failed test. Not every test file uses every helper.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use weir::Config;
use weir_gateway::{AppState, serve};
use weir_mock::server::MockServer;

pub struct Gateway {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    pub async fn start(yaml: &str) -> Gateway {
        let config = Config::from_yaml(yaml, Some("test.yaml")).unwrap();
        Self::start_config(config).await
    }

    pub async fn start_config(config: Config) -> Gateway {
        Self::start_state(AppState::new(config)).await
    }

    /// A gateway serving a config file, which `POST /admin/reload` re-reads.
    pub async fn start_file(path: &std::path::Path) -> Gateway {
        let loader = weir_gateway::reload::ConfigLoader {
            path: Some(path.to_owned()),
            ..Default::default()
        };
        let config = loader.load().unwrap();
        Self::start_state(AppState::with_loader(config, loader)).await
    }

    pub async fn start_state(state: AppState) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Gateway {
            addr,
            state,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts the drain; returns the server task to await.
    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().unwrap()
    }
}

/// A config with one model group `mock-model` on the given mock, plus `renamed` (upstream model
/// `gpt-4o-mini`). `extra` is appended to the deployment (indented by 8 spaces), `server` is the server section.
pub fn config_for(mock: &MockServer, deployment_extra: &str, server: &str) -> String {
    format!(
        r#"
{server}
logging:
  level: warn
models:
  - name: mock-model
    deployments:
      - id: mock-a
        provider: openai
        base_url: {base}
        api_key: upstream-secret-key
{deployment_extra}
  - name: renamed
    deployments:
      - id: mock-renamed
        provider: openai
        base_url: {base}
        api_key: upstream-secret-key
        model: gpt-4o-mini
"#,
        base = mock.base_url()
    )
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn chat_body(extra: serde_json::Value) -> serde_json::Value {
    let mut body = serde_json::json!({
        "model": "mock-model",
        "messages": [{"role": "user", "content": "Hello"}],
    });
    if let (Some(obj), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    body
}

/// Asserts the OpenAI error shape and returns the error object.
pub async fn error_of(resp: reqwest::Response) -> serde_json::Value {
    let body: serde_json::Value = resp.json().await.unwrap();
    let err = body
        .get("error")
        .unwrap_or_else(|| panic!("no error object in {body}"))
        .clone();
    for key in ["message", "type", "param", "code"] {
        assert!(err.get(key).is_some(), "error lacks `{key}`: {body}");
    }
    err
}

/// Runs the real `weir serve` binary on port 0 with a config file and extra flags; returns the
/// child (killed on drop) and its base URL, read from the `listening on` line. Stderr is piped
/// when `capture_stderr`, else discarded.
pub async fn spawn_weir(
    config: &std::path::Path,
    extra_args: &[&str],
    capture_stderr: bool,
) -> (tokio::process::Child, String) {
    let mut args = vec!["--port", "0"];
    args.extend_from_slice(extra_args);
    spawn_weir_with(config, &args, &[], capture_stderr).await
}

/// [`spawn_weir`] with exactly these flags after `serve` and these environment variables.
pub async fn spawn_weir_with(
    config: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    capture_stderr: bool,
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("serve")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(if capture_stderr {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("weir serve did not print its address")
        .unwrap()
        .unwrap();
    let base = line.strip_prefix("listening on ").unwrap().to_owned();
    (child, base)
}
