//! The fuzz targets' regression suite, run by `cargo test`: every seed (the translation
//! fixtures, the config examples) and every input a fuzzer ever found (`fuzz/regressions/`)
//! replayed through each entry point of `weir::fuzz`, plus a few thousand cheap deterministic
//! mutations of the seeds. The coverage-guided runs live in `fuzz/` (scripts/fuzz.sh).

// Test code: a failed unwrap here is a failed test (the targets are plain fns, outside #[test]).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

/// Each target with the invariants its libFuzzer twin checks.
const TARGETS: &[(&str, Target)] = &[
    ("sse_framer", |d| {
        let (events, pending, at_once) = weir::fuzz::sse_framer(d);
        let mut joined: Vec<u8> = events.concat();
        joined.extend_from_slice(&pending);
        assert_eq!(joined, d.get(1..).unwrap_or_default());
        assert_eq!(events, at_once);
    }),
    ("request_body", |d| {
        if let Some(out) = weir::fuzz::request_body(d) {
            let after: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let before: Option<serde_json::Value> = serde_json::from_slice(d).ok();
            // Only a `model` the body has is rewritten (the engine rewrites no other).
            if before.is_some_and(|b| b.get("model").is_some()) {
                assert_eq!(after["model"], "fuzz-model");
            }
        }
    }),
    ("anthropic_request", |d| {
        json_or_none(weir::fuzz::anthropic_request(d))
    }),
    ("anthropic_response", |d| {
        json_or_none(weir::fuzz::anthropic_response(d).map(|b| b.to_vec()))
    }),
    ("anthropic_stream", |d| {
        let _ = weir::fuzz::anthropic_stream(d);
    }),
    ("gemini_request", |d| json_or_none(weir::fuzz::gemini_request(d))),
    ("gemini_response", |d| {
        json_or_none(weir::fuzz::gemini_response(d))
    }),
    ("gemini_stream", |d| {
        let _ = weir::fuzz::gemini_stream(d);
    }),
    ("messages_request", |d| {
        json_or_none(weir::fuzz::messages_request(d).map(|b| b.to_vec()))
    }),
    ("messages_response", |d| {
        json_or_none(weir::fuzz::messages_response(d).map(|b| b.to_vec()))
    }),
    ("messages_stream", |d| {
        let _ = weir::fuzz::messages_stream(d);
    }),
    ("config", |d| {
        let _ = weir::fuzz::config(d);
    }),
];

fn json_or_none(out: Option<Vec<u8>>) {
    if let Some(out) = out {
        serde_json::from_slice::<serde_json::Value>(&out).unwrap();
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Seeds every target gets: the fixtures and the repository's example configs.
fn seeds() -> Vec<Vec<u8>> {
    let mut paths = Vec::new();
    files_under(&root().join("crates/weir/tests/fixtures"), &mut paths);
    files_under(&root().join("examples"), &mut paths);
    files_under(&root().join("fuzz/seeds"), &mut paths);
    paths.sort();
    let mut seeds: Vec<Vec<u8>> = paths.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    // Each fixture is also offered as one SSE stream of its JSON values.
    let streams: Vec<Vec<u8>> = seeds
        .iter()
        .filter_map(|s| serde_json::from_slice::<serde_json::Value>(s).ok())
        .filter_map(|v| v.as_array().cloned())
        .map(|events| {
            let mut out = vec![3u8];
            for e in events {
                out.extend_from_slice(format!("data: {e}\n\n").as_bytes());
            }
            out
        })
        .collect();
    seeds.extend(streams);
    seeds
}

#[test]
fn every_regression_input_is_handled() {
    let mut ran = 0;
    for (name, target) in TARGETS {
        let mut paths = Vec::new();
        files_under(&root().join("fuzz/regressions").join(name), &mut paths);
        for path in paths {
            let data = std::fs::read(&path).unwrap();
            target(&data);
            ran += 1;
        }
    }
    eprintln!("{ran} regression inputs replayed");
}

#[test]
fn seeds_and_their_mutations_are_handled() {
    let seeds = seeds();
    assert!(seeds.len() > 20, "only {} seeds found", seeds.len());
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (_, target) in TARGETS {
        for seed in &seeds {
            target(seed);
            for _ in 0..8 {
                let mut input = seed.clone();
                for _ in 0..=(next() % 4) {
                    if input.is_empty() {
                        break;
                    }
                    let at = (next() as usize) % input.len();
                    match next() % 4 {
                        0 => input[at] = next() as u8,
                        1 => input.truncate(at),
                        2 => input.insert(at, b"{}[]\",:\n\\"[(next() % 9) as usize]),
                        _ => {
                            let end = (at + (next() as usize) % 32).min(input.len());
                            let piece = input[at..end].to_vec();
                            input.splice(at..at, piece);
                        }
                    }
                }
                target(&input);
            }
        }
    }
}
