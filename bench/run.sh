#!/usr/bin/env bash
# airgate against nginx and against no proxy, on this machine, in one run.
#
#   bash bench/run.sh            full run (about 10 minutes), writes bench/RESULTS.md
#   bash bench/run.sh --smoke    seconds per scenario, debug build; checks every scenario yields numbers
#   bash bench/run.sh --only plain,sse    a subset (names: plain policy auth tls sse bulk scale zone)
#
# Installs what it needs (idempotent): Debian's nginx, wrk, nghttp2-client (h2load),
# util-linux (taskset), curl, openssl. Builds airgate and examples/bench_backend.rs (the
# backend, and the fixed-rate latency generator: `bench_backend load`) in release mode
# into ~/.cache/airgate/bench-target (override with AIRGATE_BENCH_TARGET).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${AIRGATE_CACHE:-$HOME/.cache/airgate}
TARGET=${AIRGATE_BENCH_TARGET:-$CACHE/bench-target}
SMOKE=0
ARGS=()
for a in "$@"; do
  [[ $a == --smoke ]] && SMOKE=1
  ARGS+=("$a")
done

log() { echo "[bench] $*" >&2; }

if (( $(nproc) < 2 )); then
  log "needs 2 CPUs (proxy on CPU 0, load generator and backend on CPU 1); found $(nproc)"
  exit 1
fi

missing=()
for pair in nginx:nginx wrk:wrk h2load:nghttp2-client taskset:util-linux curl:curl openssl:openssl python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if (( ${#missing[@]} )); then
  log "installing ${missing[*]}"
  SUDO=; (( EUID != 0 )) && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if (( SMOKE )); then
  # The smoke run proves the harness works; speed does not matter. It uses the debug
  # build the test step already made, so CI does not compile everything again in
  # release mode.
  TARGET=${CARGO_TARGET_DIR:-$CACHE/target}
  PROFILE_DIR=debug
  log "building airgate and the bench backend (debug, for the smoke run)"
  (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --quiet --bin airgate --example bench_backend)
else
  PROFILE_DIR=release
  log "building airgate and the bench backend (release)"
  (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet --bin airgate --example bench_backend)
fi

OUT=$REPO/bench/RESULTS.md
JSON=$CACHE/bench-results.json
if (( SMOKE )); then OUT=$CACHE/bench-smoke.md; JSON=$CACHE/bench-smoke.json; fi
for a in "${ARGS[@]}"; do [[ $a == --only* ]] && OUT=$CACHE/bench-partial.md; done

python3 "$REPO/bench/harness.py" \
  --airgate "$TARGET/$PROFILE_DIR/airgate" \
  --backend "$TARGET/$PROFILE_DIR/examples/bench_backend" \
  --repo "$REPO" --out "$OUT" --json "$JSON" "${ARGS[@]}" &
PY=$!
# The driver reaps its own children; this covers the driver itself being interrupted.
trap 'kill -TERM $PY 2>/dev/null || true; wait $PY 2>/dev/null || true' EXIT
status=0
wait $PY || status=$?
trap - EXIT
log "report: $OUT"
exit $status
