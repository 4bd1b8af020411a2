#!/usr/bin/env bash
# Side-by-side fan-out peers: nginx+nchan and Node ws, driven by
# `applause-loadtest fanout` with 200-byte timestamped messages, one channel,
# matrix VIEWERS_MATRIX × RATE_MATRIX. Needs: apt-get install -y nginx
# libnginx-mod-nchan; node + npm (ws@8 is installed into a temp dir).
source "$(dirname "$0")/common.sh"

WORK="$(mktemp -d)"
echo "results: $RESULTS  work: $WORK"

# --- nginx + nchan (port 8081) ---
mkdir -p "$WORK/nchan/logs" "$WORK/nchan/tmp"
NGINX_PIDFILE="$WORK/nchan/nginx.pid"
taskset -c "$SERVER_CORE" nginx -p "$WORK/nchan/" -c "$PEERS/nchan.conf"
wait_port 127.0.0.1 8081
NCHAN_PID="$(cat "$NGINX_PIDFILE")"
# The worker does the fan-out; sample its CPU, not the master's.
NCHAN_WORKER="$(pgrep -P "$NCHAN_PID" | head -1)"
for v in $VIEWERS_MATRIX; do
  for r in $RATE_MATRIX; do
    lt fanout --publish "http://127.0.0.1:8081/pub?id=bench" \
      --subscribe "ws://127.0.0.1:8081/sub?id=bench" --subscribers "$v" --rate "$r" \
      --duration "$DURATION" --warmup "$WARMUP" --server-pid "$NCHAN_WORKER" --quiet \
      --json "$RESULTS/nchan-v$v-r$r.json" --plot "$RESULTS/nchan-v$v-r$r.svg" | tee "$RESULTS/nchan-v$v-r$r.txt"
  done
done
kill -QUIT "$NCHAN_PID"; NGINX_PIDFILE=""
sleep 1

# --- Node ws (port 8080) ---
mkdir -p "$WORK/node" && cp "$PEERS/ws-broadcast.js" "$WORK/node/"
(cd "$WORK/node" && npm install --silent ws@8 >/dev/null)
(cd "$WORK/node" && exec taskset -c "$SERVER_CORE" node ws-broadcast.js) &
NODE_PID=$!; PIDS+=("$NODE_PID")
wait_port 127.0.0.1 8080
for v in $VIEWERS_MATRIX; do
  for r in $RATE_MATRIX; do
    lt fanout --publish "ws://127.0.0.1:8080/pub" --subscribe "ws://127.0.0.1:8080/sub" \
      --subscribers "$v" --rate "$r" --duration "$DURATION" --warmup "$WARMUP" \
      --server-pid "$NODE_PID" --quiet \
      --json "$RESULTS/nodews-v$v-r$r.json" --plot "$RESULTS/nodews-v$v-r$r.svg" | tee "$RESULTS/nodews-v$v-r$r.txt"
    sleep 2 # let the previous subscribers' close handshakes finish
  done
done
summarize
