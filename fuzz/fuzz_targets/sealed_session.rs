//! A session id is the client's to choose: opening any string must fail cleanly (never panic,
//! never accept) unless the gateway sealed it.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcpgw::crypto::Keyring;

fn ring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| Keyring::from_json(&Keyring::generate_document()).expect("a keyring"))
}

fuzz_target!(|id: &str| {
    let opened = mcpgw::mcp::session::open(ring(), id, "everything", "alice@example.com", 0);
    assert!(opened.is_err(), "a session id the gateway never sealed was accepted");
});
