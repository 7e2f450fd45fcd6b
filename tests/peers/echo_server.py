"""A small Streamable-HTTP MCP server (Python `mcp` 2.x SDK) used as an upstream by the tests.

Usage: python echo_server.py PORT [--json] [--stateless]
  --json       answer POSTs with plain JSON instead of an SSE stream (JSON-response mode)
  --stateless  no MCP sessions

Tools:
  add(a, b)      -> a + b
  echo(message)  -> message
  whoami()       -> the Authorization header and a few other headers this server received, so
                    tests can check what the gateway forwards upstream (and what it must not).

Binds 127.0.0.1 only: test peers are never reachable from outside the machine.
"""

import sys

from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer("mcpgw-test-echo", version="0.1")


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
def echo(message: str) -> str:
    """Echo a message back."""
    return message


@mcp.tool()
def whoami(ctx: Context) -> dict:
    """Return the Authorization header (and a few others) this server received."""
    h = ctx.headers or {}
    return {
        "authorization": h.get("authorization"),
        "mcp_session_id": h.get("mcp-session-id"),
        "mcp_protocol_version": h.get("mcp-protocol-version"),
        "x_forwarded_for": h.get("x-forwarded-for"),
        "user_agent": h.get("user-agent"),
        "cookie": h.get("cookie"),
        # W3C trace context: the gateway's own span as the parent (tests/tests/it/observability.rs).
        "traceparent": h.get("traceparent"),
        "tracestate": h.get("tracestate"),
        # Names only (values may be credentials): lets a test assert a header was not forwarded.
        "header_names": sorted({k.lower() for k in h.keys()}),
    }


if __name__ == "__main__":
    if len(sys.argv) < 2 or not sys.argv[1].isdigit():
        sys.exit(__doc__)
    mcp.run(
        "streamable-http",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        json_response="--json" in sys.argv[2:],
        stateless_http="--stateless" in sys.argv[2:],
    )
