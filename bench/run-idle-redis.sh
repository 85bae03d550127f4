#!/usr/bin/env bash
# What idle connections cost Redis: one gateway on its own fresh redis-server holds N idle
# connections (opened by wsfleet-bench idle); once all are up, Redis's command count (INFO
# commandstats, every command but INFO) and CPU (used_cpu_sys + used_cpu_user) are read at the
# start and end of a WINDOW-second window. Prints commands per connection per second and, at
# this many connections per node, commands and Redis CPU per 100,000 idle connections.
# Everything it starts is stopped on exit.
#
# Usage: bench/run-idle-redis.sh [label]
# Environment:
#   WSFLEET_GATEWAY_BIN  use this gateway binary instead of building it here (for A/B runs)
#   WSFLEET_BENCH_BIN    use this wsfleet-bench binary instead of building it here
#   N (15000, ≤ ~19,000: one process's file limit), WINDOW (120)
set -euo pipefail
cd "$(dirname "$0")/.."
label=${1:-wsfleet}
n=${N:-15000}
window=${WINDOW:-120}
target="${CARGO_TARGET_DIR:-$PWD/target}"
if [[ -n "${WSFLEET_BENCH_BIN:-}" ]]; then
  bench=$WSFLEET_BENCH_BIN
else
  cargo build --release -q -p wsfleet-bench
  bench="$target/release/wsfleet-bench"
fi
if [[ -n "${WSFLEET_GATEWAY_BIN:-}" ]]; then
  gateway=$WSFLEET_GATEWAY_BIN
else
  cargo build --release -q -p wsfleet-gateway
  gateway="$target/release/wsfleet-gateway"
fi
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
redis_port=$(free_port); ws_port=$(free_port); admin_port=$(free_port)
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

redis-server --port "$redis_port" --save '' --appendonly no --dir "$dir" >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
WSFLEET_REDIS_URL="redis://127.0.0.1:$redis_port/" "$gateway" --anonymous --node-id idle-node \
  --listen "127.0.0.1:$ws_port" --admin-listen "127.0.0.1:$admin_port" --api-listen 127.0.0.1:0 \
  --max-connections 19500 --handshakes-per-second 100000 >/dev/null 2>"$dir/gateway.log" &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && break; sleep 0.2; done
"$bench" idle --url "ws://127.0.0.1:$ws_port/ws" -n "$n" -c 64 --hold-secs $((window + 60)) \
  >"$dir/bench.out" 2>&1 &
pids+=($!)
connections() {
  curl -sf -m 5 "http://127.0.0.1:$admin_port/status" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["connections"])' 2>/dev/null || echo 0
}
for _ in $(seq 600); do [ "$(connections)" -ge "$n" ] && break; sleep 0.5; done
up=$(connections)
[ "$up" -ge "$n" ] || { echo "$label: only $up of $n connections came up" >&2; tail -5 "$dir/bench.out" >&2; exit 1; }
sleep 5
sample() {
  local commands cpu
  commands=$(redis-cli -p "$redis_port" INFO commandstats | tr -d '\r' \
    | awk -F'calls=' '/^cmdstat_/ && !/^cmdstat_info/ { split($2, a, ","); s += a[1] } END { print s + 0 }')
  cpu=$(redis-cli -p "$redis_port" INFO cpu | tr -d '\r' \
    | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.3f", s }')
  echo "$commands $cpu"
}
read -r commands0 cpu0 <<<"$(sample)"
sleep "$window"
read -r commands1 cpu1 <<<"$(sample)"
python3 - "$label" "$n" "$window" "$commands0" "$commands1" "$cpu0" "$cpu1" <<'PY'
import sys
label, n, window = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
commands = (int(sys.argv[5]) - int(sys.argv[4])) / window
cpu_ms = (float(sys.argv[7]) - float(sys.argv[6])) / window * 1000
scale = 100_000 / n
print(f"{label}: {n} idle connections on one node, {window:.0f} s: {commands:.1f} Redis commands/s "
      f"({commands / n:.5f} per connection per second), Redis CPU {cpu_ms:.1f} ms/s; "
      f"per 100,000 idle connections (at {n} per node): {commands * scale:.0f} commands/s, "
      f"{cpu_ms * scale:.0f} ms of Redis CPU per second")
PY
