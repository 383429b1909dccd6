#!/usr/bin/env bash
# Installs what `cargo test --workspace` needs beyond the Rust toolchain, only if it is missing,
# so running it again does nothing. Today: `redis-server` (the Redis tests start their own on a
# free port). Debian/Ubuntu (apt-get); run as root, or with sudo available.
# Usage: scripts/setup.sh        (CI's .ci/run calls it before the tests)
set -euo pipefail

missing=()
command -v redis-server > /dev/null 2>&1 || missing+=(redis-server)

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: nothing to install (redis-server: $(command -v redis-server))"
  exit 0
fi

if ! command -v apt-get > /dev/null 2>&1; then
  echo "setup: please install: ${missing[*]} (no apt-get on this machine)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo > /dev/null 2>&1 || { echo "setup: run as root to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" > /dev/null
command -v redis-server > /dev/null 2>&1 || { echo "setup: redis-server still missing after install" >&2; exit 1; }
echo "setup: installed ${missing[*]}"
