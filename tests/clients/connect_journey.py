"""The connect journey through the official Python SDK (tests/tests/it/connect_journey.rs).

Usage: python connect_journey.py URL TOKEN TOOL
MCP_MODE "legacy": initialize, the SDK's own GET stream and a message handler; the call of TOOL
gets the URL elicitation (-32042). "auto": the 2026-07-28 era, `Client.listen()`.
Prints one JSON object per line, flushed, as the journey goes:
{"step": "listed", "tools": [{"name", "description"}]}
{"step": "ready", ...}            (the test connects the user now)
{"step": "notified", "notes": [{"method", "params"}]}
{"step": "relisted", "tools": [...]}
"""
import asyncio
import json
import os
import sys

from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError


def emit(obj) -> None:
    print(json.dumps(obj), flush=True)


def tools_of(result) -> list:
    return [{"name": t.name, "description": t.description} for t in result.tools]


async def main() -> None:
    url, token, tool = sys.argv[1], sys.argv[2], sys.argv[3]
    mode = os.environ.get("MCP_MODE", "auto")
    notes: list = []
    changed = asyncio.Event()

    async def on_message(message) -> None:
        if isinstance(message, Exception):
            return
        root = getattr(message, "root", message)
        method = getattr(root, "method", None)
        if not method:
            return
        params = getattr(root, "params", None)
        dumped = params.model_dump(by_alias=True, exclude_none=True) if params is not None else None
        notes.append({"method": method, "params": dumped})
        if method in ("notifications/tools/list_changed", "notifications/elicitation/complete"):
            changed.set()

    async def on_elicit(context, params):
        # Declares URL elicitation; the user "opens" the link outside (the test's browser).
        return types.ElicitResult(action="accept")

    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(
            streamable_http_client(url, http_client=http),
            mode=mode,
            message_handler=on_message,
            elicitation_callback=on_elicit,
        ) as client:
            emit({"step": "listed", "protocol": client.protocol_version,
                  "tools": tools_of(await client.list_tools())})
            if mode == "legacy":
                try:
                    await client.call_tool(tool, {})
                    emit({"step": "called", "code": None})
                except MCPError as e:
                    data = e.error.data or {}
                    emit({"step": "called", "code": e.error.code,
                          "elicitation_id": data["elicitations"][0]["elicitationId"]})
                emit({"step": "ready"})
                # Both notifications, in whatever order the stream gives them.
                for _ in range(300):
                    methods = {n["method"] for n in notes}
                    if {"notifications/tools/list_changed",
                            "notifications/elicitation/complete"} <= methods:
                        break
                    await asyncio.sleep(0.1)
            else:
                async with client.listen(tools_list_changed=True) as sub:
                    emit({"step": "ready", "honored": sub.honored.model_dump(by_alias=True, exclude_none=True)})
                    async with asyncio.timeout(30):
                        async for event in sub:
                            notes.append({"method": type(event).__name__, "params": None})
                            break
            emit({"step": "notified", "notes": notes})
            emit({"step": "relisted", "tools": tools_of(await client.list_tools())})


asyncio.run(main())
