#!/usr/bin/env bash
# Everything CI runs, on a fresh Debian/Ubuntu machine with a Rust toolchain:
#   bash scripts/test.sh
# Installs what is missing (idempotent), then: rustfmt check, clippy -D warnings, the
# e2e harness build (real kube-apiserver/etcd, cached under ~/.cache/airgate), all tests,
# a bench smoke run, and a build of the static musl binary the container image ships.
#
# Knobs: SKIP_APT=1 (never call apt-get), SKIP_E2E_BUILD=1, SKIP_BENCH=1, SKIP_MUSL=1,
#        CARGO_TARGET_DIR (default ~/.cache/airgate/target, so a fresh clone reuses the
#        last build instead of compiling every dependency again).
set -euo pipefail

# Debian packages the tests and benches need. One list; add yours here.
#   openssl: test certificates   chromium: tests/policy_browser.rs (real browser CORS)
#   nginx: bench/ compares airgate against Debian's nginx   python3, procps: e2e/ and bench/ harnesses
#   musl-tools: the C parts of ring and mimalloc for the musl build (the Dockerfile's target)
APT_PACKAGES="openssl ca-certificates curl chromium nginx python3 procps musl-tools"

cd "$(dirname "$0")/.."
export AIRGATE_CACHE="${AIRGATE_CACHE:-$HOME/.cache/airgate}"
mkdir -p "$AIRGATE_CACHE"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$AIRGATE_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# CI builds each source once; incremental caches would only grow the shared target dir
# (11 GiB of them were found there, on a machine whose disk had filled).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Tests start their own airgate processes; the caller's flag twins must not leak in.
# (Test knobs such as AIRGATE_CHROMIUM are kept.)
for name in CONFIG HTTP_ADDR HTTPS_ADDR ADMIN_ADDR INGRESS_CLASS LOG_FORMAT ACCESS_LOG \
            TRUSTED_PROXIES SHUTDOWN_GRACE WORKER_THREADS WATCH_NAMESPACE \
            PUBLISH_SERVICE PUBLISH_ADDRESS ELECTION_ID ELECTION_NAMESPACE; do
  unset "AIRGATE_$name"
done

started=$(date +%s)
step() {
  local name="$1"; shift
  local t0; t0=$(date +%s)
  echo "==> $name"
  "$@"
  echo "<== $name ($(( $(date +%s) - t0 ))s)"
}

install_rust_components() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain with rustup first" >&2
    exit 1
  fi
  if command -v rustup >/dev/null 2>&1; then
    local installed; installed="$(rustup component list --installed 2>/dev/null || true)"
    for c in rustfmt clippy; do
      grep -q "^$c" <<<"$installed" || rustup component add "$c"
    done
  fi
}

install_apt_packages() {
  [ "${SKIP_APT:-0}" = 1 ] && return 0
  command -v dpkg >/dev/null 2>&1 || { echo "no dpkg; install: $APT_PACKAGES" >&2; return 0; }
  local missing=()
  for p in $APT_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo="sudo" || { echo "need root to install: ${missing[*]}" >&2; exit 1; }
  fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
}

# The container image is a static musl binary (Dockerfile). No Docker engine is needed to
# keep that path building: the same target is built here and must come out static.
MUSL_TARGET=x86_64-unknown-linux-musl
musl_build() {
  if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$MUSL_TARGET"; then
    # The target's standard library comes from the toolchain's own download site, not a
    # package registry; where that cannot be reached, say so plainly rather than fail
    # every other check with it.
    if ! rustup target add "$MUSL_TARGET"; then
      echo "WARNING: could not install the $MUSL_TARGET target; the container image's build was NOT checked" >&2
      return 0
    fi
  fi
  CARGO_TARGET_DIR="$AIRGATE_CACHE/musl-target" cargo build --locked --target "$MUSL_TARGET" --bin airgate
  local bin="$AIRGATE_CACHE/musl-target/$MUSL_TARGET/debug/airgate"
  "$bin" --version
  # A program interpreter (the dynamic loader) would be missing from the scratch image.
  if readelf -l "$bin" | grep -q INTERP; then
    echo "the musl build of airgate needs a dynamic loader; the scratch image cannot run it" >&2
    return 1
  fi
}

# The target dir is shared by every clone (CARGO_TARGET_DIR above), and each source
# change links new test executables, a few hundred MiB each with debug info, beside the
# old ones until the disk fills. Keep only the ones this build made.
prune_stale_test_binaries() {
  local deps="$CARGO_TARGET_DIR/debug/deps" current exe stem old
  current=$(cargo test --all-targets --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | cut -d'"' -f4) || return 0
  for exe in $current; do
    [ "$(dirname "$exe")" = "$deps" ] || continue
    stem=$(basename "$exe")
    stem=${stem%-*}
    for old in "$deps/$stem"-????????????????; do
      if [ -f "$old" ] && ! grep -qxF "$old" <<<"$current"; then
        rm -f "$old" "$old.d"
      fi
    done
  done
}

step "rust components" install_rust_components
step "system packages" install_apt_packages
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --all-targets -- -D warnings
if [ -f e2e/harness/build.sh ] && [ "${SKIP_E2E_BUILD:-0}" != 1 ]; then
  step "e2e harness build" bash e2e/harness/build.sh
fi
step "cargo test" cargo test --all-targets
step "prune stale test executables" prune_stale_test_binaries
if [ -f bench/smoke.sh ] && [ "${SKIP_BENCH:-0}" != 1 ]; then
  step "bench smoke" bash bench/smoke.sh
fi
if [ "${SKIP_MUSL:-0}" != 1 ] && [ "$(uname -m)" = x86_64 ]; then
  step "musl build (container image target)" musl_build
fi
echo "all checks passed in $(( $(date +%s) - started ))s"
