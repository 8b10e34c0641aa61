#!/usr/bin/env bash
# Profile airgate's hot path: callgrind on the release binary while wrk drives it for a
# fixed time through scenario 1 (plain), 2 (full policy set), 3 (auth hook) or 7 (10,000
# routes, wrk cycling over them).
#
#   bash bench/profile.sh [plain|policy|auth|scale] [SECONDS]
#
# Needs the binaries run.sh builds and valgrind (installed if missing). Counts only the
# measured requests (counters zeroed after a warm-up), prints instructions per request
# and the functions with the highest self cost, and leaves the callgrind files in
# ~/.cache/airgate/profile/. (perf has no hardware counters on this machine;
# `perf record -e cpu-clock` samples, including the kernel, do work.)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${AIRGATE_CACHE:-$HOME/.cache/airgate}
TARGET=${AIRGATE_BENCH_TARGET:-$CACHE/bench-target}
WHICH=${1:-plain}  # plain, policy, auth or scale
SECS=${2:-30}
OUT=$CACHE/profile
mkdir -p "$OUT"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
(cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet --bin airgate --example bench_backend)
python3 "$REPO/bench/profile.py" --airgate "$TARGET/release/airgate" \
  --backend "$TARGET/release/examples/bench_backend" --scenario "$WHICH" --seconds "$SECS" --out "$OUT"
