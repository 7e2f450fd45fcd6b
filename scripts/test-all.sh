#!/usr/bin/env bash
# The one command that runs every test of the project, locally and in CI:
#
#   scripts/test-all.sh [extra cargo test arguments]     e.g. scripts/test-all.sh -- --nocapture
#
# 1. installs the pinned test peers once into a cache outside the repo (skipped when present),
# 2. starts moto, server-everything, the Python echo and conformance MCP servers and an OIDC
#    provider on free loopback ports (and installs Debian's chromium for the browser tests),
# 3. lints infra/template.yaml (cfn-lint, sam validate --lint), then `cargo test --workspace`,
# 4. runs a short smoke of every script the README and docs/performance.md tell people to run
#    (scripts/local.sh, bench.sh, cold-start.sh; with CI=true also lambda-build.sh and fuzz.sh),
# 5. stops every process it started, whatever happens (failure, Ctrl-C).
#
# Tests read the peers' addresses from MCPGW_TEST_* and, because MCPGW_REQUIRE_PEERS=1, fail
# instead of skipping when one is missing: a green run here means every test really ran.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MCPGW_CACHE:-$HOME/.cache/mcp-gateway}
# A shared target dir outside the repo: a warm build cache across clones and worktrees, and
# the one scripts/local.sh (the README's run command) builds into too.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
export MCPGW_CACHE=$CACHE
# Test artifacts kept after the run (the console's browser screenshots), outside the clone.
export MCPGW_ARTIFACTS=${MCPGW_ARTIFACTS:-$CACHE/artifacts}

# peers_setup / peers_start / peers_stop. Sourced rather than executed so the peers are this
# shell's children: the EXIT trap below can then stop and reap them.
# shellcheck source=scripts/peers.sh
. "$ROOT/scripts/peers.sh"

T0=$EPOCHREALTIME
RUN=""
FAILED=()

elapsed() { # seconds since $1 (an $EPOCHREALTIME), one decimal
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

cleanup() {
  local rc=$?
  set +e
  trap - INT TERM HUP
  if [ -n "$RUN" ]; then
    peers_stop "$RUN"
    if [ "$rc" -gt 128 ]; then
      # Interrupted by the user (or CI's timeout): the logs are not the point, just keep them.
      echo "----- interrupted; peer logs kept in $RUN"
    elif [ "$rc" -ne 0 ]; then
      # The peers' side of a failure (a 500 from moto, a Python traceback) is only in their logs.
      for f in "$RUN"/*.log; do
        [ -e "$f" ] || continue
        echo "----- $(basename "$f") (last 60 lines; full log: $f)"
        tail -n 60 "$f"
      done
      echo "----- peer logs kept in $RUN"
    else
      rm -rf "$RUN"
    fi
  fi
  if [ "$rc" -eq 0 ]; then
    echo "==> all tests passed in $(elapsed "$T0")s"
  else
    echo "==> FAILED (exit $rc)${FAILED:+: ${FAILED[*]}} after $(elapsed "$T0")s"
  fi
  exit "$rc"
}
trap cleanup EXIT
# Turn signals into an ordinary exit so the EXIT trap runs (and the exit code says why).
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# step NAME CMD...: runs one stage, times it, and records a failure without stopping, so one
# run reports every failing stage.
step() {
  local name=$1 t0=$EPOCHREALTIME rc=0
  shift
  echo "==> $name"
  "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "==> $name: ok ($(elapsed "$t0")s)"
  else
    echo "==> $name: FAILED, exit $rc ($(elapsed "$t0")s)"
    FAILED+=("$name")
  fi
}

cd "$ROOT"

echo "==> peers: install check"
peers_setup

RUN=$(mktemp -d "${TMPDIR:-/tmp}/mcpgw-test.XXXXXX")
echo "==> peers: start"
peers_start "$RUN"
# shellcheck disable=SC1091
. "$RUN/env"
env | grep -E '^(MCPGW_|AWS_)' | sort | sed 's/^AWS_SECRET_ACCESS_KEY=.*/AWS_SECRET_ACCESS_KEY=***/; s/^/    /'

# One crypto stack (aws-lc-rs): ring or OpenSSL creeping in through a new dependency's default
# features would double the binaries' crypto code and what needs auditing.
one_crypto_stack() {
  local found=""
  for crate in ring openssl-sys; do
    if cargo tree --workspace -e normal -i "$crate" 2>/dev/null | grep -q .; then found="$found $crate"; fi
  done
  [ -z "$found" ] || { echo "found$found in the dependency tree: see README, Crypto stack" >&2; return 1; }
}
step "one crypto stack (no ring, no openssl)" one_crypto_stack
# One integration-test binary per crate (tests/it/main.rs, a module per file): every other file
# cargo finds in a crate's tests/ folder is a binary of its own that links the whole gateway
# again (25 of them once: minutes of linking, gigabytes of target folder).
one_test_binary_per_crate() {
  local crate f extra=()
  for crate in shared functions/* tests; do
    for f in "$crate"/tests/*.rs "$crate"/tests/*/main.rs; do
      [ -e "$f" ] && [ "$f" != "$crate/tests/it/main.rs" ] && extra+=("$f")
    done
  done
  [ ${#extra[@]} -eq 0 ] || { echo "move into tests/it/ as modules: ${extra[*]}" >&2; return 1; }
}
step "one integration-test binary per crate" one_test_binary_per_crate
# cfn-lint and `sam validate --lint`, both offline.
step "lint infra/template.yaml" "$ROOT/scripts/lint-infra.sh"

# --no-fail-fast: run every test binary even when an earlier one fails.
step "cargo test --workspace" cargo test --workspace --no-fail-fast "$@"

# Every script the README and docs/performance.md tell people to run, run briefly, so none can
# rot unnoticed (cold-start.sh broke when gateway sessions changed: nothing ran it). Each starts
# and stops its own peers, as it does for its users; bench and cold-start reuse the build above.
step "smoke: scripts/local.sh --version" "$ROOT/scripts/local.sh" --version
step "smoke: scripts/bench.sh --smoke" "$ROOT/scripts/bench.sh" --smoke
step "smoke: scripts/cold-start.sh --smoke" "$ROOT/scripts/cold-start.sh" --smoke
# These two need builds nothing else here makes (release zips cross-built by cargo-lambda;
# nightly with AddressSanitizer), minutes each on two cores: CI runs them, and so does
# MCPGW_SMOKE_ALL=1.
if [ "${CI:-}" = true ] || [ "${MCPGW_SMOKE_ALL:-0}" = 1 ]; then
  step "smoke: scripts/lambda-build.sh" "$ROOT/scripts/lambda-build.sh"
  step "smoke: scripts/fuzz.sh 1" "$ROOT/scripts/fuzz.sh" 1
else
  echo "==> smoke: scripts/lambda-build.sh, scripts/fuzz.sh: skipped" \
    "(CI=true or MCPGW_SMOKE_ALL=1 runs them)"
fi

echo "==> browser screenshots: $MCPGW_ARTIFACTS"
[ ${#FAILED[@]} -eq 0 ]
