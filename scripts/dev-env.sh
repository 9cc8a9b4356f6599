#!/usr/bin/env bash
# Throwaway local dependencies for holdfast: one Postgres cluster and N Redis nodes,
# on their own ports, with their data under the git-ignored .dev/ folder.
#
#   scripts/dev-env.sh up      start whatever is not running yet (installs packages if missing)
#   scripts/dev-env.sh env     print the export lines for DATABASE_URL / REDIS_URLS
#   scripts/dev-env.sh down    stop what this script started (by the PIDs it recorded)
#
# Ports: HOLDFAST_PG_PORT (default 55432), HOLDFAST_REDIS_PORTS (default "56379 56380 56381").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${HOLDFAST_DEV_DIR:-$ROOT/.dev}
PG_PORT=${HOLDFAST_PG_PORT:-55432}
REDIS_PORTS=${HOLDFAST_REDIS_PORTS:-"56379 56380 56381"}
DB_NAME=${HOLDFAST_DB_NAME:-holdfast}

log() { printf '[dev-env] %s\n' "$*" >&2; }

# A port held by something that is not Postgres must not hang psql in its handshake.
export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    log "missing $*, and apt-get is not available: install it by hand"; exit 1
  fi
  if [ "${HOLDFAST_NO_INSTALL:-0}" = 1 ]; then
    log "missing $* and HOLDFAST_NO_INSTALL=1: install it by hand"; exit 1
  fi
  log "installing $* with apt-get"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  return 1
}

ensure_packages() {
  local need=()
  pg_bindir >/dev/null || need+=(postgresql postgresql-contrib)
  command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
  # The scale-out test puts instances behind HAProxy, as docker-compose.yml does.
  command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
  # scripts/bench.sh waits on /ready with curl and summarises runs with python3.
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
  # btree_gist ships in contrib; later migrations rely on it.
  local bin; bin=$(pg_bindir)
  local share; share=$("$bin/pg_config" --sharedir 2>/dev/null || echo /usr/share/postgresql)
  if [ ! -f "$share/extension/btree_gist.control" ]; then apt_install postgresql-contrib; fi
}

# Postgres refuses to run as root: when we are root, the cluster belongs to the
# `postgres` user and lives in a folder that user can reach.
pg_user() { if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi; }
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_dir() {
  local d="$STATE/pg"
  if [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$STATE"
    # The postgres user must be able to traverse every parent of the data folder.
    if ! runuser -u postgres -- test -x "$STATE"; then
      d="${TMPDIR:-/tmp}/holdfast-pg-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
    fi
  fi
  echo "$d"
}

pg_up() {
  local bin data run
  bin=$(pg_bindir)
  data=$(pg_dir)
  run="$data/run"
  if [ ! -s "$data/data/PG_VERSION" ]; then
    log "initialising a Postgres cluster in $data"
    mkdir -p "$data"
    [ "$(id -u)" -eq 0 ] && chown "$(pg_user)" "$data"
    as_pg mkdir -p "$data/data" "$run"
    as_pg "$bin/initdb" -D "$data/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null 2>&1 \
      || as_pg "$bin/initdb" -D "$data/data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  if as_pg "$bin/pg_ctl" -D "$data/data" status >/dev/null 2>&1; then
    log "Postgres already running on port $PG_PORT"
  elif psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qAtc 'select 1' >/dev/null 2>&1; then
    # Another checkout's throwaway cluster owns the port: share it (tests use their own databases).
    log "a Postgres server already answers on port $PG_PORT: using it"
  else
    log "starting Postgres on 127.0.0.1:$PG_PORT"
    if (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; then
      log "port $PG_PORT is taken by something that is not a usable Postgres; free it or set HOLDFAST_PG_PORT"
      exit 1
    fi
    as_pg "$bin/pg_ctl" -D "$data/data" -l "$data/postgres.log" -w -t 60 start \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $run -c max_connections=400 \
          -c shared_buffers=256MB -c fsync=${HOLDFAST_PG_FSYNC:-on} -c synchronous_commit=${HOLDFAST_PG_SYNC_COMMIT:-on} \
          -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top \
          -c log_min_messages=warning" >/dev/null || {
      log "Postgres did not start; the end of $data/postgres.log:"
      tail -n 20 "$data/postgres.log" >&2 || true
      exit 1
    }
  fi
  local i
  for i in $(seq 1 100); do
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qAtc 'select 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qAtc "select 1 from pg_database where datname='$DB_NAME'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "create database \"$DB_NAME\"" >/dev/null
  fi
}

pg_down() {
  local bin data
  bin=$(pg_bindir) || return 0
  data=$(pg_dir)
  if [ -d "$data/data" ] && as_pg "$bin/pg_ctl" -D "$data/data" status >/dev/null 2>&1; then
    log "stopping Postgres"
    as_pg "$bin/pg_ctl" -D "$data/data" -m fast -w stop >/dev/null
  fi
}

redis_up() {
  local port dir
  for port in $REDIS_PORTS; do
    dir="$STATE/redis-$port"
    mkdir -p "$dir"
    if redis-cli -p "$port" ping >/dev/null 2>&1; then
      log "Redis already running on port $port"; continue
    fi
    log "starting Redis on 127.0.0.1:$port"
    # No persistence on purpose: a restarted node forgets its locks, and Postgres is the fence.
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    local i
    for i in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
}

redis_down() {
  local port pidfile
  for port in $REDIS_PORTS; do
    pidfile="$STATE/redis-$port/redis.pid"
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      log "stopping Redis on port $port"
      kill "$(cat "$pidfile")" || true
    fi
  done
}

print_env() {
  local urls="" port
  for port in $REDIS_PORTS; do urls="${urls:+$urls,}redis://127.0.0.1:$port"; done
  echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/$DB_NAME"
  echo "export HOLDFAST_ADMIN_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  echo "export REDIS_URLS=$urls"
  echo "export HOLDFAST_PG_BINDIR=$(pg_bindir)"
  echo "export HOLDFAST_PG_DATA=$(pg_dir)/data"
}

case "${1:-up}" in
  up) ensure_packages; pg_up; redis_up; print_env ;;
  env) print_env ;;
  down) redis_down; pg_down ;;
  *) echo "usage: $0 up|env|down" >&2; exit 2 ;;
esac
