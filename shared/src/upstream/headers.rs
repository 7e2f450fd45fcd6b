//! Which inbound headers may travel upstream (an allowlist, so the caller's `Authorization`,
//! cookies and any other credential never do), which upstream headers come back, and which
//! header names an admin may not configure as a credential.

use axum::http::{HeaderMap, HeaderName, header};

/// Inbound headers that carry MCP transport state and nothing else. `Accept` and
/// `Content-Type` are set by the proxy itself.
fn forwardable(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("mcp-") || n == "last-event-id"
}

/// The inbound headers that may travel upstream.
pub fn forwarded_request_headers(inbound: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in inbound {
        if forwardable(k) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

/// Upstream response headers passed back to the client. The upstream's `WWW-Authenticate`
/// is not among them: it concerns the gateway's credential, not the caller's.
pub fn returned_response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in upstream {
        let n = k.as_str();
        if n.starts_with("mcp-") || n == "content-type" || n == "cache-control" {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

/// Header names an admin may not configure as upstream credentials: they would break the
/// transport or smuggle hop-by-hop semantics.
pub fn is_reserved_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("mcp-")
        || [
            header::HOST.as_str(),
            header::CONTENT_LENGTH.as_str(),
            header::CONTENT_TYPE.as_str(),
            header::ACCEPT.as_str(),
            header::TRANSFER_ENCODING.as_str(),
            header::CONNECTION.as_str(),
            header::UPGRADE.as_str(),
            header::TE.as_str(),
            "keep-alive",
            "proxy-connection",
            "last-event-id",
        ]
        .contains(&n.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn caller_credentials_are_never_forwarded() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer mcpgw_caller"),
            ("cookie", "sid=1"),
            ("x-api-key", "k"),
            ("proxy-authorization", "Basic x"),
            ("mcp-session-id", "s1"),
            ("mcp-protocol-version", "2025-06-18"),
            ("last-event-id", "7"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let f = forwarded_request_headers(&h);
        let mut names: Vec<_> = f.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["last-event-id", "mcp-protocol-version", "mcp-session-id"]
        );
    }

    #[test]
    fn the_clients_trace_headers_are_not_forwarded_as_sent() {
        // The gateway sets them from the trace context it parsed (see `trace`), so an invalid
        // or oversized client value can never reach an upstream.
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static("garbage"));
        h.insert("tracestate", HeaderValue::from_static("a=b"));
        assert!(forwarded_request_headers(&h).is_empty());
    }

    #[test]
    fn upstream_challenges_do_not_reach_the_caller() {
        let mut h = HeaderMap::new();
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer x"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(
            HeaderName::from_static("mcp-session-id"),
            HeaderValue::from_static("abc"),
        );
        h.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        let r = returned_response_headers(&h);
        assert_eq!(r.len(), 2);
        assert!(r.get(header::WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn reserved_headers() {
        for n in [
            "Host",
            "content-length",
            "Mcp-Session-Id",
            "Transfer-Encoding",
        ] {
            assert!(is_reserved_header(n), "{n}");
        }
        for n in ["Authorization", "X-Api-Key"] {
            assert!(!is_reserved_header(n), "{n}");
        }
    }
}
