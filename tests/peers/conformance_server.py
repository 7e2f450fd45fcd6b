"""An upstream MCP server (Python `mcp` 2.x SDK) implementing what the MCP conformance suite's
server scenarios expect (`conformance list --server`), so tests can run the suite against it
directly and through the gateway and compare the two.

Usage: python conformance_server.py PORT

Session era (initialize handshake, Mcp-Session-Id), answers POSTs as SSE streams (the SDK
default), with an in-memory event store so a stream closed mid-call can be resumed with
Last-Event-ID (scenario server-sse-polling). Binds 127.0.0.1 only; because it does, the SDK
turns on its DNS-rebinding protection (loopback Host and Origin only), which scenario
dns-rebinding-protection checks.

The names and contents below are the ones the suite asserts on
(@modelcontextprotocol/conformance, dist/index.js).
"""

import asyncio
import base64
import json
import sys
import warnings

import mcp.types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning

# Logging and sampling are deprecated from 2026-07-28 on, but they are what the suite's
# (handshake-era) scenarios exercise: one warning per call would only bury the peer's log.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

# A 1x1 PNG and a tiny WAV header: the suite only checks that data and mimeType are present.
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_TINY = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="


class MemoryEventStore(EventStore):
    """Keeps every SSE event so a client that reconnects with Last-Event-ID gets the rest of
    its stream (SEP-1699 resumability). Test-sized: nothing is ever evicted."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, types.JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = str(len(self._events) + 1)
        self._events.append((stream_id, event_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream = next((s for s, e, _ in self._events if e == last_event_id), None)
        if stream is None:
            return None
        after = int(last_event_id)
        for s, e, message in self._events:
            # Priming events (message None) carry no payload worth replaying.
            if s == stream and int(e) > after and message is not None:
                await send_callback(EventMessage(message, e))
        return stream


mcp = MCPServer("mcpgw-test-conformance", version="0.1")


# --- tools ------------------------------------------------------------------------------------


@mcp.tool()
def test_simple_text() -> str:
    """Returns simple text content."""
    return "This is a simple text response for testing."


@mcp.tool()
def test_image_content() -> list[types.ImageContent]:
    """Returns image content."""
    return [types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png")]


@mcp.tool()
def test_audio_content() -> list[types.AudioContent]:
    """Returns audio content."""
    return [types.AudioContent(type="audio", data=WAV_TINY, mime_type="audio/wav")]


@mcp.tool()
def test_embedded_resource() -> list[types.EmbeddedResource]:
    """Returns an embedded resource."""
    return [
        types.EmbeddedResource(
            type="resource",
            resource=types.TextResourceContents(
                uri="test://embedded-resource",
                mime_type="text/plain",
                text="This is an embedded resource content.",
            ),
        )
    ]


@mcp.tool()
def test_multiple_content_types() -> list[types.TextContent | types.ImageContent | types.EmbeddedResource]:
    """Returns text, image and resource content together."""
    return [
        types.TextContent(type="text", text="Multiple content types test:"),
        types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png"),
        types.EmbeddedResource(
            type="resource",
            resource=types.TextResourceContents(
                uri="test://mixed-content-resource",
                mime_type="application/json",
                text=json.dumps({"test": "data", "value": 123}),
            ),
        ),
    ]


@mcp.tool()
async def test_tool_with_logging(ctx: Context) -> str:
    """Sends three info log notifications ~50 ms apart while it runs."""
    await ctx.info("Tool execution started")
    await asyncio.sleep(0.05)
    await ctx.info("Tool processing data")
    await asyncio.sleep(0.05)
    await ctx.info("Tool execution completed")
    return "Tool with logging executed successfully"


@mcp.tool()
async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0, 50 and 100 of 100 (a no-op without a progress token)."""
    for step in (0, 50, 100):
        await ctx.report_progress(progress=step, total=100, message=f"Completed step {step} of 100")
        if step < 100:
            await asyncio.sleep(0.05)
    return "Tool with progress executed successfully"


@mcp.tool()
def test_error_handling() -> str:
    """Always fails: the result comes back with isError true."""
    # ToolError, an anticipated failure: its text reaches the client (any other exception is
    # reported as a crash, with a traceback in this log and a generic text to the client).
    raise ToolError("This tool intentionally returns an error for testing")


@mcp.tool()
async def test_sampling(prompt: str, ctx: Context) -> str:
    """Asks the client's LLM (sampling/createMessage) and returns its answer."""
    result = await ctx.session.create_message(
        messages=[types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
        max_tokens=100,
        related_request_id=ctx.request_id,
    )
    text = result.content.text if isinstance(result.content, types.TextContent) else "(no text)"
    return f"LLM response: {text}"


async def elicit_raw(ctx: Context, message: str, schema: dict) -> str:
    """elicitation/create with a schema sent exactly as written. The SDK's typed `ctx.elicit`
    derives the schema from a pydantic model and refuses enum arrays, which SEP-1330 needs."""
    result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
    return f"action={result.action}, content={json.dumps(result.content or {})}"


@mcp.tool()
async def test_elicitation(message: str, ctx: Context) -> str:
    """Asks the user (elicitation/create) for a username and an email."""
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    }
    return "User response: " + await elicit_raw(ctx, message, schema)


@mcp.tool()
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Elicitation whose schema has a default for every primitive type (SEP-1034)."""
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "description": "Verification status", "default": True},
        },
    }
    return "Elicitation completed: " + await elicit_raw(ctx, "Please provide user information", schema)


@mcp.tool()
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Elicitation with the five enum schema variants of SEP-1330."""
    schema = {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {
                "type": "string",
                "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"},
                ],
            },
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {
                "type": "array",
                "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
            },
            "titledMulti": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"},
                    ]
                },
            },
        },
    }
    return "Elicitation completed: " + await elicit_raw(
        ctx, "Please select values using different enum schema types", schema
    )


@mcp.tool()
def json_schema_2020_12_tool(name: str | None = None, address: dict | None = None) -> str:
    """Tool with JSON Schema 2020-12 features"""
    return json.dumps({"name": name, "address": address})


# The suite checks that $schema, $defs and additionalProperties survive tools/list untouched
# (SEP-1613). The SDK derives inputSchema from the signature, so the advertised schema is
# replaced by the exact one after registration; the signature above accepts the same inputs.
mcp._tool_manager.get_tool("json_schema_2020_12_tool").parameters = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}


@mcp.tool()
async def test_reconnection(ctx: Context) -> str:
    """Closes its own SSE stream mid-call; the result arrives after the client resumes with
    Last-Event-ID (SEP-1699 polling)."""
    await ctx.info("Before disconnect")
    await ctx.close_sse_stream()
    await asyncio.sleep(0.2)
    await ctx.info("After reconnect")
    return "Reconnection test completed"


# --- resources --------------------------------------------------------------------------------


@mcp.resource("test://static-text", mime_type="text/plain")
def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


@mcp.resource("test://static-binary", mime_type="image/png")
def static_binary() -> bytes:
    """A static binary resource (a PNG)."""
    return base64.b64decode(PNG_1X1)


@mcp.resource("test://template/{id}/data", mime_type="application/json")
def template_data(id: str) -> str:
    """A resource template: the id is substituted into the content."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@mcp.resource("test://watched-resource", mime_type="text/plain")
def watched_resource() -> str:
    """A resource clients can subscribe to."""
    return "Watched resource content"


# resources/subscribe and /unsubscribe are handshake-era methods MCPServer has no decorator for;
# registering them on the low-level server also advertises resources.subscribe.
subscriptions: set[str] = set()


async def on_subscribe(ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
    subscriptions.add(str(params.uri))
    return types.EmptyResult()


async def on_unsubscribe(ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    subscriptions.discard(str(params.uri))
    return types.EmptyResult()


# logging/setLevel: accepted and answered with {} (the logging capability is advertised because
# the handler exists). Log filtering is not needed by the suite.
async def on_set_level(ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


mcp._lowlevel_server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, on_subscribe)
mcp._lowlevel_server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, on_unsubscribe)
mcp._lowlevel_server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, on_set_level)


# --- prompts and completion -------------------------------------------------------------------


@mcp.prompt()
def test_simple_prompt() -> list[UserMessage]:
    """A simple prompt without arguments."""
    return [UserMessage("This is a simple prompt for testing.")]


@mcp.prompt()
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
    """A prompt with two required arguments."""
    return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]


@mcp.prompt()
def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
    """A prompt that embeds a resource."""
    return [
        UserMessage(
            types.EmbeddedResource(
                type="resource",
                resource=types.TextResourceContents(
                    uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
                ),
            )
        ),
        UserMessage("Please process the embedded resource above."),
    ]


@mcp.prompt()
def test_prompt_with_image() -> list[UserMessage]:
    """A prompt that includes an image."""
    return [
        UserMessage(types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png")),
        UserMessage("Please analyze the image above."),
    ]


@mcp.completion()
async def complete(ref, argument, context) -> types.Completion:
    """Suggests values that start with what was typed, from a small fixed list."""
    candidates = ["paris", "park", "party", "test", "testing"]
    values = [v for v in candidates if v.startswith(argument.value)]
    return types.Completion(values=values, total=len(values), has_more=False)


def resumable_for_old_headers(app):
    """ASGI wrapper: a request declaring MCP-Protocol-Version 2025-03-26 is handled as 2025-11-25.

    Why: scenario server-sse-polling initializes a 2025-11-25 session, then sends its raw
    tools/call (and the GET that resumes it with Last-Event-ID) declaring 2025-03-26. The SDK
    keys SSE priming events and closing a stream mid-call on that header (clients before
    2025-11-25 cannot resume), so it would never exercise the resume path, and the scenario
    would only report warnings. Resumption through the gateway (priming id, retry field,
    Last-Event-ID passed on) is exactly what the test wants to compare, so this peer upgrades the
    header. No test client of this peer really speaks 2025-03-26.
    """
    old, new = b"2025-03-26", b"2025-11-25"

    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            headers = [
                (k, new if k == b"mcp-protocol-version" and v == old else v) for k, v in scope["headers"]
            ]
            scope = dict(scope, headers=headers)
        await app(scope, receive, send)

    return wrapped


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit(__doc__)
    import uvicorn

    app = mcp.streamable_http_app(
        host="127.0.0.1",
        event_store=MemoryEventStore(),
        # Milliseconds a client waits before reconnecting a closed stream (the SSE retry field).
        retry_interval=100,
    )
    uvicorn.run(resumable_for_old_headers(app), host="127.0.0.1", port=int(sys.argv[1]), log_level="info")
