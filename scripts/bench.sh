#!/usr/bin/env bash
# Gateway overhead benchmark: starts the test peers (moto, the Python echo server, ...) like
# scripts/test-all.sh, runs `cargo bench -p e2e --bench gateway`, and stops every peer it
# started on exit (failure and Ctrl-C included).
#
# The bench calls the `echo` tool of the same upstream directly and through the local gateway,
# in alternating rounds of one run, at each concurrency; upstreams: a minimal in-process MCP
# echo server and the Python MCP SDK server (JSON mode). Knobs, with their defaults:
#
#   MCPGW_BENCH_ROUNDS=10         rounds; each runs the calls direct and through the gateway,
#                                 the order flipping every round
#   MCPGW_BENCH_CALLS=1000        calls per path per round
#   MCPGW_BENCH_CONCURRENCY=1,32  calls in flight, one series per value
#   MCPGW_BENCH_WARMUP=200        warm-up calls per path before each series
#   MCPGW_BENCH_ERAS=session,2026-07-28   client eras (initialize + session id; server/discover
#                                 + per-request _meta)
#   MCPGW_BENCH_GATEWAY_WORKERS=<cores>   worker threads of the gateway's runtime
#   MCPGW_BENCH_RATE_LIMIT=1      one enforced per-user rate-limit rule matches every measured
#                                 call (0: none); audit records are written either way
#
#   scripts/bench.sh
#   MCPGW_BENCH_ROUNDS=20 MCPGW_BENCH_CONCURRENCY=1,8,32 scripts/bench.sh
#   scripts/bench.sh --smoke      the same against the same peers, as a debug build with 2 rounds
#                                 of 40 calls (`cargo test --bench gateway`): proves the script and
#                                 the bench still work, no figure worth keeping; scripts/test-all.sh
#                                 runs it (results in gateway-smoke.json)
#
# Prints the tables and writes $CARGO_TARGET_DIR/bench/gateway.json. What the figures mean:
# docs/performance.md. The bench profile inherits the release profile (fat LTO,
# codegen-units=1): the first run compiles the workspace in release, several minutes on 2 cores.
set -euo pipefail

SMOKE=0
if [ "${1:-}" = --smoke ]; then
  SMOKE=1
  shift
fi

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
# The Python echo server's pid: the bench reads its CPU time per call from /proc.
MCPGW_BENCH_ECHO_PY_PID=$(cat "$RUN/echo.pid")
export MCPGW_BENCH_ECHO_PY_PID

# Read-only: which commit the figures belong to, "+dirty" when the tree has changes.
MCPGW_BENCH_GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git --no-optional-locks -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then
  MCPGW_BENCH_GIT_REV="$MCPGW_BENCH_GIT_REV+dirty"
fi
export MCPGW_BENCH_GIT_REV

if [ "$SMOKE" = 1 ]; then
  # --workspace (the only `gateway` bench is e2e's): features resolved as for
  # `cargo test --workspace`, so the smoke reuses the test build instead of compiling again.
  cargo test --workspace --bench gateway "$@"
  echo "==> results: $CARGO_TARGET_DIR/bench/gateway-smoke.json"
else
  cargo bench -p e2e --bench gateway "$@"
  echo "==> results: $CARGO_TARGET_DIR/bench/gateway.json"
fi
