#!/usr/bin/env bash
# Idle connections beyond one process's file-descriptor limit: IDLE_VIEWERS
# WebSockets (default 50,000) spread over GATEWAYS `applause gateway` processes
# (scaled mode from deploy/local-cluster.sh on the local PostgreSQL and Redis),
# driven by one load generator per gateway (each its own room and loopback
# source addresses), with a trickle of gifts that every viewer must receive.
# Reports the gateways' summed RSS growth per connection, sampled every
# second while the connections are held, and the load generators' verdicts.
#
# Why several processes: this machine's hard limit is 20,000 open files per
# process (`ulimit -Hn`), for the server and the client alike.
source "$(dirname "$0")/common.sh"

IDLE_VIEWERS="${IDLE_VIEWERS:-50000}"
GATEWAYS="${GATEWAYS:-3}"
HOLD="${HOLD:-30s}"
RATE="${RATE:-0.2}"      # gifts/s per generator: idle rooms, but verified delivery
STAGGER="${STAGGER:-6}"  # seconds between the generators' starts
export APPLAUSE_JWT_SECRET="${APPLAUSE_JWT_SECRET:-bench-secret-bench-secret-bench-secret-42}"
[ -x "$APPLAUSE" ] || { echo "build it first: cargo build --release -p applause" >&2; exit 2; }

STATE="$(mktemp -d)"
# Not pinned: four nodes and a 12,000/s connection storm on one core time
# out handshakes (the room lookup in PostgreSQL). Logs at the default level.
cluster_start "$STATE" "$RESULTS/cluster.txt" --gateways "$GATEWAYS" --gifts 1 \
  -- --connects-per-ip-per-s 100000 --gift-rate-per-s 100000 --gift-burst 100000
GIFTS_URL="${GIFTS_URLS%%,*}"
mapfile -t GW_PIDS < <(awk '$1 ~ /^gateway-/ {print $2}' "$STATE/pids")

rss_sum() { local s=0; for p in "${GW_PIDS[@]}"; do s=$((s + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo "$s"; }
BASE_RSS="$(rss_sum)"

per=$(((IDLE_VIEWERS + GATEWAYS - 1) / GATEWAYS))
LT_PIDS=()
for i in "${!GW_URLS[@]}"; do
  # Distinct source addresses per generator: 127.0.(i+1).1-8.
  lt run --target "$GIFTS_URL" --gifts "$GIFTS_URL" --gateway "${GW_URLS[$i]}" \
    --rooms 1 --viewers "$per" --senders 5 --rate "$RATE" --duration "$HOLD" --warmup 0s \
    --connect-rate "${CONNECT_RATE:-4000}" --ack-share 0 --source-ips "127.0.$((i + 1)).1-127.0.$((i + 1)).8" \
    --shared-deployment --quiet --json "$RESULTS/idle-$i.json" >"$RESULTS/idle-$i.txt" 2>&1 &
  LT_PIDS+=("$!"); PIDS+=("$!")
  # Staggered, so the gateways are not all in a connection storm at once.
  sleep "$STAGGER"
done

# Sample the gateways while the generators hold their connections.
peak=0; peak_conns=0; steady=0
while :; do
  alive=0; for p in "${LT_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ "$alive" = 1 ] || break
  rss="$(rss_sum)"
  conns="$(for u in "${GW_URLS[@]}"; do curl -s "$u/metrics"; done |
    awk '/^applause_gateway_connections / {s += $2} END {printf "%d", s}')"
  if [ "$rss" -gt "$peak" ]; then peak="$rss"; fi
  if [ "$conns" -gt "$peak_conns" ]; then peak_conns="$conns"; fi
  # Steady state: the RSS while every connection is held (the last such sample).
  if [ "$conns" -ge "$IDLE_VIEWERS" ]; then steady="$rss"; fi
  sleep 1
done
status=0
for p in "${LT_PIDS[@]}"; do wait "$p" || status=$?; done

connected="$(jq -s 'map(.viewers.connected) | add' "$RESULTS"/idle-*.json)"
verified="$(jq -s 'map(.verification.ok) | all' "$RESULTS"/idle-*.json)"
{
  echo "gateways: $GATEWAYS; viewers connected: $connected (peak seen by the gateways' metrics: $peak_conns)"
  if [ "$steady" -gt 0 ]; then
    echo "gateways' RSS: $BASE_RSS KiB before; with all $IDLE_VIEWERS held $steady KiB → $(((steady - BASE_RSS) * 1024 / connected)) bytes per connection (peak $peak KiB → $(((peak - BASE_RSS) * 1024 / connected)) B)"
  else
    # No sample saw every connection at once: only the peak bounds it.
    echo "gateways' RSS: $BASE_RSS KiB before; no sample saw all $IDLE_VIEWERS held; peak $peak KiB → at most $(((peak - BASE_RSS) * 1024 / connected)) B per connection"
  fi
  echo "verification ok on every generator: $verified; exit status $status"
} | tee "$RESULTS/summary.txt"
exit "$status"
