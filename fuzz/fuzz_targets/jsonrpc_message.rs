//! A client's POST body, any bytes: the strict parser never panics, and what it accepts is
//! forwarded re-serialized, so the forwarded bytes must parse again, strictly, to the very
//! messages that were authorized (a parser differential would show up as a difference).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgw::mcp::jsonrpc::{ClientPayload, parse_client_message};

fuzz_target!(|bytes: &[u8]| {
    let Ok(payload) = parse_client_message(bytes) else {
        return;
    };
    let messages = payload.messages();
    let forwarded = match &payload {
        ClientPayload::One(m) => m.to_bytes(),
        ClientPayload::Batch(_) => mcpgw::mcp::jsonrpc::batch_to_bytes(messages),
    };
    let again = parse_client_message(&forwarded).expect("the forwarded form parses strictly");
    let (a, b) = (messages, again.messages());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.value, y.value, "re-serialization changed an authorized message");
        assert_eq!(x.method(), y.method());
    }
});
