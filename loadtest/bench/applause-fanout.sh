#!/usr/bin/env bash
# Applause embedded (`applause serve`) fan-out: one room, VIEWERS_MATRIX viewers
# × RATE_MATRIX gifts/s, full verification at the end of every run. The same
# matrix as fanout-peers.sh, so the figures compare side by side.
source "$(dirname "$0")/common.sh"

PORT="${PORT:-18080}"
LABEL="${LABEL:-applause}"   # the name of the runs (e.g. applause-before / applause-after)
SECRET="${APPLAUSE_JWT_SECRET:-bench-secret-bench-secret-bench-secret-42}"
export APPLAUSE_JWT_SECRET="$SECRET"
[ -x "$APPLAUSE" ] || { echo "build it first: cargo build --release -p applause" >&2; exit 2; }

for v in $VIEWERS_MATRIX; do
  for r in $RATE_MATRIX; do
    DATA="$(mktemp -d)"   # a fresh deployment per run
    record_load "$LABEL-v$v-r$r"
    "${ON_SERVER[@]}" "$APPLAUSE" serve --bind "127.0.0.1:$PORT" --data-dir "$DATA" \
      > "$RESULTS/server-v$v-r$r.log" 2>&1 &
    SERVER_PID=$!; PIDS+=("$SERVER_PID")
    wait_port 127.0.0.1 "$PORT" 30
    # Exit status is kept: a verification failure must not hide in a benchmark.
    status=0
    lt run --target "http://127.0.0.1:$PORT" --rooms 1 --viewers "$v" --senders 50 \
      --rate "$r" --duration "$DURATION" --warmup "$WARMUP" --ack-share 0.1 \
      --message-share 0.2 --server-pid "$SERVER_PID" --quiet \
      --json "$RESULTS/$LABEL-v$v-r$r.json" --plot "$RESULTS/$LABEL-v$v-r$r.svg" \
      | tee "$RESULTS/$LABEL-v$v-r$r.txt" || status=$?
    echo "exit status $status" >> "$RESULTS/$LABEL-v$v-r$r.txt"
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    rm -rf "$DATA"
  done
done
summarize
