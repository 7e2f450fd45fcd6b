#!/usr/bin/env bash
# The README's run command: the whole gateway in one process (functions/local), on
# http://127.0.0.1:8787 with an embedded SQLite store.
#
#   scripts/local.sh                 cargo run -p local
#   scripts/local.sh --help          its settings (environment variables)
#
# It is `cargo run -p local` with the build folder the test command uses
# (~/.cache/mcp-gateway/target, outside the clone; CARGO_TARGET_DIR overrides it), so running
# the gateway and then scripts/test-all.sh compiles the dependencies once, not twice. Plain
# `cargo run -p local` works too, building into ./target.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MCPGW_CACHE:-$HOME/.cache/mcp-gateway}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
# --manifest-path, not cd: the gateway's data folder (./.mcp-gateway) is relative to where
# you run it, as with cargo run.
exec cargo run --quiet --manifest-path "$ROOT/Cargo.toml" -p local -- "$@"
