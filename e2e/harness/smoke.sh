#!/usr/bin/env bash
# End-to-end check of the harness itself: build (cached), up, exercise the
# cluster with kubectl and helm, restart the API server, down, and make sure
# nothing is left running.
#
# Usage: smoke.sh
# Prints "harness smoke: N passed, 0 failed" on success; exits non-zero on the
# first failure.
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$HARNESS_DIR/common.sh"

"$HARNESS_DIR/build.sh" >/dev/null

SD="$(mktemp -d "${TMPDIR:-/tmp}/airgate-e2e-smoke.XXXXXX")"
trap '"$HARNESS_DIR/down.sh" "$SD" || true' EXIT

passed=0
check() { # description command...
	local d=$1
	shift
	if "$@"; then
		passed=$((passed + 1))
		airgate_log "ok: $d"
	else
		airgate_die "FAILED: $d"
	fi
}

t0=$SECONDS
AIRGATE_E2E_OWNER_PID=$$ "$HARNESS_DIR/up.sh" "$SD" >"$SD.up.out"
airgate_log "up.sh took $((SECONDS - t0))s"
head -n1 "$SD.up.out" | grep -q "^KUBECONFIG=$SD/kubeconfig$" || airgate_die "bad up.sh output: $(cat "$SD.up.out")"
rm -f "$SD.up.out"
export KUBECONFIG="$SD/kubeconfig"
k() { "$KUBECTL" --request-timeout=10s "$@"; }

ns_has_default() { local ns; ns="$(k get ns -o name)" && grep -qx namespace/default <<<"$ns"; }
check "kubectl get ns lists default" ns_has_default
check "admin can do everything" test "$(k auth can-i '*' '*')" = yes
check "create namespace" k create namespace airgate-smoke
check "create serviceaccount" k -n airgate-smoke create serviceaccount robot
tok="$(k -n airgate-smoke create token robot --duration=10m)"
is_jwt() { [[ $tok =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]]; }
check "token is a JWT" is_jwt
token_whoami() {
	"$KUBECTL" --request-timeout=10s --kubeconfig=/dev/null --server="$(cat "$SD/apiserver.url")" \
		--certificate-authority="$SD/pki/ca.crt" --token="$tok" \
		auth whoami -o jsonpath='{.status.userInfo.username}'
}
check "token authenticates as the serviceaccount" test "$(token_whoami)" = system:serviceaccount:airgate-smoke:robot
check "RBAC denies the serviceaccount" test "$(k auth can-i list secrets -n airgate-smoke --as=system:serviceaccount:airgate-smoke:robot || true)" = no
helm_is_pinned() { local v; v="$("$HELM" version --short)" && [[ $v == "$HELM_VERSION"* ]]; }
check "helm version" helm_is_pinned
check "helm talks to the cluster" "$HELM" list -n airgate-smoke

"$HARNESS_DIR/restart-apiserver.sh" "$SD"
check "namespace survives an API server restart" k get ns airgate-smoke -o name

api_pid="$(cat "$SD/kube-apiserver.pid")"
etcd_pid="$(cat "$SD/etcd.pid")"
"$HARNESS_DIR/down.sh" "$SD"
gone() { ! airgate_alive "$1"; }
check "statedir removed" test ! -e "$SD"
check "kube-apiserver gone" gone "$api_pid"
check "etcd gone" gone "$etcd_pid"
nothing_left() { ! pgrep -f -- "$SD" >/dev/null; }
check "nothing references the statedir" nothing_left
trap - EXIT

echo "harness smoke: $passed passed, 0 failed"
