#!/usr/bin/env bash
# Issue 10's comparison: holdfast against two peers, hold then confirm on distinct seats, in one
# sitting. Runs scripts/bench.sh's `spread` scenario (or BENCH_PEERS_SCENARIO's) once per service
# per round, the order rotating each round, then prints each service's medians and their ratios
# to holdfast.
#
#   scripts/bench-peers.sh [clients] [seconds] [seats] [rounds]
#   e.g.  scripts/bench-peers.sh 16 20 20000 3
#   BENCH_PEERS_SCENARIO=hot-seat BENCH_ROUNDS=10 scripts/bench-peers.sh 1000 0 1000 2
#         (the stampede instead: each run sends BENCH_ROUNDS stampedes of `clients` holds on one
#         seat; the comparison gives the median of every stampede's p99, issue 10's measure)
#
# The peers (bench/peers/) are rebuilt from the issue's description, not the issue's own code:
#   node:  Node/Express and pg, one transaction per hold and per confirm, SELECT ... FOR UPDATE;
#          no idempotency, no Redis, no authentication, no change history.
#   actix: Rust/Actix, a hold only in Redis (one Lua script, every seat's key NX or none), one
#          read per hold and one INSERT per confirm in Postgres; no idempotency, no
#          authentication, no change history.
# Each answers the part of holdfast's API the load generator's `spread` scenario uses, so the
# same load generator drives all three. HOLDFAST_BIN=path runs that holdfast binary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
clients=${1:-16}; seconds=${2:-20}; seats=${3:-20000}; rounds=${4:-3}
scenario=${BENCH_PEERS_SCENARIO:-spread}
case "$scenario" in spread | hot-seat) ;; *) echo "BENCH_PEERS_SCENARIO: spread or hot-seat, not $scenario" >&2; exit 2 ;; esac
services=(holdfast node actix)
results=()
for round in $(seq 1 "$rounds"); do
  for i in 0 1 2; do
    service=${services[$(( (round - 1 + i) % 3 ))]}
    echo "[bench-peers] round $round: $service" >&2
    BENCH_SERVICE=$service scripts/bench.sh "$scenario" 1 "$clients" "$seconds" "$seats" 1 >/dev/null
    suffix=""; [ "$service" = holdfast ] || suffix="-$service"
    results+=("$service=$(ls -t bench/results/*-"$scenario"-1x"$suffix".jsonl | head -1)")
  done
done
# holdfast first, so that the ratios are the peers' to holdfast.
ordered=()
for service in "${services[@]}"; do
  for result in "${results[@]}"; do
    if [ "${result%%=*}" = "$service" ]; then ordered+=("$result"); fi
  done
done
python3 scripts/bench_compare.py "${ordered[@]}"
