//! [`EngineBuilder`]: an engine with layers of your own around its pipeline.

use std::sync::Arc;

use tower::{Layer, Service};

use super::{Engine, EngineService, Wrap};
use crate::{config::Config, error::Error, request::ProxyRequest, response::ProxyResponse};

/// Builds an [`Engine`] whose pipeline is wrapped in tower layers of your own.
///
/// A layer sees every request before the engine does (cache included) and every answer after,
/// typed: it can read or rewrite the body ([`ProxyRequest::set_body`]), read what the body asks
/// for ([`ProxyRequest::facts`]), refuse a request with an [`Error`], or change the response's
/// headers. Layers added first end up outermost. A config reload of the engine
/// ([`Engine::reload`]) keeps them.
///
/// ```
/// use tower::{ServiceBuilder, Service, ServiceExt};
/// use weir::{Config, Engine, Error, ProxyRequest};
///
/// // Refuse one model, whatever the config routes.
/// let veto = tower::layer::layer_fn(|inner: weir::EngineService| {
///     tower::service_fn(move |req: ProxyRequest| {
///         let inner = inner.clone();
///         async move {
///             if req.facts()?.model() == Some("gpt-4") {
///                 return Err(Error::invalid_param("model", "gpt-4 is not allowed here", None));
///             }
///             inner.oneshot(req).await
///         }
///     })
/// });
/// let engine = Engine::builder(Config::from_env_with(|_| None)?).layer(veto).build();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EngineBuilder {
    config: Config,
    wrap: Option<Wrap>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("layers", &self.wrap.is_some())
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// An engine for `config`, with no layers of its own yet.
    pub fn new(config: Config) -> EngineBuilder {
        EngineBuilder { config, wrap: None }
    }

    /// Adds `layer` around the pipeline, inside the layers added before it.
    pub fn layer<L>(mut self, layer: L) -> EngineBuilder
    where
        L: Layer<EngineService> + Send + Sync + 'static,
        L::Service:
            Service<ProxyRequest, Response = ProxyResponse, Error = Error> + Clone + Send + Sync + 'static,
        <L::Service as Service<ProxyRequest>>::Future: Send + 'static,
    {
        let inner = self.wrap.take();
        self.wrap = Some(Arc::new(move |service: EngineService| {
            // The new layer goes inside the earlier ones: the first added is the outermost, as
            // with `tower::ServiceBuilder`.
            let service = EngineService::new(layer.layer(service));
            match &inner {
                Some(inner) => inner(service),
                None => service,
            }
        }));
        self
    }

    /// Builds the engine (providers, connection pools, limiters, the cache); see [`Engine::new`].
    pub fn build(self) -> Engine {
        Engine::build(self.config, None, self.wrap)
    }
}
