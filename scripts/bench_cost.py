#!/usr/bin/env python3
"""Per-process CPU and Postgres counters for scripts/bench.sh (issue 10: where the work goes).

  bench_cost.py snapshot HOLDFAST_PIDS POSTMASTER_PID REDIS_PIDS DATABASE_URL > before.json
  bench_cost.py delta before.json after.json REQUESTS LOADGEN_CPU_SECONDS

CPU is utime + stime from /proc, in seconds: for Postgres, the postmaster with every child it has
reaped (cutime, cstime) plus every live child (backends, walwriter, checkpointer...), so short-lived
backends are counted too. WAL bytes (how far the WAL's write position moved), WAL records and
commits (pg_stat_database) are the whole cluster's: run nothing else on it meanwhile. WAL bytes are
also given by the table or index each record changes (pg_waldump). Statements, rows and buffers come from
pg_stat_statements (loaded by scripts/dev-env.sh), for the benchmark's database only; the delta
also lists the statements that cost the most execution time, per request.
"""
import json
import os
import subprocess
import sys

TICK = os.sysconf("SC_CLK_TCK")


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after the ")": state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based from state
    return {"ppid": int(fields[1]), "self": (int(fields[11]) + int(fields[12])) / TICK,
            "reaped": (int(fields[13]) + int(fields[14])) / TICK}


def postgres_kind(pid):
    """A Postgres child's kind, from its process title ("postgres: walwriter", "postgres: user db
    127.0.0.1(5432) idle", ...): client backends are "backends"."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "exited"
    title = title.removeprefix("postgres:").strip()
    for kind in ("walwriter", "checkpointer", "background writer", "autovacuum launcher", "autovacuum worker",
                 "logical replication launcher", "walsender", "archiver"):
        if title.startswith(kind):
            return kind
    return "backends"


def postgres_cpu(postmaster):
    """Postgres CPU seconds: in total, and by kind of process ("exited": children already reaped,
    short-lived backends and autovacuum workers among them; "postmaster": its own)."""
    root = stat(postmaster)
    if root is None:
        return 0.0, {}
    kinds = {"postmaster": root["self"], "exited": root["reaped"]}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = stat(int(entry))
            if s and s["ppid"] == postmaster:
                kind = postgres_kind(int(entry))
                kinds[kind] = kinds.get(kind, 0.0) + s["self"]
    return sum(kinds.values()), kinds


def pids(arg):
    return [int(p) for p in arg.split(",") if p]


def snapshot(holdfast, postmaster, redis, url):
    postgres_total, postgres_kinds = postgres_cpu(int(postmaster))
    counters = subprocess.run(
        ["psql", url, "-AtX", "-c",
         "select (select wal_bytes from pg_stat_wal), (select wal_records from pg_stat_wal),"
         " (select sum(xact_commit) from pg_stat_database), pg_current_wal_insert_lsn()"],
        capture_output=True, text=True, check=True).stdout.strip().split("|")
    statements = subprocess.run(
        ["psql", url, "-AtX", "-c",
         "select coalesce(json_agg(json_build_object('id', queryid::text, 'q', left(regexp_replace(query, '\\s+', ' ', 'g'), 160),"
         " 'calls', calls, 'rows', rows, 'ms', total_exec_time,"
         " 'blks', shared_blks_hit + shared_blks_read, 'dirtied', shared_blks_dirtied, 'wal', wal_bytes)), '[]')"
         " from pg_stat_statements where dbid = (select oid from pg_database where datname = current_database())"],
        capture_output=True, text=True)
    return {
        "statements": json.loads(statements.stdout) if statements.returncode == 0 else None,
        "holdfast": sum((stat(p) or {"self": 0})["self"] for p in pids(holdfast)),
        "postgres": postgres_total,
        "postgres_by_kind": postgres_kinds,
        "redis": sum((stat(p) or {"self": 0})["self"] for p in pids(redis)),
        "wal_bytes": float(counters[0]), "wal_records": float(counters[1]), "commits": float(counters[2]),
        "lsn": counters[3],
        # Relation file numbers to names, for the WAL bytes by relation.
        "relations": dict(line.split("|", 1) for line in subprocess.run(
            ["psql", url, "-AtX", "-c", "select (select oid from pg_database where datname = current_database()) || '/' || relfilenode, relname"
             " from pg_class where relfilenode <> 0"],
            capture_output=True, text=True).stdout.splitlines() if "|" in line),
    }


def lsn_bytes(lsn):
    """A pg_lsn's text form (`HI/LO`, hexadecimal) as a byte position."""
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def wal_records(start, end, requests):
    """WAL records per request by type (pg_waldump --stats=record), when BENCH_PG_WAL names the
    cluster's pg_wal folder and pg_waldump is in BENCH_PG_BINDIR."""
    wal_dir, bindir = os.environ.get("BENCH_PG_WAL"), os.environ.get("BENCH_PG_BINDIR")
    if not (start and end and wal_dir and bindir and requests):
        return None
    out = subprocess.run([f"{bindir}/pg_waldump", "--stats=record", "-p", wal_dir, "-s", start, "-e", end],
                         capture_output=True, text=True)
    counts = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        # "Heap/HOT_UPDATE    123 ( 4.56) ..." ; skip the header and the total
        if len(parts) > 2 and "/" in parts[0] and parts[1].isdigit():
            counts[parts[0]] = round(int(parts[1]) / requests, 3)
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])) or None


def wal_by_relation(start, end, requests, relations):
    """WAL bytes per request by the relation each record changes (its first block reference;
    full-page images included), from pg_waldump's record listing; records that change no
    relation's block (commits, for instance) count under their resource manager."""
    wal_dir, bindir = os.environ.get("BENCH_PG_WAL"), os.environ.get("BENCH_PG_BINDIR")
    if not (start and end and wal_dir and bindir and requests and relations):
        return None
    out = subprocess.run([f"{bindir}/pg_waldump", "-p", wal_dir, "-s", start, "-e", end],
                         capture_output=True, text=True)
    sizes, images = {}, 0
    for line in out.stdout.splitlines():
        # "rmgr: Heap len (rec/tot): 59/ 59, tx: 737, lsn: ..., desc: ..., blkref #0: rel 1663/16384/16391 blk 0"
        try:
            rec, tot = (int(n) for n in line.split("len (rec/tot):", 1)[1].split(",", 1)[0].split("/"))
        except (IndexError, ValueError):
            continue
        # What a record carries beyond its own data is its blocks' full-page images (written at
        # the first change of a page after a checkpoint), so they are counted apart too.
        images += tot - rec
        if "blkref #0: rel " in line:
            node = "/".join(line.split("blkref #0: rel ", 1)[1].split()[0].split("/")[1:])
            name = relations.get(node, "(other relations)")
        else:
            name = "(" + line.split()[1] + ")"
        sizes[name] = sizes.get(name, 0) + tot
    per = {k: round(v / requests) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])}
    per = {k: v for k, v in per.items() if v}
    if per:
        per["(of which full-page images)"] = round(images / requests)
    return per or None


def statements_delta(before, after, requests):
    """Per request: statements, rows and buffers (pg_stat_statements), and the costliest statements."""
    if before is None or after is None or not requests:
        return None
    seen = {}
    for s in before:
        seen[s["id"]] = s
    rows = []
    for s in after:
        b = seen.get(s["id"], {})
        rows.append({k: (s[k] - b.get(k, 0)) if k not in ("id", "q") else s[k] for k in s})
    rows = [r for r in rows if r["calls"] > 0]
    total = lambda k: round(sum(r[k] for r in rows) / requests, 3)
    top = sorted(rows, key=lambda r: -r["ms"])[:8]
    return {
        "calls": total("calls"), "rows": total("rows"), "exec_ms": total("ms"), "buffers": total("blks"),
        "dirtied": total("dirtied"), "wal_bytes": total("wal"),
        "top": [{"query": r["q"], "calls": round(r["calls"] / requests, 3), "exec_ms": round(r["ms"] / requests, 4),
                 "ms_per_call": round(r["ms"] / r["calls"], 4), "wal_bytes": round(r["wal"] / requests),
                 "rows": round(r["rows"] / requests, 3)} for r in top],
    }


if __name__ == "__main__":
    if sys.argv[1] == "snapshot":
        print(json.dumps(snapshot(*sys.argv[2:6])))
    else:
        before, after = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
        requests, loadgen = float(sys.argv[4]), float(sys.argv[5])
        d = {k: after[k] - before[k] for k in before
             if k not in ("statements", "lsn", "relations", "postgres_by_kind")}
        # Postgres CPU by kind of process; a process that exited between the snapshots moves its
        # CPU to "exited", so only the sum is exact for kinds of short-lived processes.
        kinds_before, kinds_after = before.get("postgres_by_kind") or {}, after.get("postgres_by_kind") or {}
        by_kind = {k: kinds_after.get(k, 0.0) - kinds_before.get(k, 0.0) for k in set(kinds_before) | set(kinds_after)}
        # WAL bytes from the write position, not pg_stat_wal: a backend reports its counters up to
        # seconds late when idle, so the WAL of the event's setup, just before the "before"
        # snapshot, was counted against the requests (a quarter too much in a 10 s run).
        if before.get("lsn") and after.get("lsn"):
            d["wal_bytes"] = lsn_bytes(after["lsn"]) - lsn_bytes(before["lsn"])
        wal = wal_records(before.get("lsn"), after.get("lsn"), requests)
        per = lambda v, scale=1.0: round(v * scale / requests, 3) if requests else None
        print(json.dumps({
            "requests": int(requests),
            "cpu_ms_per_request": {"holdfast": per(d["holdfast"], 1000), "postgres": per(d["postgres"], 1000),
                                    "redis": per(d["redis"], 1000), "loadgen": per(loadgen, 1000)},
            "postgres_cpu_ms_per_request_by_kind": {k: per(v, 1000) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])
                                                     if per(v, 1000)},
            "wal_bytes_per_request": per(d["wal_bytes"]),
            # Counted in the WAL itself when pg_waldump is at hand (same lag as above otherwise).
            "wal_records_per_request": round(sum(wal.values()), 3) if wal else per(d["wal_records"]),
            "commits_per_request": per(d["commits"]),
            # Commit records in the WAL: transactions that wrote something (read-only ones write none).
            "write_commits_per_request": wal.get("Transaction/COMMIT") if wal else None,
            "wal_records_by_type_per_request": wal,
            "wal_bytes_by_relation_per_request": wal_by_relation(before.get("lsn"), after.get("lsn"), requests,
                                                                 after.get("relations")),
            "statements": statements_delta(before.get("statements"), after.get("statements"), requests),
        }))
