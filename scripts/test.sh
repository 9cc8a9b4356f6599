#!/usr/bin/env bash
# Runs every test against real, throwaway dependencies:
# starts (or reuses) the Postgres cluster and Redis nodes from scripts/dev-env.sh,
# then runs the unit and HTTP tests with cargo-nextest (cargo test when nextest is absent).
# then the checks from outside (scripts/checks.sh: hadolint, kubernetes-validate, the deployment
# files started with their own settings, the OpenAPI document validated and a TypeScript client
# type-checked against it, schemathesis, promtool).
# Extra arguments go to the test runner, e.g. `scripts/test.sh concurrency` (a filtered run skips
# the checks; HOLDFAST_SKIP_CHECKS=1 skips them too).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Assign first: a failure of `up` then stops this script (set -e), instead of vanishing inside eval.
dev_env=$(scripts/dev-env.sh up)
eval "$dev_env"
export RUST_LOG=${RUST_LOG:-warn}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --profile "${NEXTEST_PROFILE:-default}" "$@"
else
  cargo test --workspace -- "$@"
fi

if [ $# -eq 0 ] && [ "${HOLDFAST_SKIP_CHECKS:-0}" != 1 ]; then
  scripts/checks.sh
fi
