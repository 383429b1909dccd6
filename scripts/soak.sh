#!/usr/bin/env bash
# Soak: the gateway (`weir serve`) in front of a faulty mock (`weir mock --fault-mix ...`), both
# real processes, driven at a steady open-loop rate by `weir-chaos soak` on both faces (unary
# and streamed, OpenAI / Anthropic / Gemini deployments). Every interval it samples the
# gateway's RSS and open file descriptors (/proc) and the latency and outcomes of the requests
# that finished, prints a table row, and ends with the verdict: "flat" when memory and
# descriptors did not grow and nothing hung or came back silently wrong (exit 0), else 1.
#
#   scripts/soak.sh                                  # one hour at 50 req/s, a row a minute
#   scripts/soak.sh --duration 5m --rate 20          # a short run
#   scripts/soak.sh --duration 2m --sample-every 10s --profile dev
#
# Options: --duration D (1h), --rate R (50), --sample-every D (60s), --profile release|dev
# (release), --fault-mix SPEC (weir_chaos::DEFAULT_MIX), --seed N (1).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

duration=1h rate=50 sample=60s profile=release seed=1
mix="429=0.05,500=0.05,503=0.02,disconnect=0.05,truncate=0.05,stall=0.02,malformed=0.05,slow-headers=0.02"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --sample-every) sample="$2"; shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --fault-mix) mix="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

target_dir="${CARGO_TARGET_DIR:-target}"
if [ "$profile" = release ]; then
  cargo build --release -p weir-gateway -p weir-chaos >&2
  bin="$target_dir/release"
else
  cargo build -p weir-gateway -p weir-chaos >&2
  bin="$target_dir/debug"
fi

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Starts a process whose first stdout line is `listening on http://ADDR`; sets $addr and $pid.
start() {
  local name="$1"; shift
  mkfifo "$tmp/$name.out"
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pid=$!
  pids+=("$pid")
  exec {fd}<"$tmp/$name.out"
  if ! IFS= read -r -t 30 line <&"$fd"; then
    echo "$name did not start:" >&2; cat "$tmp/$name.err" >&2; exit 2
  fi
  # Keep draining its stdout in the background so it never blocks on a full pipe.
  cat <&"$fd" >/dev/null &
  addr="${line#listening on http://}"
}

start mock "$bin/weir" mock --port 0 --fault-mix "$mix" --seed "$seed" \
  --fault-retry-after 0.05 --slow-headers-ms 300
mock_addr="$addr"
"$bin/weir-chaos" config --mock "$mock_addr" >"$tmp/gateway.yaml"
start gateway "$bin/weir" serve --config "$tmp/gateway.yaml" --port 0
gateway_addr="$addr" gateway_pid="$pid"

echo "soak: $duration at $rate req/s, fault mix $mix, gateway pid $gateway_pid ($profile build)"
"$bin/weir-chaos" soak --target "http://$gateway_addr" --watch-pid "$gateway_pid" \
  --rate "$rate" --duration "$duration" --sample-every "$sample" --seed "$seed"
