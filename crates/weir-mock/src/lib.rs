//! An OpenAI-compatible mock LLM upstream with scripted faults, for Weir's tests, demos and
//! benchmarks.
//!
//! Two layers:
//! - [`content`] (always built, no runtime): pure response generation. [`content::respond`]
//!   answers `chat/completions` (whole or streamed), `embeddings`, `images/generations`,
//!   `models` and `models/{id}`, Anthropic's `messages` ([`content::anthropic`]: whole or
//!   streamed, with tool use and Anthropic-shaped errors — faults on that path use them too;
//!   `models` in Anthropic's shape for requests carrying `anthropic-version`),
//!   and echoes any other path as `{"object":"mock.echo",...}` so
//!   generic passthrough can be tested. The `weir` library uses it in-process as its offline
//!   "mock" provider.
//! - [`server`] (feature `server`, default): an axum server under `/v1/...` that adds faults,
//!   pacing, request counters, request recording and an optional required API key.
//!   [`server::MockServer`] binds `127.0.0.1:0` for tests.
//!
//! The server also speaks two other dialects, with the same directives and fault modes:
//! - **Gemini** under `/v1beta/` ([`content::gemini`]): `models/{model}:generateContent`,
//!   `:streamGenerateContent` (`?alt=sse` for SSE), `:embedContent`, `:batchEmbedContents`,
//!   `GET models` and `GET models/{id}`, with function calling; faults and errors come in
//!   Gemini's shape (`{"error":{"code","message","status"}}`, a `RetryInfo` detail on 429s).
//!   Directives may ride in the path's model name (`models/mock:chunks=3:generateContent`).
//! - **Azure OpenAI** paths: `/openai/deployments/{deployment}/...` and `/openai/...` are served
//!   like `/v1/...` (the `api-version` query is accepted and ignored).
//!
//! **Chaos mode** ([`server::ChaosConfig`], `weir mock --fault-mix ...`): faults at given rates
//! drawn per request by a seeded RNG (statuses with `Retry-After`, disconnects, truncation,
//! stalls, malformed events, slow headers), answers derived from the prompt
//! ([`content::derived_content`]) so a client can check them, per-prompt call counts and a
//! latency that rises with load.
//!
//! A required API key is accepted as `Authorization: Bearer`, `api-key` (Azure) or
//! `x-goog-api-key` (Gemini).
//!
//! # Directives
//!
//! A request scripts the mock's behaviour with directives, read from three places; a later one
//! overrides an earlier one key by key:
//!
//! 1. the model name, when it has the form `mock:key=value,key=value` (e.g. `mock:status=500`,
//!    `mock:latency_ms=50,chunks=20`; a bare boolean key such as `mock:hang` means `true`);
//! 2. a top-level `"x_mock": {...}` object in the JSON body (the gateway forwards unknown body
//!    fields untouched, so tests drive faults *through* the gateway this way);
//! 3. `x-mock-<key>` request headers, underscores written as dashes (`x-mock-latency-ms: 50`).
//!
//! Unknown keys and malformed values are a 400 (`code: "invalid_mock_directive"`), so a typo
//! fails loudly instead of silently testing nothing.
//!
//! | key | value | effect |
//! |---|---|---|
//! | `content` | string | the assistant text (default: [`content::DEFAULT_CONTENT`]) |
//! | `error_code` | string | the `code` of a fault's error body (default by status), e.g. `context_length_exceeded` |
//! | `chunks` | 1..=100000 | content pieces in a stream (default 5) |
//! | `status` | 200..=599 | answer with this status and an OpenAI error body; < 400 means "no fault" (to cancel a lower-precedence `status`) |
//! | `retry_after` | seconds, may be fractional | `Retry-After` (rounded up) and `retry-after-ms`; sent on 429/503 with a default of 1 s, or on any fault when given |
//! | `fail_times` | N | only the first N requests with the same `fail_key` fail, with `status` (default 500); later ones succeed |
//! | `fail_key` | string | the counter `fail_times` uses (default: the empty key, shared by all requests without one) |
//! | `latency_ms` | ms | delay before the response headers |
//! | `chunk_delay_ms` | ms | delay between SSE events; each event is its own body frame, so pacing is real on the wire |
//! | `stop_after_chunks` | N | send the first N SSE events (counting the role chunk), then end the body cleanly: no finish chunk, no `[DONE]` |
//! | `drop_after_chunks` | N | send N SSE events, then abort the connection (the client sees a body error); wins over `stop_after_chunks` |
//! | `drop_mid_body` | bool | non-streaming: send the headers and the first half of the JSON body, then abort |
//! | `hang` | bool | never answer; ends when the client disconnects, or with a 503 when the server shuts down |
//! | `error_after_chunks` | N | Anthropic streams (`/v1/messages`): after N events, an `error` event (type `error_code`, default `overloaded_error`) ends the stream |
//! | `malformed_after_chunks` | N | streams: after N events, one event whose `data` is cut-off JSON; the rest of the stream (and `[DONE]`) follows as usual |
//!
//! Error bodies follow OpenAI: `{"error":{"message","type","param","code"}}` with type/code by
//! status ([`content::error_kind`]): 429 → `requests`/`rate_limit_exceeded`, 401 →
//! `invalid_request_error`/`invalid_api_key`, 5xx → `server_error`/null, other 4xx →
//! `invalid_request_error`. Directives that only make sense on the wire (faults, pacing) are
//! ignored by [`content::respond`]; only `content` and `chunks` apply in-process.
//!
//! Order of events in the server: count the request, record it, check the API key, gather
//! directives, decide the `status`/`fail_times` fault (on arrival, so `fail_times` follows
//! arrival order), wait `latency_ms`, `hang`, send the fault or the generated reply with its
//! body directives. All waiting uses tokio time.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "server")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use weir_mock::server::MockServer;
//!
//! let mock = MockServer::start().await?;
//! let client = reqwest::Client::new();
//! // The first two requests keyed "t1" get a 429 with Retry-After: 1, the third succeeds.
//! for expected in [429, 429, 200] {
//!     let response = client
//!         .post(format!("{}/chat/completions", mock.base_url()))
//!         .json(&serde_json::json!({
//!             "model": "gpt-4o-mini",
//!             "messages": [{"role": "user", "content": "hi"}],
//!             "x_mock": {"status": 429, "fail_times": 2, "fail_key": "t1"},
//!         }))
//!         .send()
//!         .await?;
//!     assert_eq!(response.status().as_u16(), expected);
//! }
//! // A slow stream of 20 pieces, 10 ms apart, chosen by model name and header.
//! let response = client
//!     .post(format!("{}/chat/completions", mock.base_url()))
//!     .header("x-mock-chunk-delay-ms", "10")
//!     .json(&serde_json::json!({
//!         "model": "mock:chunks=20",
//!         "messages": [{"role": "user", "content": "hi"}],
//!         "stream": true,
//!     }))
//!     .send()
//!     .await?;
//! assert_eq!(response.headers()["content-type"], "text/event-stream");
//! assert_eq!(mock.state().count_for_path("/v1/chat/completions"), 4);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "server"))]
//! # fn main() {}
//! ```

// The docs link to `server`, which only exists with the feature.
#![cfg_attr(not(feature = "server"), allow(rustdoc::broken_intra_doc_links))]

pub mod content;

#[cfg(feature = "server")]
pub mod server;
