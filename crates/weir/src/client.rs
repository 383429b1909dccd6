//! [`Client`]: the engine in-process, with typed OpenAI requests and responses.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};
use http::Method;
use serde::{Serialize, de::DeserializeOwned};

use crate::api::{ChatDelta, ChunkChoice};
use crate::{
    api::{
        ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, EmbeddingRequest,
        EmbeddingResponse, ErrorBody, ImageRequest, ImagesResponse, ModelList,
    },
    config::{
        CacheConfig, CircuitBreakerConfig, Config, ConfigBuilder, ConfigError, Deployment, HealthCheckConfig,
        PoolLimits, Price, RateLimitConfig, RetryBudgetConfig, RetryPolicy, Strategy, Timeouts,
    },
    engine::{Engine, EngineBuilder, EngineService},
    error::Error,
    path::ApiPath,
    request::{Endpoint, ProxyRequest},
    response::ProxyBody,
    sse::{GuardItem, SseFramer, event_data},
};

/// Weir in-process: the same routing, pooling and error handling as the gateway, no HTTP hop.
///
/// Cheap to clone; clones share the engine. Clients built from configs with equal upstream
/// settings also share connection pools.
///
/// ```no_run
/// # async fn demo() -> Result<(), weir::Error> {
/// use weir::{Client, api::{ChatCompletionRequest, ChatMessage}};
/// let client = Client::from_env()?; // OPENAI_API_KEY, or the offline mock without it
/// let reply = client
///     .create_chat_completion(&ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("Hello!")]))
///     .await?;
/// println!("{:?}", reply.choices[0].message.text());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    engine: Arc<Engine>,
}

/// Builds a [`Client`] in code: deployments, defaults and layers of your own, no YAML.
///
/// Every setting of [`ConfigBuilder`] is here too (the same names), plus [`ClientBuilder::layer`].
///
/// ```
/// use std::time::Duration;
/// use weir::{Client, config::{Deployment, RetryPolicy}};
///
/// let client = Client::builder()
///     .model("gpt-4o-mini", Deployment::mock())
///     .retry(RetryPolicy { max_retries: 1, ..Default::default() })
///     .request_deadline(Duration::from_secs(30))
///     .layer(tower::layer::layer_fn(|inner: weir::EngineService| inner)) // your own tower layer
///     .build()?;
/// # Ok::<(), weir::config::ConfigError>(())
/// ```
pub struct ClientBuilder {
    config: ConfigBuilder,
    layers: Vec<Box<dyn FnOnce(EngineBuilder) -> EngineBuilder + Send>>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .field("layers", &self.layers.len())
            .finish()
    }
}

/// `ClientBuilder` methods that hand their arguments to the [`ConfigBuilder`] method of the same name.
macro_rules! config_setters {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, $($arg: $ty),*) -> Self {
            self.config = self.config.$name($($arg),*);
            self
        }
    )*};
}

impl ClientBuilder {
    config_setters! {
        /// See [`ConfigBuilder::model`].
        model(name: &str, deployment: Deployment);
        /// See [`ConfigBuilder::strategy`].
        strategy(name: &str, strategy: Strategy);
        /// See [`ConfigBuilder::default_model`].
        default_model(name: String);
        /// See [`ConfigBuilder::timeouts`].
        timeouts(timeouts: Timeouts);
        /// See [`ConfigBuilder::pool`].
        pool(pool: PoolLimits);
        /// See [`ConfigBuilder::retry`].
        retry(retry: RetryPolicy);
        /// See [`ConfigBuilder::circuit_breaker`].
        circuit_breaker(breaker: Option<CircuitBreakerConfig>);
        /// See [`ConfigBuilder::rate_limits`].
        rate_limits(limits: RateLimitConfig);
        /// See [`ConfigBuilder::health_check`].
        health_check(check: HealthCheckConfig);
        /// See [`ConfigBuilder::client_rate_limits`].
        client_rate_limits(limits: RateLimitConfig);
        /// See [`ConfigBuilder::request_deadline`].
        request_deadline(deadline: std::time::Duration);
        /// See [`ConfigBuilder::retry_budget`].
        retry_budget(budget: RetryBudgetConfig);
        /// See [`ConfigBuilder::cache`].
        cache(cache: CacheConfig);
        /// See [`ConfigBuilder::price`].
        price(model: &str, price: Price);
    }

    /// See [`ConfigBuilder::fallbacks`].
    pub fn fallbacks<S: Into<String>>(mut self, name: &str, to: impl IntoIterator<Item = S>) -> Self {
        self.config = self.config.fallbacks(name, to);
        self
    }

    /// See [`ConfigBuilder::context_window_fallbacks`].
    pub fn context_window_fallbacks<S: Into<String>>(
        mut self,
        name: &str,
        to: impl IntoIterator<Item = S>,
    ) -> Self {
        self.config = self.config.context_window_fallbacks(name, to);
        self
    }

    /// Adds a tower layer around the engine's pipeline (see [`EngineBuilder::layer`]): the first
    /// added is the outermost.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<EngineService> + Send + Sync + 'static,
        L::Service: tower::Service<ProxyRequest, Response = crate::response::ProxyResponse, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<ProxyRequest>>::Future: Send + 'static,
    {
        self.layers
            .push(Box::new(move |engine: EngineBuilder| engine.layer(layer)));
        self
    }

    /// Checks the config (the same rules as a YAML file; the error names the field) and builds
    /// the client.
    pub fn build(self) -> Result<Client, ConfigError> {
        let config = self.config.build()?;
        let engine = self
            .layers
            .into_iter()
            .fold(Engine::builder(config), |engine, add| add(engine))
            .build();
        Ok(Client::from_engine(Arc::new(engine)))
    }
}

impl Client {
    /// A client for a validated config.
    pub fn new(config: Config) -> Client {
        Client {
            engine: Arc::new(Engine::new(config)),
        }
    }

    /// Configures a client in code (see [`ClientBuilder`]).
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            config: Config::builder(),
            layers: Vec::new(),
        }
    }

    /// A client on the zero-config setup (see [`Config::from_env`]).
    pub fn from_env() -> Result<Client, Error> {
        Ok(Client::new(Config::from_env()?))
    }

    /// A client sharing an existing engine (the gateway uses this).
    pub fn from_engine(engine: Arc<Engine>) -> Client {
        Client { engine }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Shuts down gracefully: calls made from now on (through any clone of this client) fail
    /// with a 503-class [`Error::Unavailable`], and this waits up to `grace` for calls already
    /// running — streams included — to finish. `Ok` when they all did; an error saying how many
    /// were still running otherwise. Connection pools close when the last clone is dropped.
    pub async fn shutdown(&self, grace: std::time::Duration) -> Result<(), Error> {
        match self.engine.shutdown(grace).await {
            0 => Ok(()),
            running => Err(Error::Unavailable {
                message: format!(
                    "{running} request(s) were still running when the {}s shutdown grace ran out",
                    grace.as_secs_f64()
                ),
            }),
        }
    }

    /// `POST /v1/chat/completions` without streaming.
    pub async fn create_chat_completion(
        &self,
        request: &ChatCompletionRequest,
    ) -> Result<ChatCompletionResponse, Error> {
        if request.stream == Some(true) {
            return Err(Error::invalid_param(
                "stream",
                "use create_chat_completion_stream for streaming requests",
                Some("invalid_value"),
            ));
        }
        self.json_call(Endpoint::ChatCompletions, request).await
    }

    /// `POST /v1/chat/completions` with `stream: true`: chunks as the upstream sends them.
    ///
    /// The stream ends after the upstream's `[DONE]`; if the upstream breaks off, its last item is an
    /// error, never a silent end.
    pub async fn create_chat_completion_stream(
        &self,
        request: &ChatCompletionRequest,
    ) -> Result<ChatCompletionStream, Error> {
        let mut request = request.clone();
        request.stream = Some(true);
        let body = to_body(&request)?;
        let resp = self
            .engine
            .execute(ProxyRequest::json(Endpoint::ChatCompletions, body))
            .await?;
        let inner = match resp.body {
            ProxyBody::Stream(stream) => stream.boxed(),
            ProxyBody::Full(bytes) => {
                // The upstream ignored `stream`: present its whole answer as one chunk.
                let chunk = serde_json::to_vec(&as_single_chunk(parse_json(&bytes)?))
                    .map_err(|e| Error::Internal(e.to_string()))?;
                let event = Bytes::from([b"data: ".as_slice(), &chunk, b"\n\ndata: [DONE]\n\n"].concat());
                futures::stream::once(async move { GuardItem::Events(event) }).boxed()
            }
        };
        Ok(ChatCompletionStream {
            inner,
            framer: SseFramer::default(),
            finished: false,
            pending: Default::default(),
        })
    }

    /// `POST /v1/embeddings`.
    pub async fn create_embedding(&self, request: &EmbeddingRequest) -> Result<EmbeddingResponse, Error> {
        self.json_call(Endpoint::Embeddings, request).await
    }

    /// `POST /v1/images/generations`.
    pub async fn create_image(&self, request: &ImageRequest) -> Result<ImagesResponse, Error> {
        self.json_call(Endpoint::ImageGenerations, request).await
    }

    /// The models this client can route (see [`Engine::list_models`]).
    pub async fn list_models(&self) -> Result<ModelList, Error> {
        Ok(self.engine.list_models().await)
    }

    /// Any API path (relative to `/v1`), routed by the body's `model` or to the default model group.
    /// Returns the upstream's JSON answer.
    pub async fn call_api(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, Error> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (path, None),
        };
        let path = path
            .strip_prefix("/v1/")
            .or_else(|| path.strip_prefix('/'))
            .unwrap_or(path);
        let path = ApiPath::parse(path)?;
        let body = match body {
            Some(value) => to_body(value)?,
            None => Bytes::new(),
        };
        let mut req = ProxyRequest::json(Endpoint::Passthrough, body);
        req.method = method;
        req.path = path;
        req.query = query;
        let resp = self.engine.execute(req).await?;
        let bytes = collect(resp.body).await?;
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        parse_json(&bytes)
    }

    async fn json_call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        request: &Req,
    ) -> Result<Resp, Error> {
        let resp = self
            .engine
            .execute(ProxyRequest::json(endpoint, to_body(request)?))
            .await?;
        parse_json(&collect(resp.body).await?)
    }
}

/// A complete answer as the one chunk a stream of it would have had.
fn as_single_chunk(reply: ChatCompletionResponse) -> ChatCompletionChunk {
    ChatCompletionChunk {
        id: reply.id,
        object: "chat.completion.chunk".to_owned(),
        created: reply.created,
        model: reply.model,
        choices: reply
            .choices
            .into_iter()
            .map(|choice| ChunkChoice {
                index: choice.index,
                delta: ChatDelta {
                    role: Some(choice.message.role),
                    content: choice.message.content.and_then(|c| c.as_str().map(str::to_owned)),
                    tool_calls: choice.message.tool_calls,
                    extra: Default::default(),
                },
                finish_reason: choice.finish_reason,
                extra: Default::default(),
            })
            .collect(),
        usage: reply.usage,
        extra: reply.extra,
    }
}

fn to_body<T: Serialize>(value: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::InvalidRequest {
            message: format!("cannot serialise the request: {e}"),
            param: None,
            code: None,
        })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadUpstreamResponse {
        message: format!("unexpected JSON: {e}"),
    })
}

async fn collect(body: ProxyBody) -> Result<Bytes, Error> {
    match body {
        ProxyBody::Full(bytes) => Ok(bytes),
        ProxyBody::Stream(mut stream) => {
            let mut out = Vec::new();
            while let Some(item) = stream.next().await {
                match item {
                    GuardItem::Events(b) => out.extend_from_slice(&b),
                    GuardItem::Failed(err, _) => return Err(err),
                }
            }
            Ok(Bytes::from(out))
        }
    }
}

/// Chat completion chunks, parsed from the upstream's SSE stream.
pub struct ChatCompletionStream {
    inner: BoxStream<'static, GuardItem>,
    framer: SseFramer,
    finished: bool,
    pending: std::collections::VecDeque<Result<ChatCompletionChunk, Error>>,
}

impl std::fmt::Debug for ChatCompletionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatCompletionStream")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ChatCompletionStream {
    /// Parses the complete events in the framer into `pending`; returns true at `[DONE]`.
    fn drain_events(&mut self) -> bool {
        while let Some(event) = self.framer.next_event() {
            let Some(data) = event_data(&event) else { continue };
            let data = data.trim();
            if data == "[DONE]" {
                return true;
            }
            if let Ok(err) = serde_json::from_str::<ErrorBody>(data) {
                self.pending.push_back(Err(Error::Transport {
                    message: format!("stream failed: {}", err.error.message),
                }));
                return true;
            }
            self.pending
                .push_back(serde_json::from_str::<ChatCompletionChunk>(data).map_err(|e| {
                    Error::BadUpstreamResponse {
                        message: format!("unparseable stream chunk: {e}"),
                    }
                }));
        }
        false
    }
}

impl Stream for ChatCompletionStream {
    type Item = Result<ChatCompletionChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Poll::Ready(Some(item));
            }
            if self.finished {
                return Poll::Ready(None);
            }
            match self.inner.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(GuardItem::Events(bytes))) => {
                    self.framer.push(&bytes);
                    if self.drain_events() {
                        self.finished = true;
                    }
                }
                Poll::Ready(Some(GuardItem::Failed(err, _))) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) => {
                    self.finished = true;
                }
            }
        }
    }
}
