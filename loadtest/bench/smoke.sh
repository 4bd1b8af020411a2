#!/usr/bin/env bash
# End-to-end smoke: a fresh embedded `applause serve`, then the load generator's
# standard small scenario with full verification. Exit status is the load
# generator's (0 = verified clean). APPLAUSE / LT may point at debug builds.
source "$(dirname "$0")/common.sh"

PORT="${PORT:-18081}"
export APPLAUSE_JWT_SECRET="${APPLAUSE_JWT_SECRET:-smoke-secret-smoke-secret-smoke-secret-1}"
[ -x "$APPLAUSE" ] || { echo "no applause binary at $APPLAUSE" >&2; exit 2; }
[ -x "$LT" ] || { echo "no applause-loadtest binary at $LT" >&2; exit 2; }

DATA="$(mktemp -d)"
"$APPLAUSE" serve --bind "127.0.0.1:$PORT" --data-dir "$DATA" > "$RESULTS/server-smoke.log" 2>&1 &
SERVER_PID=$!; PIDS+=("$SERVER_PID")
wait_port 127.0.0.1 "$PORT" 60
status=0
"$LT" run --target "http://127.0.0.1:$PORT" --jwt-secret "$APPLAUSE_JWT_SECRET" \
  --rooms 1 --viewers 200 --senders 5 --rate 50 --duration 5s \
  --server-pid "$SERVER_PID" --quiet --json "$RESULTS/smoke.json" || status=$?
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
rm -rf "$DATA"
exit "$status"
