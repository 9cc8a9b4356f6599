#!/usr/bin/env bash
# What each part of a hold costs Postgres (issue 10): pgbench runs, in alternating rounds, on a
# database migrated by holdfast, the least work a hold needs (bench/minimal_hold.sql, on two plain
# tables), then bench/parts/*.sql, each adding one part of what a hold writes to the one before
# (holdfast's holds and seats; the hold's seat list; its change row; its idempotency record; each
# part a file, joined by `+` into one pgbench script and ended by bench/parts/commit.sql), then
# holdfast's own statements (bench/hold.sql). Per part: transactions per second,
# Postgres CPU per transaction (/proc, as scripts/bench.sh), pgbench's own CPU per transaction,
# WAL bytes per transaction, medians over the rounds, and Postgres CPU against part 1's. No
# service runs: this measures the SQL and the schema alone. Each run starts after a checkpoint,
# with full_page_writes off on the dev cluster while the script runs (restored on exit): a page's
# first change after a checkpoint would otherwise add the whole page to the WAL, and how many
# pages a short run touches first says more about the run than about the part.
#
#   scripts/bench-parts.sh [clients] [seconds] [rounds] [parts...]
#   e.g.  scripts/bench-parts.sh 16 10 3
#         scripts/bench-parts.sh 16 10 5 bench/parts/3_seat_list.sql+bench/parts/commit.sql \
#           bench/parts/2_schema.sql+bench/parts/3_seat_rows_before.sql+bench/parts/commit.sql
#         scripts/bench-parts.sh 16 10 5 confirm     # a hold, then a hold and each part of its confirm
#   HOLDFAST_BIN=path migrates with that binary (default target/release/holdfast, built if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
clients=${1:-16}; seconds=${2:-10}; rounds=${3:-3}; shift $(( $# < 3 ? $# : 3 ))
seats=300000
p=bench/parts; end=+$p/commit.sql
parts=("$@"); [ ${#parts[@]} -gt 0 ] || parts=(bench/minimal_hold.sql "$p/2_schema.sql$end"
  "$p/2_schema.sql+$p/3_seat_rows_before.sql$end" "$p/3_seat_list.sql$end" "$p/3_seat_list.sql+$p/4_change_row.sql$end"
  "$p/3_seat_list.sql+$p/4_change_row.sql+$p/5_idempotency.sql$end" bench/hold.sql)
# `confirm`: a hold as holdfast makes it, alone; then followed by the parts of a confirm, one more
# each time (bench/parts/confirm/[1-4]_*.sql, then bench/parts/commit.sql); then by holdfast's confirm.
if [ "${parts[0]}" = confirm ]; then
  parts=(bench/hold.sql); so_far=bench/hold.sql
  for f in bench/parts/confirm/[1-4]_*.sql; do
    so_far+="+$f"; parts+=("$so_far$end")
  done
  parts+=(bench/hold.sql+bench/parts/confirm/5_holdfast.sql)
  seats=1000000   # a booked seat is never free again: enough that no seat comes round twice
fi
dev_env=$(scripts/dev-env.sh up)
eval "$dev_env"
base_url=${DATABASE_URL%/*}
bin=${HOLDFAST_BIN:-target/release/holdfast}
[ -n "${HOLDFAST_BIN:-}" ] || [ -x "$bin" ] || cargo build --release --bin holdfast >&2
url="$base_url/holdfast_parts"
psql "$base_url/postgres" -qAtX -v ON_ERROR_STOP=1 -c "drop database if exists holdfast_parts with (force)" \
  -c "create database holdfast_parts"
DATABASE_URL=$url "$bin" migrate >/dev/null
# Holds last a second (-D ttl=1), and the seats taken (at random, or from a sequence that wraps
# around all of them) are free again long before their turn comes back, so every hold that claims
# its seat claims it, as in the service's runs.
psql "$url" -qAtX -v ON_ERROR_STOP=1 -v seats="$seats" -f bench/seats.sql >/dev/null
psql "$url" -qAtX -v ON_ERROR_STOP=1 -f bench/minimal_schema.sql >/dev/null
psql "$url" -qAtX -c "vacuum analyze" >/dev/null
psql_admin() { psql "$base_url/postgres" -qAtX -v ON_ERROR_STOP=1 "$@"; }
psql_admin -c "alter system set full_page_writes = off" -c "select pg_reload_conf()" >/dev/null
trap 'psql_admin -c "alter system reset full_page_writes" -c "select pg_reload_conf()" >/dev/null' EXIT
pg_data=$(psql "$url" -qAtX -c 'show data_directory')
BENCH_PG_BINDIR="$HOLDFAST_PG_BINDIR" python3 scripts/bench_parts.py "$url" "$(head -1 "$pg_data/postmaster.pid")" \
  "$rounds" "$seconds" "$clients" "$seats" "${parts[@]}"
# What the parts did, for a look: holds by status, and the bookings the confirm parts made.
psql "$url" -qAtX -F ' ' -c "select 'holds ' || status, count(*) from holds group by status
                              union all select 'bookings', count(*) from bookings" >&2
psql "$base_url/postgres" -qAtX -c "drop database holdfast_parts with (force)"
