#!/usr/bin/env bash
# Cold starts of the four Lambda functions, measured on this machine under a fake Lambda
# Runtime API (scripts/fake_lambda_runtime.py, loopback only):
#
#   scripts/cold-start.sh                 build the release zips, then measure
#   MCPGW_COLD_SKIP_BUILD=1 scripts/cold-start.sh      reuse the zips already built
#   MCPGW_COLD_RUNS=7 MCPGW_COLD_WARM=50  cold starts per scenario; warm events after them
#   scripts/cold-start.sh --smoke         every scenario once, on the debug binaries (the ones
#                                         the Lambda-mode tests build): proves the script and
#                                         its driver still work, measures nothing worth keeping;
#                                         scripts/test-all.sh runs it
#
# 1. builds the zips once with scripts/lambda-build.sh (cargo lambda build --release --x86-64;
#    arm64 cannot be built here) and unpacks each bootstrap binary, exactly what would deploy;
# 2. starts moto and the Python echo MCP server (scripts/peers.sh), stops them on exit;
# 3. per function and scenario, starts the binary MCPGW_COLD_RUNS times, each a new process
#    serving one event: init = spawn until the first GET .../invocation/next, first request =
#    event handed over until its response is POSTed; then one process serving 1 + WARM events
#    for the warm handler duration. Scenarios: GET /healthz (REST API proxy event) for the three
#    HTTP functions, a tools/call POST through mcp-proxy to the echo server with a real API key
#    (DynamoDB and Secrets Manager in moto), and a scheduled event for token-refresh;
# 4. prints a table (zip sizes vs 6 MB, init vs 60 ms) and writes
#    $CARGO_TARGET_DIR/bench/cold-start.json (cold-start-smoke.json for --smoke).
#    docs/performance.md explains the figures.
set -euo pipefail

SMOKE=0
if [ "${1:-}" = --smoke ]; then
  SMOKE=1
  shift
fi
[ $# -eq 0 ] || { echo "usage: scripts/cold-start.sh [--smoke]" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MCPGW_CACHE:-$HOME/.cache/mcp-gateway}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
export MCPGW_CACHE=$CACHE
FUNCTIONS=(mcp-proxy admin-api oauth-callback token-refresh)

# shellcheck source=scripts/peers.sh
. "$ROOT/scripts/peers.sh"

RUN=""
cleanup() {
  local rc=$?
  set +e
  trap - INT TERM HUP
  if [ -n "$RUN" ]; then
    peers_stop "$RUN"
    if [ "$rc" -eq 0 ]; then rm -rf "$RUN"; else echo "----- logs kept in $RUN"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

cd "$ROOT"
peers_setup

zips=$CARGO_TARGET_DIR/lambda
RUN=$(mktemp -d "${TMPDIR:-/tmp}/mcpgw-cold.XXXXXX")
if [ "$SMOKE" = 1 ]; then
  # The debug binaries, each built alone as `cargo lambda watch` (and so the Lambda-mode tests)
  # builds it: together, cargo could unify dependency features differently and compile again.
  echo "==> smoke run: the debug function binaries"
  for f in "${FUNCTIONS[@]}"; do
    cargo build --quiet --bin "$f"
    mkdir -p "$RUN/bin/$f"
    ln -s "$CARGO_TARGET_DIR/debug/$f" "$RUN/bin/$f/bootstrap"
  done
  runs=(--runs 1 --warm 2 --out "$CARGO_TARGET_DIR/bench/cold-start-smoke.json")
else
  if [ "${MCPGW_COLD_SKIP_BUILD:-0}" != 1 ]; then
    echo "==> building the release zips (scripts/lambda-build.sh)"
    # A size over the limit makes it exit 1 after printing the table: measure anyway, the size
    # verdict is in the report.
    MCPGW_LAMBDA_ARCH=x86_64 "$ROOT/scripts/lambda-build.sh" || echo "==> lambda-build.sh exited $?"
  fi
  for f in "${FUNCTIONS[@]}"; do
    [ -f "$zips/$f/bootstrap.zip" ] || { echo "missing $zips/$f/bootstrap.zip" >&2; exit 1; }
    mkdir -p "$RUN/bin/$f"
    unzip -q -o "$zips/$f/bootstrap.zip" -d "$RUN/bin/$f"
    chmod +x "$RUN/bin/$f/bootstrap"
  done
  runs=(--runs "${MCPGW_COLD_RUNS:-7}" --warm "${MCPGW_COLD_WARM:-50}" --experiments
        --zip-dir "$zips" --out "$CARGO_TARGET_DIR/bench/cold-start.json")
fi

echo "==> starting peers"
peers_start "$RUN"
# shellcheck disable=SC1091
. "$RUN/env"

mkdir -p "$CARGO_TARGET_DIR/bench"
echo "==> measuring (${runs[*]})"
"$VENV/bin/python" "$ROOT/scripts/fake_lambda_runtime.py" \
  --bin-dir "$RUN/bin" --events-dir "$ROOT/tests/events" --log "$RUN/functions.log" "${runs[@]}"
