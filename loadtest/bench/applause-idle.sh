#!/usr/bin/env bash
# Idle connections on one `applause serve`: IDLE_VIEWERS WebSockets (default
# 16,000: one process here may hold at most 20,000 open files; 50,000 needs
# applause-idle-scaled.sh) held on one room with a trickle of gifts; reports
# the server's RSS per connection.
source "$(dirname "$0")/common.sh"

PORT="${PORT:-18080}"
IDLE_VIEWERS="${IDLE_VIEWERS:-16000}"
export APPLAUSE_JWT_SECRET="${APPLAUSE_JWT_SECRET:-bench-secret-bench-secret-bench-secret-42}"
[ -x "$APPLAUSE" ] || { echo "build it first: cargo build --release -p applause" >&2; exit 2; }

DATA="$(mktemp -d)"
taskset -c "$SERVER_CORE" "$APPLAUSE" serve --bind "127.0.0.1:$PORT" --data-dir "$DATA" \
  > "$RESULTS/server-idle.log" 2>&1 &
SERVER_PID=$!; PIDS+=("$SERVER_PID")
wait_port 127.0.0.1 "$PORT" 30
BASE_RSS="$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")"
status=0
lt run --target "http://127.0.0.1:$PORT" --rooms 1 --viewers "$IDLE_VIEWERS" --senders 5 \
  --rate 1 --duration 30s --warmup 0s --connect-rate "${CONNECT_RATE:-5000}" --ack-share 0 \
  --server-pid "$SERVER_PID" --quiet --json "$RESULTS/idle.json" | tee "$RESULTS/idle.txt" || status=$?
jq -r --argjson base "$BASE_RSS" '"\(.viewers.connected) connections held; server RSS \(.server.rss_kib_max) KiB (\(($base)) KiB before) → \(((.server.rss_kib_max - $base) * 1024 / .viewers.connected)|floor) bytes per connection; verify ok=\(.verification.ok)"' \
  "$RESULTS/idle.json" | tee "$RESULTS/summary.txt"
rm -rf "$DATA"
exit "$status"
