//! The API faces: one module per client API the gateway speaks. Each exposes its routes (without
//! authentication or error shape: the router mounts them, see `router`) and its handlers.

pub(crate) mod anthropic;
pub(crate) mod openai;
