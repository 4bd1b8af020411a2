#!/usr/bin/env bash
# Several heavy rooms on one embedded server (`applause serve`), the full gift
# scenario, builds given as BUILDS="name=/path/to/applause name2=/path/…"
# alternated ROUNDS times: CPU per delivery, frames per write (deliveries /
# socket writes, from /metrics at the end of the run), gift-to-screen and
# purchase latency. Defaults: 4 rooms × 750 viewers, 20 gifts/s each.
source "$(dirname "$0")/common.sh"

BUILDS="${BUILDS:?BUILDS=\"name=/path/to/applause …\"}"
ROUNDS="${ROUNDS:-2}"
ROOMS="${ROOMS:-4}"
VIEWERS="${VIEWERS:-750}"
RATE="${RATE:-80}" # gifts/s in all
PORT="${PORT:-18250}"
export APPLAUSE_JWT_SECRET="${APPLAUSE_JWT_SECRET:-bench-secret-bench-secret-bench-secret-42}"

for round in $(seq 1 "$ROUNDS"); do
  for b in $BUILDS; do
    name="${b%%=*}" bin="${b#*=}" cell="${b%%=*}-$round"
    DATA="$(mktemp -d)"
    record_load "$cell"
    "${ON_SERVER[@]}" "$bin" serve --bind "127.0.0.1:$PORT" --data-dir "$DATA" > "$RESULTS/$cell.log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    wait_port 127.0.0.1 "$PORT" 30
    status=0
    "${ON_CLIENT[@]}" "$LT" run --target "http://127.0.0.1:$PORT" --rooms "$ROOMS" --viewers "$VIEWERS" \
      --senders 50 --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" --ack-share 0.1 \
      --message-share 0.2 --server-pid "$pid" --quiet --json "$RESULTS/$cell.json" \
      > "$RESULTS/$cell.txt" 2>&1 || status=$?
    echo "exit status $status" >> "$RESULTS/$cell.txt"
    frames="$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^applause_gateway_socket_writes_total/ {w=$2}
      /^applause_gateway_deliveries_total/ {d=$2} END {if (w > 0) printf "%.2f", d / w}')"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$DATA"
    jq -r --arg n "$cell" --arg f "$frames" '"\($n): CPU per delivery \(.server.cpu_us_per_delivery) µs, frames per write \($f), gift-to-screen p50 \(.latency.gift_to_screen.p50_ms) p99 \(.latency.gift_to_screen.p99_ms) ms, purchase p99 \(.latency.purchase.p99_ms) ms, verified \(.verification.ok)"' \
      "$RESULTS/$cell.json" | tee -a "$RESULTS/summary.txt"
  done
done
