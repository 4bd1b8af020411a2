#!/usr/bin/env bash
# Durable purchase throughput on the embedded SQLite ledger: closed-loop
# senders (CONCURRENCY of them) for DURATION, finance and leaderboards verified.
source "$(dirname "$0")/common.sh"

PORT="${PORT:-18080}"
CONCURRENCY="${CONCURRENCY:-64 256}"
export APPLAUSE_JWT_SECRET="${APPLAUSE_JWT_SECRET:-bench-secret-bench-secret-bench-secret-42}"
[ -x "$APPLAUSE" ] || { echo "build it first: cargo build --release -p applause" >&2; exit 2; }

for c in $CONCURRENCY; do
  DATA="$(mktemp -d)"
  taskset -c "$SERVER_CORE" "$APPLAUSE" serve --bind "127.0.0.1:$PORT" --data-dir "$DATA" \
    > "$RESULTS/server-purchase-c$c.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID")
  wait_port 127.0.0.1 "$PORT" 30
  status=0
  lt purchase --target "http://127.0.0.1:$PORT" --senders "$c" --concurrency "$c" \
    --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" --quiet \
    --json "$RESULTS/purchase-c$c.json" --plot "$RESULTS/purchase-c$c.svg" \
    | tee "$RESULTS/purchase-c$c.txt" || status=$?
  echo "exit status $status" >> "$RESULTS/purchase-c$c.txt"
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$DATA"
done
jq -r '"\(.scenario.concurrency) senders: \(.gifts.per_s|floor) gifts/s, purchase p50 \(.latency.purchase.p50_ms) ms p99 \(.latency.purchase.p99_ms) ms, verify ok=\(.verification.ok)"' \
  "$RESULTS"/purchase-*.json | tee "$RESULTS/summary.txt"
