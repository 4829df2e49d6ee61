#!/usr/bin/env bash
# Measures Download throughput of one large object beside a bare gRPC-Go
# server streaming the same bytes in the same chunks, in one run on this
# machine. Runs are interleaved and repeated; the summary gives each
# median MB/s and their ratio. Both servers and both clients run with
# gRPC-Go's default window and buffer settings, so the ratio is registryd's
# own cost.
#
# Usage: bench/transfer.sh [seconds-per-run] [size] [rounds] [registryd flags...]
set -euo pipefail
secs=${1:-3} size=${2:-64MiB} rounds=${3:-5}
shift $(( $# > 3 ? 3 : $# ))
cd "$(dirname "$0")/.."
. bench/lib.sh
start_servers 127.0.0.1:7696 127.0.0.1:7697 "$@"

for _ in $(seq "$rounds"); do
  "$work/registrybench" -mode stream -addr 127.0.0.1:7697 -c 1 -d "${secs}s" -size "$size"
  "$work/registrybench" -mode download -addr 127.0.0.1:7696 -c 1 -d "${secs}s" -size "$size"
done | tee "$work/runs.txt"

echo
echo "median MB/s over $rounds rounds of ${secs}s, object of $size, 1 MiB chunks"
awk '{ split($4, v, "="); print $1, v[2] }' "$work/runs.txt" | sort -k1,1 -k2,2n |
  awk '{ r[$1, ++n[$1]] = $2 }
    END { for (m in n) med[m] = r[m, int((n[m] + 1) / 2)]
      printf "stream    %6.0f MB/s\ndownload  %6.0f MB/s  %.2f of stream\n", med["stream"], med["download"], med["download"] / med["stream"] }'
