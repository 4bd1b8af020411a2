#!/usr/bin/env bash
# Fan-out side by side in one sitting, the same client and 200-byte messages
# for every server: the gateway alone (`pub_server` example: the real
# gateway on an in-process bus, `POST /pub` publishes) in one or two builds
# (GW_BEFORE, optional, and GW_AFTER), nginx+nchan and Node ws. Per cell the
# servers run one after another, ROUNDS times alternating, so each ratio is
# taken minutes apart under the same load; the machine's load before each
# cell goes to load.txt. Matrix: VIEWERS_MATRIX × RATE_MATRIX (a busy room
# is VIEWERS_MATRIX=1000 RATE_MATRIX=200). GW_MODES adds lever comparisons
# of the after build, e.g. GW_MODES="nodirect:DIRECT_WRITE=0 plain:DIRECT_WRITE=0,VECTORED_WRITE=0".
source "$(dirname "$0")/common.sh"

GW_AFTER="${GW_AFTER:-$TARGET_DIR/release/examples/pub_server}"
GW_BEFORE="${GW_BEFORE:-}"
GW_MODES="${GW_MODES:-}"
SERVERS="${SERVERS:-nchan nodews gw-before gw-after}"
ROUNDS="${ROUNDS:-1}"
GW_PORT="${GW_PORT:-18090}"
[ -x "$GW_AFTER" ] || { echo "build it first: cargo build --release -p applause-gateway --example pub_server" >&2; exit 2; }
WORK="$(mktemp -d)"
echo "results: $RESULTS  work: $WORK"
{ date; uname -a; nproc; grep -m1 'model name' /proc/cpuinfo; } > "$RESULTS/machine.txt"

# Peers stay up for the whole sitting (idle between their cells).
mkdir -p "$WORK/nchan/logs" "$WORK/nchan/tmp"
NGINX_PIDFILE="$WORK/nchan/nginx.pid"
"${ON_SERVER[@]}" nginx -p "$WORK/nchan/" -c "$PEERS/nchan.conf"
wait_port 127.0.0.1 8081
NCHAN_WORKER="$(pgrep -P "$(cat "$NGINX_PIDFILE")" | head -1)"
mkdir -p "$WORK/node" && cp "$PEERS/ws-broadcast.js" "$WORK/node/"
(cd "$WORK/node" && npm install --silent ws@8 >/dev/null)
(cd "$WORK/node" && exec "${ON_SERVER[@]}" node ws-broadcast.js) &
NODE_PID=$!; PIDS+=("$NODE_PID")
wait_port 127.0.0.1 8080

fanout() { # name server-pid publish subscribe viewers rate
  record_load "$1"
  lt fanout --publish "$3" --subscribe "$4" --subscribers "$5" --rate "$6" \
    --duration "$DURATION" --warmup "$WARMUP" --server-pid "$2" --quiet --strict \
    --json "$RESULTS/$1.json" | tee "$RESULTS/$1.txt" || echo "exit status $?" >> "$RESULTS/$1.txt"
}

gateway() { # name binary viewers rate [VAR=value ...]
  local name="$1" bin="$2" v="$3" r="$4"; shift 4
  env "$@" "${ON_SERVER[@]}" "$bin" "127.0.0.1:$GW_PORT" > "$RESULTS/$name.log" 2>&1 &
  local pid=$!; PIDS+=("$pid")
  wait_port 127.0.0.1 "$GW_PORT"
  fanout "$name" "$pid" "http://127.0.0.1:$GW_PORT/pub?room=bench" \
    "ws://127.0.0.1:$GW_PORT/v1/ws?room=bench" "$v" "$r"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for round in $(seq 1 "$ROUNDS"); do
  for v in $VIEWERS_MATRIX; do
    for r in $RATE_MATRIX; do
      for s in $SERVERS; do
        cell="$s-v$v-r$r-$round"
        case "$s" in
          nchan) fanout "$cell" "$NCHAN_WORKER" "http://127.0.0.1:8081/pub?id=bench" \
                   "ws://127.0.0.1:8081/sub?id=bench" "$v" "$r" ;;
          nodews) fanout "$cell" "$NODE_PID" ws://127.0.0.1:8080/pub ws://127.0.0.1:8080/sub "$v" "$r"
                  sleep 2 ;; # the previous subscribers' close handshakes
          gw-before) [ -n "$GW_BEFORE" ] && gateway "$cell" "$GW_BEFORE" "$v" "$r" ;;
          gw-after) gateway "$cell" "$GW_AFTER" "$v" "$r" ;;
        esac
      done
      for m in $GW_MODES; do
        IFS=, read -r -a vars <<<"${m#*:}"
        gateway "gw-${m%%:*}-v$v-r$r-$round" "$GW_AFTER" "$v" "$r" "${vars[@]}"
      done
    done
  done
done
summarize
