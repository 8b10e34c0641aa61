#!/usr/bin/env bash
# Run the bundled AI stack: the demo backends plus airgate serving examples/ai-stack.
#
#   bash examples/run.sh
#
# Overridable: AIRGATE_HTTP_ADDR (127.0.0.1:8080), AIRGATE_HTTPS_ADDR (127.0.0.1:8443),
# AIRGATE_ADMIN_ADDR (127.0.0.1:9090), DEMO_ADDR (127.0.0.1:9100), CARGO_TARGET_DIR,
# PROFILE (release; `PROFILE=debug` builds faster).
# Ctrl-C stops both processes.
set -euo pipefail
cd "$(dirname "$0")/.."

export AIRGATE_HTTP_ADDR="${AIRGATE_HTTP_ADDR:-127.0.0.1:8080}"
export AIRGATE_HTTPS_ADDR="${AIRGATE_HTTPS_ADDR:-127.0.0.1:8443}"
export AIRGATE_ADMIN_ADDR="${AIRGATE_ADMIN_ADDR:-127.0.0.1:9090}"
DEMO_ADDR="${DEMO_ADDR:-127.0.0.1:9100}"
PROFILE="${PROFILE:-release}"
TARGET="${CARGO_TARGET_DIR:-target}"
CONFIG=examples/ai-stack

if ! command -v cargo >/dev/null 2>&1; then
  echo "run.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

echo "==> building airgate and the demo backend ($PROFILE)"
if [ "$PROFILE" = debug ]; then
  cargo build --bin airgate --example demo_backend
else
  cargo build --profile "$PROFILE" --bin airgate --example demo_backend
fi
BIN="$TARGET/$PROFILE"

pids=()
tmp=""
cleanup() {
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  [ -n "$tmp" ] && rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The manifests point at 127.0.0.1:9100; serve a rewritten copy when DEMO_ADDR differs.
if [ "$DEMO_ADDR" != "127.0.0.1:9100" ]; then
  tmp="$(mktemp -d)"
  for f in "$CONFIG"/*.yaml; do
    sed -e "s#http://127.0.0.1:9100#http://$DEMO_ADDR#g" \
        -e "s#port: 9100#port: ${DEMO_ADDR##*:}#g" "$f" > "$tmp/$(basename "$f")"
  done
  CONFIG="$tmp"
fi

echo "==> starting the demo backend on $DEMO_ADDR"
DEMO_ADDR="$DEMO_ADDR" "$BIN/examples/demo_backend" &
pids+=("$!")

host="${DEMO_ADDR%:*}"; port="${DEMO_ADDR##*:}"
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
  sleep 0.1
done

echo "==> checking $CONFIG"
"$BIN/airgate" check --config "$CONFIG"

echo "==> starting airgate (http=$AIRGATE_HTTP_ADDR admin=$AIRGATE_ADMIN_ADDR)"
"$BIN/airgate" serve --config "$CONFIG" &
pids+=("$!")

H="http://$AIRGATE_HTTP_ADDR"
cat <<MSG

airgate is serving the AI stack. Try (see README.md for more):
  curl -s -XPOST $H/tts/v1/audio/speech -d '{"input":"hi"}' -o hello.wav
  curl -s -XPOST $H/stt/v1/audio/transcriptions --data-binary @hello.wav
  curl -N -XPOST $H/llm/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"model":"demo","stream":true,"messages":[{"role":"user","content":"hi"}]}'
  curl -s -XPOST $H/api/upload/big --data-binary @hello.wav
  curl -s http://$AIRGATE_ADMIN_ADDR/metrics | grep airgate_requests_total
Edit $CONFIG/*.yaml and the change is served within a second. Ctrl-C stops everything.

MSG
# Exit when either process does (or on Ctrl-C).
wait -n "${pids[@]}"
