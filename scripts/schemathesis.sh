#!/usr/bin/env bash
# Property-based tests of the HTTP API against its own OpenAPI description:
# schemathesis (PyPI) drives a real `applause serve` with valid tokens of
# every role and checks that no answer is a 5xx, that every status, content
# type and body is the one the description (`GET /openapi.json`) promises.
# Afterwards `applause ledger check` must pass on the same data directory.
#
#   scripts/schemathesis.sh [MAX_EXAMPLES]
#
# MAX_EXAMPLES (default 10) is the number of generated cases per operation
# and phase of each stateless pass, and the stateful pass's seconds (at
# least 10); scripts/test.sh runs the short form (10, about a minute). The
# long form in docs/reliability.md ("Schemathesis") is
# `scripts/schemathesis.sh 100` (over 10,000 requests).
#
# The passes, each against the same server and data:
#   - one per role (viewer, broadcaster, finance, admin) and one without a
#     token: every operation, phases examples, coverage (boundary and
#     negative values) and fuzzing, with that role's token on every request;
#   - stateful: the description's links (room -> gift -> ack / refund,
#     room -> red packet -> claim, …) followed with the token of the role
#     each step needs (stateful.toml, written below).
# Before the passes an admin funds the test users' wallets, so purchases,
# drops and claims can succeed rather than only being refused for funds.
#
# schemathesis is installed into a virtualenv under the cache directory
# (APPLAUSE_VENV, default ~/.cache/applause/venv) when that version is
# missing. Each run's output (logs, JUnit and HAR reports, the server log,
# the data directory) goes to a fresh temporary directory, printed first.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES="${1:-10}"
case "$MAX_EXAMPLES" in
  '' | *[!0-9]*) echo "usage: $0 [MAX_EXAMPLES]" >&2; exit 2 ;;
esac

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/applause/target}"
VENV="${APPLAUSE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/applause/venv}"
BIN="$CARGO_TARGET_DIR/debug/applause"

log() { printf '== schemathesis: %s\n' "$*"; }

# The tool, pinned, in its own virtualenv.
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION"; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  # Only ever remove a virtualenv (a stale or half-made one).
  if [ -f "$VENV/pyvenv.cfg" ]; then rm -rf "$VENV"; fi
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian keeps venv's pip bootstrap in a package of its own.
    if [ -f "$VENV/pyvenv.cfg" ]; then rm -rf "$VENV"; fi
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
ST="$VENV/bin/schemathesis"

# The binary (a no-op when scripts/test.sh has just built it).
cargo build --quiet -p applause --bin applause

OUT="$(mktemp -d "${TMPDIR:-/tmp}/applause-schemathesis.XXXXXX")"
log "output in $OUT"
DATA="$OUT/data"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"

# A generous per-user gift rate, so generated purchases are judged on their
# content rather than mostly refused with 429 (which is also described).
"$BIN" serve --bind "127.0.0.1:$PORT" --data-dir "$DATA" --gift-rate-per-s 1000 \
  >"$OUT/server.log" 2>&1 &
SERVER=$!
stop_server() {
  if kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
  fi
}
trap stop_server EXIT
for _ in $(seq 100); do
  curl -sf "$BASE/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$OUT/server.log" >&2; echo "applause serve exited" >&2; exit 1; }
  sleep 0.1
done
curl -sf "$BASE/readyz" >/dev/null || { echo "applause serve is not ready" >&2; exit 1; }

token() { "$BIN" token --data-dir "$DATA" --sub "$1" --role "$2" --ttl 2h; }
VIEWER="$(token st-viewer viewer)"
BROADCASTER="$(token st-broadcaster broadcaster)"
FINANCE="$(token st-finance finance)"
ADMIN="$(token st-admin admin)"
# A second viewer claims the red packets the first drops (a sender may not
# claim their own).
CLAIMER="$(token st-claimer viewer)"

# Money for the users the passes act as, on every channel.
for user in st-viewer st-broadcaster st-finance st-admin st-claimer; do
  for channel in apple google web; do
    curl -sf -o /dev/null -X POST "$BASE/v1/topups" \
      -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
      -d "{\"user_id\":\"$user\",\"channel\":\"$channel\",\"amount\":\"100000.00\",\"receipt_id\":\"st-seed-$user-$channel\"}"
  done
done

# Real resources for the generated requests to reach (a live room, a gift,
# a red packet), besides the random ids that exercise the 404s.
api() { # api METHOD PATH TOKEN [BODY]: prints the JSON answer
  curl -sf -X "$1" "$BASE$2" -H "Authorization: Bearer $3" -H 'Content-Type: application/json' \
    -H "Idempotency-Key: st-seed-$RANDOM-$RANDOM" ${4:+-d "$4"}
}
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
ROOM="$(api POST /v1/rooms "$BROADCASTER" '{"title":"schemathesis"}' | field room_id)"
# Ending is offered another room, so the one above stays live for gifts.
ROOM_TO_END="$(api POST /v1/rooms "$BROADCASTER" '{"title":"schemathesis, to end"}' | field room_id)"
GIFT="$(api POST "/v1/rooms/$ROOM/gifts" "$VIEWER" '{"sticker_id":"rose","quantity":1}' | field gift_id)"
PACKET="$(api POST "/v1/rooms/$ROOM/red-packets" "$VIEWER" '{"total":"5.00","count":500,"mode":"equal"}' | field packet_id)"
STICKERS="$(curl -sf "$BASE/v1/stickers" | python3 -c 'import json,sys; print(json.dumps([s["id"] for s in json.load(sys.stdin)["stickers"]]))')"

# The configuration of every pass: the values above offered to the
# generator (with a probability, so random values still come); ending is
# offered its own room.
COMMON="$(cat <<EOF
[dictionaries]
stickers = { values = $STICKERS }
rooms = { values = ["$ROOM"] }
rooms_to_end = { values = ["$ROOM_TO_END"] }
gifts = { values = ["$GIFT"] }
packets = { values = ["$PACKET"] }
users = { values = ["st-viewer", "st-broadcaster"] }

[parameters]
"body.sticker_id" = { dictionary = "stickers", probability = 0.8 }
"path.room_id" = { dictionary = "rooms", probability = 0.6 }
"query.room" = { dictionary = "rooms", probability = 0.6 }
"path.gift_id" = { dictionary = "gifts", probability = 0.6 }
"path.packet_id" = { dictionary = "packets", probability = 0.6 }
"path.broadcaster_id" = { dictionary = "users", probability = 0.6 }
"body.user_id" = { dictionary = "users", probability = 0.6 }
"query.user_id" = { dictionary = "users", probability = 0.6 }
EOF
)"
END_ROOM='parameters = { "path.room_id" = { dictionary = "rooms_to_end", probability = 0.6 } }'
cat >"$OUT/schemathesis.toml" <<EOF
$COMMON

[[operations]]
include-operation-id = "end_room"
$END_ROOM
EOF
# The stateful pass also sends each operation the token of the role it is
# for (the stateless passes send one role's token everywhere, by -H).
cat >"$OUT/stateful.toml" <<EOF
headers = { Authorization = "Bearer $VIEWER" }

$COMMON

[[operations]]
include-operation-id = ["create_room", "ack_gift"]
headers = { Authorization = "Bearer $BROADCASTER" }

[[operations]]
include-operation-id = "end_room"
headers = { Authorization = "Bearer $BROADCASTER" }
$END_ROOM

[[operations]]
include-operation-id = ["refund_gift", "revenue_report", "finance_summary", "broadcaster_statement"]
headers = { Authorization = "Bearer $FINANCE" }

[[operations]]
include-operation-id = "top_up"
headers = { Authorization = "Bearer $ADMIN" }

[[operations]]
include-operation-id = "claim_red_packet"
headers = { Authorization = "Bearer $CLAIMER" }
EOF

CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
failed=()

# run NAME [schemathesis options…]: one pass, its log and reports under $OUT/NAME.
run() {
  local name="$1"
  shift
  log "pass $name"
  if (cd "$OUT" && "$ST" --no-color --config-file "$OUT/schemathesis.toml" run "$BASE/openapi.json" \
    --checks "$CHECKS" \
    --max-examples "$MAX_EXAMPLES" \
    --seed 20261203 \
    --workers 1 \
    --request-timeout 10 \
    --report junit,har --report-dir "$OUT/$name" \
    "$@") >"$OUT/$name.log" 2>&1; then
    tail -n 6 "$OUT/$name.log" | sed 's/^/   /'
  else
    failed+=("$name")
    tail -n 60 "$OUT/$name.log" | sed 's/^/   /'
  fi
}

STATELESS=(--phases examples,coverage,fuzzing)
run viewer "${STATELESS[@]}" -H "Authorization: Bearer $VIEWER"
run broadcaster "${STATELESS[@]}" -H "Authorization: Bearer $BROADCASTER"
run finance "${STATELESS[@]}" -H "Authorization: Bearer $FINANCE"
run admin "${STATELESS[@]}" -H "Authorization: Bearer $ADMIN"
run anonymous "${STATELESS[@]}"

# The stateful pass: each operation with the token of the role it is for,
# for MAX_EXAMPLES seconds (at least 10): its scenarios repeat until then.
STATEFUL_SECONDS=$((MAX_EXAMPLES < 10 ? 10 : MAX_EXAMPLES))
log "pass stateful"
if (cd "$OUT" && "$ST" --no-color --config-file "$OUT/stateful.toml" run "$BASE/openapi.json" \
  --checks "$CHECKS" \
  --max-examples "$MAX_EXAMPLES" \
  --max-time "$STATEFUL_SECONDS" \
  --seed 20261203 \
  --request-timeout 10 \
  --phases stateful \
  --report junit,har --report-dir "$OUT/stateful") \
  >"$OUT/stateful.log" 2>&1; then
  tail -n 6 "$OUT/stateful.log" | sed 's/^/   /'
else
  failed+=(stateful)
  tail -n 60 "$OUT/stateful.log" | sed 's/^/   /'
fi

# The figures: operations described, requests sent, by status class.
python3 - "$OUT" "$BASE" <<'PY'
import glob, json, sys, urllib.request
out, base = sys.argv[1], sys.argv[2]
doc = json.load(urllib.request.urlopen(base + "/openapi.json"))
ops = sum(1 for item in doc["paths"].values() for m in item if m in
          ("get", "put", "post", "delete", "patch", "head", "options", "trace"))
total, by_class = 0, {}
for har in glob.glob(out + "/*/har-*.json"):
    for e in json.load(open(har))["log"]["entries"]:
        total += 1
        c = f'{e["response"]["status"] // 100}xx'
        by_class[c] = by_class.get(c, 0) + 1
classes = ", ".join(f"{k}: {v}" for k, v in sorted(by_class.items()))
print(f"== schemathesis: {ops} operations, {total} requests ({classes})")
with open(out + "/figures.json", "w") as f:
    json.dump({"operations": ops, "requests": total, "by_class": by_class}, f)
PY

stop_server
trap - EXIT
log "applause ledger check on $DATA"
if ! "$BIN" ledger check --data-dir "$DATA" >"$OUT/ledger-check.json"; then
  cat "$OUT/ledger-check.json" >&2
  failed+=(ledger-check)
fi

if [ "${#failed[@]}" -gt 0 ]; then
  log "FAILED: ${failed[*]} (logs in $OUT)"
  exit 1
fi
log "ok: no 5xx, every answer as described, the ledger check passes (logs in $OUT)"
