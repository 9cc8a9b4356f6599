#!/usr/bin/env python3
"""Medians of scripts/bench.sh runs side by side, one column per label, with each column's ratio
to the first (scripts/bench-ab.sh: A and B; scripts/bench-peers.sh: holdfast and its peers).

  bench_compare.py LABEL=results.jsonl [LABEL=results.jsonl ...]

A label may repeat (one file per run); its runs are pooled.
"""
import json
import statistics
import sys

med = statistics.median
nan = float("nan")


def figures(rs):
    c = [r["cost"] for r in rs]
    st = [x["statements"] for x in c if x.get("statements")]
    cpu = lambda k: med([x["cpu_ms_per_request"][k] for x in c])
    f = {
        "requests/s": med([r["requests_per_s"] for r in rs]),
        "holds/s": med([r["holds_per_s"] for r in rs]),
        "flows/s": med([r["flows_per_s"] for r in rs]),
        "minimal ceiling tps": med([r["minimal_ceiling_tps"] for r in rs]),
        "holds % of minimal": med([100 * r["holds_per_s"] / r["minimal_ceiling_tps"] for r in rs if r["minimal_ceiling_tps"]] or [nan]),
        "own-SQL ceiling tps": med([r["ceiling_tps"] for r in rs]),
        "CPU ms/req service": cpu("holdfast"),
        "CPU ms/req postgres": cpu("postgres"),
        "CPU ms/req redis": cpu("redis"),
        "CPU ms/req loadgen": cpu("loadgen"),
        # Cores busy = CPU per request x requests per second, per run.
        "cores service": med([x["cpu_ms_per_request"]["holdfast"] * r["requests_per_s"] / 1000 for r, x in zip(rs, c)]),
        "cores postgres": med([x["cpu_ms_per_request"]["postgres"] * r["requests_per_s"] / 1000 for r, x in zip(rs, c)]),
        "cores redis": med([x["cpu_ms_per_request"]["redis"] * r["requests_per_s"] / 1000 for r, x in zip(rs, c)]),
        "WAL bytes/req": med([x["wal_bytes_per_request"] for x in c]),
        "WAL records/req": med([x["wal_records_per_request"] for x in c]),
        "commit records/req": med([x.get("write_commits_per_request") or nan for x in c]),
        "statements/req": med([s["calls"] for s in st]) if st else nan,
        "rows/req": med([s["rows"] for s in st]) if st else nan,
        "buffers/req": med([s["buffers"] for s in st]) if st else nan,
    }
    for op in sorted({op for r in rs for op in r["latency"]}):
        f[f"{op} p99 ms"] = med([r["latency"][op]["p99_ms"] for r in rs if op in r["latency"]])
    # hot-seat: the median of every stampede's p99 (issue 10's measure), and of each run's first
    # stampede alone (it also opens the load generator's connections).
    stampedes = [r["hot_seat_p99_ms_per_round"] for r in rs if r.get("hot_seat_p99_ms_per_round")]
    if stampedes:
        f["stampede p99 ms, median"] = med([x for xs in stampedes for x in xs])
        f["first stampede p99 ms"] = med([xs[0] for xs in stampedes])
        f["stampede winners, max"] = max(max(r["hot_seat_winners_per_round"]) for r in rs)
    return f


def main(args):
    runs = {}
    for arg in args:
        label, path = arg.split("=", 1)
        runs.setdefault(label, []).extend(json.loads(line) for line in open(path))
    labels = list(runs)
    figs = {label: figures(rs) for label, rs in runs.items()}
    counts = ", ".join(f"{label} {len(rs)}" for label, rs in runs.items())
    print(f"medians of alternating runs ({counts}); ratios to {labels[0]}:")
    header = "".join(f" {label[:10]:>10}" for label in labels)
    ratios = "".join(f" {label + '/' + labels[0]:>{max(8, len(label) + len(labels[0]) + 1)}}" for label in labels[1:])
    print(f"{'':26}{header}{ratios}")
    keys = [k for k in figs[labels[0]] if all(k in figs[l] for l in labels)]
    for k in keys:
        values = "".join(f" {figs[l][k]:10.3f}" for l in labels)
        base = figs[labels[0]][k]
        rel = "".join(f" {figs[l][k] / base if base else nan:{max(8, len(l) + len(labels[0]) + 1)}.2f}" for l in labels[1:])
        print(f"{k:26}{values}{rel}")
    bad = {label: [r["invariant_violations"] for r in rs if r.get("invariant_violations")] for label, rs in runs.items()}
    bad = {k: v for k, v in bad.items() if v}
    unchecked = [label for label, rs in runs.items() if any(r.get("invariant_violations") is None for r in rs)]
    print("invariants:", "VIOLATED " + str(bad) if bad else "all hold after every run",
          f"(not checked: {', '.join(unchecked)})" if unchecked else "")


if __name__ == "__main__":
    main(sys.argv[1:])
