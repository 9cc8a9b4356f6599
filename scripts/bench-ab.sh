#!/usr/bin/env bash
# Before/after pairs in one sitting: runs scripts/bench.sh once with binary A, once with B,
# alternating, PAIRS times, then prints the medians of each side and their ratio.
#
#   scripts/bench-ab.sh A_BIN B_BIN [scenario] [instances] [clients] [seconds] [seats] [pairs]
#   e.g.  scripts/bench-ab.sh /tmp/holdfast-before target/release/holdfast spread 1 16 15 10000 3
#
# Each binary migrates its own database (schemas are compared too); each run measures its own
# pgbench ceilings, so every figure has its ceilings from the same minute.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
a=$1; b=$2; scenario=${3:-spread}; instances=${4:-1}; clients=${5:-16}; seconds=${6:-15}; seats=${7:-10000}; pairs=${8:-3}
results=()
for pair in $(seq 1 "$pairs"); do
  for side in A B; do
    bin=$a; [ "$side" = B ] && bin=$b
    echo "[bench-ab] pair $pair, $side: $bin" >&2
    HOLDFAST_BIN=$bin scripts/bench.sh "$scenario" "$instances" "$clients" "$seconds" "$seats" 1 >/dev/null
    file=$(ls -t bench/results/*-"$scenario"-"${instances}"x.jsonl | head -1)
    results+=("$side=$file")
  done
done
echo "A = $a"; echo "B = $b"
python3 scripts/bench_compare.py "${results[@]}"
