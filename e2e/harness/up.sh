#!/usr/bin/env bash
# Start a real control plane (etcd + kube-apiserver, RBAC on) on loopback.
#
# Usage: up.sh <statedir>
#   statedir: created if missing; must be empty or absent.
# Env (optional):
#   AIRGATE_E2E_OWNER_PID     tear everything down (down.sh) when this pid exits
#   AIRGATE_E2E_MAX_LIFETIME  tear everything down after this many seconds (default 7200)
#   AIRGATE_E2E_READY_TIMEOUT seconds to wait for readiness (default 60)
# Stdout on success (KEY=VALUE lines; the same lines are in <statedir>/env):
#   KUBECONFIG=<statedir>/kubeconfig   (first line)
#   APISERVER_URL, APISERVER_PORT, ETCD_URL, KUBECTL, HELM, KUBE_APISERVER,
#   ETCD, CA_CERT, STATEDIR
# Exits non-zero with the log tails on stderr if anything fails to come up
# (and stops whatever it started; the statedir is kept for inspection and
# down.sh still cleans it).
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$HARNESS_DIR/common.sh"

[[ $# -eq 1 && -n $1 ]] || airgate_die "usage: up.sh <statedir>"

# Binaries (a no-op taking milliseconds when cached; a long build otherwise).
"$HARNESS_DIR/build.sh" >/dev/null

mkdir -p "$1"
SD="$(cd "$1" && pwd -P)"
if [[ -n "$(ls -A "$SD")" ]]; then
	airgate_die "statedir $SD is not empty (already up? run down.sh first)"
fi
touch "$SD/.airgate-e2e"
mkdir -p "$SD/pki"
chmod 0700 "$SD/pki"

# ---------------------------------------------------------------- certificates
gen_certs() {
	local p=$SD/pki rc
	set +e
	(
		set -e
		cd "$p"
		exec 2>openssl.log
		# CA
		openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
			-keyout ca.key -out ca.crt -subj "/CN=airgate-e2e-ca" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
		# API server serving certificate
		cat >apiserver.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
		openssl req -new -newkey rsa:2048 -nodes -sha256 \
			-keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-sha256 -days 3650 -extfile apiserver.ext -out apiserver.crt
		# Admin client certificate (O=system:masters)
		cat >client.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
		openssl req -new -newkey rsa:2048 -nodes -sha256 \
			-keyout admin.key -out admin.csr -subj "/O=system:masters/CN=airgate-e2e-admin"
		openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-sha256 -days 3650 -extfile client.ext -out admin.crt
		# Service-account token signing key pair
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
		openssl pkey -in sa.key -pubout -out sa.pub
		rm -f ./*.csr
		chmod 0600 ./*.key
	)
	rc=$?
	set -e
	if ((rc != 0)); then
		airgate_log_tail "$p/openssl.log"
		airgate_die "certificate generation failed"
	fi
}

write_kubeconfig() { # port
	local b64="base64 -w0"
	cat >"$SD/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: airgate-e2e
  cluster:
    server: https://127.0.0.1:$1
    certificate-authority-data: $($b64 <"$SD/pki/ca.crt")
users:
- name: airgate-e2e-admin
  user:
    client-certificate-data: $($b64 <"$SD/pki/admin.crt")
    client-key-data: $($b64 <"$SD/pki/admin.key")
contexts:
- name: airgate-e2e
  context:
    cluster: airgate-e2e
    user: airgate-e2e-admin
    namespace: default
current-context: airgate-e2e
EOF
	chmod 0600 "$SD/kubeconfig"
}

# ---------------------------------------------------------------- processes
stop_all() {
	airgate_stop_pidfile "$SD/kube-apiserver.pid" "$KUBE_APISERVER"
	airgate_stop_pidfile "$SD/etcd.pid" "$ETCD"
}

start_etcd() { # client_port peer_port
	local c=$1 p=$2
	rm -rf "$SD/etcd-data"
	mkdir -p "$SD/etcd-data"
	chmod 0700 "$SD/etcd-data"
	airgate_spawn "$SD/etcd.pid" "$SD/etcd.log" "$ETCD" \
		--name=airgate-e2e \
		--data-dir="$SD/etcd-data" \
		--listen-client-urls="http://127.0.0.1:$c" \
		--advertise-client-urls="http://127.0.0.1:$c" \
		--listen-peer-urls="http://127.0.0.1:$p" \
		--initial-advertise-peer-urls="http://127.0.0.1:$p" \
		--initial-cluster="airgate-e2e=http://127.0.0.1:$p" \
		--initial-cluster-state=new \
		--unsafe-no-fsync \
		--log-level=warn >/dev/null
	local pid deadline=$((SECONDS + AIRGATE_READY_TIMEOUT))
	pid="$(cat "$SD/etcd.pid")"
	while :; do
		if ! airgate_pid_is "$pid" "$ETCD"; then
			airgate_log_tail "$SD/etcd.log"
			airgate_log "etcd exited before becoming healthy"
			return 1
		fi
		if curl -sf --max-time 2 "http://127.0.0.1:$c/health" 2>/dev/null | grep -q '"health":"true"'; then
			return 0
		fi
		if ((SECONDS >= deadline)); then
			airgate_log_tail "$SD/etcd.log"
			airgate_log "etcd not healthy after ${AIRGATE_READY_TIMEOUT}s"
			return 1
		fi
		sleep 0.1
	done
}

write_apiserver_args() { # etcd_port api_port
	cat >"$SD/kube-apiserver.args" <<EOF
--etcd-servers=http://127.0.0.1:$1
--secure-port=$2
--bind-address=127.0.0.1
--advertise-address=127.0.0.1
--tls-cert-file=$SD/pki/apiserver.crt
--tls-private-key-file=$SD/pki/apiserver.key
--client-ca-file=$SD/pki/ca.crt
--cert-dir=$SD/pki
--authorization-mode=Node,RBAC
--service-account-issuer=https://kubernetes.default.svc.cluster.local
--service-account-key-file=$SD/pki/sa.pub
--service-account-signing-key-file=$SD/pki/sa.key
--service-cluster-ip-range=10.96.0.0/16
--endpoint-reconciler-type=none
--profiling=false
--v=1
EOF
}

gen_certs

attempt=0
while :; do
	attempt=$((attempt + 1))
	read -r ETCD_CLIENT_PORT ETCD_PEER_PORT API_PORT <<<"$(airgate_free_ports 3)"
	echo "https://127.0.0.1:$API_PORT" >"$SD/apiserver.url"
	write_apiserver_args "$ETCD_CLIENT_PORT" "$API_PORT"
	if start_etcd "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" &&
		airgate_start_apiserver "$SD" &&
		airgate_wait_apiserver "$SD"; then
		break
	fi
	stop_all
	# A port taken between choosing and binding it: choose again (bounded).
	if ((attempt < 3)) && grep -qs 'address already in use' "$SD/etcd.log" "$SD/kube-apiserver.log"; then
		airgate_log "port collision; retrying with new ports (attempt $((attempt + 1)))"
		mv -f "$SD/etcd.log" "$SD/etcd.log.$attempt" 2>/dev/null || true
		mv -f "$SD/kube-apiserver.log" "$SD/kube-apiserver.log.$attempt" 2>/dev/null || true
		continue
	fi
	airgate_die "control plane failed to start; logs in $SD"
done

write_kubeconfig "$API_PORT"

# ---------------------------------------------------------------- watchdog
# Bounds the life of the control plane even if the caller never runs down.sh.
OWNER_PID="${AIRGATE_E2E_OWNER_PID:-}"
MAX_LIFETIME="${AIRGATE_E2E_MAX_LIFETIME:-7200}"
BASH_EXE="$(readlink -f "$BASH")"
# shellcheck disable=SC2016 # expanded by the inner shell
setsid "$BASH_EXE" -c '
	owner=$1 deadline=$((SECONDS + $2)) down=$3 sd=$4
	while ((SECONDS < deadline)); do
		if [[ -n $owner ]] && ! kill -0 "$owner" 2>/dev/null; then break; fi
		sleep 1
	done
	exec "$down" "$sd"
' airgate-e2e-watchdog "$OWNER_PID" "$MAX_LIFETIME" "$HARNESS_DIR/down.sh" "$SD" \
	</dev/null >>"$SD/watchdog.log" 2>&1 &
echo $! >"$SD/watchdog.pid"

cat >"$SD/env" <<EOF
KUBECONFIG=$SD/kubeconfig
APISERVER_URL=https://127.0.0.1:$API_PORT
APISERVER_PORT=$API_PORT
ETCD_URL=http://127.0.0.1:$ETCD_CLIENT_PORT
KUBECTL=$KUBECTL
HELM=$HELM
KUBE_APISERVER=$KUBE_APISERVER
ETCD=$ETCD
CA_CERT=$SD/pki/ca.crt
STATEDIR=$SD
EOF
cat "$SD/env"
