#!/usr/bin/env python3
"""The runs of scripts/bench-parts.sh: each part in turn, ROUNDS times, then the medians.

  bench_parts.py URL POSTMASTER_PID ROUNDS SECONDS CLIENTS SEATS PART...
A PART is an SQL file, or files joined by `+` (run one after the other as one pgbench script).
"""
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from bench_cost import postgres_cpu

url, postmaster, rounds, seconds, clients, seats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
parts = sys.argv[7:]
pgbench = os.path.join(os.environ.get("BENCH_PG_BINDIR", ""), "pgbench")


def sql(query):
    return subprocess.run(["psql", url, "-AtX", "-c", query], capture_output=True, text=True, check=True).stdout.strip()


def wal():
    return int(float(sql("select pg_current_wal_insert_lsn() - '0/0'")))


def run(part):
    sql("checkpoint")
    wal0, cpu0 = wal(), postgres_cpu(postmaster)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([pgbench, "-n", "-M", "prepared", "-c", clients, "-j", "2", "-T", seconds,
                          "-D", f"nseats={seats}", "-D", "ttl=1", "-f", scripts[part], url],
                         capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # A backend's CPU is counted once the postmaster has reaped it: wait until pgbench's are gone.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sql("select count(*) from pg_stat_activity where application_name = 'pgbench'") != "0":
        time.sleep(0.05)
    time.sleep(0.2)
    cpu1, wal1 = postgres_cpu(postmaster), wal()
    done = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    if out.returncode != 0 or not done or int(done.group(1)) == 0 or (failed and int(failed.group(1))):
        sys.exit(f"{part} failed:\n{out.stdout[-800:]}\n{out.stderr[-1500:]}")
    n = int(done.group(1))
    client = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    tps = float(re.search(r"tps = ([0-9.]+)", out.stdout).group(1))
    return {"tps": tps, "postgres_ms": 1000 * (cpu1 - cpu0) / n, "pgbench_ms": 1000 * client / n, "wal": (wal1 - wal0) / n}


def script(part):
    """A part is a file, or files joined by `+`, run one after the other as one pgbench script."""
    if "+" not in part:
        return part
    path = os.path.join(tempfile.mkdtemp(prefix="bench-parts-"), "part.sql")
    with open(path, "w") as out:
        for f in part.split("+"):
            out.write(open(f).read() + "\n")
    return path


def label(part):
    files = [os.path.basename(f) for f in part.split("+") if not f.endswith("/commit.sql")]
    return files[0] if len(files) == 1 else f"{files[0]} + {files[-1]}" if len(files) == 2 else f"{files[0]} + .. + {files[-1]}"


scripts = {p: script(p) for p in parts}
results = {p: [] for p in parts}
for r in range(1, rounds + 1):
    for p in parts:
        results[p].append(run(p))
        x = results[p][-1]
        print(f"round {r} {label(p):38} tps {x['tps']:7.0f}  postgres {x['postgres_ms']:.3f} ms"
              f"  pgbench {x['pgbench_ms']:.3f} ms  WAL {x['wal']:.0f} B", file=sys.stderr, flush=True)
print(f"\nmedians over {rounds} rounds, {clients} clients, {seconds} s per run, per transaction:")
base = None
for p in parts:
    med = lambda k: statistics.median(x[k] for x in results[p])
    pg = med("postgres_ms")
    base = base or pg
    print(f"  {label(p):38} tps {med('tps'):7.0f}  postgres {pg:.3f} ms ({pg / base:.2f}x part 1)"
          f"  pgbench {med('pgbench_ms'):.3f} ms  WAL {med('wal'):.0f} B")
