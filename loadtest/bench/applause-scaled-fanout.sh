#!/usr/bin/env bash
# Applause's scaled mode under the fan-out matrix: deploy/local-cluster.sh with
# two `applause gateway` and one `applause gifts` on the local PostgreSQL and
# Redis; viewers spread over both gateways, purchases to the gifts node, full
# verification at the end of every run. Server CPU per delivery is the CPU of
# all three nodes (from /proc) over the run, divided by the deliveries.
source "$(dirname "$0")/common.sh"

export APPLAUSE_JWT_SECRET="${APPLAUSE_JWT_SECRET:-bench-secret-bench-secret-bench-secret-42}"
[ -x "$APPLAUSE" ] || { echo "build it first: cargo build --release -p applause" >&2; exit 2; }
TICKS="$(getconf CLK_TCK)"

cpu_ticks() { # summed utime+stime of the given pids
  local t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}

status=0
for v in $VIEWERS_MATRIX; do
  for r in $RATE_MATRIX; do
    STATE="$(mktemp -d)"   # a fresh cluster (database, Redis prefix) per run
    cluster_start "$STATE" "$RESULTS/cluster-v$v-r$r.txt" --gateways 2 --gifts 1 \
      -- --gift-rate-per-s 100000 --gift-burst 100000
    mapfile -t NODE_PIDS < <(awk '{print $2}' "$STATE/pids")
    # The nodes share the server core; the load generator has the other.
    for p in "${NODE_PIDS[@]}"; do taskset -acp "$SERVER_CORE" "$p" >/dev/null; done
    GW_ARGS=()
    for g in "${GW_URLS[@]}"; do GW_ARGS+=(--gateway "$g"); done
    before="$(cpu_ticks "${NODE_PIDS[@]}")"
    run_status=0
    lt run --target "${GIFTS_URLS%%,*}" "${GW_ARGS[@]}" --rooms 1 --viewers "$v" --senders 50 \
      --rate "$r" --duration "$DURATION" --warmup "$WARMUP" --ack-share 0.1 --message-share 0.2 \
      --quiet --json "$RESULTS/scaled-v$v-r$r.json" --plot "$RESULTS/scaled-v$v-r$r.svg" \
      | tee "$RESULTS/scaled-v$v-r$r.txt" || run_status=$?
    after="$(cpu_ticks "${NODE_PIDS[@]}")"
    [ "$run_status" = 0 ] || status="$run_status"
    # CPU over the whole run (connects, warm-up, drain included), so this is
    # an upper bound next to the embedded runs' measured-window figure.
    jq -r --argjson cpu "$(((after - before) * 1000000 / TICKS))" \
      '"scaled v\(.viewers.connected) r\(.gifts.per_s|round): \(.deliveries.per_s|round) deliveries/s, gift-to-screen p50 \(.latency.gift_to_screen.p50_ms) ms p99 \(.latency.gift_to_screen.p99_ms) ms p99.9 \(.latency.gift_to_screen.p999_ms) ms, nodes CPU \($cpu / .deliveries.total * 100 | round / 100) µs per delivery over the run, verify ok=\(.verification.ok)"' \
      "$RESULTS/scaled-v$v-r$r.json" | tee -a "$RESULTS/summary.txt"
    cluster_stop "$STATE"
    rm -rf "$STATE"
  done
done
exit "$status"
