//! Google's Gemini API (`generativelanguage.googleapis.com`, `v1beta`): OpenAI requests are
//! translated to Gemini's and the answers back, streaming included.
//!
//! | OpenAI call | Gemini call |
//! |---|---|
//! | `POST chat/completions` | `POST v1beta/models/{model}:generateContent` |
//! | `POST chat/completions` with `stream: true` | `POST v1beta/models/{model}:streamGenerateContent?alt=sse` |
//! | `POST embeddings` (one string) | `POST v1beta/models/{model}:embedContent` |
//! | `POST embeddings` (several) | `POST v1beta/models/{model}:batchEmbedContents` |
//! | `GET models`, `GET models/{id}` | `GET v1beta/models`, `GET v1beta/models/{id}` |
//!
//! Anything else is refused with a 400 (`unsupported_endpoint`) before it reaches Google. The key
//! travels in `x-goog-api-key` (never in the URL, where it could end up in logs). `{model}` is the
//! request's `model` after the engine's rewrite (the deployment's `model`, else the client's).

mod error;
mod request;
mod response;
mod schema;
mod stream;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, header};
use serde::Serialize;
use serde_json::{Value, json};
use url::Url;

use super::{Provider, UpstreamBody, UpstreamRequest, UpstreamResponse, transport::Transport};
use crate::{
    api::{
        ChatCompletionRequest, EmbeddingInput, EmbeddingRequest,
        gemini::{
            BatchEmbedContentsRequest, BatchEmbedContentsResponse, Content, EmbedContentRequest,
            EmbedContentResponse, GeminiModel, GenerateContentResponse, ListModelsResponse, Part,
        },
    },
    config::{DeploymentConfig, ProviderKind},
    error::Error,
    path::ApiPath,
};

pub(crate) use request::chat_request;
pub(crate) use response::{ReplyContext, chat_completion};
pub(crate) use stream::translate as translate_stream;

/// Separates a synthesised tool-call id from the thought signature it carries. Thinking models
/// (Gemini 2.5, 3) return a `thoughtSignature` with their function calls and reject the next
/// turn if it does not come back; OpenAI clients keep nothing but the call's id, so the
/// signature rides in the id and is split off again when the call returns.
pub(super) const THOUGHT_SIGNATURE_SEPARATOR: &str = "__thought__";

/// Talks to the Gemini API.
#[derive(Debug)]
pub(crate) struct GeminiProvider {
    /// Pool, `x-goog-api-key`, timeouts.
    transport: Transport,
    /// `v1beta/` unless the base URL already ends in an API version (`.../v1beta`, `.../v1`).
    version_prefix: &'static str,
}

fn unsupported(method: &Method, path: &str) -> Error {
    Error::InvalidRequest {
        message: format!(
            "{method} /v1/{path} is not available for gemini deployments: the gemini provider \
             translates chat/completions, embeddings and models only"
        ),
        param: None,
        code: Some("unsupported_endpoint"),
    }
}

fn bad_upstream(what: &str, err: impl std::fmt::Display) -> Error {
    Error::BadUpstreamResponse {
        message: format!("unexpected Gemini {what} response: {err}"),
    }
}

fn json_bytes(value: &impl Serialize) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(format!("cannot serialise a Gemini request: {e}")))
}

fn json_headers(mut headers: HeaderMap) -> HeaderMap {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.remove(header::CONTENT_LENGTH);
    headers
}

impl GeminiProvider {
    /// Builds the provider for a deployment (joining the shared pool for its settings).
    pub(crate) fn new(config: &DeploymentConfig) -> Self {
        let transport = Transport::new(config).with_secret_header(config, "x-goog-api-key", str::to_owned);
        let last = config
            .base_url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default();
        let version_prefix = if matches!(last, "v1beta" | "v1" | "v1alpha") {
            ""
        } else {
            "v1beta/"
        };
        GeminiProvider {
            transport,
            version_prefix,
        }
    }

    /// `{base}/v1beta/models/{model}{suffix}`; the model may be given as `models/x` or `x`.
    fn model_url(&self, model: &str, suffix: &str, query: Option<&str>) -> Result<Url, Error> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        let path =
            ApiPath::parse(&format!("{}models/{model}{suffix}", self.version_prefix)).map_err(|_| {
                Error::invalid_param(
                    "model",
                    format!("`{model}` is not a valid Gemini model name"),
                    Some("invalid_value"),
                )
            })?;
        path.join_onto(self.transport.base_url(), query)
    }

    async fn dispatch(&self, req: UpstreamRequest) -> Result<UpstreamResponse, Error> {
        let path = req.path.as_str().to_owned();
        match (&req.method, path.as_str()) {
            (&Method::POST, "chat/completions") => self.chat(req).await,
            (&Method::POST, "embeddings") => self.embeddings(req).await,
            (&Method::GET, "models") => self.list_models(req).await,
            (&Method::GET, p) if p.starts_with("models/") => {
                let id = p.trim_start_matches("models/").to_owned();
                self.get_model(req, &id).await
            }
            (method, path) => Err(unsupported(method, path)),
        }
    }

    /// Sends a translated request; non-success answers come back with their body rewritten into
    /// the OpenAI error shape (the engine interprets it like any provider's).
    async fn send_json(
        &self,
        url: Url,
        req: UpstreamRequest,
        body: Option<Bytes>,
        stream: bool,
    ) -> Result<Result<UpstreamResponse, UpstreamResponse>, Error> {
        let method = if body.is_some() { Method::POST } else { Method::GET };
        let upstream = UpstreamRequest {
            method,
            body,
            content_type: None,
            stream,
            ..req
        };
        let mut resp = self.transport.send(url, upstream).await?;
        if resp.status.is_success() {
            return Ok(Ok(resp));
        }
        let body = std::mem::replace(&mut resp.body, UpstreamBody::Full(Bytes::new()))
            .collect(crate::upstream::MAX_RESPONSE_BYTES)
            .await?;
        let translated = error::translate_error(resp.status, &mut resp.headers, &body);
        resp.body = UpstreamBody::Full(translated);
        Ok(Err(resp))
    }

    async fn chat(&self, req: UpstreamRequest) -> Result<UpstreamResponse, Error> {
        let body = req.body.clone().unwrap_or_default();
        let chat: ChatCompletionRequest =
            serde_json::from_slice(&body).map_err(|e| Error::InvalidRequest {
                message: format!("Invalid chat completion request: {e}"),
                param: None,
                code: Some("invalid_type"),
            })?;
        let translated = chat_request(&chat)?;
        let stream = chat.stream == Some(true);
        let include_usage = chat
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let url = if stream {
            self.model_url(&chat.model, ":streamGenerateContent", Some("alt=sse"))?
        } else {
            self.model_url(&chat.model, ":generateContent", None)?
        };
        let resp = match self
            .send_json(url, req, Some(json_bytes(&translated)?), stream)
            .await?
        {
            Ok(resp) => resp,
            Err(error) => return Ok(error),
        };
        let ctx = ReplyContext::new(&chat.model);
        let mut headers = resp.headers;
        headers.remove(header::CONTENT_LENGTH);
        if stream {
            let upstream = match resp.body {
                UpstreamBody::Stream(s) => s,
                // Whole bodies only come from non-streaming sends; treated as a one-piece stream.
                UpstreamBody::Full(bytes) => {
                    Box::pin(futures::stream::iter([Ok(bytes)])) as super::ByteStream
                }
            };
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            return Ok(UpstreamResponse {
                status: resp.status,
                headers,
                body: UpstreamBody::Stream(stream::translate(upstream, ctx, include_usage)),
            });
        }
        let bytes = resp.body.collect(crate::upstream::MAX_RESPONSE_BYTES).await?;
        let gemini: GenerateContentResponse =
            serde_json::from_slice(&bytes).map_err(|e| bad_upstream("generateContent", e))?;
        let out = chat_completion(&gemini, &ctx);
        Ok(UpstreamResponse {
            status: resp.status,
            headers: json_headers(headers),
            body: UpstreamBody::Full(json_bytes(&out)?),
        })
    }

    async fn embeddings(&self, req: UpstreamRequest) -> Result<UpstreamResponse, Error> {
        let body = req.body.clone().unwrap_or_default();
        let emb: EmbeddingRequest = serde_json::from_slice(&body).map_err(|e| Error::InvalidRequest {
            message: format!("Invalid embeddings request: {e}"),
            param: Some("input".to_owned()),
            code: Some("invalid_type"),
        })?;
        let texts: Vec<String> = match &emb.input {
            EmbeddingInput::Text(t) => vec![t.clone()],
            EmbeddingInput::Texts(t) => t.clone(),
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenArrays(_) => {
                return Err(Error::invalid_param(
                    "input",
                    "gemini embeds text only: token arrays are not supported",
                    Some("invalid_type"),
                ));
            }
        };
        if texts.is_empty() {
            return Err(Error::invalid_param(
                "input",
                "input must not be empty",
                Some("invalid_value"),
            ));
        }
        let base64 = match emb.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(Error::invalid_param(
                    "encoding_format",
                    format!("`{other}` is not an encoding format (float or base64)"),
                    Some("invalid_value"),
                ));
            }
        };
        let model = emb.model.strip_prefix("models/").unwrap_or(&emb.model).to_owned();
        let one = |text: &str, named: bool| EmbedContentRequest {
            model: named.then(|| format!("models/{model}")),
            content: Content {
                role: None,
                parts: vec![Part {
                    text: Some(text.to_owned()),
                    ..Part::default()
                }],
            },
            output_dimensionality: emb.dimensions,
        };
        let x_mock = emb.extra.get("x_mock");
        let (url, payload) = match texts.as_slice() {
            [single] => (
                self.model_url(&model, ":embedContent", None)?,
                with_x_mock(serde_json::to_value(one(single, false)), x_mock)?,
            ),
            many => (
                self.model_url(&model, ":batchEmbedContents", None)?,
                with_x_mock(
                    serde_json::to_value(BatchEmbedContentsRequest {
                        requests: many.iter().map(|t| one(t, true)).collect(),
                    }),
                    x_mock,
                )?,
            ),
        };
        let resp = match self
            .send_json(url, req, Some(json_bytes(&payload)?), false)
            .await?
        {
            Ok(resp) => resp,
            Err(error) => return Ok(error),
        };
        let bytes = resp.body.collect(crate::upstream::MAX_RESPONSE_BYTES).await?;
        let vectors = if texts.len() == 1 {
            let one: EmbedContentResponse =
                serde_json::from_slice(&bytes).map_err(|e| bad_upstream("embedContent", e))?;
            vec![one.embedding.values]
        } else {
            let batch: BatchEmbedContentsResponse =
                serde_json::from_slice(&bytes).map_err(|e| bad_upstream("batchEmbedContents", e))?;
            batch.embeddings.into_iter().map(|e| e.values).collect()
        };
        if vectors.len() != texts.len() {
            return Err(bad_upstream(
                "embeddings",
                format!("{} embeddings for {} inputs", vectors.len(), texts.len()),
            ));
        }
        // Gemini reports no token usage for embeddings; a bytes/4 estimate (what the engine
        // reserves against limits too) keeps `usage` present, as OpenAI clients expect.
        let reported = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.pointer("/usageMetadata/promptTokenCount")?.as_u64());
        let tokens =
            reported.unwrap_or_else(|| texts.iter().map(|t| (t.len() as u64).div_ceil(4).max(1)).sum());
        let data: Vec<Value> = vectors
            .into_iter()
            .enumerate()
            .map(|(index, values)| {
                let embedding = if base64 {
                    let raw: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Value::String(weir_mock::content::base64_encode(&raw))
                } else {
                    json!(values)
                };
                json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        let out = json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        });
        Ok(UpstreamResponse {
            status: resp.status,
            headers: json_headers(resp.headers),
            body: UpstreamBody::Full(json_bytes(&out)?),
        })
    }

    async fn list_models(&self, req: UpstreamRequest) -> Result<UpstreamResponse, Error> {
        let path = ApiPath::parse(&format!("{}models", self.version_prefix))?;
        // One page of the maximum size: Gemini's catalogue fits in it.
        let url = path.join_onto(self.transport.base_url(), Some("pageSize=1000"))?;
        let resp = match self.send_json(url, req, None, false).await? {
            Ok(resp) => resp,
            Err(error) => return Ok(error),
        };
        let bytes = resp.body.collect(crate::upstream::MAX_RESPONSE_BYTES).await?;
        let list: ListModelsResponse =
            serde_json::from_slice(&bytes).map_err(|e| bad_upstream("models", e))?;
        let data: Vec<Value> = list.models.iter().map(model_object).collect();
        Ok(UpstreamResponse {
            status: resp.status,
            headers: json_headers(resp.headers),
            body: UpstreamBody::Full(json_bytes(&json!({"object": "list", "data": data}))?),
        })
    }

    async fn get_model(&self, req: UpstreamRequest, id: &str) -> Result<UpstreamResponse, Error> {
        let url = self.model_url(id, "", None)?;
        let resp = match self.send_json(url, req, None, false).await? {
            Ok(resp) => resp,
            Err(error) => return Ok(error),
        };
        let bytes = resp.body.collect(crate::upstream::MAX_RESPONSE_BYTES).await?;
        let model: GeminiModel = serde_json::from_slice(&bytes).map_err(|e| bad_upstream("model", e))?;
        Ok(UpstreamResponse {
            status: resp.status,
            headers: json_headers(resp.headers),
            body: UpstreamBody::Full(json_bytes(&model_object(&model))?),
        })
    }
}

fn with_x_mock(value: Result<Value, serde_json::Error>, x_mock: Option<&Value>) -> Result<Value, Error> {
    let mut value = value.map_err(|e| Error::Internal(format!("cannot serialise a Gemini request: {e}")))?;
    // See `request::chat_request`: weir-mock's directives ride along for fault tests.
    if let (Some(obj), Some(x_mock)) = (value.as_object_mut(), x_mock) {
        obj.insert("x_mock".to_owned(), x_mock.clone());
    }
    Ok(value)
}

/// A Gemini model as an OpenAI model object.
fn model_object(model: &GeminiModel) -> Value {
    let id = model.name.strip_prefix("models/").unwrap_or(&model.name);
    json!({"id": id, "object": "model", "created": 0, "owned_by": "google"})
}

impl Provider for GeminiProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gemini
    }

    fn send(&self, request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, Error>> {
        Box::pin(self.dispatch(request))
    }

    fn pool_stats(&self) -> Option<crate::upstream::pool::PoolStats> {
        Some(self.transport.pool().stats())
    }
}

#[cfg(test)]
mod tests;
