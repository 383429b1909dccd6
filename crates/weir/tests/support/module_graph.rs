//! Reads a crate's sources and checks its module graph against a table of layers: no module may
//! use one in a higher layer, and there may be no cycles. Shared by the `architecture` tests of
//! the workspace's crates (included with `#[path]`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// A crate's top-level modules and their layers.
pub struct Layers(pub &'static [(&'static str, u8)]);

impl Layers {
    pub fn layer_of(&self, module: &str) -> u8 {
        self.0
            .iter()
            .find(|(name, _)| *name == module)
            .map(|(_, layer)| *layer)
            .unwrap_or_else(|| panic!("module `{module}` has no layer in its crate's tests/architecture.rs"))
    }
}

/// The top-level module a source file belongs to (`None` for `lib.rs`).
pub fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(name) => Some(name.to_owned()),
        None => Some(first),
    }
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests` (tests may
/// reach anything).
pub fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .map(|line| match line.find("// ") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every `crate::` path, including those inside `use crate::{a::…, b}` groups.
pub fn referenced_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find("crate::") {
        let start = from + i + "crate::".len();
        from = start;
        if bytes.get(start) == Some(&b'{') {
            // A group: the first segment of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            let mut j = start + 1;
            while j < bytes.len() {
                match bytes[j] {
                    b'{' => depth += 1,
                    b'}' if depth == 0 => break,
                    b'}' => depth -= 1,
                    b',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphanumeric() || c == b'_') => {
                        let end = code[j..]
                            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .map_or(code.len(), |e| j + e);
                        out.insert(code[j..end].to_owned());
                        item_start = false;
                        j = end;
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
        } else {
            let end = code[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(code.len(), |e| start + e);
            out.insert(code[start..end].to_owned());
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module graph of the crate whose sources are in `src` (test-only files left out).
pub fn graph(src: &Path, layers: &Layers) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<&str> = layers.0.iter().map(|(m, _)| *m).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap();
        // Test-only files (`mod tests;`, `tests/`) may reach anything.
        if name == "tests.rs"
            || name.ends_with("_tests.rs")
            || file.components().any(|c| c.as_os_str() == "tests")
        {
            continue;
        }
        let Some(module) = module_of(src, &file) else {
            continue;
        };
        layers.layer_of(&module);
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        for target in referenced_modules(&code) {
            // Root re-exports (`crate::Error`) hide where a type lives: name its module instead.
            assert!(
                modules.contains(target.as_str()) || target == "self" || target == "super",
                "{}: `crate::{target}` — use the defining module's path",
                file.display()
            );
            if target != module && modules.contains(target.as_str()) {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    edges
}

/// Every edge that goes to a higher layer, as `from (layer) -> to (layer)`.
pub fn upward_edges(edges: &BTreeMap<String, BTreeSet<String>>, layers: &Layers) -> Vec<String> {
    let mut upward = Vec::new();
    for (from, targets) in edges {
        for to in targets {
            let (a, b) = (layers.layer_of(from), layers.layer_of(to));
            if b > a {
                upward.push(format!("{from} (layer {a}) -> {to} (layer {b})"));
            }
        }
    }
    upward
}

/// A cycle of the graph, if it has one.
pub fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search; a node met again while still on the path closes a cycle.
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeMap<&'a str, bool>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match done.get(node) {
            Some(true) => return None,
            Some(false) => {
                let start = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        done.insert(node, false);
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node, true);
        None
    }
    let mut done = BTreeMap::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut done, &mut Vec::new()))
}
