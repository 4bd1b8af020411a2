#!/usr/bin/env bash
# Checks the invariants of docs/architecture.md that a grep can check
# ("Architecture invariants"): which crates may depend on which, which source
# files may name `sqlx`, `redis` and `axum`, and that core has no tokio.
#
#   scripts/check-architecture.sh              check this repository
#   scripts/check-architecture.sh --root DIR   check the tree at DIR
#   scripts/check-architecture.sh --self-test  prove each check can fail
#
# scripts/test.sh runs both the check and the self-test. A new crate under
# crates/ fails the check until it has a rule in ALLOWED below.
set -euo pipefail

# Internal dependencies each package may have ([dependencies],
# [build-dependencies] and their [target.*] forms; dev-dependencies are the
# tests' business). "*" = any. A package missing here is an error.
declare -A ALLOWED=(
  [applause-core]=""
  [applause-ledger]="applause-core"
  [applause-web]="applause-core"
  # The one Redis connection (a server or a Redis Cluster) for bus and boards.
  [applause-redis]=""
  [applause-bus]="applause-core applause-redis"
  [applause-leaderboard]="applause-core applause-redis"
  [applause-gateway]="applause-core applause-web applause-bus"
  [applause-gifts]="applause-core applause-web applause-ledger applause-bus applause-leaderboard"
  [applause-relay]="applause-core applause-ledger applause-bus applause-leaderboard"
  [applause-pages]="applause-web"
  [applause]="*"
  # The load generator talks to a deployment only through HTTP and WebSockets.
  [applause-loadtest]="applause-core"
)

# Which non-test source files may name a crate, as bash globs on paths
# relative to the root (`*` also matches `/`). Test files (`tests/`,
# examples, benches) are exempt: only `src/` trees are searched.
# sqlx: the ledger's backends and queries; its planner (`plan.rs` or
# `plan/`) stays pure.
SQLX_ALLOWED=("crates/ledger/src/backend/*")
SQLX_DENIED=("crates/ledger/src/plan.rs" "crates/ledger/src/plan/*")
REDIS_ALLOWED=("crates/redis/src/*" "crates/bus/src/redis_bus/*" "crates/leaderboard/src/redis_boards*" "crates/applause/src/*")
AXUM_ALLOWED=("crates/web/src/*" "crates/gifts/src/*" "crates/gateway/src/*" "crates/pages/src/*" "crates/applause/src/*")

root="$(cd "$(dirname "$0")/.." && pwd)"
failures=0

fail() {
  printf 'architecture check failed: %s\n' "$*" >&2
  failures=$((failures + 1))
}

# The package name of a Cargo.toml (the `name` of its [package] table).
package_name() {
  awk '
    /^[[:space:]]*\[/ { in_pkg = ($0 ~ /^[[:space:]]*\[package\][[:space:]]*$/); next }
    in_pkg && /^[[:space:]]*name[[:space:]]*=/ {
      sub(/^[^"]*"/, ""); sub(/".*$/, ""); print; exit
    }' "$1"
}

# The names of the packages a Cargo.toml depends on outside dev-dependencies,
# one a line (a renamed dependency is listed by its `package`).
dependencies() {
  awk '
    function quoted(line, v) {
      match(line, /package[[:space:]]*=[[:space:]]*"[^"]+"/)
      v = substr(line, RSTART, RLENGTH); sub(/^[^"]*"/, "", v); sub(/"$/, "", v)
      return v
    }
    function flush() { if (table != "") print (renamed != "" ? renamed : table); table = ""; renamed = "" }
    /^[[:space:]]*\[/ {
      flush()
      header = $0; gsub(/[[:space:]]/, "", header); section = ""
      if (header ~ /^\[(target\.[^]]+\.)?(build-)?dependencies\]$/) section = "list"
      else if (header ~ /^\[(target\.[^]]+\.)?(build-)?dependencies\.[A-Za-z0-9_-]+\]$/) {
        table = header; sub(/^.*dependencies\./, "", table); sub(/\]$/, "", table)
        section = "table"
      }
      next
    }
    section == "list" && /^[[:space:]]*[A-Za-z0-9_-]+[[:space:]]*(\.|=)/ {
      key = $0; sub(/^[[:space:]]*/, "", key); sub(/[[:space:]]*[.=].*$/, "", key)
      if ($0 ~ /package[[:space:]]*=[[:space:]]*"/) key = quoted($0)
      print key
    }
    section == "table" && /^[[:space:]]*package[[:space:]]*=/ { renamed = quoted($0) }
    END { flush() }
  ' "$1" | sort -u
}

check_dependencies() {
  local toml pkg deps dep allowed
  for toml in "$root"/crates/*/Cargo.toml "$root"/loadtest/Cargo.toml; do
    [ -f "$toml" ] || continue
    pkg="$(package_name "$toml")"
    if [ -z "$pkg" ]; then
      fail "${toml#"$root"/}: no [package] name"
      continue
    fi
    if [ -z "${ALLOWED[$pkg]+set}" ]; then
      fail "${toml#"$root"/}: package $pkg has no dependency rule; add one to scripts/check-architecture.sh (and docs/architecture.md)"
      continue
    fi
    allowed="${ALLOWED[$pkg]}"
    deps="$(dependencies "$toml")"
    for dep in $deps; do
      case "$dep" in
        applause | applause-*)
          if [ "$allowed" != "*" ] && [[ " $allowed " != *" $dep "* ]]; then
            fail "$pkg depends on $dep (${toml#"$root"/}); it may depend only on: ${allowed:-no internal crate}"
          fi
          ;;
      esac
    done
    if [ "$pkg" = applause-core ] && grep -qx 'tokio' <<<"$deps"; then
      fail "applause-core depends on tokio (${toml#"$root"/}); core has no I/O and no runtime"
    fi
  done
}

# matches_any PATH GLOB... : whether PATH matches one of the globs.
matches_any() {
  local path="$1" glob
  shift
  for glob in "$@"; do
    # shellcheck disable=SC2053 # the glob is meant to match
    [[ "$path" == $glob ]] && return 0
  done
  return 1
}

# check_names CRATE ALLOWED_ARRAY DENIED_ARRAY: every non-test source file
# that names `CRATE::` or `use CRATE` (outside `//` comment lines) must be
# allowed and not denied.
check_names() {
  local name="$1"
  local -n allowed_globs="$2" denied_globs="$3"
  local hit file rel
  local src_dirs=()
  for dir in "$root"/crates/*/src "$root"/loadtest/src; do
    [ -d "$dir" ] && src_dirs+=("$dir")
  done
  [ "${#src_dirs[@]}" -gt 0 ] || return 0
  while IFS= read -r hit; do
    [ -n "$hit" ] || continue
    file="${hit%%:*}"
    rel="${file#"$root"/}"
    if ! matches_any "$rel" "${allowed_globs[@]}" || matches_any "$rel" "${denied_globs[@]}"; then
      fail "$rel names \`$name\` (${hit#*:}); only ${allowed_globs[*]}${denied_globs:+ except ${denied_globs[*]}} may"
    fi
  done < <(grep -rnE --include='*.rs' "(^|[^A-Za-z0-9_])${name}::|\\buse ${name}\\b|extern crate ${name}\\b" "${src_dirs[@]}" |
    grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' | awk -F: '!seen[$1]++' || true)
}

check_sources() {
  local NONE=()
  check_names sqlx SQLX_ALLOWED SQLX_DENIED
  check_names redis REDIS_ALLOWED NONE
  check_names axum AXUM_ALLOWED NONE
}

run_checks() {
  check_dependencies
  check_sources
  if [ "$failures" -gt 0 ]; then
    printf 'architecture check: %d violation(s) of docs/architecture.md "Architecture invariants"\n' "$failures" >&2
    return 1
  fi
  printf 'architecture check: ok\n'
}

# Copies the manifests and sources of this tree to a temporary root, checks
# the copy passes, then injects one violation at a time and checks that each
# is caught.
self_test() {
  local script tmp case_name ok=0
  script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: the path is fixed
  trap "rm -rf '$tmp'" EXIT
  fresh_copy() {
    rm -rf "$tmp/tree"
    mkdir -p "$tmp/tree"
    (cd "$root" && find crates loadtest -name Cargo.toml -not -path '*/target/*' -print0 |
      xargs -0 -r cp --parents -t "$tmp/tree")
    local dir
    for dir in "$root"/crates/*/src "$root"/loadtest/src; do
      [ -d "$dir" ] || continue
      (cd "$root" && find "${dir#"$root"/}" -name '*.rs' -print0 | xargs -0 -r cp --parents -t "$tmp/tree")
    done
  }
  expect() { # expect pass|fail NAME
    local want="$1" out
    case_name="$2"
    if out="$("$script" --root "$tmp/tree" 2>&1)"; then got=pass; else got=fail; fi
    if [ "$got" = "$want" ]; then
      printf 'self-test: %s: %s as expected\n' "$case_name" "$got"
    else
      printf 'self-test FAILED: %s: expected %s, got %s\n%s\n' "$case_name" "$want" "$got" "$out" >&2
      ok=1
    fi
  }
  fresh_copy
  expect pass "an unchanged copy of this tree"

  fresh_copy
  sed -i 's/^\[dependencies\]$/[dependencies]\napplause-gifts.workspace = true/' "$tmp/tree/crates/gateway/Cargo.toml"
  expect fail "the gateway depending on applause-gifts"

  fresh_copy
  sed -i 's/^\[dependencies\]$/[dependencies]\ntokio.workspace = true/' "$tmp/tree/crates/core/Cargo.toml"
  expect fail "core depending on tokio"

  fresh_copy
  mkdir -p "$tmp/tree/crates/newthing"
  printf '[package]\nname = "applause-newthing"\n\n[dependencies]\n' >"$tmp/tree/crates/newthing/Cargo.toml"
  expect fail "a crate without a rule"

  fresh_copy
  printf '//! Injected.\nuse sqlx::Row;\n' >"$tmp/tree/crates/core/src/injected.rs"
  expect fail "core naming sqlx"

  fresh_copy
  mkdir -p "$tmp/tree/crates/ledger/src/plan"
  printf '//! Injected.\nfn f(_: &sqlx::Pool<sqlx::Sqlite>) {}\n' >"$tmp/tree/crates/ledger/src/plan/injected.rs"
  expect fail "the ledger planner naming sqlx"

  fresh_copy
  printf '//! Injected.\npub fn f(_: redis::Client) {}\n' >"$tmp/tree/crates/leaderboard/src/injected.rs"
  expect fail "the leaderboard model naming redis"

  fresh_copy
  printf '//! Injected.\n// axum::Router in a comment is fine\nuse axum::Router;\n' >"$tmp/tree/crates/bus/src/injected.rs"
  expect fail "the bus naming axum"

  fresh_copy
  printf '//! Injected.\n// use axum::Router; a comment does not count\n' >"$tmp/tree/crates/bus/src/injected.rs"
  expect pass "axum named only in a comment"

  [ "$ok" -eq 0 ] && printf 'architecture self-test: ok\n'
  return "$ok"
}

case "${1:-}" in
  "") run_checks ;;
  --root)
    root="$(cd "${2:?--root needs a directory}" && pwd)"
    run_checks
    ;;
  --self-test) self_test ;;
  *)
    echo "usage: $0 [--root DIR | --self-test]" >&2
    exit 2
    ;;
esac
