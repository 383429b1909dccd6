//! OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp, Groq...): bearer key, JSON
//! passthrough. Azure OpenAI is the same protocol with another address scheme and auth header, so
//! it is a mode of this provider rather than a copy of it.

use futures::future::BoxFuture;
use url::Url;

use super::{Provider, UpstreamRequest, UpstreamResponse, transport::Transport};
use crate::{
    config::{DeploymentConfig, ProviderKind},
    error::Error,
    path::ApiPath,
};

/// The Azure OpenAI data-plane API version used when a deployment sets no `api_version`: the
/// latest generally available (non-preview) one.
pub(super) const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// Paths Azure serves under `/openai/deployments/{deployment}/`; everything else (files, batches,
/// models...) lives at the resource level under `/openai/`.
const AZURE_DEPLOYMENT_PATHS: &[&str] = &[
    "chat/completions",
    "completions",
    "embeddings",
    "images/generations",
    "images/edits",
    "audio/transcriptions",
    "audio/translations",
    "audio/speech",
];

/// Talks to an OpenAI-compatible API root over a shared connection pool.
#[derive(Debug)]
pub(crate) struct OpenAiProvider {
    /// Pool, auth and timeouts.
    transport: Transport,
    /// Set for Azure OpenAI: how paths are rewritten.
    azure: Option<Azure>,
}

/// Azure's address scheme: `{base}/openai/deployments/{deployment}/{path}?api-version=...`.
#[derive(Debug)]
struct Azure {
    /// The Azure deployment name (the deployment's `model` in our config).
    deployment: String,
    /// `api-version` query parameter.
    api_version: String,
}

impl OpenAiProvider {
    /// Builds the provider for a deployment, joining (or creating) the shared pool for its
    /// settings. `provider: azure` deployments get Azure's paths and `api-key` header.
    pub(crate) fn new(config: &DeploymentConfig) -> Self {
        let mut transport = Transport::new(config);
        let azure = match config.provider {
            ProviderKind::Azure => {
                // Config loading rejects both; a hand-built config gets calls that fail instead.
                let deployment = config.model.clone().unwrap_or_default();
                if deployment.is_empty() {
                    transport = transport.misconfigured(format!(
                        "deployment `{}`: azure needs `model` (the Azure deployment name)",
                        config.id
                    ));
                } else if ApiPath::parse(&format!("openai/deployments/{deployment}")).is_err() {
                    transport = transport.misconfigured(format!(
                        "deployment `{}`: model `{deployment}` is not a valid Azure deployment name",
                        config.id
                    ));
                }
                transport = transport.with_secret_header(config, "api-key", str::to_owned);
                Some(Azure {
                    deployment,
                    api_version: config
                        .api_version
                        .clone()
                        .unwrap_or_else(|| AZURE_DEFAULT_API_VERSION.to_owned()),
                })
            }
            _ => {
                transport =
                    transport.with_secret_header(config, "authorization", |key| format!("Bearer {key}"));
                for (name, field, value) in [
                    ("openai-organization", "organization", &config.organization),
                    ("openai-project", "project", &config.project),
                ] {
                    if let Some(value) = value {
                        transport = transport.with_header(config, name, value, field, false);
                    }
                }
                None
            }
        };
        OpenAiProvider { transport, azure }
    }

    /// The pool this provider sends through.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &std::sync::Arc<crate::upstream::pool::HttpPool> {
        self.transport.pool()
    }

    /// The transport alone, plain OpenAI addressing with these headers on every request and the
    /// deployment's key in `key_header` (as is): translating providers (Anthropic) send through it
    /// with their own auth.
    pub(crate) fn with_headers(
        config: &DeploymentConfig,
        key_header: &'static str,
        headers: http::HeaderMap,
    ) -> Self {
        OpenAiProvider {
            transport: Transport::new(config)
                .with_secret_header(config, key_header, str::to_owned)
                .with_headers(headers),
            azure: None,
        }
    }

    /// Sends a request to where it goes (see [`OpenAiProvider::url`]).
    pub(crate) async fn send_inner(&self, req: UpstreamRequest) -> Result<UpstreamResponse, Error> {
        let url = self.url(&req)?;
        self.transport.send(url, req).await
    }

    /// Where a request goes.
    fn url(&self, req: &UpstreamRequest) -> Result<Url, Error> {
        let base = self.transport.base_url();
        let Some(azure) = &self.azure else {
            return req.path.join_onto(base, req.query.as_deref());
        };
        let rel = req.path.as_str();
        let path = if AZURE_DEPLOYMENT_PATHS.contains(&rel) {
            format!("openai/deployments/{}/{rel}", azure.deployment)
        } else {
            format!("openai/{rel}")
        };
        let mut query = format!("api-version={}", azure.api_version);
        // The client's own query (a listing's `limit=`) goes after ours; an `api-version` of the
        // client's would make the parameter ambiguous, so it is dropped.
        for pair in req.query.iter().flat_map(|q| q.split('&')) {
            if !pair.is_empty() && !pair.starts_with("api-version=") {
                query.push('&');
                query.push_str(pair);
            }
        }
        ApiPath::parse(&path)?.join_onto(base, Some(&query))
    }
}

impl Provider for OpenAiProvider {
    fn kind(&self) -> ProviderKind {
        match self.azure {
            Some(_) => ProviderKind::Azure,
            None => ProviderKind::OpenAi,
        }
    }

    fn send(&self, request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, Error>> {
        Box::pin(self.send_inner(request))
    }

    fn pool_stats(&self) -> Option<crate::upstream::pool::PoolStats> {
        Some(self.transport.pool().stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn provider(yaml_deployment: &str) -> OpenAiProvider {
        let yaml = format!("models:\n  - name: m\n    deployments:\n      - {yaml_deployment}\n");
        let config = Config::from_yaml(&yaml, None).unwrap();
        OpenAiProvider::new(&config.models[0].deployments[0])
    }

    fn request(path: &str, query: Option<&str>) -> UpstreamRequest {
        UpstreamRequest {
            method: http::Method::POST,
            path: ApiPath::parse(path).unwrap(),
            query: query.map(str::to_owned),
            body: None,
            content_type: None,
            stream: false,
            request_id: None,
            traceparent: None,
        }
    }

    #[test]
    fn azure_paths_carry_the_deployment_and_api_version() {
        let p = provider(
            "{provider: azure, base_url: 'https://res.openai.azure.com', api_key: k, model: gpt4o-prod}",
        );
        assert_eq!(p.kind(), ProviderKind::Azure);
        let url = p.url(&request("chat/completions", None)).unwrap();
        assert_eq!(
            url.as_str(),
            format!(
                "https://res.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version={AZURE_DEFAULT_API_VERSION}"
            )
        );
        let url = p
            .url(&request("files", Some("limit=2&api-version=evil")))
            .unwrap();
        assert_eq!(
            url.as_str(),
            format!(
                "https://res.openai.azure.com/openai/files?api-version={AZURE_DEFAULT_API_VERSION}&limit=2"
            )
        );
        let p = provider(
            "{provider: azure, base_url: 'https://res.openai.azure.com', api_key: k, model: emb, api_version: 2025-01-01-preview}",
        );
        let url = p.url(&request("embeddings", None)).unwrap();
        assert_eq!(
            url.as_str(),
            "https://res.openai.azure.com/openai/deployments/emb/embeddings?api-version=2025-01-01-preview"
        );
    }

    #[tokio::test]
    async fn a_key_that_is_no_header_fails_every_call_of_a_hand_built_deployment() {
        // Config loading refuses such a key; built by hand, the provider still builds (it cannot
        // fail on it) and every call fails without reaching the network, naming the field.
        let yaml = "models:\n  - name: m\n    deployments:\n      - {provider: openai, base_url: 'http://127.0.0.1:9/v1'}\n";
        let mut deployment = Config::from_yaml(yaml, None).unwrap().models[0].deployments[0].clone();
        deployment.api_key = Some(crate::config::Secret::new("sk-line\nbreak"));
        assert!(deployment.validate().is_err());
        let p = OpenAiProvider::new(&deployment);
        let err = p.send_inner(request("chat/completions", None)).await.unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("api_key") && !m.contains("sk-line")),
            "{err}"
        );
    }

    #[test]
    fn openai_paths_are_unchanged() {
        let p = provider("{provider: openai, base_url: 'http://localhost:11434/v1'}");
        assert_eq!(p.kind(), ProviderKind::OpenAi);
        let url = p.url(&request("chat/completions", Some("a=1"))).unwrap();
        assert_eq!(url.as_str(), "http://localhost:11434/v1/chat/completions?a=1");
    }
}

#[cfg(test)]
mod pool_tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;

    fn config() -> Config {
        let yaml = "models:\n  - name: chat\n    deployments:\n      - provider: openai\n        base_url: http://127.0.0.1:9/v1\n        api_key: k\n        model: gpt-4o-mini\n        retry: { max_retries: 0 }\n";
        Config::from_yaml(yaml, None).unwrap()
    }

    #[tokio::test]
    async fn clients_with_equal_settings_share_one_pool() {
        let a = config();
        let b = config();
        let pa = OpenAiProvider::new(&a.models[0].deployments[0]);
        let pb = OpenAiProvider::new(&b.models[0].deployments[0]);
        assert!(
            Arc::ptr_eq(pa.pool(), pb.pool()),
            "equal settings must share a pool"
        );
        let mut c = config();
        c.models[0].deployments[0].timeouts.read = std::time::Duration::from_secs(5);
        let pc = OpenAiProvider::new(&c.models[0].deployments[0]);
        assert!(
            !Arc::ptr_eq(pa.pool(), pc.pool()),
            "different timeouts get their own pool"
        );
    }
}
