#!/usr/bin/env bash
# Every benchmark scenario for a few seconds: proves the harness runs and produces
# non-zero numbers. Asserts no performance targets.
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" --smoke "$@"
