#!/usr/bin/env bash
# Load benchmark: holdfast's own scenarios against 1 or more release instances, with the
# machine's ceiling (pgbench running one hold transaction's SQL) measured in the same run.
#
#   scripts/bench.sh [scenario] [instances] [clients] [seconds] [seats] [runs]
#   scenario: spread | spread-holds | spread-recycle | best-pairs | hot-seat | browse | rooms | slots
#             | queue-joins | on-sale   (the waiting room: see tools/loadgen; BENCH_LOADGEN_ARGS adds
#             loadgen flags, e.g. "--queue-admit-per-minute 12000 --queue-max-active 300")
#   (default spread; best-pairs = holds of the best 2 seats side by side, `best_available`, no confirm)
#   (spread = hold + confirm per seat; spread-holds = spread without the confirm;
#    spread-recycle = hold then release, wrapping around the seats: for comparing event sizes;
#    rooms = hold 1 unit for 1-3 of 30 nights, then confirm, capacity [seats] per night;
#    slots = hold the next 30-minute slot of one resource, then confirm)
#   e.g.  scripts/bench.sh spread 1 32 15 10000 3
#         scripts/bench.sh hot-seat 3 1000 0 1000 3
#   Also per request (issue 10): CPU of holdfast, Postgres, Redis and the load generator (/proc),
#   WAL bytes and records (pg_stat_wal) and commits (pg_stat_database); and a second ceiling,
#   bench/minimal_hold.sql (the least work a hold needs), beside the scenario's own.
#   HOLDFAST_BIN=path runs that binary as the service (A/B runs); BENCH_ROUNDS: hot-seat rounds;
#   BENCH_POOL: each instance's main pool size (default 20); BENCH_HOLD_CAP: HOLD_MAX_LIVE_PER_USER
#   (default 0, off; the service's own default is 5, which adds the per-user count to each hold);
#   BENCH_RATE_LIMIT_PER_USER: RATE_LIMIT_PER_USER (default 0, off; set it high, e.g. 1000000, to
#   measure what the per-instance and cluster-wide limiters cost without refusing anything).
#   BENCH_CEILINGS=0: no pgbench ceilings (their SQL is this tree's: builds from before it differ);
#   BENCH_INVARIANTS=0: the load generator does not check the invariants (builds whose schema
#   predates its checks).
#   BENCH_SERVICE=node|actix: serve with a peer from bench/peers/ instead of holdfast (issue 10's
#   comparison; only the `spread`, `spread-holds` and `hot-seat` scenarios; scripts/bench-peers.sh
#   runs `spread` against all three).
#
# Prints each run's report (JSON lines, also saved under bench/results/) and the medians.
# Everything (service, Postgres, Redis, load generator, pgbench) shares this machine at the
# same nice level, so figures are comparable within one run, not across machines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scenario=${1:-spread}; instances=${2:-1}; clients=${3:-32}; seconds=${4:-15}; seats=${5:-10000}; runs=${6:-3}
# Assign first: a failure of `up` then stops this script (set -e), instead of vanishing inside eval.
dev_env=$(scripts/dev-env.sh up)
eval "$dev_env"
export JWT_SECRET=bench-secret-0123456789abcdef
base_url=${DATABASE_URL%/*}
psql_admin() { psql "$base_url/postgres" -qAtX -v ON_ERROR_STOP=1 "$@"; }

# With HOLDFAST_BIN (A/B runs of binaries built earlier), the tree is not built: it may be
# mid-change. Only the load generator is, when it is missing.
if [ -z "${HOLDFAST_BIN:-}" ]; then
  cargo build --release --bins -p holdfast -p holdfast-loadgen >&2
elif [ ! -x target/release/holdfast-loadgen ]; then
  cargo build --release --bin holdfast-loadgen -p holdfast-loadgen >&2
fi
service=${BENCH_SERVICE:-holdfast}
case "$service" in
  holdfast) ;;
  node) [ -d bench/peers/node/node_modules ] || (cd bench/peers/node && npm ci --no-audit --no-fund >&2) ;;
  actix) cargo build --release --manifest-path bench/peers/actix/Cargo.toml --target-dir target/peers >&2 ;;
  *) echo "BENCH_SERVICE: holdfast, node or actix, not $service" >&2; exit 2 ;;
esac
if [ "$service" != holdfast ] && [ "$scenario" != spread ] && [ "$scenario" != spread-holds ] \
    && [ "$scenario" != hot-seat ]; then
  echo "the peers answer only the spread, spread-holds and hot-seat scenarios" >&2; exit 2
fi
mkdir -p bench/results
out="bench/results/$(date -u +%Y%m%dT%H%M%SZ)-$scenario-${instances}x$([ "$service" = holdfast ] || echo "-$service").jsonl"

# --- the ceiling: pgbench doing one hold transaction's SQL, same clients, same machine ---
ceiling_tps=""
# No hold-transaction ceiling where holds are not what is measured, nor for more clients than
# Postgres takes connections (pgbench opens one per client).
if [ "$scenario" != hot-seat ] && [ "$scenario" != queue-joins ] && [ "$scenario" != on-sale ] \
    && [ "$clients" -le 500 ] && [ "${BENCH_CEILINGS:-1}" != 0 ]; then
  psql_admin -c "drop database if exists holdfast_ceiling with (force)" -c "create database holdfast_ceiling"
  DATABASE_URL="$base_url/holdfast_ceiling" "${HOLDFAST_BIN:-target/release/holdfast}" migrate >/dev/null
  ceiling_sql=bench/hold.sql
  case "$scenario" in
    rooms) ceiling_sql=bench/room_hold.sql
      psql "$base_url/holdfast_ceiling" -qAtX -v ON_ERROR_STOP=1 <<SQL
insert into inventories (id, name, created_by) values ('00000000-0000-7000-8000-000000000002', 'ceiling', 'bench');
insert into inventory_nights (inventory_id, night, capacity, overbooking_allowance)
  select '00000000-0000-7000-8000-000000000002', d::date, 2000000000, 0
    from generate_series(date '2030-01-01', date '2030-01-30', interval '1 day') d;
SQL
      ;;
    slots) ceiling_sql=bench/slot_hold.sql
      psql "$base_url/holdfast_ceiling" -qAtX -v ON_ERROR_STOP=1 <<SQL
insert into resources (id, name, time_zone, opening_hours, granularity_minutes, created_by)
  values ('00000000-0000-7000-8000-000000000003', 'ceiling', 'UTC', '{}', 30, 'bench');
create sequence bench_slot_seq;
SQL
      ;;
    *)
      # Every ceiling transaction must claim a free seat, as every request of the run does: the
      # next seat of a sequence, on an event that has not started, with more seats than the
      # ceiling can take in its seconds.
      ceiling_seats=$(( seats > 300000 ? seats : 300000 ))
      psql "$base_url/holdfast_ceiling" -qAtX -v ON_ERROR_STOP=1 -v seats="$ceiling_seats" -f bench/seats.sql >/dev/null
      ;;
  esac
  pg_seconds=$([ "$seconds" -gt 0 ] && echo "$seconds" || echo 10)
  ceiling_tps=$("$HOLDFAST_PG_BINDIR/pgbench" -n -M prepared -c "$clients" -j 2 -T "$pg_seconds" -D nseats="$seats" -D ttl=600 \
      -f "$ceiling_sql" "$base_url/holdfast_ceiling" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
  echo "pgbench hold-transaction ceiling: $ceiling_tps tps ($clients clients, ${pg_seconds}s)" >&2
  # The second ceiling, independent of holdfast's SQL and schema: the least work a hold needs
  # (bench/minimal_hold.sql: lock the seat, insert the hold, update the seat, commit), on two
  # plain tables (bench/minimal_schema.sql).
  if [ "$ceiling_sql" = bench/hold.sql ]; then
    psql "$base_url/holdfast_ceiling" -qAtX -v ON_ERROR_STOP=1 -f bench/minimal_schema.sql >/dev/null
    minimal_tps=$("$HOLDFAST_PG_BINDIR/pgbench" -n -M prepared -c "$clients" -j 2 -T "$pg_seconds" -D nseats="$seats" \
        -f bench/minimal_hold.sql "$base_url/holdfast_ceiling" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
    echo "pgbench minimal-hold ceiling: $minimal_tps tps ($clients clients, ${pg_seconds}s)" >&2
  fi
  # Gone before the service runs: autovacuum cleaning up after the ceilings would otherwise run
  # meanwhile, and its CPU and WAL would be counted against the service's requests.
  psql_admin -c "drop database holdfast_ceiling with (force)"
fi
# Where the work goes (issue 10): CPU per request of each process, WAL and commits per request.
pg_data=$(psql_admin -c 'show data_directory')
postmaster=$(head -1 "$pg_data/postmaster.pid")
# WAL records by type per request (pg_waldump reads the cluster's pg_wal folder).
export BENCH_PG_WAL="$pg_data/pg_wal" BENCH_PG_BINDIR="$HOLDFAST_PG_BINDIR"
redis_pids=$(for u in ${REDIS_URLS//,/ }; do p=${u##*:}; redis-cli -p "$p" info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p'; done | paste -sd,)

pids=()
# (A service that dies of the signal instead of exiting 0 must not end the script: `|| true`.)
stop_instances() { for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null && { wait "$pid" 2>/dev/null || true; }; done; pids=(); }
trap stop_instances EXIT

for run in $(seq 1 "$runs"); do
  psql_admin -c "drop database if exists holdfast_bench with (force)" -c "create database holdfast_bench"
  export DATABASE_URL="$base_url/holdfast_bench"
  # Statements, rows and buffers per request (needs the library dev-env.sh preloads).
  psql "$DATABASE_URL" -qAtX -c "create extension if not exists pg_stat_statements" >/dev/null 2>&1 || true
  # Each binary brings its own migrations (A/B runs compare schemas too); a peer makes its
  # tables when it starts.
  [ "$service" = holdfast ] && "${HOLDFAST_BIN:-target/release/holdfast}" migrate >/dev/null
  [ "$service" = actix ] && redis-cli -u "${REDIS_URLS%%,*}" flushall >/dev/null
  targets=""
  for i in $(seq 1 "$instances"); do
    port=$((18180 + i))
    case "$service" in
      holdfast)
        # Enough connections for every client at once (past the cap they would queue in the kernel).
        HTTP_MAX_CONNECTIONS=$(( clients + 1000 > 4096 ? clients + 1000 : 4096 )) \
        RATE_LIMIT_PER_IP=0 RATE_LIMIT_PER_USER=${BENCH_RATE_LIMIT_PER_USER:-0} HOLD_MAX_LIVE_PER_USER=${BENCH_HOLD_CAP:-0} LISTEN_ADDR=127.0.0.1:$port RUST_LOG=warn \
          REDIS_KEY_PREFIX="bench:$run:" DATABASE_MAX_CONNECTIONS=${BENCH_POOL:-20} \
          "${HOLDFAST_BIN:-target/release/holdfast}" serve >/dev/null 2>&1 &
        ;;
      node) LISTEN_ADDR=127.0.0.1:$port DATABASE_MAX_CONNECTIONS=${BENCH_POOL:-20} node bench/peers/node/server.js >/dev/null 2>&1 & ;;
      actix) LISTEN_ADDR=127.0.0.1:$port DATABASE_MAX_CONNECTIONS=${BENCH_POOL:-20} REDIS_URL="${REDIS_URLS%%,*}" \
          target/peers/release/holdfast-peer-actix >/dev/null 2>&1 & ;;
    esac
    pids+=($!)
    targets="${targets:+$targets,}http://127.0.0.1:$port"
    until curl -fs "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.1; done
  done
  mode=(--scenario "$scenario")
  [ "$scenario" = spread-holds ] && mode=(--scenario spread --hold-only)
  [ "$scenario" = spread-recycle ] && mode=(--scenario spread --hold-only --recycle)
  [ "$scenario" = best-pairs ] && mode=(--scenario spread --hold-only --best-available 2)
  # shellcheck disable=SC2206 # word splitting wanted: loadgen flags
  mode+=(${BENCH_LOADGEN_ARGS:-})
  holdfast_pids=$(IFS=,; echo "${pids[*]}")
  # The "before" counters are taken by the load generator once its event is set up, the "after"
  # ones as soon as the load stops: its invariant check afterwards (full scans) is no request's
  # work, and the peers' runs have none.
  snapshot_before="python3 scripts/bench_cost.py snapshot $holdfast_pids $postmaster $redis_pids $DATABASE_URL > /tmp/holdfast-bench-before.json"
  snapshot_after="python3 scripts/bench_cost.py snapshot $holdfast_pids $postmaster $redis_pids $DATABASE_URL > /tmp/holdfast-bench-after.json"
  # holdfast's invariants are checked by the load generator (from DATABASE_URL); a peer's below.
  # BENCH_INVARIANTS=0: not checked (a build older than the load generator's checks).
  loadgen_env=(env)
  if [ "$service" != holdfast ] || [ "${BENCH_INVARIANTS:-1}" = 0 ]; then loadgen_env=(env -u DATABASE_URL); fi
  # The load generator's own CPU, from the rusage of a child it is the only one of.
  python3 -c "
import resource, subprocess, sys
out = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, check=True).stdout
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open('/tmp/holdfast-bench-loadgen-cpu', 'w').write(str(u.ru_utime + u.ru_stime))
sys.stdout.buffer.write(out)" "${loadgen_env[@]}" target/release/holdfast-loadgen --json "${mode[@]}" --targets "$targets" --clients "$clients" \
    --duration-secs "$seconds" --seats "$seats" --rounds "${BENCH_ROUNDS:-3}" \
    --pids "$holdfast_pids" --after-setup "$snapshot_before" --after-load "$snapshot_after" \
    > /tmp/holdfast-bench-report.json
  requests=$(python3 -c "import json; print(json.load(open('/tmp/holdfast-bench-report.json'))['requests'])")
  cost=$(python3 scripts/bench_cost.py delta /tmp/holdfast-bench-before.json /tmp/holdfast-bench-after.json \
    "$requests" "$(cat /tmp/holdfast-bench-loadgen-cpu)")
  # A peer's invariant: no seat sold or held twice (its own tables; actix's bookings are unique
  # by seat, and its holds are Redis keys set only if absent).
  peer_check=""
  case "$service" in
    node) peer_check=$(psql "$DATABASE_URL" -qAtX -c "select count(*) from (select seat from peer_holds, unnest(seat_ids) seat
        where status = 'confirmed' or expires_at > now() group by seat having count(*) > 1) twice") ;;
    actix) peer_check=$(psql "$DATABASE_URL" -qAtX -c "select count(*) from (select seat_id from peer_bookings
        group by seat_id having count(*) > 1) twice") ;;
  esac
  python3 -c "
import json, sys
r = json.load(open('/tmp/holdfast-bench-report.json')); r['run'] = $run; r['service'] = '$service'
if '$peer_check': r['invariant_violations'] = [] if '$peer_check' == '0' else [{'check': 'seat sold twice', 'rows': int('$peer_check')}]
r['ceiling_tps'] = float('${ceiling_tps:-0}' or 0)
r['minimal_ceiling_tps'] = float('${minimal_tps:-0}' or 0); r['cost'] = json.loads(sys.argv[1])
print(json.dumps(r))" "$cost" | tee -a "$out"
  stop_instances
done

python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs) if xs else float('nan')
ceiling = runs[0]['ceiling_tps']
holds = med([r['holds_per_s'] for r in runs]); flows = med([r['flows_per_s'] for r in runs])
print(f"\nmedians over {len(runs)} runs ({runs[0]['scenario']}, {runs[0]['targets']} instance(s), {runs[0]['clients']} clients, {runs[0]['event_seats']} seats):")
print(f"  requests/s {med([r['requests_per_s'] for r in runs]):.0f}  holds/s {holds:.0f}  flows/s {flows:.0f}")
if ceiling:
    print(f"  pgbench ceiling {ceiling:.0f} tps: holds {100*holds/ceiling:.0f}% of it, hold+confirm flows {100*flows/ceiling:.0f}%")
minimal = runs[0].get('minimal_ceiling_tps') or 0
if minimal:
    print(f"  pgbench minimal-hold ceiling {minimal:.0f} tps: holds {100*holds/minimal:.0f}% of it, hold+confirm flows {100*flows/minimal:.0f}%")
costs = [r['cost'] for r in runs if r.get('cost')]
if costs:
    cpu = lambda k: med([c['cpu_ms_per_request'][k] for c in costs if c['cpu_ms_per_request'][k] is not None])
    print(f"  CPU ms per request: holdfast {cpu('holdfast'):.3f}  postgres {cpu('postgres'):.3f}  redis {cpu('redis'):.3f}  loadgen {cpu('loadgen'):.3f}")
    print(f"  per request: WAL {med([c['wal_bytes_per_request'] for c in costs]):.0f} bytes ({med([c['wal_records_per_request'] for c in costs]):.1f} records), {med([c['commits_per_request'] for c in costs]):.2f} commits (all transactions, read-only ones too)")
    wc = [c['write_commits_per_request'] for c in costs if c.get('write_commits_per_request') is not None]
    if wc:
        print(f"  per request: {med(wc):.2f} commit records in the WAL (transactions that wrote)")
        kinds = costs[-1]['wal_records_by_type_per_request']
        print("  WAL records per request in the last run:", ", ".join(f"{k} {v}" for k, v in list(kinds.items())[:14]))
        rels = costs[-1].get('wal_bytes_by_relation_per_request') or {}
        if rels:
            print("  WAL bytes per request by table or index in the last run:", ", ".join(f"{k} {v}" for k, v in list(rels.items())[:14]))
    st = [c['statements'] for c in costs if c.get('statements')]
    if st:
        s = lambda k: med([x[k] for x in st])
        print(f"  per request (pg_stat_statements): {s('calls'):.2f} statements, {s('rows'):.2f} rows, {s('exec_ms'):.3f} ms executing, {s('buffers'):.1f} buffers ({s('dirtied'):.2f} dirtied), {s('wal_bytes'):.0f} WAL bytes")
        print("  costliest statements in the last run, per request:")
        for t in st[-1]['top']:
            print(f"    {t['exec_ms']:.4f} ms ({t['calls']:.2f} calls, {t['ms_per_call']:.3f} ms each, {t['wal_bytes']} WAL B, {t['rows']:.2f} rows): {t['query'][:110]}")
for op in sorted({op for r in runs for op in r['latency']}):
    p = lambda k: med([r['latency'][op][k] for r in runs if op in r['latency']])
    print(f"  {op:>8}: p50 {p('p50_ms'):.1f} ms  p95 {p('p95_ms'):.1f} ms  p99 {p('p99_ms'):.1f} ms  max {p('max_ms'):.1f} ms")
rss = [x['vm_hwm_kib'] for r in runs for x in r['peak_rss_kib'] if x['vm_hwm_kib']]
if rss: print(f"  peak RSS per instance: max {max(rss)/1024:.1f} MiB")
answers = {}
for r in runs:
    for k, v in r['answers'].items(): answers[k] = answers.get(k, 0) + v
print("  answers (all runs):", ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())))
if runs[0]['hot_seat_winners_per_round']:
    print("  winners per round:", [r['hot_seat_winners_per_round'] for r in runs])
    per_round = [r['hot_seat_p99_ms_per_round'] for r in runs]
    print("  p99 per round (ms):", [[round(x) for x in rs] for rs in per_round])
    print("  median p99 of round n:", [round(med(list(xs))) for xs in zip(*per_round)])
    # Issue 10's measure: the median of every stampede's p99 (it quoted 10 bursts). The first
    # stampede of a run also opens the load generator's 1,000 connections; the later ones reuse them.
    every = [x for rs in per_round for x in rs]; later = [x for rs in per_round for x in rs[1:]]
    print(f"  median p99 of all {len(every)} stampedes: {med(every):.1f} ms; of the first of each run:"
          f" {med([rs[0] for rs in per_round]):.1f} ms; of the later ones: {med(later):.1f} ms")
print("  /ready after each run:", [r['ready_after'] for r in runs])
bad = [r['invariant_violations'] for r in runs if r['invariant_violations']]
print("  invariants:", "VIOLATED " + str(bad) if bad else "all hold after every run")
PY
