#!/usr/bin/env bash
# Refreshes (or, with --check, verifies) the offline query data in .sqlx/ that the
# `sqlx::query!` macros read at compile time (.cargo/config.toml sets SQLX_OFFLINE=true, so no
# build ever needs a database). Run it after changing a checked query or a migration:
#
#   scripts/sqlx-prepare.sh           rewrite .sqlx/ from the migrations (commit the result)
#   scripts/sqlx-prepare.sh --check   fail if .sqlx/ is stale or a query no longer type-checks
#
# It applies every migration to a fresh database on the dev-env cluster (scripts/dev-env.sh),
# then runs `cargo sqlx prepare`, which re-expands every macro against that database. sqlx-cli
# is installed pinned under .dev/tools/ when missing (a cold install takes about 2.5 minutes here).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TOOLS=${HOLDFAST_TOOLS_DIR:-$ROOT/.dev/tools}
SQLX_CLI_VERSION=0.9.0
log() { printf '[sqlx-prepare] %s\n' "$*" >&2; }

SQLX_ROOT=$TOOLS/sqlx-cli-$SQLX_CLI_VERSION
if [ ! -x "$SQLX_ROOT/bin/cargo-sqlx" ]; then
  log "installing sqlx-cli $SQLX_CLI_VERSION (Postgres only)"
  cargo install --quiet --locked --root "$SQLX_ROOT" sqlx-cli --version "$SQLX_CLI_VERSION" \
    --no-default-features --features postgres
fi
export PATH=$SQLX_ROOT/bin:$PATH

dev_env=$(scripts/dev-env.sh up)
eval "$dev_env"
DB=holdfast_sqlx_$$
ADMIN_URL=${DATABASE_URL%/*}/postgres
export DATABASE_URL=${DATABASE_URL%/*}/$DB
cleanup() { psql "$ADMIN_URL" -qc "drop database if exists $DB with (force)" >/dev/null 2>&1 || true; }
trap cleanup EXIT
psql "$ADMIN_URL" -qc "create database $DB"
cargo sqlx migrate run --source migrations >/dev/null
cargo sqlx prepare "$@"
