# shellcheck shell=bash disable=SC2034
# Shared settings for the e2e harness scripts. Sourced, never executed.
#
# Pinned versions. KUBE_VERSION is the newest v1.34 patch whose go.mod the Go
# checksum database could verify when this was written (v1.34.11+ were served
# by the module proxy but not yet verifiable). The staging modules
# (k8s.io/api, k8s.io/apiserver, ...) are published as v0.<minor>.<patch>.
# ETCD_VERSION is the go.etcd.io/etcd/server/v3 version required by
# k8s.io/kubernetes@KUBE_VERSION's own go.mod.
KUBE_VERSION="${AIRGATE_KUBE_VERSION:-v1.34.10}"
ETCD_VERSION="${AIRGATE_ETCD_VERSION:-v3.6.4}"
HELM_VERSION="${AIRGATE_HELM_VERSION:-v3.22.0}"

AIRGATE_CACHE="${AIRGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/airgate}"
AIRGATE_BIN="$AIRGATE_CACHE/bin"
AIRGATE_SRC="$AIRGATE_CACHE/src"

KUBE_BIN_DIR="$AIRGATE_BIN/kubernetes-$KUBE_VERSION"
ETCD_BIN_DIR="$AIRGATE_BIN/etcd-$ETCD_VERSION"
HELM_BIN_DIR="$AIRGATE_BIN/helm-$HELM_VERSION"

KUBE_APISERVER="$KUBE_BIN_DIR/kube-apiserver"
KUBECTL="$KUBE_BIN_DIR/kubectl"
ETCD="$ETCD_BIN_DIR/etcd"
HELM="$HELM_BIN_DIR/helm"

airgate_log() { printf '[airgate-e2e] %s\n' "$*" >&2; }
airgate_die() { printf '[airgate-e2e] ERROR: %s\n' "$*" >&2; exit 1; }

# True when every pinned binary is already in the cache.
airgate_bins_present() {
	[[ -x $KUBE_APISERVER && -x $KUBECTL && -x $ETCD && -x $HELM ]]
}

# ---------------------------------------------------------------------------
# Runtime helpers for up.sh, down.sh and restart-apiserver.sh.
# ---------------------------------------------------------------------------

AIRGATE_READY_TIMEOUT="${AIRGATE_E2E_READY_TIMEOUT:-60}"   # seconds
AIRGATE_STOP_TIMEOUT="${AIRGATE_E2E_STOP_TIMEOUT:-15}"     # seconds, then SIGKILL

# Prints N distinct free TCP ports on 127.0.0.1 (held open together while
# chosen, so they differ from each other).
airgate_free_ports() { # n
	python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# Prints the last lines of a log to stderr.
airgate_log_tail() { # file [lines]
	[[ -f $1 ]] || return 0
	printf '[airgate-e2e] ---- last %s lines of %s ----\n' "${2:-40}" "$1" >&2
	tail -n "${2:-40}" "$1" >&2 || true
	printf '[airgate-e2e] ---- end of %s ----\n' "$1" >&2
}

# Starts a command in its own session/process group (pgid == pid), stdio
# detached from the caller (so a caller reading our stdout sees EOF), and
# writes its pid. Prints the pid.
airgate_spawn() { # pidfile logfile cmd args...
	local pidfile=$1 logfile=$2
	shift 2
	setsid "$@" </dev/null >>"$logfile" 2>&1 &
	local pid=$!
	echo "$pid" >"$pidfile"
	echo "$pid"
}

# True if pid is alive and its executable is the expected one (guards
# against pid reuse).
airgate_pid_is() { # pid exe
	local pid=$1 exe=$2 actual
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	airgate_alive "$pid" || return 1
	actual="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
	actual="${actual% (deleted)}"
	[[ -z $exe || $actual == "$exe" ]]
}

# True while pid exists and is not a zombie (an exited process whose parent,
# often init after up.sh exited, has not reaped it yet counts as gone).
airgate_alive() { # pid
	local st
	st="$(ps -o stat= -p "$1" 2>/dev/null | tr -d ' ')" || return 1
	[[ -n $st && $st != Z* ]]
}

# Stops the process recorded in pidfile and its whole process group: SIGTERM,
# bounded wait, then SIGKILL. Removes the pidfile. Silent if already gone.
airgate_stop_pidfile() { # pidfile exe
	local pidfile=$1 exe=$2 pid pgid deadline
	[[ -f $pidfile ]] || return 0
	pid="$(cat "$pidfile" 2>/dev/null || true)"
	if [[ $pid =~ ^[0-9]+$ ]] && airgate_pid_is "$pid" "$exe"; then
		pgid="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ' || true)"
		# Signal the whole group when the process leads one (airgate_spawn
		# makes sure it does), else just the process.
		local target=$pid
		[[ $pgid == "$pid" ]] && target="-$pid"
		kill -TERM -- "$target" 2>/dev/null || true
		deadline=$((SECONDS + AIRGATE_STOP_TIMEOUT))
		while airgate_alive "$pid" && ((SECONDS < deadline)); do
			sleep 0.05
		done
		if airgate_alive "$pid"; then
			airgate_log "pid $pid ($exe) ignored SIGTERM for ${AIRGATE_STOP_TIMEOUT}s; sending SIGKILL"
		fi
		# Always sweep the group: stragglers that outlived the leader.
		kill -KILL -- "$target" 2>/dev/null || true
		deadline=$((SECONDS + 5))
		while airgate_alive "$pid" && ((SECONDS < deadline)); do
			sleep 0.05
		done
		airgate_alive "$pid" && airgate_log "pid $pid ($exe) still alive after SIGKILL"
	fi
	rm -f "$pidfile"
}

# curl against the API server with the admin client certificate.
airgate_api_curl() { # statedir path [curl args...]
	local sd=$1 path=$2
	shift 2
	local url
	url="$(cat "$sd/apiserver.url")"
	curl -sS --max-time 3 --cacert "$sd/pki/ca.crt" \
		--cert "$sd/pki/admin.crt" --key "$sd/pki/admin.key" "$@" "$url$path"
}

# Starts kube-apiserver from the flags recorded in statedir/kube-apiserver.args.
airgate_start_apiserver() { # statedir
	local sd=$1
	local -a args
	mapfile -t args <"$sd/kube-apiserver.args"
	printf '[airgate-e2e] %s start\n' "$(date -u +%FT%T.%3NZ)" >>"$sd/kube-apiserver.log"
	airgate_spawn "$sd/kube-apiserver.pid" "$sd/kube-apiserver.log" "$KUBE_APISERVER" "${args[@]}" >/dev/null
}

# Waits (bounded) until /readyz answers "ok" and the default namespace exists.
airgate_wait_apiserver() { # statedir
	local sd=$1 pid deadline out
	pid="$(cat "$sd/kube-apiserver.pid")"
	deadline=$((SECONDS + AIRGATE_READY_TIMEOUT))
	while :; do
		if ! airgate_pid_is "$pid" "$KUBE_APISERVER"; then
			airgate_log_tail "$sd/kube-apiserver.log" 60
			airgate_log "kube-apiserver (pid $pid) exited before becoming ready"
			return 1
		fi
		out="$(airgate_api_curl "$sd" /readyz 2>/dev/null || true)"
		if [[ $out == ok ]] &&
			airgate_api_curl "$sd" /api/v1/namespaces/default -o /dev/null -f 2>/dev/null; then
			return 0
		fi
		if ((SECONDS >= deadline)); then
			airgate_log_tail "$sd/kube-apiserver.log" 60
			airgate_log "last /readyz answer: $(airgate_api_curl "$sd" '/readyz?verbose' 2>&1 | grep -v '\[+\]' | tail -n 20)"
			airgate_log "kube-apiserver not ready after ${AIRGATE_READY_TIMEOUT}s"
			return 1
		fi
		sleep 0.2
	done
}
