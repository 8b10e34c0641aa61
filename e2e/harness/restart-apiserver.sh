#!/usr/bin/env bash
# Stop kube-apiserver and start it again with exactly the same flags (same
# port, certificates and etcd), then wait for /readyz.
#
# Usage: restart-apiserver.sh <statedir> [--stop-only | --start-only]
#   (default)     stop, start, wait until ready
#   --stop-only   stop it and return (the control plane is down until
#                 --start-only)
#   --start-only  start it (if not running) and wait until ready
# Stdout: nothing. Non-zero exit with the log tail on stderr on failure.
# The log of every run is appended to <statedir>/kube-apiserver.log.
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$HARNESS_DIR/common.sh"

[[ $# -ge 1 && -n $1 && -d $1 ]] || airgate_die "usage: restart-apiserver.sh <statedir> [--stop-only|--start-only]"
SD="$(cd "$1" && pwd -P)"
mode="${2:-restart}"
[[ -f $SD/kube-apiserver.args ]] || airgate_die "$SD was not made by up.sh (no kube-apiserver.args)"

case $mode in
restart | --stop-only | --start-only) ;;
*) airgate_die "unknown mode $mode" ;;
esac

if [[ $mode != --start-only ]]; then
	airgate_stop_pidfile "$SD/kube-apiserver.pid" "$KUBE_APISERVER"
fi
[[ $mode == --stop-only ]] && exit 0

running=""
if [[ -f $SD/kube-apiserver.pid ]] && airgate_pid_is "$(cat "$SD/kube-apiserver.pid")" "$KUBE_APISERVER"; then
	running=yes
fi
[[ -n $running ]] || airgate_start_apiserver "$SD"
airgate_wait_apiserver "$SD" || airgate_die "kube-apiserver did not become ready after restart"
