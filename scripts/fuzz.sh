#!/usr/bin/env bash
# Fuzzes every decoder that takes outside input (the cargo-fuzz targets of
# fuzz/: amount strings, JSON bodies, WebSocket client frames, JWTs, the
# catalog TOML, query strings). docs/reliability.md "Fuzzing" has the figures.
#
#   scripts/fuzz.sh --short          each target 10 s (the test command runs this)
#   scripts/fuzz.sh                  each target 10 min
#   scripts/fuzz.sh --seconds 3600   each target one hour
#   scripts/fuzz.sh --target jwt     only that target (repeatable)
#   FUZZ_TARGET_DIR=dir              where the build goes (default: $CARGO_TARGET_DIR/fuzz)
#
# Needs the nightly toolchain and cargo-fuzz; without nightly it says so and
# exits 0, and it installs cargo-fuzz from crates.io when it is missing.
# A crash stops the run with exit 1; the input is in fuzz/artifacts/<target>/
# (`cargo +nightly fuzz run <target> <file>` replays it) and belongs in a
# regression test.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --short) seconds=10 ;;
    --seconds) seconds="$2"; shift ;;
    --target) targets+=("$2"); shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '== %s\n' "$*"; }

if ! cargo +nightly --version >/dev/null 2>&1; then
  log "fuzzing SKIPPED: no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  log "cargo-fuzz is missing: installing it from crates.io (a few minutes, once)"
  if ! cargo install cargo-fuzz --locked --quiet; then
    log "fuzzing SKIPPED: cargo-fuzz could not be installed"
    exit 0
  fi
fi

# Its own target dir: nightly with coverage instrumentation shares nothing
# with the stable build.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/applause/target}/fuzz}"
cd fuzz
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# No sanitizer: the code has no `unsafe` (the workspace denies it), so what
# there is to find is panics, which `-a` (debug assertions: overflow checks)
# widens to every arithmetic overflow.
flags=(-O -a -s none)
log "cargo +nightly fuzz build (${targets[*]})"
started=$(date +%s)
build_log=$(mktemp)
if ! cargo +nightly fuzz build "${flags[@]}" >"$build_log" 2>&1; then
  tail -n 40 "$build_log"
  log "fuzz build FAILED"
  exit 1
fi
rm -f "$build_log"
log "built in $(( $(date +%s) - started )) s"

work="$CARGO_TARGET_DIR/fuzz-corpus"
for t in "${targets[@]}"; do
  # The committed seeds are read; what libFuzzer adds goes to the work
  # corpus (kept between runs, never committed).
  mkdir -p "$work/$t" "artifacts/$t"
  log "fuzz $t for ${seconds} s"
  out=$(mktemp)
  if ! cargo +nightly fuzz run "${flags[@]}" "$t" "$work/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$out" 2>&1; then
    tail -n 60 "$out"
    log "fuzz $t FOUND A CRASH: see fuzz/artifacts/$t/"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$out" | tail -n 1 || true)
  log "fuzz $t: $runs executions in ${seconds} s, no crash ($cov)"
  rm -f "$out"
done
