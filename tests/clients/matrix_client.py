"""One row of the client matrix (tests/tests/it/clients.rs) with a Python client: the official
`mcp` SDK or fastmcp, in one of their connect modes.

Usage: python matrix_client.py SPEC_JSON
SPEC: {"client": "mcp" | "fastmcp", "url", "token" (may be ""), "mode": "auto" | "legacy",
       "roots": bool (declare roots and answer roots/list with one root),
       "elicitation": bool (declare elicitation, URL mode included; URLs asked for are
                            recorded and declined),
       "oauth": bool (log in from the URL alone with the client's own OAuth; the browser is
                      $BROWSER),
       "calls": [{"name", "arguments"}]}
Lists the tools, makes the calls in order, and prints one JSON object on its last stdout line:
  {"protocol", "tools": [names], "calls": [{"is_error", "content": [texts], "error": {code,
   message, data} | null, "seconds"}], "elicited_urls": [urls], "roots_asked": n}
A call that raises is recorded with its error, not fatal: the test judges.
"""
import asyncio
import json
import sys
import time

# Every request's bound: a client waiting longer is stuck (an upstream request lost in a
# bridge stalls for 60 s), and the row must fail clearly, well before the test's own timeout.
TIMEOUT = 25

ROOT = {"uri": "file:///tmp/mcpgw-matrix-root", "name": "matrix-root"}


def error_of(e: BaseException) -> dict:
    err = getattr(e, "error", None)
    if err is not None:
        data = getattr(err, "data", None)
        return {"code": getattr(err, "code", None), "message": getattr(err, "message", str(e)),
                "data": data if isinstance(data, (dict, list, str, int, float, type(None))) else str(data)}
    return {"code": None, "message": f"{type(e).__name__}: {e}", "data": None}


def texts(result) -> list:
    return [getattr(c, "text", None) for c in (getattr(result, "content", None) or [])]


async def run_mcp(spec: dict, out: dict) -> None:
    from mcp import Client, types
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    async def list_roots(context):
        out["roots_asked"] += 1
        return types.ListRootsResult(roots=[types.Root(uri=ROOT["uri"], name=ROOT["name"])])

    async def elicit(context, params):
        url = getattr(params, "url", None)
        if url:
            out["elicited_urls"].append(url)
        return types.ElicitResult(action="decline")

    kwargs = {}
    if spec.get("roots"):
        kwargs["list_roots_callback"] = list_roots
    if spec.get("elicitation"):
        kwargs["elicitation_callback"] = elicit
    headers = {"Authorization": f"Bearer {spec['token']}"} if spec.get("token") else {}
    auth = await sdk_oauth(spec["url"]) if spec.get("oauth") else None
    async with create_mcp_http_client(headers=headers, auth=auth) as http:
        async with Client(streamable_http_client(spec["url"], http_client=http),
                          mode=spec.get("mode", "auto"), read_timeout_seconds=TIMEOUT,
                          **kwargs) as client:
            out["protocol"] = client.protocol_version
            out["tools"] = [t.name for t in (await client.list_tools()).tools]
            for call in spec.get("calls", []):
                started = time.monotonic()
                try:
                    r = await client.call_tool(call["name"], call.get("arguments", {}))
                    out["calls"].append({"is_error": bool(r.is_error), "content": texts(r),
                                         "error": None, "seconds": time.monotonic() - started})
                except Exception as e:  # noqa: BLE001 - recorded for the test to judge
                    out["calls"].append({"is_error": True, "content": [], "error": error_of(e),
                                         "seconds": time.monotonic() - started})


async def sdk_oauth(url: str):
    """The SDK's own OAuth (discovery from the URL, registration, PKCE) with tokens in memory,
    a loopback callback, and $BROWSER (tests/peers/fake-browser.sh) as the user's browser."""
    import os
    import subprocess
    from urllib.parse import parse_qs, urlsplit

    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    class Memory:
        tokens = client = None

        async def get_tokens(self):
            return self.tokens

        async def set_tokens(self, tokens):
            self.tokens = tokens

        async def get_client_info(self):
            return self.client

        async def set_client_info(self, info):
            self.client = info

    arrived: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_callback(reader, writer):
        line = (await reader.readline()).decode()
        query = parse_qs(urlsplit(line.split(" ")[1]).query)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndone")
        await writer.drain()
        writer.close()
        if "code" in query and not arrived.done():
            arrived.set_result(query)

    server = await asyncio.start_server(on_callback, "127.0.0.1", 0)
    redirect = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/callback"

    async def open_browser(authorization_url: str) -> None:
        subprocess.Popen([os.environ["BROWSER"], authorization_url], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def wait_callback() -> AuthorizationCodeResult:
        q = await asyncio.wait_for(arrived, TIMEOUT)
        return AuthorizationCodeResult(code=q["code"][0], state=q.get("state", [None])[0],
                                       iss=q.get("iss", [None])[0])

    metadata = OAuthClientMetadata(client_name="mcpgw-matrix-python", redirect_uris=[redirect],
                                   grant_types=["authorization_code", "refresh_token"],
                                   response_types=["code"], token_endpoint_auth_method="none")
    return OAuthClientProvider(url, metadata, Memory(), redirect_handler=open_browser,
                               callback_handler=wait_callback)


async def run_fastmcp(spec: dict, out: dict) -> None:
    from fastmcp import Client
    from mcp import types

    async def elicit(message, response_type, params, context):
        url = getattr(params, "url", None)
        if url:
            out["elicited_urls"].append(url)
        return types.ElicitResult(action="decline")

    kwargs = {"mode": spec.get("mode", "auto"), "timeout": TIMEOUT}
    if spec.get("roots"):
        kwargs["roots"] = [ROOT["uri"]]
    if spec.get("elicitation"):
        kwargs["elicitation_handler"] = elicit
    if spec.get("oauth"):
        kwargs["auth"] = "oauth"
    elif spec.get("token"):
        kwargs["auth"] = spec["token"]
    async with Client(spec["url"], **kwargs) as client:
        session = client.session
        out["protocol"] = getattr(session, "protocol_version", None) or getattr(client, "protocol_version", None)
        out["tools"] = [t.name for t in await client.list_tools()]
        for call in spec.get("calls", []):
            started = time.monotonic()
            try:
                r = await client.call_tool(call["name"], call.get("arguments", {}), raise_on_error=False)
                out["calls"].append({"is_error": bool(r.is_error), "content": texts(r),
                                     "error": None, "seconds": time.monotonic() - started})
            except Exception as e:  # noqa: BLE001
                out["calls"].append({"is_error": True, "content": [], "error": error_of(e),
                                     "seconds": time.monotonic() - started})


async def main() -> None:
    spec = json.loads(sys.argv[1])
    out = {"protocol": None, "tools": [], "calls": [], "elicited_urls": [], "roots_asked": 0}
    runner = {"mcp": run_mcp, "fastmcp": run_fastmcp}[spec["client"]]
    try:
        await runner(spec, out)
    except Exception as e:  # noqa: BLE001 - the connection itself failed
        out["fatal"] = error_of(e)
    print(json.dumps(out, default=str))


asyncio.run(main())
