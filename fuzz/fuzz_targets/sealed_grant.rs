//! Sealed grants come back from the store, which an attacker with table access could edit:
//! opening any blob must fail cleanly (never panic, never accept) unless the gateway sealed it.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcpgw::crypto::Keyring;
use mcpgw::grants::TokenSet;

fn ring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| Keyring::from_json(&Keyring::generate_document()).expect("a keyring"))
}

fuzz_target!(|blob: &[u8]| {
    let opened = TokenSet::open(ring(), blob, "alice@example.com", "docs");
    assert!(opened.is_err(), "a grant blob the gateway never sealed was opened");
});
