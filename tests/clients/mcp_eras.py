"""The official Python MCP client (SDK 2.x) for the protocol-era end-to-end tests.

Usage: python mcp_eras.py URL TOKEN MODE TOOL JSON_ARGS [--progress]
  MODE        the SDK's connect mode: "auto" (server/discover for 2026-07-28 first, falls back
              to the initialize handshake) or "legacy" (initialize handshake only)
  --progress  call TOOL with a progress callback and record every notification it receives

Connects through Streamable HTTP with `Authorization: Bearer TOKEN`, lists the tools, calls
TOOL with JSON_ARGS, and prints one JSON object on its last stdout line:
  {"protocol": negotiated version, "server": name or null, "tools": [names],
   "is_error": bool, "content": [texts], "structured": ...,
   "progress": [{"progress", "total", "message", "at"}], "result_at": seconds}
`at` and `result_at` are seconds since the call started (monotonic clock), so a test can
tell progress that was streamed while the tool ran from progress that arrived with the result.
"""
import asyncio
import json
import sys
import time

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main() -> None:
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    url, token, mode, tool = sys.argv[1:5]
    args = json.loads(sys.argv[5])
    with_progress = "--progress" in sys.argv[6:]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    progress: list[dict] = []
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            started = time.monotonic()

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append({
                    "progress": value,
                    "total": total,
                    "message": message,
                    "at": time.monotonic() - started,
                })

            result = await client.call_tool(
                tool, args, progress_callback=on_progress if with_progress else None
            )
            result_at = time.monotonic() - started
            print(json.dumps({
                "protocol": client.protocol_version,
                "server": client.server_info.name if client.server_info else None,
                "tools": tools,
                "is_error": bool(result.is_error),
                "content": [getattr(c, "text", None) for c in result.content],
                "structured": getattr(result, "structured_content", None),
                "progress": progress,
                "result_at": result_at,
            }))


asyncio.run(main())
