# Shared by the bench scripts: builds registryd and registrybench, starts
# the servers a script asks for on loopback, waits until each serves, and
# stops them all on exit. Sets $work, where the binaries and logs live.
# Source it from the repository's root.
# go.mod says go 1.27: a machine's own older Go fetches this one.
export GOTOOLCHAIN=go1.27.3
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

build() {
  go build -o "$work/registryd" ./cmd/registryd
  go build -o "$work/registrybench" ./cmd/registrybench
}

# wait_for LOG TEXT: until the server writing LOG says TEXT (10 s at most).
wait_for() {
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "bench: no \"$2\" in $1 after 10 s:" >&2; cat "$1" >&2; return 1
}

# start_registryd ADDR [FLAGS...]: registryd on its defaults plus FLAGS.
start_registryd() {
  local addr=$1; shift
  "$work/registryd" --addr "$addr" "$@" 2>"$work/registryd.log" & pids+=($!)
  wait_for "$work/registryd.log" "registryd serving"
}

# start_echo ADDR SIZE: the bare gRPC-Go baseline, answering SIZE bytes.
start_echo() {
  "$work/registrybench" -mode echo-serve -addr "$1" -size "$2" >"$work/echo-$2.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null && return 0; sleep 0.1; done
  echo "bench: the echo server on $1 did not start" >&2; return 1
}

# need_peers: etcd and Redis, from Debian's packages when missing (as root).
need_peers() {
  command -v etcd >/dev/null && command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null && return
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server redis-server >/dev/null
}

# start_etcd CLIENT_PORT PEER_PORT: one etcd member, its data in $work.
start_etcd() {
  etcd --name bench --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$1" --advertise-client-urls "http://127.0.0.1:$1" \
    --listen-peer-urls "http://127.0.0.1:$2" --initial-advertise-peer-urls "http://127.0.0.1:$2" \
    --initial-cluster "bench=http://127.0.0.1:$2" >"$work/etcd.log" 2>&1 & pids+=($!)
  wait_for "$work/etcd.log" "ready to serve client requests"
}

# start_redis PORT: Redis with no persistence.
start_redis() {
  redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 & pids+=($!)
  wait_for "$work/redis.log" "Ready to accept connections"
}

# start_servers REGISTRYD_ADDR BASELINE_ADDR [REGISTRYD FLAGS...]: registryd
# and the echo baseline answering $size bytes.
start_servers() {
  local registryd_addr=$1 baseline_addr=$2
  shift 2
  build
  start_registryd "$registryd_addr" "$@"
  start_echo "$baseline_addr" "$size"
}
