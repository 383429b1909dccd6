//! [`MockServer`]: a mock bound to a free loopback port for the lifetime of a value.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{ChaosConfig, MockConfig, MockState, serve};

/// A running mock server on `127.0.0.1:<free port>`, stopped when dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let mock = weir_mock::server::MockServer::start().await?;
/// let url = format!("{}/chat/completions", mock.base_url());
/// // ... point the code under test at `url` ...
/// assert_eq!(mock.state().count_for_path("/v1/chat/completions"), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MockServer {
    /// The bound address (port chosen by the OS).
    addr: SocketAddr,
    /// Counters and recordings, shared with the serving task.
    state: Arc<MockState>,
    /// Dropping this sender is the shutdown signal.
    stop: Option<oneshot::Sender<()>>,
    /// The serving task, joined by [`shutdown`](Self::shutdown).
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl MockServer {
    /// Starts a mock with the default configuration (no API key, recording on).
    pub async fn start() -> std::io::Result<MockServer> {
        Self::start_with(MockConfig::default()).await
    }

    /// Starts a mock with `config`. Must be called inside a tokio runtime.
    pub async fn start_with(config: MockConfig) -> std::io::Result<MockServer> {
        Self::start_state(MockState::new(config)).await
    }

    /// Starts a mock in chaos mode: faults drawn per request, content derived from the request.
    pub async fn start_chaos(config: MockConfig, chaos: ChaosConfig) -> std::io::Result<MockServer> {
        Self::start_state(MockState::with_chaos(config, chaos)).await
    }

    async fn start_state(state: MockState) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&state), async move {
            // Resolves on send or when the sender is dropped: either way, stop.
            let _ = stopped.await;
        }));
        Ok(MockServer {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The server's counters and recorded requests.
    pub fn state(&self) -> &Arc<MockState> {
        &self.state
    }

    /// Stops the server and waits until every connection is closed (hung requests get a 503,
    /// paced streams are aborted). Dropping the server does the same without waiting.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.stop.take();
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // Dropping the sender resolves the shutdown future; the task then winds down by itself.
        self.stop.take();
    }
}
