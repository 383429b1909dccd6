//! The module graph of the `weir` crate stays a DAG, layered as `docs/architecture.md` draws it.
//!
//! Reads the crate's sources, collects every `crate::…` path outside comments and test modules,
//! and checks that no module reaches one in a higher layer and that there are no cycles. A new
//! top-level module must be given a layer here (the test fails until it is).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/module_graph.rs"]
mod module_graph;

use module_graph::{Layers, code_of, find_cycle, graph, referenced_modules, upward_edges};

/// Each top-level module's layer: a module may use modules of lower layers, and of its own layer
/// as long as that makes no cycle.
const LAYERS: Layers = Layers(&[
    // Foundations: errors, wire types, paths, raw bodies, SSE framing, the Anthropic translation.
    ("error", 0),
    ("path", 0),
    ("body", 0),
    ("api", 0),
    ("sse", 0),
    ("messages", 0),
    // The validated configuration.
    ("config", 1),
    // What the engine is asked and answers.
    ("request", 2),
    ("response", 2),
    // The policies and services the engine is built from.
    ("policy", 3),
    ("route", 3),
    ("upstream", 3),
    ("tokens", 3),
    ("cache", 3),
    ("telemetry", 3),
    // The pipeline, and the typed client over it.
    ("engine", 4),
    ("client", 5),
    // Fuzzing entry points reach into every parser and translation.
    ("fuzz", 5),
]);

fn weir_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    graph(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &LAYERS,
    )
}

#[test]
fn no_module_uses_one_in_a_higher_layer() {
    let upward = upward_edges(&weir_graph(), &LAYERS);
    assert!(upward.is_empty(), "modules reaching up:\n{}", upward.join("\n"));
}

#[test]
fn the_module_graph_has_no_cycles() {
    if let Some(cycle) = find_cycle(&weir_graph()) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_scanner_finds_grouped_and_plain_paths() {
    let code = code_of(
        "use crate::{a::{B, c::D}, e};\n// crate::commented\nfn f() { crate::g::h(); }\n#[cfg(test)]\nmod tests { use crate::t; }",
    );
    let found: Vec<String> = referenced_modules(&code).into_iter().collect();
    assert_eq!(found, ["a", "e", "g"]);
}
