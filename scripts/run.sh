#!/usr/bin/env bash
# Runs holdfast locally with working defaults: starts a throwaway Postgres cluster and three
# Redis nodes if they are not running (installing them with apt-get when missing), applies
# migrations, prints how to mint a dev token, and serves on http://127.0.0.1:8080.
# Any variable from .env.example can be overridden in the environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Assign first: a failure of `up` then stops this script (set -e), instead of vanishing inside eval.
dev_env=$(scripts/dev-env.sh up)
eval "$dev_env"
export JWT_SECRET=${JWT_SECRET:-local-dev-secret-change-me}
export LISTEN_ADDR=${LISTEN_ADDR:-127.0.0.1:8080}
profile=${HOLDFAST_PROFILE:-release}
flag=$([ "$profile" = release ] && echo --release || true)

# The README's quick start reads ids out of the answers with jq.
if ! command -v jq >/dev/null 2>&1; then
  echo "[run] installing jq with apt-get" >&2
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq jq >/dev/null; else sudo apt-get update -qq && sudo apt-get install -y -qq jq >/dev/null; fi
fi

cargo build $flag --bin holdfast
bin=target/$profile/holdfast
"$bin" migrate

cat <<MSG

holdfast is starting on http://$LISTEN_ADDR
  mint a dev token:   JWT_SECRET=$JWT_SECRET $bin token --sub alice [--admin]
  try it:             the README's quick start (create an event, hold a seat, confirm it)
  health / readiness: curl http://$LISTEN_ADDR/health ; curl http://$LISTEN_ADDR/ready
  stop:               Ctrl-C (the Postgres and Redis processes keep running; scripts/dev-env.sh down stops them)

MSG
exec "$bin" serve
