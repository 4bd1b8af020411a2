#!/usr/bin/env bash
# Every benchmark, results under one directory: peers, Applause fan-out,
# purchases and idle connections.
set -euo pipefail
HERE="$(dirname "$0")"
export RESULTS="${RESULTS:-$(cd "$HERE" && pwd)/results/$(date -u +%Y%m%dT%H%M%SZ)}"
for b in fanout-peers applause-fanout applause-purchase applause-idle-scaled; do
  RESULTS="$RESULTS/$b" "$HERE/$b.sh"
done
