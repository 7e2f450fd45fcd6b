#!/usr/bin/env bash
# Gateway overhead benchmark: starts the test peers (moto, server-everything, the Python echo
# server) like scripts/test-all.sh, runs `cargo bench -p e2e --bench gateway`, and stops every
# peer it started on exit (failure and Ctrl-C included).
#
#   scripts/bench.sh                          300 sequential + 300 concurrent calls per path
#   MCPGW_BENCH_CALLS=1000 MCPGW_BENCH_CONCURRENCY=16 scripts/bench.sh
#
# Prints the tables and writes $CARGO_TARGET_DIR/bench/gateway.json. What the figures mean:
# docs/performance.md. The bench profile inherits the release profile (fat LTO,
# codegen-units=1): the first run compiles the workspace in release, several minutes on 2 cores.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MCPGW_CACHE:-$HOME/.cache/mcp-gateway}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
export MCPGW_CACHE=$CACHE

# peers_setup / peers_start / peers_stop, sourced so the peers are this shell's children and
# the EXIT trap can stop and reap them.
# shellcheck source=scripts/peers.sh
. "$ROOT/scripts/peers.sh"

RUN=""
cleanup() {
  local rc=$?
  set +e
  trap - INT TERM HUP
  if [ -n "$RUN" ]; then
    peers_stop "$RUN"
    if [ "$rc" -eq 0 ]; then rm -rf "$RUN"; else echo "----- peer logs kept in $RUN"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

cd "$ROOT"
peers_setup
RUN=$(mktemp -d "${TMPDIR:-/tmp}/mcpgw-bench.XXXXXX")
peers_start "$RUN"
# shellcheck disable=SC1091
. "$RUN/env"

# Read-only: which commit the figures belong to.
MCPGW_BENCH_GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
export MCPGW_BENCH_GIT_REV

cargo bench -p e2e --bench gateway "$@"
echo "==> results: $CARGO_TARGET_DIR/bench/gateway.json"
