#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (nightly toolchain, libFuzzer):
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default 60 s, every target
#
# Installs cargo-fuzz once (cargo install, into ~/.cargo/bin) and builds into a target folder
# outside the clone. Crash inputs land in fuzz/artifacts/TARGET/ and the corpus grows in
# fuzz/corpus/TARGET/ (both ignored by git). Exits non-zero when any target found a crash.
# The same properties run on stable inside `cargo test` as proptest properties; this script is
# the deeper, coverage-guided pass (see README, Security model).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MCPGW_CACHE:-$HOME/.cache/mcp-gateway}
SECS=${1:-60}
shift || true
export CARGO_TARGET_DIR=${MCPGW_FUZZ_TARGET_DIR:-$CACHE/fuzz-target}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
cd "$ROOT/fuzz"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS < <(cargo +nightly fuzz list)

failed=()
for t in "${TARGETS[@]}"; do
  echo "==> fuzz $t for ${SECS}s"
  mkdir -p "corpus/$t"
  # rss_limit: libFuzzer's RSS grows with the corpus; bound it so a run cannot take the box.
  if ! cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 \
      -print_final_stats=1 2>&1 | tail -n 25; then
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "==> crashes in: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "==> no crashes in ${#TARGETS[@]} targets"
