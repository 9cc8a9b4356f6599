#!/usr/bin/env bash
# Stream fan-out under write load (issue 12): CLIENTS Server-Sent Events clients on one event's
# stream, on one release instance, while the load generator's spread-holds runs on that event.
# Reports the instance's peak RSS and CPU, and the delay from each change's statement to its
# receipt by the clients (p50 / p90 / p99).
#
#   bench/streams.sh [clients] [seconds] [load clients]      e.g. bench/streams.sh 10000 20 16
#
# HOLDFAST_BIN=path runs that holdfast binary instead of building this tree's (for A/B pairs;
# the load generator and stream clients still come from target/release).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
clients=${1:-10000}; seconds=${2:-20}; load_clients=${3:-16}
bin=${HOLDFAST_BIN:-target/release/holdfast}
if [ -z "${HOLDFAST_BIN:-}" ]; then
  cargo build --release --quiet -p holdfast -p holdfast-loadgen --bins >&2
fi
dev_env=$(scripts/dev-env.sh up); eval "$dev_env"
base_url=${DATABASE_URL%/*}
psql "$base_url/postgres" -qAtX -c "drop database if exists holdfast_streams with (force)" -c "create database holdfast_streams"
export JWT_SECRET=bench-secret-0123456789abcdef
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work=$(mktemp -d)
DATABASE_URL=$base_url/holdfast_streams LISTEN_ADDR=127.0.0.1:$port REDIS_KEY_PREFIX="streams:$$:" \
  RATE_LIMIT_PER_IP=0 RATE_LIMIT_PER_USER=0 HOLD_MAX_LIVE_PER_USER=0 STREAM_MAX_CLIENTS=$((clients + 100)) \
  HTTP_MAX_CONNECTIONS=$((clients + 1000)) RUST_LOG=warn "$bin" serve > "$work/holdfast.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.2; done
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
# Once the load generator has made its event: connect the stream clients to it, then let the load start.
cat > "$work/after-setup.sh" <<HOOK
event=\$(psql "$base_url/holdfast_streams" -qAtX -c "select id from events order by created_at desc limit 1")
target/release/stream_clients --addr 127.0.0.1:$port --event "\$event" --clients $clients --seconds $((seconds + 3)) \
  --ready-file "$work/ready" > "$work/streams.json" 2> "$work/streams.log" &
for _ in \$(seq 1200); do [ -f "$work/ready" ] && break; sleep 0.1; done
awk '{print \$14 + \$15}' /proc/$pid/stat > "$work/ticks-before"
HOOK
target/release/holdfast-loadgen --json --scenario spread --hold-only --targets "http://127.0.0.1:$port" \
  --clients "$load_clients" --duration-secs "$seconds" --seats 20000 --after-setup "bash $work/after-setup.sh" \
  --database-url "$base_url/holdfast_streams" \
  > "$work/load.json"
after=$(ticks)
# The instance's own share of the delay: from the change to the tailer's read (its histogram).
curl -s "http://127.0.0.1:$port/metrics" > "$work/metrics.txt" || true
for _ in $(seq 300); do [ -s "$work/streams.json" ] && break; sleep 0.1; done
hz=$(getconf CLK_TCK)
python3 - "$work" "$pid" "$after" "$hz" "$seconds" <<'PY'
import json, sys
work, pid, after, hz, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
before = int(open(f"{work}/ticks-before").read())
streams = json.load(open(f"{work}/streams.json"))
load = json.load(open(f"{work}/load.json"))
status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
# Upper bound of the bucket holding each quantile of holdfast_stream_fanout_delay_seconds.
buckets = []
for line in open(f"{work}/metrics.txt"):
    if line.startswith("holdfast_stream_fanout_delay_seconds_bucket"):
        le = line.split('le="', 1)[1].split('"', 1)[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
buckets.sort()
def bucket_ms(q):
    total = buckets[-1][1] if buckets else 0
    for le, count in buckets:
        if total and count >= q * total:
            return le * 1000
    return None
print(json.dumps({
    "stream_clients": streams,
    "holds_per_s": load.get("holds_per_s") or load.get("requests_per_s"),
    # A change's delay counts from its transaction's start: a slow request's own time is in it.
    "request_latency_ms": {op: {"p50": l["p50_ms"], "p99": l["p99_ms"], "max": l["max_ms"]} for op, l in load.get("latency", {}).items()},
    "tailer_read_delay_ms_at_most": {"p50": bucket_ms(0.5), "p99": bucket_ms(0.99)},
    "holdfast_cpu_cores": (after - before) / hz / seconds,
    "holdfast_rss_mb": int(status["VmRSS"].split()[0]) / 1024,
    "holdfast_peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
}, indent=1))
PY
cat "$work/streams.log" >&2
