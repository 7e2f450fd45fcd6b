"""The official Python MCP client (SDK 2.x) with or without roots, for the bridge tests.

Usage: python bridge_roots.py URL TOKEN MODE ROOT_URI|-
  MODE      the SDK's connect mode ("auto": 2026-07-28 first; "legacy": initialize)
  ROOT_URI  the one root the client offers through its `list_roots_callback`; "-" for a
            client without one (it declares no roots capability)

Lists the tools and, when `get-roots-list` is among them, calls it (the SDK answers the
server's roots request, in a 2026-07-28 `input_required` round or on its session stream).
Prints one JSON object on its last stdout line:
  {"protocol": negotiated version, "tools": [names], "is_error": bool or null,
   "content": [texts], "call_seconds": seconds the call took or null}
"""
import asyncio
import json
import sys
import time

import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    url, token, mode, root = sys.argv[1:5]

    async def list_roots(_context) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=root, name="project")])

    callback = None if root == "-" else list_roots
    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(
            streamable_http_client(url, http_client=http),
            mode=mode,
            list_roots_callback=callback,
        ) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            out = {"protocol": client.protocol_version, "tools": tools,
                   "is_error": None, "content": [], "call_seconds": None}
            if "get-roots-list" in tools:
                started = time.monotonic()
                result = await client.call_tool("get-roots-list", {})
                out["call_seconds"] = time.monotonic() - started
                out["is_error"] = bool(result.is_error)
                out["content"] = [getattr(c, "text", None) for c in result.content]
            print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
