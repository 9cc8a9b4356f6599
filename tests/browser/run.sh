#!/usr/bin/env bash
# The seat-map page in a real browser (issue 12): starts a holdfast instance on a database of
# its own with the page's origin allowed (CORS_ALLOWED_ORIGINS) and fast sweeps, serves
# examples/seat-map/ from another origin, creates an event, and runs seat-map.test.mjs in
# Debian's chromium through playwright-core. Screenshots go to .dev/checks/screenshots/.
#
#   tests/browser/run.sh [HOLDFAST_BIN]      (scripts/checks.sh runs it; the dev env must be up)
#
# Installs what is missing: chromium with apt-get, playwright-core with npm (pinned by the lock).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BIN=${1:-$ROOT/target/debug/holdfast}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
log() { printf '[browser] %s\n' "$*" >&2; }

CHROMIUM=$(command -v chromium || true)
if [ -z "$CHROMIUM" ]; then
  log "installing chromium with apt-get"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null
  CHROMIUM=$(command -v chromium)
fi
if [ ! -d tests/browser/node_modules/playwright-core ] \
  || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
  log "installing playwright-core"
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

eval "$(scripts/dev-env.sh env)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
API_PORT=$(free_port)
PAGE_PORT=$(free_port)
DB=holdfast_browser_$$
ADMIN_URL=${DATABASE_URL%/*}/postgres
SECRET=browser-test-secret-0123456789
WORK=$ROOT/.dev/checks
mkdir -p "$WORK"
rm -rf "$WORK/screenshots"
psql "$ADMIN_URL" -qc "create database $DB"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  psql "$ADMIN_URL" -qc "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

DATABASE_URL=${DATABASE_URL%/*}/$DB JWT_SECRET=$SECRET LISTEN_ADDR=127.0.0.1:$API_PORT \
  REDIS_KEY_PREFIX="browser:$$:" CORS_ALLOWED_ORIGINS=http://127.0.0.1:$PAGE_PORT \
  HOLD_SWEEP_INTERVAL_MS=200 RATE_LIMIT_PER_IP=0 RATE_LIMIT_PER_USER=0 SHUTDOWN_DRAIN_SECONDS=0 \
  RUST_LOG=${RUST_LOG:-warn} "$BIN" serve > "$WORK/browser-holdfast.log" 2>&1 &
pids+=($!)
python3 -m http.server "$PAGE_PORT" --bind 127.0.0.1 --directory examples/seat-map > "$WORK/browser-page.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$API_PORT/ready" >/dev/null && curl -sf "http://127.0.0.1:$PAGE_PORT/index.html" >/dev/null && break
  sleep 0.2
done

token() { JWT_SECRET=$SECRET "$BIN" token --sub "$@"; }
ADMIN=$(token browser-admin --admin)
EVENT=$(curl -sf -X POST "http://127.0.0.1:$API_PORT/v1/events" -H "Authorization: Bearer $ADMIN" \
  -H "Idempotency-Key: browser-$$" -H 'Content-Type: application/json' \
  -d '{"name": "Browser test night", "starts_at": "2030-01-01T20:00:00Z",
       "layout": {"sections": 1, "rows": 2, "seats_per_row": 8, "price_cents": 4500}}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')

API=http://127.0.0.1:$API_PORT PAGE=http://127.0.0.1:$PAGE_PORT EVENT=$EVENT \
  ALICE=$(token alice) BOB=$(token bob) SHOTS=$WORK/screenshots CHROMIUM=$CHROMIUM \
  node tests/browser/seat-map.test.mjs
