#!/usr/bin/env bash
# Lints the SAM template offline: cfn-lint always, and `sam validate --lint` when the SAM CLI is
# installed in its own venv ($CACHE/sam-venv; it pins a different boto3 than the test tools).
# Both must pass without findings. No AWS account is used: the credentials are dummies.
#
#   scripts/lint-infra.sh            # from anywhere; CACHE=${MCPGW_CACHE:-~/.cache/mcp-gateway}
set -euo pipefail

cd "$(dirname "$0")/.."
CACHE=${MCPGW_CACHE:-$HOME/.cache/mcp-gateway}
TEMPLATE=infra/template.yaml

if [ -x "$CACHE/venv/bin/cfn-lint" ]; then
    CFN_LINT=$CACHE/venv/bin/cfn-lint
elif command -v cfn-lint >/dev/null; then
    CFN_LINT=$(command -v cfn-lint)
else
    echo "lint-infra: cfn-lint not found (pip install cfn-lint aws-sam-translator into $CACHE/venv)" >&2
    exit 2
fi

# Offline and anonymous: fixed region, dummy credentials, no instance metadata, no telemetry.
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
unset AWS_PROFILE AWS_SESSION_TOKEN
export AWS_EC2_METADATA_DISABLED=true SAM_CLI_TELEMETRY=0

echo "== cfn-lint $("$CFN_LINT" --version | awk '{print $2}') $TEMPLATE"
"$CFN_LINT" -- "$TEMPLATE"
echo "cfn-lint: clean"

SAM=$CACHE/sam-venv/bin/sam
if [ -x "$SAM" ]; then
    echo "== sam validate --lint $TEMPLATE"
    "$SAM" validate --lint --template "$TEMPLATE"
elif [ "${MCPGW_REQUIRE_PEERS:-}" = 1 ] || [ "${CI:-}" = true ]; then
    echo "lint-infra: $SAM not installed, and the test run requires it (scripts/peers.sh setup)" >&2
    exit 2
else
    echo "== sam validate skipped: $SAM not installed" \
        "(python3 -m venv $CACHE/sam-venv && $CACHE/sam-venv/bin/pip install aws-sam-cli==1.170.0)"
fi
