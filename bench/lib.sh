# Shared by the bench scripts: build registryd and registrybench, start
# registryd on $1 (with the remaining arguments as its flags) and the bare
# gRPC-Go baseline on $2 with payload $size, wait until registryd serves,
# and stop both on exit. Sets $work, where the binaries live.
# Source it from the repository's root, after setting $size.
# go.mod says go 1.27: a machine's own older Go fetches this one.
export GOTOOLCHAIN=go1.27.3
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start_servers() {
  local registryd_addr=$1 baseline_addr=$2
  shift 2
  go build -o "$work/registryd" ./cmd/registryd
  go build -o "$work/registrybench" ./cmd/registrybench
  "$work/registryd" --addr "$registryd_addr" "$@" 2>"$work/registryd.log" & pids+=($!)
  "$work/registrybench" -mode echo-serve -addr "$baseline_addr" -size "$size" & pids+=($!)
  for _ in $(seq 50); do grep -q "registryd serving" "$work/registryd.log" && break; sleep 0.1; done
}
