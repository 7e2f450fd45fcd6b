"""A real MCP client (the official Python SDK) for the end-to-end tests.

Usage: python mcp_call.py URL TOKEN TOOL JSON_ARGS
Connects through Streamable HTTP with `Authorization: Bearer TOKEN`, lists the tools, calls
TOOL with JSON_ARGS, and prints one JSON object on stdout:
{"protocol": ..., "server": ..., "tools": [...], "is_error": bool, "content": [...], "structured": ...}
MCP_MODE picks the SDK's connect mode: "auto" (default: discover, fall back to initialize)
or "legacy" (initialize handshake only).
"""
import asyncio
import json
import os
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main() -> None:
    url, token, tool = sys.argv[1], sys.argv[2], sys.argv[3]
    args = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    mode = os.environ.get("MCP_MODE", "auto")
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool(tool, args)
            print(json.dumps({
                "protocol": client.protocol_version,
                "server": client.server_info.name if client.server_info else None,
                "tools": tools,
                "is_error": bool(result.is_error),
                "content": [getattr(c, "text", None) for c in result.content],
                "structured": getattr(result, "structured_content", None),
            }))


asyncio.run(main())
