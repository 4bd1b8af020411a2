#!/usr/bin/env bash
# The long chaos runs (docs/reliability.md). The test command runs the short
# forms; this runs the embedded kill -9 cycle test with many cycles.
#
#   scripts/chaos.sh [CYCLES]      default 100 kill -9 cycles of `applause serve`
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/applause/target}"
cycles="${1:-100}"
[[ "$cycles" =~ ^[1-9][0-9]*$ ]] || { echo "CYCLES must be a positive whole number, not '$cycles'" >&2; exit 2; }
cargo build --quiet -p applause --bins
APPLAUSE_CHAOS_CYCLES="$cycles" cargo test --quiet -p applause --test process -- chaos --nocapture
