//! The MCP protocol as the gateway sees it: JSON-RPC messages, the protocol eras and their
//! versions, the 2026-07-28 per-request envelope, sealed gateway sessions, SSE framing, and
//! what the gateway remembers per process about each upstream (its era, bridged sessions).
//!
//! The proxy (`functions/mcp-proxy`) decides per request; this module holds the pieces that
//! need no HTTP routing so they can be unit-tested on their own.

pub mod envelope;
pub mod handshake;
pub mod jsonrpc;
pub mod memory;
pub mod request_state;
pub mod session;
pub mod sse;
pub mod strict_json;
pub mod versions;
