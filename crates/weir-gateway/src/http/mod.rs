//! HTTP plumbing shared by every API face: what happens to a request before a face's handler
//! sees it and after it answers. Nothing here knows which face it serves; the faces and the
//! router build on it, never the other way round.
//!
//! | Module | For |
//! |--------|-----|
//! | [`context`] | request id, span, the end-of-request log line and metrics |
//! | [`auth`] | the gateway key check, client identity and cache tenant |
//! | [`body`] | reading a request body within size and time limits |
//! | [`proxy`] | the one place a request becomes an engine call |
//! | [`response`] | the engine's answer as an HTTP response; streams, the drain cut-off |
//! | [`error`] | the one error edge, in the serving face's error shape |

pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod context;
pub(crate) mod error;
pub(crate) mod proxy;
pub(crate) mod response;
