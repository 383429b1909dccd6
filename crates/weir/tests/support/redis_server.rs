//! A Redis for tests: its own `redis-server` on a free loopback port (no persistence), killed on
//! drop. Only when the binary is missing does it fall back to a Redis already listening on
//! 127.0.0.1:6379 (tests then use unique key prefixes); if neither works it fails loudly — Redis
//! tests are never skipped.
//!
//! Shared by the library's and the gateway's tests (`#[path]`-included).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    /// Our own process; `None` when using the machine's Redis.
    child: Option<tokio::process::Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        match spawn(port) {
            Ok(child) => {
                let url = format!("redis://127.0.0.1:{port}");
                wait_until_ready(&url)
                    .await
                    .unwrap_or_else(|e| panic!("redis-server on port {port} did not become ready: {e}"));
                RedisServer {
                    url,
                    child: Some(child),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let url = "redis://127.0.0.1:6379".to_owned();
                wait_until_ready(&url).await.unwrap_or_else(|e| {
                    panic!(
                        "Redis tests need Redis: `redis-server` is not on PATH and nothing answers on \
                         127.0.0.1:6379 ({e}). Install redis-server."
                    )
                });
                RedisServer { url, child: None }
            }
            Err(e) => panic!("could not start redis-server: {e}"),
        }
    }

    /// Starts our (killed) server again on the same port, empty.
    pub async fn restart(&mut self) {
        assert!(self.child.is_some(), "cannot restart the machine's shared Redis");
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Some(spawn(port).unwrap());
        wait_until_ready(&self.url).await.unwrap();
    }

    /// Whether this is our own process (so it may be killed).
    pub fn owned(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server and waits until it is gone.
    pub async fn kill(&mut self) {
        let Some(child) = self.child.as_mut() else {
            panic!("cannot kill the machine's shared Redis: install redis-server for this test");
        };
        child.kill().await.unwrap();
    }

    /// A connection for inspecting what the code under test stored.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

fn spawn(port: u16) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

async fn wait_until_ready(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut last = String::new();
    for _ in 0..100 {
        match client.get_multiplexed_async_connection().await {
            Ok(mut conn) => match redis::cmd("PING").query_async::<String>(&mut conn).await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

/// A key prefix no other test (or run) uses, for sharing one Redis safely.
pub fn unique_prefix(test: &str) -> String {
    format!("weir-test:{test}:{}", uuid_like())
}

fn uuid_like() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}
