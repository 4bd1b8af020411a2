#!/usr/bin/env bash
# Shared helpers for the benchmark scripts: paths, core pinning, cleanup of
# everything we start (by pid, never by name), waiting for ports, summaries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LT="${LT:-$TARGET_DIR/release/applause-loadtest}"
APPLAUSE="${APPLAUSE:-$TARGET_DIR/release/applause}"
PEERS="${PEERS:-/work/shared/peers}"
# Server on one core, load generator on the other (2-core machine).
SERVER_CORE="${SERVER_CORE:-0}"
CLIENT_CORE="${CLIENT_CORE:-1}"
# NICE=-20 runs servers and load generator ahead of whatever else the shared
# machine is compiling (the sitting's load still goes to load.txt).
NICE="${NICE:-0}"
# Command prefixes (arrays, so `$!` of a backgrounded server is its own pid).
ON_SERVER=(nice -n "$NICE" taskset -c "$SERVER_CORE")
ON_CLIENT=(nice -n "$NICE" taskset -c "$CLIENT_CORE")
DURATION="${DURATION:-20s}"
WARMUP="${WARMUP:-3s}"
VIEWERS_MATRIX="${VIEWERS_MATRIX:-1000 5000}"
RATE_MATRIX="${RATE_MATRIX:-10 20}"
RESULTS="${RESULTS:-$ROOT/loadtest/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$RESULTS"

PIDS=()
NGINX_PIDFILE=""
CLUSTER_STATES=()
cleanup() {
  for state in "${CLUSTER_STATES[@]:-}"; do
    [ -n "$state" ] && cluster_stop "$state"
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  if [ -n "$NGINX_PIDFILE" ] && [ -f "$NGINX_PIDFILE" ]; then
    kill -QUIT "$(cat "$NGINX_PIDFILE")" 2>/dev/null || true
  fi
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

# Many sockets on both sides.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# Starts the scaled mode with deploy/local-cluster.sh in state dir $1 (its
# output to $2; the rest are `start` arguments), stopped again on exit. Sets
# the variables of cluster.env and GW_URLS (the gateway URLs, an array).
cluster_start() {
  local state="$1" log="$2"; shift 2
  CLUSTER_STATES+=("$state")
  APPLAUSE_BIN="$APPLAUSE" "$ROOT/deploy/local-cluster.sh" start --detach --state-dir "$state" "$@" >"$log" 2>&1
  # shellcheck disable=SC1091
  source "$state/cluster.env"
  IFS=, read -r -a GW_URLS <<<"$GATEWAY_URLS"
}

cluster_stop() { # state dir
  APPLAUSE_BIN="$APPLAUSE" "$ROOT/deploy/local-cluster.sh" stop --state-dir "$1" >/dev/null 2>&1 || true
}

wait_port() { # host port [seconds]
  local deadline=$((SECONDS + ${3:-20}))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ "$SECONDS" -ge "$deadline" ] && { echo "port $1:$2 did not open" >&2; return 1; }
    sleep 0.2
  done
}

# One line per cell in $RESULTS/load.txt: the time, load averages and the
# CPU split over the next second (us/sy/id/steal), taken right before the cell.
record_load() { # cell name
  local v
  v="$(vmstat 1 2 | tail -1 | awk '{print "us=" $13 " sy=" $14 " id=" $15 " st=" $17}')"
  echo "$(date -u +%H:%M:%S) $1 load=[$(cut -d' ' -f1-3 /proc/loadavg)] $v nice=$NICE" >> "$RESULTS/load.txt"
}

lt() { # runs the load generator pinned to the client core, single-threaded runtime
  # (~10-15% less client CPU per delivery than the multi-thread runtime on one core)
  "${ON_CLIENT[@]}" "$LT" --worker-threads 1 "$@"
}

# One line per JSON report: name, viewers, rate, deliveries/s, latency, CPU per delivery.
summarize() {
  printf "%-28s %8s %8s %12s %9s %9s %9s %12s %10s %12s\n" run viewers msgs/s deliveries/s p50_ms p99_ms max_ms cpu_us/deliv rss_kib client_us/d
  for f in "$RESULTS"/*.json; do
    jq -r --arg n "$(basename "$f" .json)" '[$n, .viewers.connected, (.gifts.per_s|round), (.deliveries.per_s|floor),
      .latency.gift_to_screen.p50_ms, .latency.gift_to_screen.p99_ms, .latency.gift_to_screen.max_ms,
      ((.server.cpu_us_per_delivery // 0)*100|floor/100), (.server.rss_kib_max // 0),
      ((.client.cpu_us_per_delivery // 0)*100|floor/100)] | @tsv' "$f" |
      awk -F'\t' '{printf "%-28s %8s %8s %12s %9s %9s %9s %12s %10s %12s\n",$1,$2,$3,$4,$5,$6,$7,$8,$9,$10}'
  done | tee "$RESULTS/summary.txt"
}
