#!/usr/bin/env bash
# Test peers for the gateway: installs them once into a cache outside the repo, starts them on
# free loopback ports, and stops exactly the processes it started.
#
#   scripts/peers.sh setup           install the pinned PyPI and npm packages and Debian's
#                                    chromium (idempotent)
#   scripts/peers.sh start RUN_DIR   start moto, server-everything, the Python echo server, the
#                                    Python conformance server and the OIDC provider; writes
#                                    RUN_DIR/env (source it), RUN_DIR/*.pid, RUN_DIR/*.log
#   scripts/peers.sh stop RUN_DIR    stop the process groups recorded in RUN_DIR
#
# scripts/test-all.sh sources this file and calls peers_setup/peers_start/peers_stop itself, so
# the peers are its own children and it can reap them (no zombies left behind). To run single
# tests against live peers by hand:
#   d=$(mktemp -d); scripts/peers.sh start "$d" && . "$d/env"; cargo test -p mcpgw-shared ...
#   scripts/peers.sh stop "$d"
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The cache lives outside the repo so a fresh clone, `git clean` or another worktree reuses
# the ~1 GB of installs instead of paying minutes to reinstall them.
CACHE=${MCPGW_CACHE:-$HOME/.cache/mcp-gateway}
VENV=$CACHE/venv
NODE_DIR=$CACHE/node
PY=$VENV/bin/python
NM=$NODE_DIR/node_modules

# Pinned peers. Changing either list changes its hash, which triggers a reinstall.
PY_PINS=(
  mcp==2.3.0
  'pyjwt[crypto]==2.15.1'
  'moto[server]==5.2.5'
  boto3
  cfn-lint==1.58.0
  aws-sam-translator==1.115.0
  cargo-lambda
  # schemathesis: fuzzes the admin API from /admin/openapi.json (tests/tests/it/openapi.rs)
  schemathesis==4.32.5
  # playwright: drives the system Chromium for the browser tests (tests/clients/browser.py).
  # Only the Python package and its bundled driver: `playwright install` downloads a browser
  # build of its own, which cannot be fetched here, so the browser is Debian's (see below).
  playwright==1.65.2
  # fastmcp: one of the client matrix's clients (tests/tests/it/clients.rs)
  fastmcp==4.2.3
  # The reference parsers of the observability test (tests/tests/it/observability.rs):
  # Prometheus' text parser for /metrics, the OpenTelemetry protobuf messages for OTLP JSON,
  # and a JSON-schema validator for the published EMF schema.
  prometheus-client==0.26.0
  opentelemetry-proto==1.45.2
  jsonschema==4.26.0
)
NODE_DEPS='{
  "@modelcontextprotocol/server-everything": "2026.8.31",
  "@modelcontextprotocol/inspector-cli": "1.0.3",
  "@modelcontextprotocol/inspector": "2.12.0",
  "@modelcontextprotocol/sdk": "1.32.2",
  "oidc-provider": "9.13.3",
  "jose": "^6",
  "mcp-remote": "0.15.1",
  "@modelcontextprotocol/conformance": "0.1.16"
}'

READY_TIMEOUT=${MCPGW_PEER_TIMEOUT:-30}

peers_log() { printf '[peers] %s\n' "$*" >&2; }
peers_hash_of() { sha256sum | cut -d' ' -f1; }

# --- setup -----------------------------------------------------------------------------------

# True when every pin is installed in the venv at the pinned version, extras included. Used
# when the stamp is missing or stale, so an install made by hand (or by an older script) with
# the right versions is adopted instead of being reinstalled.
peers_py_pins_satisfied() {
  "$PY" - "${PY_PINS[@]}" <<'PYEOF'
import re, sys
from importlib.metadata import PackageNotFoundError, distribution

def installed(name):
    try:
        return distribution(name)
    except PackageNotFoundError:
        return None

for spec in sys.argv[1:]:
    m = re.fullmatch(r"([A-Za-z0-9._-]+)(?:\[([^\]]*)\])?(?:==(.+))?", spec)
    name, extras, want = m.group(1), m.group(2), m.group(3)
    dist = installed(name)
    if dist is None or (want and dist.version != want):
        sys.exit(f"{spec}: have {dist.version if dist else 'nothing'}")
    # An extra is satisfied when every requirement it adds is installed.
    for extra in filter(None, (extras or "").split(",")):
        for req in dist.requires or []:
            if re.search(r"extra\s*==\s*['\"]%s['\"]" % re.escape(extra.strip()), req):
                dep = re.match(r"[A-Za-z0-9._-]+", req).group(0)
                if installed(dep) is None:
                    sys.exit(f"{spec}: extra needs {dep}")
PYEOF
}

# Same for npm: exact pins must match exactly, `^N` pins must have major N.
peers_node_deps_satisfied() {
  node - "$NM" "$NODE_DEPS" <<'JSEOF'
const fs = require('node:fs');
const [nm, deps] = process.argv.slice(2);
for (const [name, want] of Object.entries(JSON.parse(deps))) {
  let have;
  try { have = JSON.parse(fs.readFileSync(`${nm}/${name}/package.json`, 'utf8')).version; }
  catch { console.error(`${name}: not installed`); process.exit(1); }
  const ok = want.startsWith('^') ? have.split('.')[0] === want.slice(1).split('.')[0] : have === want;
  if (!ok) { console.error(`${name}: have ${have}, want ${want}`); process.exit(1); }
}
JSEOF
}

peers_setup_python() {
  local stamp=$VENV/.mcpgw-pins.sha256 want
  want=$(printf '%s\n' "${PY_PINS[@]}" | peers_hash_of)
  # A venv whose interpreter no longer runs (the base Python moved) is unusable: rebuild it.
  if [ -d "$VENV" ] && ! "$PY" -c '' 2>/dev/null; then
    peers_log "venv at $VENV is broken, recreating"; rm -rf "$VENV"
  fi
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  if [ -x "$PY" ] && peers_py_pins_satisfied 2>/dev/null; then
    peers_log "python peers already installed in $VENV (versions match), stamping"
  else
    peers_log "installing python peers into $VENV (about a minute the first time)"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check "${PY_PINS[@]}"
    peers_py_pins_satisfied
  fi
  echo "$want" > "$stamp"
}

peers_setup_node() {
  local stamp=$NODE_DIR/.mcpgw-deps.sha256 want
  want=$(printf '%s' "$NODE_DEPS" | peers_hash_of)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  mkdir -p "$NODE_DIR"
  # npm needs a package.json beside node_modules; it is generated so the pins live in one place.
  printf '{"name":"mcpgw-test-peers","private":true,"dependencies":%s}\n' "$NODE_DEPS" \
    > "$NODE_DIR/package.json"
  if peers_node_deps_satisfied 2>/dev/null; then
    peers_log "npm peers already installed in $NODE_DIR (versions match), stamping"
  else
    peers_log "installing npm peers into $NODE_DIR"
    (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error)
    peers_node_deps_satisfied
  fi
  echo "$want" > "$stamp"
}

# The SAM CLI gets a venv of its own: it pins an older boto3 than moto wants.
SAM_VENV=$CACHE/sam-venv
SAM_PIN=aws-sam-cli==1.170.0
peers_setup_sam() {
  local stamp=$SAM_VENV/.mcpgw-pins.sha256 want
  want=$(printf '%s\n' "$SAM_PIN" | peers_hash_of)
  if [ -d "$SAM_VENV" ] && ! "$SAM_VENV/bin/python" -c '' 2>/dev/null; then
    peers_log "venv at $SAM_VENV is broken, recreating"; rm -rf "$SAM_VENV"
  fi
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  if [ -x "$SAM_VENV/bin/sam" ] && [ "$("$SAM_VENV/bin/python" -c 'from importlib.metadata import version; print(version("aws-sam-cli"))')" = "${SAM_PIN#*==}" ]; then
    peers_log "SAM CLI already installed in $SAM_VENV, stamping"
  else
    peers_log "installing the SAM CLI into $SAM_VENV (about a minute the first time)"
    [ -x "$SAM_VENV/bin/python" ] || python3 -m venv "$SAM_VENV"
    "$SAM_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$SAM_PIN"
  fi
  echo "$want" > "$stamp"
}

# The browser the Playwright tests launch. Debian's package, not Playwright's own download
# (which is blocked here): Playwright drives it through executable_path.
CHROMIUM=/usr/bin/chromium
peers_setup_chromium() {
  [ -x "$CHROMIUM" ] && return
  if [ "$(id -u)" = 0 ]; then
    peers_log "installing chromium with apt-get (log in $CACHE/apt-chromium.log)"
    # A fresh machine may have no package lists yet; update only when the install needs it.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium > "$CACHE/apt-chromium.log" 2>&1 \
      || { apt-get update -q >> "$CACHE/apt-chromium.log" 2>&1 \
           && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >> "$CACHE/apt-chromium.log" 2>&1; } \
      || { peers_log "apt-get install chromium failed; its log ($CACHE/apt-chromium.log):"
           tail -n 20 "$CACHE/apt-chromium.log" >&2; return 1; }
    [ -x "$CHROMIUM" ] || { peers_log "chromium installed but $CHROMIUM is missing"; return 1; }
  else
    peers_log "$CHROMIUM is missing and this is not root: install it with" \
      "'sudo apt-get install chromium' and run setup again"
    return 1
  fi
}

peers_setup() {
  mkdir -p "$CACHE"
  # Two test runs starting at once must not install into the same venv concurrently.
  exec 9> "$CACHE/.install.lock"
  flock 9
  peers_setup_python
  peers_setup_node
  peers_setup_sam
  peers_setup_chromium
  exec 9>&-
}

# --- start / stop ----------------------------------------------------------------------------

# Liveness that ignores zombies: `kill -0` is not enough, a zombie awaiting its reaper still
# answers it. A session id is the peer's pid, thanks to setsid.
peers_pid_alive() { ps -p "$1" -o stat= 2>/dev/null | grep -qv '^Z'; }
peers_group_alive() { ps --sid "$1" -o stat= 2>/dev/null | grep -qv '^Z'; }

# N distinct free loopback ports. The sockets are held open together so the kernel cannot
# hand out the same port twice; the window between closing them and the peers binding is tiny.
peers_free_ports() {
  python3 -c 'import socket
ss = [socket.socket() for _ in range(int(__import__("sys").argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))' "$1"
}

# peers_start_bg RUN NAME CMD...: runs CMD in its own session (setsid), so that it and any
# children form one process group that peers_stop can kill at once, and so a Ctrl-C in the
# terminal does not kill it half-way (the caller's EXIT trap does the stopping). Runs from RUN
# so no peer can drop files into the repo.
peers_start_bg() {
  local run=$1 name=$2; shift 2
  (cd "$run" && exec setsid "$@" > "$run/$name.log" 2>&1 < /dev/null) &
  echo $! > "$run/$name.pid"
}

# peers_wait_ready RUN NAME URL [any|200]: polls URL until the peer answers (any HTTP status,
# or exactly 200). --max-time 1 because a GET on an MCP endpoint may open an SSE stream that never
# ends. Fails fast if the peer died (port taken, bad install) and prints its log.
peers_wait_ready() {
  local run=$1 name=$2 url=$3 want=${4:-any} pid code end=$((SECONDS + READY_TIMEOUT))
  pid=$(cat "$run/$name.pid")
  while :; do
    code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$url" || true)
    if [ "$want" = any ] && [ "${code:-000}" != 000 ]; then break; fi
    if [ "$code" = "$want" ]; then break; fi
    if ! peers_pid_alive "$pid"; then
      peers_log "$name exited before it was ready; its log ($run/$name.log):"
      cat "$run/$name.log" >&2
      return 1
    fi
    if [ $SECONDS -ge $end ]; then
      peers_log "$name not ready at $url after ${READY_TIMEOUT}s; its log ($run/$name.log):"
      cat "$run/$name.log" >&2
      return 1
    fi
    sleep 0.1
  done
  # Someone else could have answered on a port we were racing for: the peer must still be up.
  peers_pid_alive "$pid" || { peers_log "$name died after answering"; cat "$run/$name.log" >&2; return 1; }
}

# peers_start RUN: starts the peers and writes RUN/env. On failure it stops whatever it had
# started and returns 1 (the caller's traps handle Ctrl-C).
peers_start() {
  local run=${1:?usage: peers.sh start RUN_DIR}
  mkdir -p "$run"; run=$(cd "$run" && pwd)
  [ -x "$PY" ] && [ -d "$NM/@modelcontextprotocol/server-everything" ] && [ -x "$CHROMIUM" ] || peers_setup

  local moto_port everything_port echo_port conformance_port oidc_port
  read -r moto_port everything_port echo_port conformance_port oidc_port < <(peers_free_ports 5)
  [ -n "$oidc_port" ] || { peers_log "could not pick free ports"; return 1; }

  peers_start_bg "$run" moto "$VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port"
  # server-everything calls listen(PORT) with no host (all interfaces): the preload pins it
  # to loopback.
  PORT=$everything_port NODE_OPTIONS="--require \"$ROOT/tests/peers/bind-localhost.cjs\"" \
    peers_start_bg "$run" everything node "$NM/@modelcontextprotocol/server-everything/dist/index.js" streamableHttp
  peers_start_bg "$run" echo "$PY" "$ROOT/tests/peers/echo_server.py" "$echo_port" --json
  # The upstream the MCP conformance suite runs against, directly and through the gateway
  # (tests/tests/it/conformance.rs).
  peers_start_bg "$run" conformance "$PY" "$ROOT/tests/peers/conformance_server.py" "$conformance_port"
  # The identity provider of tests/tests/it/identity.rs: a real OIDC/OAuth server (oidc-provider)
  # that approves logins at once. It writes its signing key (and a rogue one with the same
  # kid) into RUN/oidc-keys so the tests can mint tokens of their own.
  local oidc_client_id=mcpgw-test oidc_client_secret oidc_redirect=http://127.0.0.1:9/callback
  oidc_client_secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
  OIDC_KEYS_DIR=$run/oidc-keys OIDC_CLIENT_ID=$oidc_client_id OIDC_CLIENT_SECRET=$oidc_client_secret \
    OIDC_REDIRECT=$oidc_redirect MCPGW_TEST_NODE_MODULES=$NM \
    peers_start_bg "$run" oidc node "$ROOT/tests/peers/oidc_provider.mjs" "$oidc_port"

  # Started together above, awaited here: total start-up is the slowest peer, not the sum.
  peers_wait_ready "$run" moto "http://127.0.0.1:$moto_port/moto-api/" 200 \
    && peers_wait_ready "$run" everything "http://127.0.0.1:$everything_port/mcp" \
    && peers_wait_ready "$run" echo "http://127.0.0.1:$echo_port/mcp" \
    && peers_wait_ready "$run" conformance "http://127.0.0.1:$conformance_port/mcp" \
    && peers_wait_ready "$run" oidc "http://127.0.0.1:$oidc_port/.well-known/openid-configuration" 200 \
    || { peers_stop "$run"; return 1; }

  # Everything a test process needs, in one sourceable file, so a developer can reproduce
  # test-all.sh's environment by hand.
  cat > "$run/env" <<EOF
export MCPGW_REQUIRE_PEERS=1
export MCPGW_TEST_AWS_ENDPOINT=http://127.0.0.1:$moto_port
export MCPGW_TEST_EVERYTHING_URL=http://127.0.0.1:$everything_port/mcp
export MCPGW_TEST_ECHO_URL=http://127.0.0.1:$echo_port/mcp
export MCPGW_TEST_CONFORMANCE_URL=http://127.0.0.1:$conformance_port/mcp
export MCPGW_TEST_OIDC_ISSUER=http://127.0.0.1:$oidc_port
export MCPGW_TEST_OIDC_KEYS=$run/oidc-keys
export MCPGW_TEST_OIDC_CLIENT_ID=$oidc_client_id
export MCPGW_TEST_OIDC_CLIENT_SECRET=$oidc_client_secret
export MCPGW_TEST_OIDC_REDIRECT=$oidc_redirect
export MCPGW_TEST_PYTHON=$PY
export MCPGW_TEST_NODE_MODULES=$NM
export MCPGW_TEST_CHROMIUM=$CHROMIUM
# Dummy credentials for moto; no profile or session token from the developer's shell, and
# every SDK client that loads the default config lands on moto, never on real AWS.
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port
unset AWS_PROFILE AWS_SESSION_TOKEN
EOF
  peers_log "up: moto :$moto_port, everything :$everything_port, echo :$echo_port, conformance :$conformance_port, oidc :$oidc_port (logs in $run)"
}

# Stops every process group recorded in RUN: TERM, up to 5 s of grace, then KILL, and waits
# until they are gone, so nothing outlives the caller. Peers that are the caller's own
# children are also reaped, so not even a zombie is left.
peers_stop() {
  local run=${1:?usage: peers.sh stop RUN_DIR} f pid pids=() end
  for f in "$run"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f"); rm -f "$f"
    [ -n "$pid" ] || continue
    # The pid is its process group id (setsid); fall back to the pid alone just in case.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  end=$((SECONDS + 5))
  for pid in "${pids[@]}"; do
    while peers_group_alive "$pid"; do
      if [ $SECONDS -ge $end ]; then
        peers_log "process group $pid ignored SIGTERM, killing"
        kill -KILL -- "-$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
    wait "$pid" 2>/dev/null || true
  done
}

# Run as a command (not sourced).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    setup) peers_setup ;;
    start)
      # Interrupted half-way: leave nothing running.
      trap 'peers_stop "${2:-}"; exit 130' INT TERM
      peers_start "${2:-}" ;;
    stop) peers_stop "${2:-}" ;;
    *) echo "usage: $0 setup | start RUN_DIR | stop RUN_DIR" >&2; exit 2 ;;
  esac
fi
