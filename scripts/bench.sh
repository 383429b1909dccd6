#!/usr/bin/env bash
# Build the release binaries and run the gateway-vs-direct benchmark.
#   scripts/bench.sh                      # all four scenarios, ~2 minutes
#   scripts/bench.sh --scenario closed-unary --duration 5s
#   scripts/bench.sh --scenario limiter   # rate limiter micro-benchmark only, ~30 s -> bench-results/limiter.json
#   scripts/bench.sh --help
# Results: table on stdout, JSON in bench-results/latest.json (relative to the repo root).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

cargo build --release -p weir-gateway -p weir-bench
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/weir-bench" "$@"
