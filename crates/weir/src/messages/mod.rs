//! The Anthropic-compatible face: Anthropic Messages requests in, OpenAI chat completions through
//! the engine (so any provider can answer), Anthropic messages and events out.
//!
//! - [`to_openai`]: an Anthropic `POST /v1/messages` body → an OpenAI chat completion body.
//! - [`to_message`]: a `chat.completion` → an Anthropic message.
//! - [`EventTranslator`]: `chat.completion.chunk` events → Anthropic's event sequence.
//! - [`error_body`]: any engine error → Anthropic's error shape (status from the one mapping,
//!   [`crate::api::ErrorResponse::from_error`]).
//!
//! The gateway serves this as `POST /v1/messages`; see docs/providers.md for what is translated.

mod request;
mod response;
mod stream;

pub use request::{Inbound, to_openai};
pub use response::{error_body, to_message};
pub use stream::EventTranslator;
