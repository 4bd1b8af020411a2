#!/usr/bin/env bash
# The one test command (README "Tests"; .ci/run calls exactly this).
#
# Brings Redis and PostgreSQL up when they are not running, isolates the run
# (every test creates its own database / Redis key prefix and removes it),
# then checks formatting and lints and runs the whole test suite, plus the
# money property tests at 10^6 cases in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/applause/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log() { printf '== %s\n' "$*"; }

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  log "starting Redis"
  if ! command -v redis-server >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  fi
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "Redis did not start" >&2; exit 1
}

ensure_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return; fi
  log "starting PostgreSQL"
  if ! ls /etc/postgresql >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 100); do pg_isready -h 127.0.0.1 -p 5432 -q && return; sleep 0.1; done
  echo "PostgreSQL did not start" >&2; exit 1
}

drop_stale_databases() {
  # Databases of earlier runs that were killed before their tests cleaned up.
  # Only the tests' own prefix: an operator's database never starts with it.
  psql -h 127.0.0.1 -U postgres -d postgres -Atc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'applause\_citest\_%'" 2>/dev/null |
    while read -r db; do
      [ -n "$db" ] && psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
}

ensure_redis
ensure_postgres
drop_stale_databases

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
scripts/check-architecture.sh && scripts/check-architecture.sh --self-test

log "cargo build (the binaries the process tests start)"
cargo build --workspace --bins --quiet

log "cargo test"
cargo test --workspace --quiet -- --test-threads "${APPLAUSE_TEST_THREADS:-4}"

log "browser tests: the pages in headless chromium (tests/browser)"
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null
fi
(
  cd tests/browser
  # Reinstall when node_modules is missing or older than the lock file.
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
  APPLAUSE_BIN="$CARGO_TARGET_DIR/debug/applause" node --test --test-concurrency=1
)

log "schemathesis: generated requests against a real applause serve, checked against /openapi.json"
scripts/schemathesis.sh "${APPLAUSE_SCHEMATHESIS_EXAMPLES:-10}"

log "money property tests: 1,000,000 cases in release mode"
APPLAUSE_PROP_CASES=1000000 cargo test --release --quiet -p applause-core --test split_props
APPLAUSE_PROP_CASES=1000000 cargo test --release --quiet -p applause-core --test redpacket_props
scripts/fuzz.sh --short
