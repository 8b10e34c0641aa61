#!/usr/bin/env bash
# Stop the control plane started by up.sh and remove its statedir.
#
# Usage: down.sh <statedir>
# Kills kube-apiserver, etcd and the watchdog (each with its whole process
# group: SIGTERM, bounded wait, SIGKILL), then removes <statedir>. Idempotent:
# a missing statedir is success. Refuses to delete a directory that up.sh did
# not create (no .airgate-e2e marker).
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$HARNESS_DIR/common.sh"

[[ $# -eq 1 && -n $1 ]] || airgate_die "usage: down.sh <statedir>"
[[ -d $1 ]] || exit 0
SD="$(cd "$1" && pwd -P)"

# The watchdog first (unless we are the watchdog, which execs down.sh), so it
# cannot race us.
if [[ -f $SD/watchdog.pid ]]; then
	wd="$(cat "$SD/watchdog.pid" 2>/dev/null || true)"
	if [[ $wd != "$$" ]]; then
		airgate_stop_pidfile "$SD/watchdog.pid" "$(readlink -f "$BASH")"
	fi
fi
airgate_stop_pidfile "$SD/kube-apiserver.pid" "$KUBE_APISERVER"
airgate_stop_pidfile "$SD/etcd.pid" "$ETCD"

if [[ -f $SD/.airgate-e2e ]]; then
	rm -rf -- "$SD"
else
	airgate_log "not removing $SD: no .airgate-e2e marker (not made by up.sh)"
fi
