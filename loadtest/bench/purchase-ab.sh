#!/usr/bin/env bash
# Purchase A/B in one sitting: builds given as BUILDS="name=/path/to/applause
# name2=/path/…" run the documented purchase benchmark (256 closed-loop
# senders, unpinned, default worker threads) one after another, ROUNDS times
# alternating, so every pair is taken minutes apart under the same load.
# LEDGER=postgres uses a fresh PostgreSQL database per run (PG_URL base).
source "$(dirname "$0")/common.sh"

BUILDS="${BUILDS:?BUILDS=\"name=/path/to/applause …\"}"
ROUNDS="${ROUNDS:-2}"
LEDGER="${LEDGER:-sqlite}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
PORT="${PORT:-18231}"
SENDERS="${SENDERS:-256}"
export APPLAUSE_JWT_SECRET="${APPLAUSE_JWT_SECRET:-bench-secret-bench-secret-bench-secret-42}"

for round in $(seq 1 "$ROUNDS"); do
  for b in $BUILDS; do
    name="${b%%=*}" bin="${b#*=}" cell="$LEDGER-${b%%=*}-$round"
    DATA="$(mktemp -d)"
    db=()
    if [ "$LEDGER" = postgres ]; then
      dbname="ab_$(date +%s%N)"
      psql -q "$PG_URL/postgres" -c "CREATE DATABASE $dbname"
      db=(--database-url "$PG_URL/$dbname")
    fi
    record_load "$cell"
    nice -n "$NICE" "$bin" serve --bind "127.0.0.1:$PORT" --data-dir "$DATA" "${db[@]}" \
      --gift-rate-per-s 1000000 --gift-burst 1000000 > "$RESULTS/$cell.log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    wait_port 127.0.0.1 "$PORT" 30
    status=0
    nice -n "$NICE" "$LT" purchase --target "http://127.0.0.1:$PORT" --senders "$SENDERS" \
      --concurrency "$SENDERS" --duration "$DURATION" --warmup "$WARMUP" --server-pid "$pid" \
      --quiet --json "$RESULTS/$cell.json" > "$RESULTS/$cell.txt" 2>&1 || status=$?
    echo "exit status $status" >> "$RESULTS/$cell.txt"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$DATA"
    [ "$LEDGER" = postgres ] && psql -q "$PG_URL/postgres" -c "DROP DATABASE $dbname"
    jq -r --arg n "$cell" '"\($n): \(.gifts.per_s|floor) gifts/s, p50 \(.latency.purchase.p50_ms) ms, p99 \(.latency.purchase.p99_ms) ms, server CPU per gift \(.server.cpu_us_per_gift // 0 | floor) µs, verified \(.verification.ok)"' \
      "$RESULTS/$cell.json" | tee -a "$RESULTS/summary.txt"
  done
done
