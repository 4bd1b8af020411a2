#!/usr/bin/env bash
# Starts Applause's scaled mode on one machine: N `applause gateway` and M
# `applause gifts` processes on loopback ports, sharing the local PostgreSQL
# (a database of their own) and the local Redis (a key prefix of their own).
#
#   deploy/local-cluster.sh [start] [--gateways N] [--gifts M] [options] [-- NODE_FLAGS…]
#   deploy/local-cluster.sh add gateway|gifts [--state-dir DIR] [-- NODE_FLAGS…]
#   deploy/local-cluster.sh stop [--state-dir DIR]
#
# `start` runs `applause migrate` once, starts the nodes, waits until each
# answers /readyz, prints the URLs and the JWT secret, then stays in the
# foreground until Ctrl-C/SIGTERM, when it stops everything it started (by pid)
# and drops its database and Redis keys. With --detach it returns at once and
# `stop` cleans up later. `add` starts one more node of a running cluster
# (e.g. a gifts node replacing a killed one). Everything about a cluster lives
# in its state directory: pids, logs and cluster.env (shell-sourceable).
#
# Options:
#   --gateways N        gateway nodes (default 2)
#   --gifts M           gifts nodes (default 1)
#   --state-dir DIR     default ${APPLAUSE_CLUSTER_DIR:-/tmp/applause-local-cluster}
#   --database-url URL  use this PostgreSQL database (not created, not dropped)
#   --pg-admin-url URL  where to create/drop the database (default postgres://postgres@127.0.0.1:5432/postgres)
#   --redis-url URL     default redis://127.0.0.1:6379; a Redis Cluster is
#                       redis+cluster://host:port[,host:port…]/ (see deploy/README.md)
#   --redis-prefix P    default applause-cluster-<random>:
#   --detach            start, print, and exit; stop later with `stop`
# Environment: APPLAUSE_BIN (default target/release/applause),
# APPLAUSE_JWT_SECRET (default: 32 random bytes, hex).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${APPLAUSE_CLUSTER_DIR:-/tmp/applause-local-cluster}"
GATEWAYS=2
GIFTS=1
DATABASE_URL=""
PG_ADMIN_URL="postgres://postgres@127.0.0.1:5432/postgres"
REDIS_URL="redis://127.0.0.1:6379"
REDIS_PREFIX=""
DETACH=0
NODE_FLAGS=()
READY_TIMEOUT_S=60

die() { echo "local-cluster: $*" >&2; exit 1; }
say() { echo "local-cluster: $*" >&2; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# The redis:// URL of every server behind a --redis-url: the URL itself, or
# for redis+cluster:// every master the cluster announces (asked of the first
# seed that answers), since redis-cli -u takes one server and SCAN sees one
# node's keys.
redis_nodes() {
  local url="$1" rest auth="" seed
  if [[ "$url" != redis+cluster://* ]]; then
    echo "$url"
    return
  fi
  rest="${url#redis+cluster://}"
  rest="${rest%/}"
  rest="${rest%/0}"
  if [[ "$rest" == *@* ]]; then
    auth="${rest%@*}@"
    rest="${rest##*@}"
  fi
  local -a seeds
  IFS=',' read -ra seeds <<<"$rest"
  for seed in "${seeds[@]}"; do
    if redis-cli -u "redis://$auth$seed" cluster nodes 2>/dev/null |
      awk -v auth="$auth" '$3 ~ /master/ && $3 !~ /fail/ { split($2, a, "@"); print "redis://" auth a[1] }' |
      grep .; then
      return
    fi
  done
}

# The binary every node runs: $APPLAUSE_BIN, else the release build.
binary() {
  local bin="${APPLAUSE_BIN:-}"
  if [[ -z "$bin" ]]; then
    bin="$ROOT/target/release/applause"
    if [[ ! -x "$bin" && -n "${CARGO_TARGET_DIR:-}" ]]; then
      bin="$CARGO_TARGET_DIR/release/applause"
    fi
  fi
  [[ -x "$bin" ]] || die "no applause binary at $bin: run 'cargo build --release -p applause' or set APPLAUSE_BIN"
  echo "$bin"
}

# True while pid $1 runs (a zombie left unreaped by a killed node's new parent is gone).
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  ! grep -q ') Z ' "/proc/$1/stat" 2>/dev/null
}

# True when pid $1 still runs the binary this cluster started (not a reused pid).
is_ours() {
  local pid="$1" bin="$2"
  pid_alive "$pid" || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1 | grep -qxF "$bin"
}

# start_node KIND NAME: starts one node on 127.0.0.1:0, waits for its address
# (from its log) and its /readyz, appends "NAME PID URL" to the pid file.
start_node() {
  local kind="$1" name="$2" log="$STATE_DIR/$2.log" pid addr="" url i
  mkdir -p "$STATE_DIR/data-$name"
  : >"$log"
  NO_COLOR=1 RUST_LOG="${RUST_LOG:-info,sqlx=warn},applause=info" \
    "$BIN" "$kind" --bind 127.0.0.1:0 --data-dir "$STATE_DIR/data-$name" \
    --log-format text "${NODE_FLAGS[@]}" </dev/null >"$log" 2>&1 &
  pid=$!
  echo "$name $pid -" >>"$STATE_DIR/pids"
  for ((i = 0; i < READY_TIMEOUT_S * 10; i++)); do
    pid_alive "$pid" || { tail -n 20 "$log" >&2; die "$name exited while starting (log: $log)"; }
    addr="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -m1 -o 'applause is listening addr=[0-9.:]*' | sed 's/.*addr=//' || true)"
    [[ -n "$addr" ]] && break
    sleep 0.1
  done
  [[ -n "$addr" ]] || die "$name did not report its address in ${READY_TIMEOUT_S}s (log: $log)"
  url="http://$addr"
  for ((i = 0; i < READY_TIMEOUT_S * 10; i++)); do
    if curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; then
      sed -i "s|^$name $pid -\$|$name $pid $url|" "$STATE_DIR/pids"
      echo "$url"
      return 0
    fi
    pid_alive "$pid" || die "$name exited while starting (log: $log)"
    sleep 0.1
  done
  die "$name is not ready after ${READY_TIMEOUT_S}s (log: $log)"
}

# One line of cluster.env: KEY='value' (readable by `source` and by tests).
kv() {
  [[ "$2" != *"'"* ]] || die "$1 must not contain a single quote"
  printf "%s='%s'\n" "$1" "$2"
}

# "NAME URL" of every node of kind $1 that is running.
live_nodes() {
  local name pid url
  while read -r name pid url; do
    [[ "$name" == "$1"-* && "$url" != - ]] && pid_alive "$pid" && echo "$name $url"
  done <"$STATE_DIR/pids"
  return 0
}

write_env() {
  local gw gf
  gw="$(live_nodes gateway | cut -d' ' -f2 | paste -sd, -)"
  gf="$(live_nodes gifts | cut -d' ' -f2 | paste -sd, -)"
  {
    kv APPLAUSE_BIN "$BIN"
    kv APPLAUSE_DATABASE_URL "$DATABASE_URL"
    kv APPLAUSE_REDIS_URL "$REDIS_URL"
    kv APPLAUSE_REDIS_PREFIX "$REDIS_PREFIX"
    kv APPLAUSE_JWT_SECRET "$APPLAUSE_JWT_SECRET"
    kv CLUSTER_DB_NAME "$DB_NAME"
    kv CLUSTER_PG_ADMIN_URL "$PG_ADMIN_URL"
    kv CLUSTER_NODE_FLAGS "${NODE_FLAGS[*]:-}"
    kv GATEWAY_URLS "$gw"
    kv GIFTS_URLS "$gf"
  } >"$STATE_DIR/cluster.env.tmp"
  mv "$STATE_DIR/cluster.env.tmp" "$STATE_DIR/cluster.env"
}

print_summary() {
  local gw gf
  gw="$(live_nodes gateway | awk '{u = $2; sub("^http://", "ws://", u); print "  " $1 ": " $2 "  (WebSocket: " u "/v1/ws?room=ROOM)"}')"
  gf="$(live_nodes gifts | awk '{print "  " $1 ": " $2 "  (HTTP API)"}')"
  cat <<EOF
Applause local cluster is up (state: $STATE_DIR)
gateways:
$gw
gifts:
$gf
database: $DATABASE_URL
redis: $REDIS_URL (prefix $REDIS_PREFIX)
APPLAUSE_JWT_SECRET=$APPLAUSE_JWT_SECRET
a token: APPLAUSE_JWT_SECRET=$APPLAUSE_JWT_SECRET $BIN token --sub alice --role viewer
stop: $0 stop --state-dir $STATE_DIR
EOF
}

stop_cluster() {
  [[ -f "$STATE_DIR/pids" ]] || { say "nothing to stop in $STATE_DIR"; return 0; }
  local name pid url bin="" i alive
  if [[ -f "$STATE_DIR/cluster.env" ]]; then
    # shellcheck disable=SC1091
    source "$STATE_DIR/cluster.env"
    bin="$APPLAUSE_BIN"
  fi
  local pids=()
  while read -r name pid url; do
    [[ -n "$pid" ]] || continue
    if [[ -z "$bin" ]] || is_ours "$pid" "$bin"; then
      if kill -TERM "$pid" 2>/dev/null; then pids+=("$pid"); fi
    fi
  done <"$STATE_DIR/pids"
  for ((i = 0; i < 100; i++)); do
    alive=0
    for pid in "${pids[@]}"; do pid_alive "$pid" && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if pid_alive "$pid"; then
      say "pid $pid did not drain in 10s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  if [[ -n "${CLUSTER_DB_NAME:-}" ]]; then
    psql "$CLUSTER_PG_ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS \"$CLUSTER_DB_NAME\" WITH (FORCE)" >/dev/null ||
      say "could not drop database $CLUSTER_DB_NAME"
  fi
  if [[ -n "${APPLAUSE_REDIS_PREFIX:-}" && "$APPLAUSE_REDIS_PREFIX" == applause-cluster-* ]]; then
    # Only a prefix this script generated is swept (SCAN + DEL, never FLUSHDB),
    # on every master of a cluster, one key per DEL there (keys of one node
    # may sit in several slots).
    local node per_del=500
    [[ "$APPLAUSE_REDIS_URL" == redis+cluster://* ]] && per_del=1
    for node in $(redis_nodes "$APPLAUSE_REDIS_URL"); do
      redis-cli -u "$node" --scan --pattern "${APPLAUSE_REDIS_PREFIX}*" |
        xargs -r -n "$per_del" redis-cli -u "$node" DEL >/dev/null || true
    done
  fi
  rm -f "$STATE_DIR/pids" "$STATE_DIR/cluster.env"
  say "stopped"
}

COMMAND=start
case "${1:-}" in
  start | stop | add) COMMAND="$1"; shift ;;
  -h | --help) usage; exit 0 ;;
esac
ADD_KIND=""
if [[ "$COMMAND" == add ]]; then
  ADD_KIND="${1:-}"
  [[ "$ADD_KIND" == gateway || "$ADD_KIND" == gifts ]] || die "usage: $0 add gateway|gifts [--state-dir DIR]"
  shift
fi
while (($#)); do
  case "$1" in
    --gateways) GATEWAYS="${2:?}"; shift 2 ;;
    --gifts) GIFTS="${2:?}"; shift 2 ;;
    --state-dir) STATE_DIR="${2:?}"; shift 2 ;;
    --database-url) DATABASE_URL="${2:?}"; shift 2 ;;
    --pg-admin-url) PG_ADMIN_URL="${2:?}"; shift 2 ;;
    --redis-url) REDIS_URL="${2:?}"; shift 2 ;;
    --redis-prefix) REDIS_PREFIX="${2:?}"; shift 2 ;;
    --detach) DETACH=1; shift ;;
    --) shift; NODE_FLAGS=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ "$GATEWAYS" =~ ^[0-9]+$ && "$GATEWAYS" -ge 1 ]] || die "--gateways $GATEWAYS must be a number ≥ 1"
[[ "$GIFTS" =~ ^[0-9]+$ && "$GIFTS" -ge 1 ]] || die "--gifts $GIFTS must be a number ≥ 1"

case "$COMMAND" in
  stop)
    stop_cluster
    exit 0
    ;;
  add)
    [[ -f "$STATE_DIR/cluster.env" ]] || die "no cluster in $STATE_DIR"
    # shellcheck disable=SC1091
    source "$STATE_DIR/cluster.env"
    BIN="$APPLAUSE_BIN" DATABASE_URL="$APPLAUSE_DATABASE_URL" REDIS_URL="$APPLAUSE_REDIS_URL"
    REDIS_PREFIX="$APPLAUSE_REDIS_PREFIX" DB_NAME="$CLUSTER_DB_NAME" PG_ADMIN_URL="$CLUSTER_PG_ADMIN_URL"
    if ((${#NODE_FLAGS[@]} == 0)) && [[ -n "$CLUSTER_NODE_FLAGS" ]]; then
      read -ra NODE_FLAGS <<<"$CLUSTER_NODE_FLAGS"
    fi
    export APPLAUSE_JWT_SECRET APPLAUSE_DATABASE_URL APPLAUSE_REDIS_URL APPLAUSE_REDIS_PREFIX
    n="$(grep -c "^$ADD_KIND-" "$STATE_DIR/pids" || true)"
    url="$(start_node "$ADD_KIND" "$ADD_KIND-$((n + 1))")"
    write_env
    echo "$ADD_KIND-$((n + 1)): $url"
    exit 0
    ;;
esac

# start
BIN="$(binary)"
command -v curl >/dev/null || die "curl is required"
command -v psql >/dev/null || die "psql is required"
mkdir -p "$STATE_DIR"
if [[ -f "$STATE_DIR/pids" ]]; then
  while read -r _ pid _; do
    pid_alive "$pid" && die "a cluster is already running from $STATE_DIR (stop it: $0 stop --state-dir $STATE_DIR)"
  done <"$STATE_DIR/pids"
  rm -f "$STATE_DIR/pids"
fi
: >"$STATE_DIR/pids"
export APPLAUSE_JWT_SECRET="${APPLAUSE_JWT_SECRET:-$(random_hex 32)}"
((${#APPLAUSE_JWT_SECRET} >= 32)) || die "APPLAUSE_JWT_SECRET must be at least 32 bytes"
[[ -n "$REDIS_PREFIX" ]] || REDIS_PREFIX="applause-cluster-$(random_hex 6):"
first_redis="$(redis_nodes "$REDIS_URL" | head -n 1)"
[[ -n "$first_redis" ]] && redis-cli -u "$first_redis" ping >/dev/null 2>&1 ||
  die "Redis is not reachable at $REDIS_URL"
DB_NAME=""
if [[ -z "$DATABASE_URL" ]]; then
  DB_NAME="${APPLAUSE_CLUSTER_DB_PREFIX:-applause_cluster_}$(random_hex 6)"
  psql "$PG_ADMIN_URL" -qAtc "CREATE DATABASE \"$DB_NAME\"" >/dev/null ||
    die "cannot create database $DB_NAME through $PG_ADMIN_URL"
  DATABASE_URL="${PG_ADMIN_URL%/*}/$DB_NAME"
fi
export APPLAUSE_DATABASE_URL="$DATABASE_URL" APPLAUSE_REDIS_URL="$REDIS_URL" APPLAUSE_REDIS_PREFIX="$REDIS_PREFIX"
write_env
# From here on a failure cleans up what was started.
# shellcheck disable=SC2154 # status is assigned inside the trap
trap 'status=$?; trap - EXIT INT TERM; stop_cluster; exit "$status"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$BIN" migrate --data-dir "$STATE_DIR/data-migrate" >"$STATE_DIR/migrate.log" 2>&1 ||
  { cat "$STATE_DIR/migrate.log" >&2; die "applause migrate failed"; }
for ((i = 1; i <= GIFTS; i++)); do start_node gifts "gifts-$i" >/dev/null; done
for ((i = 1; i <= GATEWAYS; i++)); do start_node gateway "gateway-$i" >/dev/null; done
write_env
print_summary

if ((DETACH)); then
  trap - EXIT INT TERM
  exit 0
fi
say "running; Ctrl-C stops the cluster"
while sleep 1; do
  while read -r name pid _; do
    if ! pid_alive "$pid" && [[ ! -f "$STATE_DIR/$name.reported" ]]; then
      say "$name (pid $pid) exited; see $STATE_DIR/$name.log"
      touch "$STATE_DIR/$name.reported"
    fi
  done <"$STATE_DIR/pids"
done
