#!/usr/bin/env bash
# Runs the wsfleet load scenarios against real gateway processes on loopback and writes the
# reports under bench/out/. Sizes follow the targets in docs/benchmarks.md:
#   idle   : 15,000 connections held by ONE in-process-engine gateway (fd limit ~19,500/process),
#            opened by 2 load processes from 127.0.0.2-127.0.0.9
#   fanout : 100 subscribers over 2 nodes on a fresh redis-server, 50 msg/s for 20 s
#            (also a 1-node run on the in-process engine, which needs no Redis)
#   drain  : 15,000 clients on node a of two on a fresh redis-server, drained over 30 s by
#            POST /drain while a publisher on node b sends 2 msg/s
# Everything it starts is stopped on exit.
#
# Usage: bench/run-gateway.sh [idle] [fanout] [drain]   (no argument: all three, in that order)
#
# Environment:
#   WSFLEET_GATEWAY_BIN  use this gateway binary instead of building it here
#   WSFLEET_GATEWAY_REV  free text naming that binary's source (printed with the results)
#   IDLE_N, IDLE_C, IDLE_PROCS, FANOUT_S, FANOUT_RATE, FANOUT_SECS,
#   DRAIN_N, DRAIN_WINDOW, DRAIN_RATE                                override the sizes
set -euo pipefail
cd "$(dirname "$0")/.."

out=bench/out
mkdir -p "$out"
IDLE_N=${IDLE_N:-15000}
IDLE_C=${IDLE_C:-64}
IDLE_PROCS=${IDLE_PROCS:-2}
FANOUT_S=${FANOUT_S:-100}
FANOUT_RATE=${FANOUT_RATE:-50}
FANOUT_SECS=${FANOUT_SECS:-20}
DRAIN_N=${DRAIN_N:-15000}
DRAIN_WINDOW=${DRAIN_WINDOW:-30}
DRAIN_RATE=${DRAIN_RATE:-2}
scenarios=("$@")
[[ ${#scenarios[@]} -gt 0 ]] || scenarios=(idle fanout drain)
for s in "${scenarios[@]}"; do
  [[ $s =~ ^(idle|fanout|drain)$ ]] || { echo "unknown scenario $s (idle, fanout, drain)" >&2; exit 2; }
done
wanted() { [[ " ${scenarios[*]} " == *" $1 "* ]]; }
# The drain token of the drained node (only loopback can reach it).
export WSFLEET_DRAIN_TOKEN=bench-drain-$$
# free_port: a loopback TCP port nobody listens on right now (others may run gateways here).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
WS1=$(free_port) ADMIN1=$(free_port) WS2=$(free_port) ADMIN2=$(free_port) REDIS_PORT=$(free_port)
run_id=bench$$

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "== build (release)"
cargo build --release -q -p wsfleet-bench
bench=target/release/wsfleet-bench
if [[ -n "${WSFLEET_GATEWAY_BIN:-}" ]]; then
  gateway=$WSFLEET_GATEWAY_BIN
else
  cargo build --release -q -p wsfleet-gateway
  gateway=target/release/wsfleet-gateway
fi
ulimit -n "$(ulimit -Hn)"

# wait_http URL: polls until the URL answers 200, for at most 30 s.
wait_http() {
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2
  return 1
}

# start_gateway NODE WS_PORT ADMIN_PORT REDIS_URL: starts a node in the background; sets $gw_pid.
# Checks that the node answering on the admin port is ours (a node id unique to this run), so
# a port taken by someone else's gateway cannot produce figures about the wrong process.
start_gateway() {
  local node="$run_id-$1"
  "$gateway" --node-id "$node" --anonymous \
    --listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3" \
    --handshakes-per-second 1000000 --redis-url "$4" \
    2>"$out/gateway-$1.log" &
  gw_pid=$!
  pids+=("$gw_pid")
  wait_http "http://127.0.0.1:$3/healthz"
  if ! kill -0 "$gw_pid" 2>/dev/null || ! curl -fsS "http://127.0.0.1:$3/status" | grep -q "\"$node\""; then
    echo "gateway $node did not come up on ports $2/$3 (see $out/gateway-$1.log)" >&2
    return 1
  fi
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

machine() {
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), fd limit $(ulimit -n)"
  echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "gateway: $gateway, $("$gateway" --version) ${WSFLEET_GATEWAY_REV:+(source $WSFLEET_GATEWAY_REV)}"
  echo "tools: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
}
machine | tee "$out/machine.txt"

# start_redis: a fresh redis-server without persistence on $REDIS_PORT; sets $redis_pid.
start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$out/redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && return 0; sleep 0.1; done
  echo "redis-server did not come up on $REDIS_PORT" >&2
  return 1
}

if wanted idle; then
  echo "== idle: $IDLE_N connections, $IDLE_C dialers, $IDLE_PROCS load processes"
  start_gateway idle "$WS1" "$ADMIN1" ""
  idle_args=(idle --url "ws://127.0.0.1:$WS1/ws" -n "$IDLE_N" -c "$IDLE_C" --procs "$IDLE_PROCS"
    --source-ips 127.0.0.2-127.0.0.9 --gateway-pid "$gw_pid" --hold-secs 5)
  echo "+ wsfleet-bench ${idle_args[*]}"
  "$bench" "${idle_args[@]}" --json-out "$out/idle.json"
  stop "$gw_pid"
fi

if wanted fanout; then
  echo "== fanout (1 node, in-process engine): $FANOUT_S subscribers, $FANOUT_RATE msg/s, $FANOUT_SECS s"
  start_gateway solo "$WS1" "$ADMIN1" ""
  solo_args=(fanout --urls "ws://127.0.0.1:$WS1/ws" -s "$FANOUT_S" --rate "$FANOUT_RATE"
    --duration "$FANOUT_SECS" --channel bench.solo --gateway-pid "$gw_pid")
  echo "+ wsfleet-bench ${solo_args[*]}"
  "$bench" "${solo_args[@]}" --json-out "$out/fanout-1node.json"
  stop "$gw_pid"

  echo "== fanout (2 nodes, Redis): $FANOUT_S subscribers, $FANOUT_RATE msg/s, $FANOUT_SECS s"
  start_redis
  start_gateway a "$WS1" "$ADMIN1" "redis://127.0.0.1:$REDIS_PORT"; pid_a=$gw_pid
  start_gateway b "$WS2" "$ADMIN2" "redis://127.0.0.1:$REDIS_PORT"; pid_b=$gw_pid
  fleet_args=(fanout --urls "ws://127.0.0.1:$WS1/ws,ws://127.0.0.1:$WS2/ws" -s "$FANOUT_S"
    --rate "$FANOUT_RATE" --duration "$FANOUT_SECS" --channel bench.fleet --gateway-pid "$pid_a,$pid_b")
  echo "+ wsfleet-bench ${fleet_args[*]}"
  "$bench" "${fleet_args[@]}" --json-out "$out/fanout-2node.json"
  stop "$pid_a"; stop "$pid_b"; stop "$redis_pid"
fi

if wanted drain; then
  echo "== drain (2 nodes, Redis): $DRAIN_N clients on node a, ${DRAIN_WINDOW} s window, $DRAIN_RATE msg/s"
  start_redis
  start_gateway a "$WS1" "$ADMIN1" "redis://127.0.0.1:$REDIS_PORT"; pid_a=$gw_pid
  start_gateway b "$WS2" "$ADMIN2" "redis://127.0.0.1:$REDIS_PORT"; pid_b=$gw_pid
  drain_args=(drain --url "ws://127.0.0.1:$WS1/ws" --others "ws://127.0.0.1:$WS2/ws"
    --admin-url "http://127.0.0.1:$ADMIN1" -n "$DRAIN_N" --window-secs "$DRAIN_WINDOW"
    --rate "$DRAIN_RATE" --channel bench.drain)
  echo "+ wsfleet-bench ${drain_args[*]}"
  "$bench" "${drain_args[@]}" --json-out "$out/drain.json"
  # Node a exits by itself once drained.
  stop "$pid_a"; stop "$pid_b"; stop "$redis_pid"
fi
echo "== done; JSON reports and gateway logs in $out/"
