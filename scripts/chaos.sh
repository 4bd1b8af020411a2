#!/usr/bin/env bash
# The long chaos runs recorded in docs/reliability.md. The test command runs
# the short forms (5 embedded kill -9 cycles, one scaled fault sequence).
#
#   scripts/chaos.sh [CYCLES] [SCALED_RUNS]
#     CYCLES       kill -9 cycles of `applause serve` under load (default 100)
#     SCALED_RUNS  runs of the scaled fault sequence (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/applause/target}"
cycles="${1:-100}"
scaled="${2:-10}"
for v in "$cycles" "$scaled"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "CYCLES and SCALED_RUNS are whole numbers, not '$v'" >&2; exit 2; }
done
cargo build --quiet -p applause --bins
if ((cycles > 0)); then
  APPLAUSE_CHAOS_CYCLES="$cycles" cargo test --quiet -p applause --test process -- chaos --nocapture
fi
for ((i = 1; i <= scaled; i++)); do
  echo "== scaled fault sequence, run $i of $scaled"
  cargo test --quiet -p applause --test e2e -- chaos --nocapture 2>&1 | grep -E '^scaled chaos|test result|panicked'
done
