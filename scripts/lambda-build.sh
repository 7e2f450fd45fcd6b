#!/usr/bin/env bash
# Builds the four Lambda functions with cargo-lambda as deployable zips and checks their size.
#
#   scripts/lambda-build.sh
#
# Output: $CARGO_TARGET_DIR/lambda/<function>/bootstrap.zip, then a size table; fails if any zip
# exceeds MCPGW_MAX_ZIP_MB (default 6; 1 MB = 1,048,576 bytes here).
#
# Architecture: x86_64 by default (MCPGW_LAMBDA_ARCH=x86_64|arm64). The template's default is
# arm64, but machines without the aarch64 Rust standard library (such as this project's
# sandbox, which cannot download it) can only build x86_64: deploy such a build with
# `Architecture=x86_64`.
set -euo pipefail

cd "$(dirname "$0")/.."
CACHE=${MCPGW_CACHE:-$HOME/.cache/mcp-gateway}
# cargo-lambda (and the zig it brings) live in the cache venv.
export PATH="$CACHE/venv/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}

FUNCTIONS=(mcp-proxy oauth-callback token-refresh admin-api)
MAX_MB=${MCPGW_MAX_ZIP_MB:-6}
MAX_BYTES=$((MAX_MB * 1024 * 1024))

case "${MCPGW_LAMBDA_ARCH:-x86_64}" in
    x86_64) ARCH_FLAG=--x86-64 ;;
    arm64) ARCH_FLAG=--arm64 ;;
    *) echo "lambda-build: MCPGW_LAMBDA_ARCH must be x86_64 or arm64" >&2; exit 2 ;;
esac

command -v cargo-lambda >/dev/null || {
    echo "lambda-build: cargo-lambda not found (pip install cargo-lambda into $CACHE/venv)" >&2
    exit 2
}

# A stale zip must never be reported as this build's result.
for f in "${FUNCTIONS[@]}"; do
    rm -f "$CARGO_TARGET_DIR/lambda/$f/bootstrap.zip"
done

packages=()
for f in "${FUNCTIONS[@]}"; do
    packages+=(-p "$f")
done
echo "== cargo lambda build --release $ARCH_FLAG --output-format zip ${packages[*]}"
start=$SECONDS
cargo lambda build --release "$ARCH_FLAG" --output-format zip "${packages[@]}"
echo "built in $((SECONDS - start)) s"

status=0
printf '\n%-16s %12s %8s  %s\n' function bytes MB zip
for f in "${FUNCTIONS[@]}"; do
    zip=$CARGO_TARGET_DIR/lambda/$f/bootstrap.zip
    if [ ! -f "$zip" ]; then
        printf '%-16s %12s %8s  %s\n' "$f" - - "MISSING $zip"
        status=1
        continue
    fi
    bytes=$(stat -c %s "$zip")
    mb=$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')
    verdict=""
    if [ "$bytes" -gt "$MAX_BYTES" ]; then
        verdict="  TOO LARGE (limit $MAX_MB MB)"
        status=1
    fi
    printf '%-16s %12d %8s  %s%s\n' "$f" "$bytes" "$mb" "$zip" "$verdict"
done
exit $status
