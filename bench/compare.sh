#!/usr/bin/env bash
# The one command behind docs/PERFORMANCE.md's headline table. It starts, on
# loopback: registryd on its default flags, a bare gRPC-Go echo server
# answering the same payload (the floor of any gRPC-Go service), an etcd
# member and Redis; drives each with the same concurrency and payload, the
# runs of one round interleaved, for several rounds; and prints the median of
# every workload and the ratios the performance targets are stated in.
# Client and server share the machine: compare ratios from one run, never
# absolute figures from different runs.
#
# Usage: bench/compare.sh [seconds-per-run] [payload-bytes] [rounds] [registryd flags...]
# Environment: CONC (concurrency levels, default "1 16 64"), BATCH (handles
# per batch-resolve, default 1000), LARGE (Download size, default 64MiB; "" skips it),
# PORTS (the first of six loopback ports it listens on, default 17600).
set -euo pipefail
secs=${1:-3} size=${2:-100} rounds=${3:-3}
shift $(( $# > 3 ? 3 : $# ))
conc=${CONC:-1 16 64} batch=${BATCH:-1000} large=${LARGE-64MiB} p=${PORTS:-17600}
reg=127.0.0.1:$p echo=127.0.0.1:$((p + 1)) echo_large=127.0.0.1:$((p + 2)) etcd=127.0.0.1:$((p + 3)) redis_port=$((p + 5))
cd "$(dirname "$0")/.."
. bench/lib.sh
need_peers
build
start_registryd "$reg" "$@"
start_echo "$echo" "$size"
[ -z "$large" ] || start_echo "$echo_large" "$large"
start_etcd $((p + 3)) $((p + 4))
start_redis "$redis_port"
bench=$work/registrybench

# redis C N [ARGS]: one redis-benchmark run of GET or SET, in our line format.
redis() {
  local name=$1 c=$2 n=$3; shift 3
  redis-benchmark -h 127.0.0.1 -p "$redis_port" -c "$c" -n "$n" -d "$size" --csv "$@" |
    awk -F'"' -v m="$name" -v c="$c" -v s="$size" \
      'NF > 3 && $2 != "test" { printf "%s c=%s size=%s ops/s=%.0f p50=%sms p99=%sms\n", m, c, s, $4, $10, $14 }'
}

for _ in $(seq "$rounds"); do
  for c in $conc; do
    "$bench" -mode echo -addr "$echo" -c "$c" -d "${secs}s" -size "$size"
    for m in resolve put stat pin-unpin; do
      "$bench" -mode "$m" -addr "$reg" -c "$c" -d "${secs}s" -size "$size"
    done
    "$bench" -mode batch-resolve -batch "$batch" -addr "$reg" -c "$c" -d "${secs}s" -size "$size"
    "$bench" -mode etcd-get -addr "$etcd" -c "$c" -d "${secs}s" -size "$size"
    "$bench" -mode etcd-put -addr "$etcd" -c "$c" -d "${secs}s" -size "$size"
    # redis-benchmark counts requests, not time: about secs seconds' worth.
    redis redis-get "$c" $(( secs * (c == 1 ? 30000 : 120000) )) -t get
    redis redis-get-P16 "$c" $(( secs * (c == 1 ? 300000 : 1200000) )) -t get -P 16
    redis redis-set "$c" $(( secs * (c == 1 ? 30000 : 120000) )) -t set
  done
  if [ -n "$large" ]; then
    "$bench" -mode stream -addr "$echo_large" -c 1 -d "${secs}s" -size "$large"
    "$bench" -mode download -addr "$reg" -c 1 -d "${secs}s" -size "$large"
  fi
done | tee "$work/runs.txt"

echo
echo "Medians of $rounds rounds of ${secs}s, payload $size bytes (batch-resolve: $batch handles a call, counted in objects;"
echo "stream and download: one object of $large, in MB/s). registryd flags: defaults${*:+ and $*}."
echo
# Each line: mode c=C ... ops/s=X (or MB/s=X). Medians per (mode, c), then
# the ratios, each beside the issue's target.
awk '{ c = ""; v = ""
       for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "c") c = kv[2]; if (kv[1] == "ops/s" || kv[1] == "MB/s") v = kv[2] }
       if (c != "" && v != "") print $1, c, v }' "$work/runs.txt" |
  sort -k1,1 -k2,2n -k3,3n |
  awk -v conc="$conc" '
    { k = $1 " " $2; if (k != last && last != "") emit(); if (k != last) { n = 0; last = k }; v[++n] = $3 }
    function emit() { med[last] = v[int((n + 1) / 2)] }
    function row(c, a, b, target,   x, y) {
      x = med[a " " c]; y = med[b " " c]
      if (x == "" || y == "") return
      printf "| %s | %s | %.0f | %s | %.0f | %.2f | %s |\n", c, a, x, b, y, x / y, target
    }
    END { emit()
      print "| c | registryd | per s | peer | per s | ratio | target |"
      print "| ---: | --- | ---: | --- | ---: | ---: | --- |"
      split(conc, cs, " ")
      for (i = 1; i <= length(cs); i++) { c = cs[i]; t = (c == 64)
        row(c, "resolve", "echo", t ? ">= 0.85" : "")
        row(c, "resolve", "etcd-get", t ? ">= 2.5" : "")
        row(c, "resolve", "redis-get", "")
        row(c, "put", "echo", t ? ">= 0.8" : "")
        row(c, "put", "etcd-put", t ? ">= 2.5" : "")
        row(c, "put", "redis-set", "")
        row(c, "stat", "echo", "")
        row(c, "pin-unpin", "echo", "")
        row(c, "batch-resolve", "redis-get-P16", t ? ">= 1.0" : "")
      }
      row(1, "download", "stream", ">= 0.9")
    }'
