#!/usr/bin/env bash
# Purge benchmark (not a test): how fast one instance drains expired idempotency records while
# it serves load. Inserts N expired records (default 1,000,000), starts a release instance,
# runs `spread-holds` against it (16 clients, keyed holds), and reads from /metrics when the
# purge began and when it had removed all N. Reports the purge rate against the keyed-write
# rate the same instance served meanwhile.
#
#   scripts/bench-purge.sh [records] [clients] [runs]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
records=${1:-1000000}; clients=${2:-16}; runs=${3:-3}
dev_env=$(scripts/dev-env.sh up)
eval "$dev_env"
export JWT_SECRET=bench-secret-0123456789abcdef
base_url=${DATABASE_URL%/*}
cargo build --release --bins -p holdfast -p holdfast-loadgen >&2
port=18199
metric() { curl -fs "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m { print $2 }' | head -1; }

for run in $(seq 1 "$runs"); do
  psql "$base_url/postgres" -qAtX -c "drop database if exists holdfast_purge with (force)" -c "create database holdfast_purge"
  export DATABASE_URL="$base_url/holdfast_purge"
  target/release/holdfast migrate >/dev/null
  psql "$DATABASE_URL" -qAtX -c "
    insert into idempotency_records
           (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_body, updated_at)
    select 'old-' || (i % 1000), 'key-' || i, '\\x00', 'SUCCEEDED', gen_random_uuid(), now() - interval '3 days',
           201, '{\"id\": \"00000000-0000-0000-0000-000000000000\", \"status\": \"HELD\"}', now() - interval '3 days'
      from generate_series(1, $records) i;" -c "vacuum analyze idempotency_records"
  RATE_LIMIT_PER_IP=0 RATE_LIMIT_PER_USER=0 HOLD_MAX_LIVE_PER_USER=0 LISTEN_ADDR=127.0.0.1:$port RUST_LOG=warn \
    REDIS_KEY_PREFIX="purge:$run:" IDEMPOTENCY_SWEEP_INTERVAL_MS=2000 target/release/holdfast serve >/dev/null 2>&1 &
  pid=$!
  until curl -fs "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.1; done
  target/release/holdfast-loadgen --json --scenario spread --hold-only --targets "http://127.0.0.1:$port" \
    --clients "$clients" --duration-secs 60 --seats 100000 > "/tmp/holdfast-purge-load-$run.json" &
  load=$!
  started=""; finished=""
  deadline=$((SECONDS + 120))
  while [ $SECONDS -lt $deadline ]; do
    purged=$(metric holdfast_idempotency_purged_total); purged=${purged:-0}
    now=$(date +%s.%N)
    if [ -z "$started" ] && [ "${purged%.*}" -gt 0 ]; then started=$now; fi
    if [ "${purged%.*}" -ge "$records" ]; then finished=$now; break; fi
    sleep 0.1
  done
  wait "$load" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  holds=$(python3 -c "import json; print(round(json.load(open('/tmp/holdfast-purge-load-$run.json'))['holds_per_s']))")
  if [ -z "$finished" ]; then echo "run $run: the purge did not finish within 120 s"; continue; fi
  python3 -c "
d = $finished - $started; rate = $records / d
print(f'run $run: purged $records expired records in {d:.1f} s = {rate:,.0f} rows/s while serving {int($holds):,} keyed holds/s: {rate / $holds:.0f}x')"
done
