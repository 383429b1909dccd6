#!/usr/bin/env bash
# Coverage-guided fuzzing of Weir's parsers and translations with libFuzzer, on the STABLE
# toolchain: libfuzzer-sys links libFuzzer, and the sanitizer-coverage instrumentation it needs
# is requested with stable -C flags (no -Z, no nightly, no cargo-fuzz). The explicit --target
# keeps those RUSTFLAGS away from build scripts.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 300 s, every target
#
# Corpora grow in fuzz/corpus/<target> (seeded from the fixtures and examples), crashes land
# in fuzz/artifacts/<target>; copy each crash into fuzz/regressions/<target>/ so
# crates/weir/tests/fuzz_corpus.rs replays it in `cargo test`. Prints one line per target:
# time, executions, corpus size, crashes.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_PER_TARGET="${1:-300}"
shift || true
ALL=(sse_framer request_body anthropic_request anthropic_response anthropic_stream gemini_request
     gemini_response gemini_stream messages_request messages_response messages_stream config)
TARGETS=("${@:-${ALL[@]}}")
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"

export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --release --target "$TRIPLE" --bins >&2

seed() {
  local dir="$1"
  mkdir -p "$dir"
  if [ -z "$(ls -A "$dir")" ]; then
    { find ../crates/weir/tests/fixtures ../examples seeds -type f 2>/dev/null || true; } | while read -r f; do
      cp "$f" "$dir/seed-$(basename "$(dirname "$f")")-$(basename "$f")"
    done
  fi
}

printf '| target | seconds | executions | exec/s | corpus | crashes |\n|---|---:|---:|---:|---:|---:|\n'
for target in "${TARGETS[@]}"; do
  corpus="corpus/$target"
  artifacts="artifacts/$target"
  seed "$corpus"
  mkdir -p "$artifacts"
  log="$(mktemp)"
  # -fork=0: one process; -max_len keeps inputs realistic for request bodies and events.
  set +e
  "target/$TRIPLE/release/$target" "$corpus" -artifact_prefix="$artifacts/" \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1
  set -e
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  crashes="$(find "$artifacts" -type f | wc -l)"
  files="$(find "$corpus" -type f | wc -l)"
  printf '| %s | %s | %s | %s | %s | %s |\n' "$target" "$SECONDS_PER_TARGET" "${execs:-?}" \
    "${rate:-?}" "$files" "$crashes"
  if [ "$crashes" != 0 ]; then
    grep -m3 -E "panicked|ERROR" "$log" >&2 || true
  fi
  rm -f "$log"
done
