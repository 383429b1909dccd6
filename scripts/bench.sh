#!/usr/bin/env bash
# Build the release binaries and run the gateway-vs-direct benchmark.
#   scripts/bench.sh                      # all four scenarios, ~2 minutes
#   scripts/bench.sh --scenario closed-unary --duration 5s
#   scripts/bench.sh --scenario limiter   # rate limiter micro-benchmark only, ~30 s -> bench-results/limiter.json
#   scripts/bench.sh --gateway-bin ../weir-main --gateway-bin "${CARGO_TARGET_DIR:-target}/release/weir" \
#       --scenario closed-unary,closed-stream   # A/B: a saved binary (A) against the current build (B)
#   ... --rounds 5                        # repeat each scenario 5 times, alternating A/B order; adds medians and
#                                         # the median and min-max of the per-round B/A ratios
#   scripts/bench.sh --help
# Results: table on stdout, JSON in bench-results/latest.json (relative to the repo root). Every run reports the
# CPU time per request of the gateway and the mock; an A/B run also reports B/A ratios. Relative --gateway-bin
# paths are taken from the repo root (the script runs there).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

cargo build --release -p weir-gateway -p weir-bench
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/weir-bench" "$@"
