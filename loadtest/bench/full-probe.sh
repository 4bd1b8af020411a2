#!/usr/bin/env bash
# One full-scenario run (`applause serve`, server on core 0, generator on
# core 1) with the server's own view beside the generator's: the purchase
# and commit-to-socket histograms from /metrics (bucket bounds), the gateway's
# writes and queued frames, and the CPU of each of the server's threads over
# 10 s of the run. V=5000 viewers by default; LT= picks a generator build;
# extra arguments go to `applause serve`.
set -euo pipefail
TARGET_DIR="${CARGO_TARGET_DIR:-$(dirname "$0")/../../target}"
APPLAUSE="${APPLAUSE:-$TARGET_DIR/release/applause}"
LT="${LT:-$TARGET_DIR/release/applause-loadtest}"
PORT="${PORT:-18080}"
export APPLAUSE_JWT_SECRET="${APPLAUSE_JWT_SECRET:-bench-secret-bench-secret-bench-secret-42}"
OUT="$(mktemp -d)"; DATA="$(mktemp -d)"
nice -n -20 taskset -c 0 "$APPLAUSE" serve --bind "127.0.0.1:$PORT" --data-dir "$DATA" "$@" \
  > "$OUT/server.log" 2>&1 &
P=$!
trap 'kill $P 2>/dev/null; wait $P 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "127.0.0.1:$PORT/healthz" && break; sleep 0.2; done
threads() { # comm → utime+stime ticks, summed per thread name
  for t in /proc/$P/task/*; do echo "$(cat "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done |
    awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort
}
nice -n -20 taskset -c 1 "$LT" --worker-threads 1 run --target "http://127.0.0.1:$PORT" --rooms 1 \
  --viewers "${V:-5000}" --senders 50 --rate 20 --duration 20s --warmup 3s --ack-share 0.1 \
  --message-share 0.2 --server-pid "$P" --quiet > "$OUT/lt.txt" 2>&1 &
L=$!
sleep 12; threads > "$OUT/a.txt"; sleep 10; threads > "$OUT/b.txt"
wait "$L" || echo "generator exit status $?"
curl -s "127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt"
q() { # metric quantile → the bucket bound it falls under
  grep "^$1_bucket" "$OUT/metrics.txt" | sed 's/.*le="\([^"]*\)"} \(.*\)/\1 \2/' |
    awk -v q="$2" '{le[NR]=$1; c[NR]=$2} END {for (i=1;i<=NR;i++) if (c[i]>=q*c[NR]) {print le[i]; exit}}'
}
echo "server-side purchase p50 <= $(q applause_purchase_seconds 0.5) s, p99 <= $(q applause_purchase_seconds 0.99) s"
echo "server-side commit-to-socket p50 <= $(q applause_gateway_fanout_latency_seconds 0.5) s, p99 <= $(q applause_gateway_fanout_latency_seconds 0.99) s"
grep -E "^applause_gateway_(deliveries|frames_queued|socket_writes|fanout_staggered)_total" "$OUT/metrics.txt"
join "$OUT/a.txt" "$OUT/b.txt" | awk '{printf "thread %-18s %5d ticks in 10 s\n", $1, $3-$2}'
grep -E "gift-to-screen|purchase|server|client|verify" "$OUT/lt.txt"
