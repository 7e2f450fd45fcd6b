#!/usr/bin/env bash
# A headless stand-in for a web browser, for OAuth clients that open one (mcp-remote runs
# `$BROWSER URL` through xdg-open): opens URL and follows every redirect with a cookie jar,
# through the auto-approving authorization server (tests/peers/oidc_provider.mjs) to the
# client's loopback redirect URI, which thereby receives the authorization code.
#
# Usage: BROWSER=tests/peers/fake-browser.sh some-oauth-client ...
#   FAKE_BROWSER_LOG  file to append one line per visit to: "<status> <final url> <- <url>"
#
# A client may open the browser before its callback server listens (mcp-remote does): a
# refused connection is retried (the whole visit, as a user would reload) for up to 30 s.
#
#   FAKE_BROWSER_DETACH=1  return at once and visit in the background, as a real browser does:
#                     clients that wait for the browser command to exit before they start their
#                     callback server (fastmcp, through Python's webbrowser) need it
set -uo pipefail
url=${1:?usage: fake-browser.sh URL}
if [ "${FAKE_BROWSER_DETACH:-}" = 1 ]; then
  FAKE_BROWSER_DETACH= "$0" "$url" < /dev/null > /dev/null 2>&1 &
  exit 0
fi
jar=$(mktemp)
trap 'rm -f "$jar"' EXIT
out=$(curl -sS -L --max-redirs 20 --max-time 15 --retry 30 --retry-delay 1 --retry-connrefused \
  --retry-max-time 30 -c "$jar" -b "$jar" -o /dev/null -w '%{http_code} %{url_effective}' "$url" 2>&1)
rc=$?
printf '%s <- %s (curl exit %s)\n' "${out//$'\n'/ }" "$url" "$rc" >> "${FAKE_BROWSER_LOG:-/dev/null}"
exit $rc
