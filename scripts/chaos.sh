#!/usr/bin/env bash
# The long chaos runs recorded in docs/reliability.md. The test command runs
# the short forms (5 embedded kill -9 cycles, one scaled fault sequence, two
# PostgreSQL restarts).
#
#   scripts/chaos.sh [CYCLES] [SCALED_RUNS] [SCALED_PG_RESTARTS]
#     CYCLES              kill -9 cycles of `applause serve` under load (default 100)
#     SCALED_RUNS         runs of the scaled fault sequence (default 10); each
#                         run also crashes and restarts a private PostgreSQL
#                         under a cluster SCALED_PG_RESTARTS times
#     SCALED_PG_RESTARTS  PostgreSQL restarts per run, alternately `pg_ctl stop
#                         -m immediate` and `kill -9` of the postmaster (default
#                         6; 0 leaves the case out)
# Environment: APPLAUSE_CHAOS_PG_DOWN_MS, how long PostgreSQL stays down
# before each start (default 3500).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/applause/target}"
cycles="${1:-100}"
scaled="${2:-10}"
pg_restarts="${3:-6}"
for v in "$cycles" "$scaled" "$pg_restarts"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "CYCLES, SCALED_RUNS and SCALED_PG_RESTARTS are whole numbers, not '$v'" >&2; exit 2; }
done
skip=()
((pg_restarts > 0)) || skip=(--skip chaos_pg)
cargo build --quiet -p applause --bins
if ((cycles > 0)); then
  APPLAUSE_CHAOS_CYCLES="$cycles" cargo test --quiet -p applause --test process -- chaos --nocapture
fi
for ((i = 1; i <= scaled; i++)); do
  echo "== scaled fault sequence, run $i of $scaled"
  APPLAUSE_CHAOS_PG_RESTARTS="$pg_restarts" \
    cargo test --quiet -p applause --test e2e -- chaos "${skip[@]}" --nocapture 2>&1 |
    grep -E '^scaled chaos|test result|panicked'
done
