#!/usr/bin/env bash
# Measures registryd beside a bare gRPC-Go echo server answering the same
# payload, in one run on this machine, at the same concurrency levels.
# Runs are interleaved and repeated; the summary gives each median and its
# ratio to the echo server's median at the same concurrency.
#
# Usage: bench/compare.sh [seconds-per-run] [payload-bytes] [rounds] [registryd flags...]
set -euo pipefail
secs=${1:-3} size=${2:-512} rounds=${3:-3}
shift $(( $# > 3 ? 3 : $# ))
cd "$(dirname "$0")/.."
. bench/lib.sh
start_servers 127.0.0.1:7698 127.0.0.1:7699 "$@"

for c in 1 16 64; do
  for _ in $(seq "$rounds"); do
    "$work/registrybench" -mode echo -addr 127.0.0.1:7699 -c "$c" -d "${secs}s" -size "$size"
    for m in resolve stat put pin-unpin resolve-collected; do
      "$work/registrybench" -mode "$m" -addr 127.0.0.1:7698 -c "$c" -d "${secs}s" -size "$size"
    done
  done
done | tee "$work/runs.txt"

echo
echo "median ops/s over $rounds rounds of ${secs}s, payload $size bytes; ratio to the echo server"
awk '{ split($2, c, "="); split($4, o, "="); print $1, c[2], o[2] }' "$work/runs.txt" |
  sort -k2,2n -k1,1 -k3,3n |
  awk '{ k = $1 " " $2; if (k != last && last != "") emit(); if (k != last) { n = 0; last = k }; v[++n] = $3 }
    function emit() { med[last] = v[int((n + 1) / 2)]; order[++m] = last }
    END { emit(); for (i = 1; i <= m; i++) { split(order[i], p, " ");
      printf "%-18s c=%-3s %8.0f ops/s  %5.2f of echo\n", p[1], p[2], med[order[i]], med[order[i]] / med["echo " p[2]] } }'
