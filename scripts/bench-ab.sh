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
python3 - "$a" "$b" "${results[@]}" <<'PY'
import json, statistics, sys
a_bin, b_bin, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = {"A": [], "B": []}
for p in pairs:
    side, path = p.split("=", 1)
    runs[side] += [json.loads(l) for l in open(path)]
med = statistics.median
def fig(rs):
    c = [r["cost"] for r in rs]
    st = [x["statements"] for x in c if x.get("statements")]
    f = {
        "requests/s": med([r["requests_per_s"] for r in rs]),
        "holds/s": med([r["holds_per_s"] for r in rs]),
        "flows/s": med([r["flows_per_s"] for r in rs]),
        "minimal ceiling tps": med([r["minimal_ceiling_tps"] for r in rs]),
        "holds % of minimal": med([100 * r["holds_per_s"] / r["minimal_ceiling_tps"] for r in rs if r["minimal_ceiling_tps"]] or [float("nan")]),
        "own-SQL ceiling tps": med([r["ceiling_tps"] for r in rs]),
        "CPU ms/req holdfast": med([x["cpu_ms_per_request"]["holdfast"] for x in c]),
        "CPU ms/req postgres": med([x["cpu_ms_per_request"]["postgres"] for x in c]),
        "CPU ms/req redis": med([x["cpu_ms_per_request"]["redis"] for x in c]),
        "CPU ms/req loadgen": med([x["cpu_ms_per_request"]["loadgen"] for x in c]),
        "WAL bytes/req": med([x["wal_bytes_per_request"] for x in c]),
        "WAL records/req": med([x["wal_records_per_request"] for x in c]),
        "commit records/req": med([x.get("write_commits_per_request") or float("nan") for x in c]),
        "statements/req": med([s["calls"] for s in st]) if st else float("nan"),
        "rows/req": med([s["rows"] for s in st]) if st else float("nan"),
        "buffers/req": med([s["buffers"] for s in st]) if st else float("nan"),
    }
    for op in sorted({op for r in rs for op in r["latency"]}):
        f[f"{op} p99 ms"] = med([r["latency"][op]["p99_ms"] for r in rs if op in r["latency"]])
    return f
fa, fb = fig(runs["A"]), fig(runs["B"])
print(f"A = {a_bin}\nB = {b_bin}\n{len(runs['A'])} alternating runs each, medians:")
print(f"{'':26} {'A':>10} {'B':>10} {'B/A':>7}")
for k in fa:
    ratio = fb[k] / fa[k] if fa[k] else float("nan")
    print(f"{k:26} {fa[k]:10.3f} {fb[k]:10.3f} {ratio:7.2f}")
bad = [r["invariant_violations"] for r in runs["A"] + runs["B"] if r["invariant_violations"]]
print("invariants:", "VIOLATED " + str(bad) if bad else "all hold after every run")
PY
