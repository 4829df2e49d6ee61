#!/usr/bin/env bash
# Measures the memory registryd keeps per idle lease stream beside a bare
# gRPC-Go server holding as many idle bidirectional streams, in one run on
# this machine: each server's RSS before and while holding, per stream.
# Each lease pins the same few objects, so the figure is the stream's and
# the lease's, not the objects'.
#
# With BREAKDOWN=1, registryd also serves /metrics on 127.0.0.1:7697 and
# the figures say where its memory goes: goroutines, stacks and live heap
# per stream, after a forced collection (the metrics add a little of
# their own per stream).
#
# Usage: [BREAKDOWN=1] bench/leases.sh [streams] [connections] [hold-seconds] [registryd flags...]
set -euo pipefail
streams=${1:-10000} conns=${2:-16} secs=${3:-10}
shift $(( $# > 3 ? 3 : $# ))
cd "$(dirname "$0")/.."
size=512
. bench/lib.sh
# One lease more than the streams: the keeper of the pinned objects.
breakdown=()
if [ "${BREAKDOWN:-}" = 1 ]; then
  set -- --metrics-addr 127.0.0.1:7697 "$@"
  breakdown=(-metrics http://127.0.0.1:7697/metrics)
fi
start_servers 127.0.0.1:7698 127.0.0.1:7699 --max-leases $((streams + 1)) "$@"
registryd_pid=${pids[0]} baseline_pid=${pids[1]}
# start_servers waits for registryd only: wait for the baseline too.
for _ in $(seq 50); do (: >/dev/tcp/127.0.0.1/7699) 2>/dev/null && break; sleep 0.1; done

"$work/registrybench" -mode idle-streams -addr 127.0.0.1:7699 -pid "$baseline_pid" -n "$streams" -conns "$conns" -d "${secs}s"
"$work/registrybench" -mode leases -addr 127.0.0.1:7698 -pid "$registryd_pid" -n "$streams" -conns "$conns" -d "${secs}s" -pins 4 "${breakdown[@]}"
