#!/usr/bin/env bash
# The `scale` scenario on this machine: SCALE_N connections over SCALE_GATEWAYS gateway
# processes (one fresh redis-server without persistence behind them, each gateway on its own
# loopback address 127.0.0.11, 127.0.0.12, ...) opened by SCALE_PROCS load processes from the
# source addresses 127.0.1.1-127.0.1.240, all subscribed to one channel; then SCALE_BROADCASTS
# broadcasts published on the first gateway's admin API, each of which every connection must
# receive. One process can hold only ~19,500 sockets here (20,000 open files), hence the many
# processes on both sides. Writes bench/out/scale.json; stops everything it started on exit.
# Not part of ./scripts/test: it needs minutes and most of the machine.
#
# Usage: bench/run-scale.sh
#
# Environment:
#   SCALE_N (200000), SCALE_GATEWAYS (12), SCALE_PROCS (12), SCALE_C (384 dialers in total),
#   SCALE_BROADCASTS (3), SCALE_MAX_CONNECTIONS (19000 per gateway), SCALE_MAX_SECS (600),
#   SCALE_HOLD_SECS (3: idle hold before the broadcasts, over which gateway CPU is measured)
#   WSFLEET_GATEWAY_BIN  use this gateway binary instead of building it here
set -euo pipefail
cd "$(dirname "$0")/.."

out=bench/out
mkdir -p "$out"
SCALE_N=${SCALE_N:-200000}
SCALE_GATEWAYS=${SCALE_GATEWAYS:-12}
SCALE_PROCS=${SCALE_PROCS:-12}
SCALE_C=${SCALE_C:-384}
SCALE_BROADCASTS=${SCALE_BROADCASTS:-3}
SCALE_MAX_CONNECTIONS=${SCALE_MAX_CONNECTIONS:-19000}
SCALE_MAX_SECS=${SCALE_MAX_SECS:-600}
SCALE_HOLD_SECS=${SCALE_HOLD_SECS:-3}
SOURCES=127.0.1.1-127.0.1.240
(( SCALE_GATEWAYS >= 1 && SCALE_GATEWAYS <= 200 )) || { echo "SCALE_GATEWAYS must be 1..200" >&2; exit 2; }
export WSFLEET_PUBLISH_TOKEN=scale-publish-$$
run_id=scale$$

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "== build (release)"
cargo build --release -q -p wsfleet-bench
bench=${CARGO_TARGET_DIR:-target}/release/wsfleet-bench
if [[ -n "${WSFLEET_GATEWAY_BIN:-}" ]]; then
  gateway=$WSFLEET_GATEWAY_BIN
else
  cargo build --release -q -p wsfleet-gateway
  gateway=${CARGO_TARGET_DIR:-target}/release/wsfleet-gateway
fi
ulimit -n "$(ulimit -Hn)"

# need_sysctl NAME FIELD MIN: checks that field FIELD (1-based) of the sysctl is at least MIN,
# tries to raise it otherwise, and says so when it cannot (the run then shows what it limits).
need_sysctl() {
  local name=$1 field=$2 min=$3 file=/proc/sys/${1//.//} value
  value=$(awk -v f="$field" '{print $f}' "$file" 2>/dev/null || echo "?")
  if [[ $value == "?" ]]; then
    echo "  $name: unreadable; skipping the check"
  elif (( value >= min )); then
    echo "  $name = $(tr '\t' ' ' <"$file") (need field $field >= $min): ok"
  elif (( field == 1 )) && sysctl -qw "$name=$min" 2>/dev/null; then
    echo "  $name raised from $value to $min"
  else
    echo "  $name = $(tr '\t' ' ' <"$file"): field $field is below $min and cannot be changed here; the run shows what that limits"
  fi
}

sockets=$((2 * SCALE_N + 1000))
echo "== machine"
{
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), open files per process $(ulimit -n)"
  echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "gateway: $gateway, $("$gateway" --version)"
  echo "tools: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "kernel limits:"
  need_sysctl fs.file-max 1 "$sockets"
  need_sysctl fs.nr_open 1 "$(ulimit -n)"
  need_sysctl net.core.somaxconn 1 4096
  need_sysctl net.ipv4.tcp_max_syn_backlog 1 2048
  # Ports per source address: a bound socket keeps its port for every destination.
  echo "  net.ipv4.ip_local_port_range = $(tr '\t' ' ' </proc/sys/net/ipv4/ip_local_port_range) (per source address; $SOURCES has 240)"
  # tcp_mem is in pages: the third field is where the kernel stops giving sockets memory.
  echo "  net.ipv4.tcp_mem = $(tr '\t' ' ' </proc/sys/net/ipv4/tcp_mem) pages"
  echo "  net.ipv4.tcp_rmem = $(tr '\t' ' ' </proc/sys/net/ipv4/tcp_rmem), tcp_wmem = $(tr '\t' ' ' </proc/sys/net/ipv4/tcp_wmem)"
  echo "  sockstat: $(grep TCP: /proc/net/sockstat)"
} | tee "$out/scale-machine.txt"

# free_port: a loopback TCP port nobody listens on right now (others may run gateways here).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
WS_PORT=$(free_port) ADMIN_PORT=$(free_port) API_PORT=$(free_port) REDIS_PORT=$(free_port)

# wait_http URL: polls until the URL answers 200, for at most 30 s.
wait_http() {
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2
  return 1
}

echo "== redis-server on 127.0.0.1:$REDIS_PORT (no persistence)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$out/scale-redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break; sleep 0.1; done
kill -0 "$redis_pid" 2>/dev/null || { echo "redis-server did not start (see $out/scale-redis.log)" >&2; exit 1; }

echo "== $SCALE_GATEWAYS gateways on 127.0.0.11.. ports $WS_PORT/$ADMIN_PORT, max $SCALE_MAX_CONNECTIONS connections each"
urls=() admins=() gw_pids=()
for k in $(seq 0 $((SCALE_GATEWAYS - 1))); do
  ip=127.0.$(( (11 + k) / 256 )).$(( (11 + k) % 256 ))
  node=$run_id-$k
  "$gateway" --node-id "$node" --anonymous \
    --listen "$ip:$WS_PORT" --admin-listen "$ip:$ADMIN_PORT" --api-listen "$ip:$API_PORT" \
    --handshakes-per-second 1000000 --max-connections "$SCALE_MAX_CONNECTIONS" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT" \
    2>"$out/scale-gateway-$k.log" &
  pid=$!
  pids+=("$pid")
  gw_pids+=("$pid")
  urls+=("ws://$ip:$WS_PORT/ws")
  admins+=("http://$ip:$ADMIN_PORT")
done
# Each must be up and be ours: /status names the node this run started.
for k in $(seq 0 $((SCALE_GATEWAYS - 1))); do
  wait_http "${admins[$k]}/healthz"
  if ! curl -fsS "${admins[$k]}/status" | grep -q "\"$run_id-$k\""; then
    echo "gateway $run_id-$k is not the one answering on ${admins[$k]} (see $out/scale-gateway-$k.log)" >&2
    exit 1
  fi
done

join() { local IFS=,; echo "$*"; }
args=(scale --urls "$(join "${urls[@]}")" --admin-urls "$(join "${admins[@]}")" --api-url "http://127.0.0.11:$API_PORT"
  -n "$SCALE_N" -c "$SCALE_C" --procs "$SCALE_PROCS" --source-ips "$SOURCES"
  --broadcasts "$SCALE_BROADCASTS" --max-secs "$SCALE_MAX_SECS" --hold-secs "$SCALE_HOLD_SECS"
  --gateway-pid "$(join "${gw_pids[@]}")" --redis-pid "$redis_pid")
echo "== wsfleet-bench ${args[*]}"
"$bench" "${args[@]}" --json-out "$out/scale.json"
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/scale-machine.txt"
echo "== done; report in $out/scale.json, gateway and redis logs in $out/"
