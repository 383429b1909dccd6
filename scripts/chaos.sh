#!/usr/bin/env bash
# The long chaos run: a faulty mock (every fault kind, seeded) behind the real gateway, in one
# process, a mix of unary and streamed requests on /v1/chat/completions and /v1/messages to
# OpenAI-compatible, Anthropic and Gemini deployments; prints the outcome table and exits 1 if
# the verdict (0 hangs, 0 silently wrong, upstream calls per request <= attempts) is broken.
#
#   scripts/chaos.sh                                     # 5 minutes, 16 in flight, default mix
#   scripts/chaos.sh --duration 30m --concurrency 64
#   scripts/chaos.sh --fault-mix 500=0.2,stall=0.1 --seed 7
#   scripts/chaos.sh --deployment-extra '        circuit_breaker: { enabled: false }'
#   PROFILE=dev scripts/chaos.sh --duration 1m           # without the release build
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
target_dir="${CARGO_TARGET_DIR:-target}"
if [ "${PROFILE:-release}" = release ]; then
  cargo build --release -p weir-chaos >&2
  exec "$target_dir/release/weir-chaos" run "$@"
fi
cargo build -p weir-chaos >&2
exec "$target_dir/debug/weir-chaos" run "$@"
