#!/usr/bin/env bash
# The figures of the cluster's capacity model (docs/CLUSTER.md), in one run
# on this machine, against a real etcd (Debian's etcd-server, 3.4):
#
#  1. registrybench -mode etcd-members: NODES simulated registryd nodes
#     register in etcd as registryd does (lease with the TTL, tag claim,
#     endpoint) and keep their leases alive, watched by WATCHERS clients:
#     time to register, keepalives/s at steady state, fan-out of a
#     membership change to every watcher, etcd's db size, a client's
#     routing table per node. Run for 3 and for 1,000 nodes.
#  2. registrybench -mode placement: a million puts over 3 and 1,000 nodes
#     by round robin, random and two-choices placement.
#  3. Three real registryd nodes in one cluster, and registryctl's cluster ls
#     and stats of them.
#
# Usage: bench/cluster.sh [steady-seconds] [ttl]
# RUNS="3:100 1000:1000" (the default) is the NODES:WATCHERS of each run.
set -euo pipefail
secs=${1:-20} ttl=${2:-10s}
cd "$(dirname "$0")/.."
size=512
. bench/lib.sh
command -v etcd >/dev/null || need_peers
etcd_port=${ETCD_PORT:-23791} peer_port=${ETCD_PEER_PORT:-23801} echo_addr=${ECHO_ADDR:-127.0.0.1:27699}
etcd_url=http://127.0.0.1:$etcd_port
build
go build -o "$work/registryctl" ./cmd/registryctl
etcd --version | sed -n 1p # all of it read: head would end etcd by SIGPIPE, and pipefail the script
start_etcd "$etcd_port" "$peer_port"
etcd_pid=${pids[0]}
start_echo "$echo_addr" "$size"

for run in ${RUNS:-3:100 1000:1000}; do
  nodes=${run%%:*} watchers=${run##*:}
  "$work/registrybench" -mode etcd-members -etcd "$etcd_url" -etcd-metrics "$etcd_url/metrics" \
    -n "$nodes" -watchers "$watchers" -ttl "$ttl" -d "${secs}s" -conn-addr "$echo_addr" -pid "$etcd_pid"
done
for nodes in 3 1000; do
  "$work/registrybench" -mode placement -n "$nodes" -objects 1000000
done

head -c 32 /dev/urandom >"$work/cluster.key"
for tag in 1 2 3; do
  addr=127.0.0.1:$((27600 + tag))
  "$work/registryd" --addr "$addr" --node "$tag" --key-file "$work/cluster.key" \
    --etcd-endpoints "$etcd_url" --cluster bench3 --advertise-addr "$addr" --etcd-ttl "$ttl" \
    2>"$work/node$tag.log" & pids+=($!)
  wait_for "$work/node$tag.log" "registryd serving"
done
ctl() { "$work/registryctl" --cluster etcd:///registry/bench3 --etcd-endpoints "$etcd_url" "$@"; }
# Objects on every node, one registryd at a time.
for tag in 1 2 3; do
  for i in $(seq 10); do
    echo "object $i of node $tag" | "$work/registryctl" --addr 127.0.0.1:$((27600 + tag)) put --linger 10m >/dev/null
  done
done
ctl cluster ls
ctl stats
