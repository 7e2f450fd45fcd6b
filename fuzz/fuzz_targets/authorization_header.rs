//! The caller's Authorization header(s), any bytes: the parser never panics, and whatever it
//! accepts is exactly one `Bearer` header carrying an RFC 6750 b64token taken from it.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|values: Vec<&[u8]>| {
    let mut headers = HeaderMap::new();
    for v in &values {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            headers.append(header::AUTHORIZATION, v);
        }
    }
    if let Ok(Some(token)) = mcpgw::identity::bearer_token(&headers) {
        assert_eq!(headers.get_all(header::AUTHORIZATION).iter().count(), 1);
        assert!(mcpgw::identity::is_b64token(token), "accepted a non-b64token");
        let raw = headers[header::AUTHORIZATION].as_bytes();
        assert!(raw.len() > 7 && raw[..6].eq_ignore_ascii_case(b"bearer"));
        assert!(raw.ends_with(token.as_bytes()));
    }
});
