//! The configuration sits below the runtime policies: `config` may use the error types, the wire
//! types and API paths, and nothing that runs requests (policies, routing, upstreams, tokens, the
//! cache, telemetry, the engine). The policies import their settings from `config`, never the
//! other way round (see `docs/architecture.md`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The shared graph reader; this test needs only part of it.
#[allow(dead_code)]
#[path = "support/module_graph.rs"]
mod module_graph;

use module_graph::{Layers, graph};

/// Every top-level module of the crate (the graph reader needs them all); only `config`'s edges
/// are checked here.
const MODULES: Layers = Layers(&[
    ("api", 0),
    ("body", 0),
    ("error", 0),
    ("path", 0),
    ("request", 1),
    ("response", 1),
    ("config", 2),
    ("policy", 3),
    ("route", 3),
    ("tokens", 3),
    ("cache", 3),
    ("upstream", 3),
    ("telemetry", 3),
    ("sse", 3),
    ("messages", 3),
    ("engine", 4),
    ("client", 5),
]);

#[test]
fn config_uses_only_the_error_api_and_path_modules() {
    let edges = graph(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &MODULES,
    );
    let allowed = ["error", "api", "path"];
    let used: Vec<&String> = edges
        .get("config")
        .into_iter()
        .flatten()
        .filter(|m| !allowed.contains(&m.as_str()))
        .collect();
    assert!(used.is_empty(), "config reaches up to: {used:?}");
}
