#!/usr/bin/env python3
"""A fake AWS Lambda Runtime API, and the cold-start measurements made with it.

Used by scripts/cold-start.sh, which builds the release zips, starts moto and the Python echo
MCP server, and calls this script. Standard library only, plus boto3 for the moto setup.

The fake Runtime API (one per function process, on 127.0.0.1 and an ephemeral port, never
another interface) implements the four routes a `provided.al2023` function uses:

    GET  /2018-06-01/runtime/invocation/next            hands over the next queued event
    POST /2018-06-01/runtime/invocation/{id}/response   the function's answer
    POST /2018-06-01/runtime/invocation/{id}/error      a handler error
    POST /2018-06-01/runtime/init/error                 an init error

Each process gets a fixed queue of events (fixed request ids, fixed bodies: runs are
deterministic). When the queue is empty, `next` blocks like a frozen Lambda sandbox until the
process is killed. Timestamps (time.perf_counter_ns, one clock for everything):

    init          = process spawned  ->  its first GET .../invocation/next arrives
    first request = event 1 handed over (response to `next` written)  ->  its response posted
    warm          = the same for events 2..N of one process

Usage: fake_lambda_runtime.py --bin-dir DIR --events-dir DIR --out FILE.json
                              [--zip-dir DIR] [--runs 7] [--warm 50] [--experiments] [--log F]
                              [--only TEXT] [--quickack]
(--experiments: mcp-proxy's init with its TLS roots changed; --only: scenarios whose
"function scenario" contains TEXT; --quickack: diagnosis, the fake runtime ACKs every segment.)
Environment: AWS_ENDPOINT_URL (moto), MCPGW_TEST_ECHO_URL (the Python echo server).
"""

import argparse
import base64
import copy
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

API = "/2018-06-01/runtime"
FUNCTIONS = ["mcp-proxy", "admin-api", "oauth-callback", "token-refresh"]
REGION = "us-east-1"
ACCOUNT = "123456789012"
PUBLIC_URL = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/prod"
# Fixed test-only values: nothing here protects anything.
ADMIN_KEY = "cold-start-bootstrap-admin-key-0123456789"
KEYRING_DOC = json.dumps({"active": "k1", "k1": "cold-start-keyring-material-" + "0" * 40})
UPSTREAM_CREDENTIAL = "Bearer cold-start-upstream-credential"


def now_ns():
    return time.perf_counter_ns()


class Session:
    """One function process's view of the Runtime API: its event queue and timestamps."""

    def __init__(self, events):
        self.events = list(events)
        self.next_index = 0
        self.first_next_ns = None
        self.handed_ns = {}
        self.posted_ns = {}
        self.responses = {}
        self.errors = []
        self.done = threading.Event()  # every event answered (or an error)
        self.release = threading.Event()  # unblocks a parked `next` at the end
        self.lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real Runtime API

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def quickack(self):
        # Diagnosis only (--quickack): acknowledge every segment at once instead of delaying
        # ACKs, which shows whether a sender's Nagle algorithm is waiting for our ACKs.
        if self.server.quickack:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def body(self):
        # Streamed responses (MCPGW_LAMBDA_STREAMING=1) arrive chunked.
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                self.quickack()
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        s = self.server.session
        if self.path != f"{API}/invocation/next":
            return self.reply(404)
        arrived = now_ns()
        with s.lock:
            if s.first_next_ns is None:
                s.first_next_ns = arrived
            i = s.next_index
            s.next_index += 1
        if i >= len(s.events):
            s.done.set()
            s.release.wait()  # frozen until the process is killed
            return
        fn = self.server.function
        request_id = f"00000000-0000-4000-8000-{i:012d}"
        body = json.dumps(s.events[i]).encode()
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
            "Lambda-Runtime-Invoked-Function-Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{fn}",
            "Lambda-Runtime-Trace-Id": f"Root=1-00000000-{i:024d};Sampled=0",
        }
        s.handed_ns[request_id] = now_ns()
        self.reply(200, body, headers)

    def do_POST(self):
        s = self.server.session
        data = self.body()
        at = now_ns()
        parts = self.path[len(API):].strip("/").split("/")
        if parts == ["init", "error"]:
            s.errors.append(("init", data.decode(errors="replace")))
            s.done.set()
        elif len(parts) == 3 and parts[0] == "invocation" and parts[2] == "response":
            s.posted_ns[parts[1]] = at
            s.responses[parts[1]] = data
            if len(s.responses) == len(s.events):
                s.done.set()
        elif len(parts) == 3 and parts[0] == "invocation" and parts[2] == "error":
            s.errors.append((parts[1], data.decode(errors="replace")))
            s.done.set()
        else:
            return self.reply(404)
        self.reply(202, b'{"status":"OK"}', {"Content-Type": "application/json"})


class RuntimeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A killed function drops its keep-alive connection: expected, not worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    quickack = False

    def __init__(self, function, session):
        super().__init__(("127.0.0.1", 0), Handler)
        self.function = function
        self.session = session


def lambda_env(function, port, extra):
    """The environment Lambda gives a provided.al2023 function, plus the gateway's settings.
    Built from scratch (PATH aside), so nothing leaks in from the developer's shell."""
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/05/[$LATEST]00000000000000000000000000000000",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": "AWS_Lambda_rust",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_SESSION_TOKEN": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "MCPGW_STORE": "dynamodb",
        "MCPGW_SECRETS": "aws",
        "MCPGW_PUBLIC_URL": PUBLIC_URL,
        # In Lambda loopback is denied by default (egress policy); the peers live there.
        "MCPGW_EGRESS_ALLOW": "127.0.0.0/8,::1",
        "MCPGW_EGRESS_ALLOW_HTTP": "1",
        "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH": "true",
        "RUST_LOG": "info",
    }
    env.update(extra)
    return env


def run_process(binary, function, events, extra_env, log, timeout=60):
    """Starts `binary` against a fresh fake Runtime API serving `events`; returns the session
    and the spawn time once every event is answered (or something failed)."""
    session = Session(events)
    server = RuntimeServer(function, session)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = lambda_env(function, server.server_address[1], extra_env)
    log.write(f"\n===== {function}: {len(events)} event(s)\n")
    log.flush()
    spawned = now_ns()
    proc = subprocess.Popen([binary], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            cwd=os.path.dirname(binary))
    try:
        deadline = time.monotonic() + timeout
        while not session.done.wait(0.05):
            if proc.poll() is not None:
                session.errors.append(("exit", f"process exited with {proc.returncode}"))
                break
            if time.monotonic() > deadline:
                session.errors.append(("timeout", f"no answer within {timeout}s"))
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        session.release.set()
        server.shutdown()
        server.server_close()
    if session.errors:
        raise RuntimeError(f"{function}: {session.errors}")
    return session, spawned


def durations_ms(session, spawned):
    ids = sorted(session.handed_ns)
    init = (session.first_next_ns - spawned) / 1e6
    handler = [(session.posted_ns[i] - session.handed_ns[i]) / 1e6 for i in ids]
    return init, handler


def api_headers(session, index):
    """The headers of event `index`'s buffered proxy response, names lower-cased."""
    r = json.loads(session.responses[f"00000000-0000-4000-8000-{index:012d}"])
    headers = {k.lower(): v for k, v in (r.get("headers") or {}).items()}
    for k, v in (r.get("multiValueHeaders") or {}).items():
        headers.setdefault(k.lower(), v[0] if v else "")
    return headers


def api_response(session, index):
    """The API Gateway proxy response of event `index`: (statusCode, body text). A streamed
    response is a JSON prelude, eight NUL bytes, then the body."""
    raw = session.responses[f"00000000-0000-4000-8000-{index:012d}"]
    if b"\0" * 8 in raw:
        prelude, body = raw.split(b"\0" * 8, 1)
        return json.loads(prelude).get("statusCode"), body.decode(errors="replace")
    r = json.loads(raw)
    body = r.get("body") or ""
    if r.get("isBase64Encoded"):
        body = base64.b64decode(body).decode(errors="replace")
    return r.get("statusCode"), body


# --- events ----------------------------------------------------------------------------------

def load(events_dir, name):
    with open(os.path.join(events_dir, name)) as f:
        return json.load(f)


def set_header(event, name, value):
    # Replace any spelling of the header in both maps.
    for m in ("headers", "multiValueHeaders"):
        event[m] = {k: v for k, v in (event.get(m) or {}).items() if k.lower() != name.lower()}
    event["headers"][name] = value
    event["multiValueHeaders"][name] = [value]


def rest_post(template, path, resource, path_params, body, headers):
    e = copy.deepcopy(template)
    raw = json.dumps(body, separators=(",", ":")).encode()
    e.update({"path": path, "resource": resource, "httpMethod": "POST",
              "pathParameters": path_params, "body": base64.b64encode(raw).decode(),
              "isBase64Encoded": True, "queryStringParameters": None,
              "multiValueQueryStringParameters": None})
    e["requestContext"].update({"path": "/prod" + path, "resourcePath": resource,
                                "httpMethod": "POST"})
    for k, v in headers.items():
        set_header(e, k, v)
    set_header(e, "Content-Length", str(len(raw)))
    return e


def mcp_event(template, api_key, body, session_id=None):
    """A POST of `body` to the gateway's /mcp/echo, in the session `session_id` (the id the
    gateway itself answered to initialize) when given."""
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Accept": "application/json, text/event-stream",
        "content-type": "application/json",
    }
    if session_id:
        headers["Mcp-Session-Id"] = session_id
        headers["MCP-Protocol-Version"] = "2025-11-25"
    return rest_post(template, "/mcp/echo", "/mcp/{endpoint}", {"endpoint": "echo"}, body, headers)


def tools_call_event(template, api_key, session_id):
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "add", "arguments": {"a": 2, "b": 40}}}
    return mcp_event(template, api_key, body, session_id)


def admin_event(template, path, body):
    return rest_post(template, path, path, None, body, {
        "authorization": f"Bearer {ADMIN_KEY}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    })


# --- setup -----------------------------------------------------------------------------------

def gateway_session(binary, template, api_key, env, log):
    """initialize + notifications/initialized through the real mcp-proxy function, as a client
    does; returns the session id the gateway answered. The gateway's ids are its own (sealed,
    bound to the user and the endpoint): the upstream's id, sent to the gateway, is refused
    (404, -32001), which is why the tools/call scenario needs this one."""
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "cold-start", "version": "1"}}}
    s, _ = run_process(binary, "mcp-proxy", [mcp_event(template, api_key, initialize)], env, log)
    status, body = api_response(s, 0)
    assert status == 200, f"initialize through the gateway: HTTP {status}: {body}"
    sid = api_headers(s, 0).get("mcp-session-id")
    assert sid, f"the gateway answered initialize without a session id: {body}"
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    s, _ = run_process(binary, "mcp-proxy", [mcp_event(template, api_key, initialized, sid)],
                       env, log)
    status, body = api_response(s, 0)
    assert status == 202, f"notifications/initialized through the gateway: HTTP {status}: {body}"
    return sid


def summary(values):
    v = sorted(values)
    return {"n": len(v), "median": statistics.median(v), "min": v[0], "max": v[-1],
            "p95": v[max(0, -(-95 * len(v) // 100) - 1)], "all": [round(x, 3) for x in values]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True, help="holds <function>/bootstrap")
    ap.add_argument("--events-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warm", type=int, default=50)
    ap.add_argument("--zip-dir", help="holds <function>/bootstrap.zip, for the size report")
    ap.add_argument("--log", default=os.devnull)
    ap.add_argument("--quickack", action="store_true",
                    help="diagnosis: the fake Runtime API acknowledges TCP segments at once")
    ap.add_argument("--only", help="run only scenarios whose 'function scenario' contains this")
    ap.add_argument("--experiments", action="store_true",
                    help="also time mcp-proxy's init with its TLS roots or the AWS SDK changed")
    args = ap.parse_args()
    RuntimeServer.quickack = args.quickack
    log = open(args.log, "a")

    import boto3  # the cache venv has it (moto's dependency)
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    suffix = f"{os.getpid()}"
    table = f"cold-start-{suffix}"
    keyring_name = f"cold-start/keyring-{suffix}"
    upstream_secret = f"mcpgw/cold-start-echo-{suffix}"
    sm = boto3.client("secretsmanager", endpoint_url=endpoint, region_name=REGION)
    sm.create_secret(Name=keyring_name, SecretString=KEYRING_DOC)
    sm.create_secret(Name=upstream_secret, SecretString=UPSTREAM_CREDENTIAL)

    env = {"MCPGW_TABLE_NAME": table, "MCPGW_KEYRING_SECRET": f"secret://{keyring_name}"}
    binary = {f: os.path.join(args.bin_dir, f, "bootstrap") for f in FUNCTIONS}
    healthz = load(args.events_dir, "rest-healthz.json")
    schedule = load(args.events_dir, "schedule-token-refresh.json")
    post_template = load(args.events_dir, "rest-mcp-initialize.json")

    # Setup (not measured): the table (created by the proxy itself), the echo server and an
    # API key (through the real admin-api function), an MCP session with the echo server.
    run_process(binary["mcp-proxy"], "mcp-proxy", [healthz],
                {**env, "MCPGW_CREATE_TABLE": "1"}, log)
    echo_url = os.environ["MCPGW_TEST_ECHO_URL"]
    s, _ = run_process(binary["admin-api"], "admin-api", [
        admin_event(post_template, "/admin/servers", {
            "name": "echo", "url": echo_url,
            "auth": {"type": "header",
                     "headers": {"Authorization": f"secret://{upstream_secret}"}}}),
        admin_event(post_template, "/admin/api-keys", {"owner": "bench@example.com",
                                                        "name": "cold-start"}),
        # access is denied by default: a group admits the bench user to the echo server
        admin_event(post_template, "/admin/server-groups", {
            "name": "bench", "servers": ["echo"],
            "members": {"users": ["bench@example.com"]}}),
    ], {**env, "MCPGW_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY}, log)
    status, body = api_response(s, 0)
    assert status == 201, f"register echo: {status} {body}"
    status, body = api_response(s, 1)
    assert status == 201, f"issue key: {status} {body}"
    api_key = json.loads(body)["key"]
    status, body = api_response(s, 2)
    assert status == 201, f"admit the bench user: {status} {body}"
    session_id = gateway_session(binary["mcp-proxy"], post_template, api_key, env, log)
    call = tools_call_event(post_template, api_key, session_id)

    def check(function, scenario, session, n):
        for i in range(n):
            if scenario == "scheduled":
                r = json.loads(session.responses[f"00000000-0000-4000-8000-{i:012d}"])
                assert "due" in r, f"{function}: {r}"
                continue
            status, body = api_response(session, i)
            assert status == 200, f"{function} {scenario}: HTTP {status}: {body}"
            if scenario.startswith("tools/call"):
                text = json.loads(body)["result"]["content"][0]["text"]
                assert text == "42", f"{function}: unexpected answer {body}"

    # (function, scenario, event, extra environment). "stream": MCPGW_LAMBDA_STREAMING=1, how
    # the template runs the functions behind a REST API; the others answer buffered (HTTP API).
    streaming = {"MCPGW_LAMBDA_STREAMING": "1"}
    scenarios = [
        ("mcp-proxy", "GET /healthz", healthz, {}),
        ("mcp-proxy", "tools/call", call, {}),
        ("mcp-proxy", "tools/call stream", call, streaming),
        ("admin-api", "GET /healthz", healthz, {}),
        ("oauth-callback", "GET /healthz", healthz, {}),
        ("token-refresh", "scheduled", schedule, {}),
    ]
    results = []
    for function, scenario, event, extra in scenarios:
        if args.only and args.only not in f"{function} {scenario}":
            continue
        fenv = {**env, **extra}
        inits, firsts = [], []
        for _ in range(args.runs):
            s, spawned = run_process(binary[function], function, [event], fenv, log)
            check(function, scenario, s, 1)
            init, handler = durations_ms(s, spawned)
            inits.append(init)
            firsts.append(handler[0])
        # One more process serving 1 + warm events: the warm handler duration.
        s, spawned = run_process(binary[function], function, [event] * (1 + args.warm), fenv, log)
        check(function, scenario, s, 1 + args.warm)
        _, handler = durations_ms(s, spawned)
        row = {"function": function, "scenario": scenario, "init_ms": summary(inits),
               "first_request_ms": summary(firsts), "warm_ms": summary(handler[1:])}
        results.append(row)
        print(f"  {function:<15} {scenario:<17} init median {row['init_ms']['median']:7.2f} ms"
              f"   first request {row['first_request_ms']['median']:7.2f} ms"
              f"   warm {row['warm_ms']['median']:6.2f} ms (p95 {row['warm_ms']['p95']:.2f})",
              flush=True)

    experiments = []
    if args.experiments:
        # Where init time goes: the same mcp-proxy binary and healthz event, with parts of the
        # start-up changed through the environment only (no code change):
        # the AWS SDK's TLS roots. The SDK's HTTPS client loads the platform's certificates
        # when the clients are built at init (rustls-native-certs: SSL_CERT_FILE/SSL_CERT_DIR
        # when set, else the OpenSSL defaults: on Debian/Ubuntu the bundle AND every file of
        # /etc/ssl/certs, so each certificate is parsed twice). (A variant without the SDK is
        # not possible: the Lambda binaries are built without the SQLite store.)
        import tempfile
        with tempfile.TemporaryDirectory() as data:
            empty = os.path.join(data, "empty.pem")
            open(empty, "w").close()
            bundle = "/etc/ssl/certs/ca-certificates.crt"
            variants = [
                ("SDK, roots from one bundle file (SSL_CERT_FILE)", {**env, "SSL_CERT_FILE": bundle}),
                ("SDK, no system roots (empty SSL_CERT_FILE)", {**env, "SSL_CERT_FILE": empty}),
            ]
            for variant, venv in variants:
                if variant.startswith("SDK, roots from one") and not os.path.exists(bundle):
                    continue
                inits = []
                for _ in range(args.runs):
                    s, spawned = run_process(binary["mcp-proxy"], "mcp-proxy", [healthz], venv, log)
                    check("mcp-proxy", "GET /healthz", s, 1)
                    inits.append(durations_ms(s, spawned)[0])
                experiments.append({"function": "mcp-proxy", "scenario": "GET /healthz",
                                    "variant": variant, "init_ms": summary(inits)})
                print(f"  mcp-proxy init, {variant:<48} median {statistics.median(inits):6.2f} ms",
                      flush=True)

    sizes = {}
    for function in FUNCTIONS:
        sizes[function] = {"binary_bytes": os.path.getsize(binary[function])}
        if args.zip_dir:
            z = os.path.join(args.zip_dir, function, "bootstrap.zip")
            sizes[function]["zip_bytes"] = os.path.getsize(z)

    limit_mb, init_goal_ms = 6, 60
    print(f"\n{'function':<15} {'zip MB':>7} {'binary MB':>10} {'< 6 MB':>7} | "
          f"{'scenario':<17} {'init ms':>8} {'< 60 ms':>8} {'1st req ms':>11} {'warm ms':>8}")
    for row in results:
        z = sizes[row["function"]]
        zip_mb = z.get("zip_bytes", 0) / 1048576
        init = row["init_ms"]["median"]
        row["init_under_60ms"] = init < init_goal_ms
        fits = ("yes" if zip_mb < limit_mb else "NO") if "zip_bytes" in z else "-"
        print(f"{row['function']:<15} {zip_mb:>7.2f} {z['binary_bytes'] / 1048576:>10.2f} "
              f"{fits:>7} | {row['scenario']:<17} "
              f"{init:>8.2f} {('yes' if row['init_under_60ms'] else 'NO'):>8} "
              f"{row['first_request_ms']['median']:>11.2f} {row['warm_ms']['median']:>8.2f}")
    print(f"(medians of {args.runs} cold starts; warm = median of {args.warm} further events "
          f"in one process; 1 MB = 1,048,576 bytes)")

    with open(args.out, "w") as f:
        json.dump({"runs": args.runs, "warm_events": args.warm, "cores": os.cpu_count(),
                   "sizes": sizes, "zip_limit_mb": limit_mb, "init_goal_ms": init_goal_ms,
                   "results": results, "experiments": experiments}, f, indent=2)
        f.write("\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    sys.exit(main())
