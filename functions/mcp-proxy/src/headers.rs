//! Transport headers of an MCP request: the gateway session id it presents, the session
//! era's `MCP-Protocol-Version` check, and what its `Accept` allows.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use mcpgw::mcp::{jsonrpc, versions};
use serde_json::{Value, json};

use crate::answers::rpc_error;

/// The gateway session id a request presents, if any.
pub fn session_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("mcp-session-id").and_then(|v| v.to_str().ok())
}

/// Checks a session-era `MCP-Protocol-Version` header: absent is fine (the spec's default),
/// present must be a version of the era. The refusal when it is not.
pub fn bad_version_header(headers: &HeaderMap, id: Option<&Value>) -> Option<Response> {
    match headers.get("mcp-protocol-version").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) if versions::is_handshake(v) => None,
        Some(_) => Some(rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            jsonrpc::INVALID_REQUEST,
            "Bad Request: unsupported MCP-Protocol-Version",
            Some(json!({"supported": versions::HANDSHAKE})),
        )),
    }
}

/// Whether the client accepts what an MCP POST may answer. A missing Accept or `*/*` is
/// taken as accepting both; otherwise both types (or their wildcards) must appear.
pub fn accepts_mcp(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let types: Vec<String> = accept
        .split(',')
        .filter_map(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let has = |exact: &str, family: &str| {
        types
            .iter()
            .any(|t| t == exact || t == family || t == "*/*")
    };
    has("application/json", "application/*") && has("text/event-stream", "text/*")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: &'static str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accept_rules() {
        let accept = |v| with("accept", v);
        assert!(accepts_mcp(&HeaderMap::new()));
        assert!(accepts_mcp(&accept("application/json, text/event-stream")));
        assert!(accepts_mcp(&accept("*/*")));
        assert!(accepts_mcp(&accept("application/json;q=0.9, text/*")));
        assert!(!accepts_mcp(&accept("text/html")));
        assert!(!accepts_mcp(&accept("application/json")));
    }

    #[test]
    fn session_era_version_headers() {
        assert!(bad_version_header(&HeaderMap::new(), None).is_none());
        let ok = with("mcp-protocol-version", "2025-06-18");
        assert!(bad_version_header(&ok, None).is_none());
        for bad in ["2026-07-28", "1999-01-01"] {
            let refused = bad_version_header(&with("mcp-protocol-version", bad), None);
            assert_eq!(
                refused.map(|r| r.status()),
                Some(StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
    }
}
