//! The gateway crate's module graph stays a DAG: HTTP plumbing below the API faces, the faces
//! below the router, nothing importing upwards (see `docs/architecture.md`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../weir/tests/support/module_graph.rs"]
mod module_graph;

use module_graph::{Layers, find_cycle, graph, upward_edges};

/// The gateway's top-level modules (the `weir` binary's `main.rs` is its own crate root).
const LAYERS: Layers = Layers(&[
    ("telemetry", 0),
    ("reload", 0),
    ("state", 1),
    ("http", 2),
    ("faces", 3),
    ("admin", 3),
    ("health", 3),
    ("router", 4),
    ("server", 5),
    ("main", 6),
    ("check", 6),
]);

fn gateway_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    graph(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &LAYERS,
    )
}

#[test]
fn no_module_uses_one_in_a_higher_layer() {
    let upward = upward_edges(&gateway_graph(), &LAYERS);
    assert!(upward.is_empty(), "modules reaching up:\n{}", upward.join("\n"));
}

#[test]
fn the_module_graph_has_no_cycles() {
    if let Some(cycle) = find_cycle(&gateway_graph()) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}
