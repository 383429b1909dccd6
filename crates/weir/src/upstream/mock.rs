//! The built-in offline provider: canned OpenAI-shaped answers generated in-process by
//! `weir_mock::content`, the same generator the `weir mock` HTTP server uses. No network, no key.

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::{Provider, UpstreamBody, UpstreamRequest, UpstreamResponse};
use crate::{config::ProviderKind, error::Error};

/// Answers every request locally.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MockProvider;

impl Provider for MockProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Mock
    }

    fn send(&self, req: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, Error>> {
        Box::pin(async move {
            let path = match &req.query {
                Some(q) => format!("{}?{q}", req.path.as_str()),
                None => req.path.as_str().to_owned(),
            };
            let body = req.body.as_deref().unwrap_or_default();
            let reply = weir_mock::content::respond(req.method.as_str(), &path, body);
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut headers = HeaderMap::new();
            let body = match reply.body {
                weir_mock::content::ReplyBody::Json(bytes) => {
                    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    UpstreamBody::Full(bytes)
                }
                weir_mock::content::ReplyBody::Events(events) => {
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/event-stream"),
                    );
                    UpstreamBody::Stream(Box::pin(futures::stream::iter(
                        events.into_iter().map(Ok::<Bytes, Error>),
                    )))
                }
            };
            Ok(UpstreamResponse {
                status,
                headers,
                body,
            })
        })
    }
}
