//! Results in the client's era: the one place that decides what a result carries. Used for
//! the results the gateway makes (a virtual server's answers, the connect prompt's,
//! `server/discover` for a bridged client) and for upstream results adapted between eras.
//!
//! 2026-07-28 results carry `resultType` (`"complete"` unless already set) and, for the
//! methods the era makes cacheable, `ttlMs` and `cacheScope: "private"` (everything the
//! gateway answers depends on the caller: their policy, their credential). Session-era
//! results carry none of the three: some older SDKs validate results (empty ones especially)
//! strictly. A request of the other era has no result at all ([`is_request_of`]).
//!
//! Proven against the official SDKs' own schemas, in both eras, for every answer the gateway
//! makes or rewrites: `tests/tests/it/answer_schemas.rs`.

use axum::response::{IntoResponse, Response};
use mcpgw::mcp::jsonrpc;
use serde_json::{Map, Value};

/// The era of the client a result goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEra {
    /// 2025-03-26 to 2025-11-25: `initialize` and a session.
    Session,
    /// 2026-07-28: stateless, every request carries its envelope.
    Modern,
}

/// How long a 2026-07-28 client may reuse a cacheable result (`ttlMs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The gateway made the result and vouches for this long.
    Set(u64),
    /// The upstream's result: what it said, at most this long (0 when it said nothing).
    AtMost(u64),
}

/// Requests only the session era defines: 2026-07-28 has no handshake, no `ping`, sets the
/// log level per request (`io.modelcontextprotocol/logLevel`) and replaced resource
/// subscriptions with `subscriptions/listen`.
const ONLY_SESSION_ERA: [&str; 5] = [
    "initialize",
    "logging/setLevel",
    "ping",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// Requests only 2026-07-28 defines.
const ONLY_MODERN_ERA: [&str; 2] = ["server/discover", "subscriptions/listen"];

/// Whether `method` is a request of `era`. A request of the other era has no result the
/// client's schemas accept (a 2026-07-28 `ping` result is no `Result` a client can decode),
/// so the gateway answers it as an unknown method; any other method (extensions included)
/// is for the server to judge.
pub fn is_request_of(era: ClientEra, method: &str) -> bool {
    match era {
        ClientEra::Session => !ONLY_MODERN_ERA.contains(&method),
        ClientEra::Modern => !ONLY_SESSION_ERA.contains(&method),
    }
}

/// Methods whose 2026-07-28 results carry `ttlMs` and `cacheScope`.
pub fn is_cacheable(method: &str) -> bool {
    matches!(
        method,
        "prompts/list"
            | "resources/list"
            | "resources/read"
            | "resources/templates/list"
            | "server/discover"
            | "tools/list"
    )
}

/// Shapes `result` (a JSON-RPC result object) for a client of `era`; `cacheable`: the result
/// of a method [`is_cacheable`] names (for the 2026-07-28 caching fields).
pub fn shape(result: &mut Map<String, Value>, era: ClientEra, cacheable: bool, ttl: Ttl) {
    match era {
        ClientEra::Modern => {
            result
                .entry("resultType")
                .or_insert_with(|| Value::from("complete"));
            if cacheable {
                private_cache(result, ttl);
            }
        }
        ClientEra::Session => {
            for k in ["resultType", "ttlMs", "cacheScope"] {
                result.remove(k);
            }
        }
    }
}

/// A 2026-07-28 `input_required` result: the requests the client must answer before it
/// retries (`inputRequests`, each `{method, params}` under a key the gateway chose) and the
/// opaque state it echoes. Never cacheable (the client retries at once).
pub fn input_required(requests: Map<String, Value>, state: String) -> Value {
    let mut result = Map::new();
    result.insert("resultType".into(), "input_required".into());
    result.insert("inputRequests".into(), Value::Object(requests));
    result.insert("requestState".into(), state.into());
    Value::Object(result)
}

/// The 2026-07-28 caching fields of a result only this caller may reuse.
pub fn private_cache(result: &mut Map<String, Value>, ttl: Ttl) {
    let ms = match ttl {
        Ttl::Set(ms) => ms,
        Ttl::AtMost(max) => result
            .get("ttlMs")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(max),
    };
    result.insert("ttlMs".into(), ms.into());
    result.insert("cacheScope".into(), "private".into());
}

/// The answer to request `id` of `method`, a result the gateway made, shaped for `era`.
pub fn answer(id: &Value, method: &str, mut result: Value, era: ClientEra, ttl: Ttl) -> Response {
    if let Some(r) = result.as_object_mut() {
        shape(r, era, is_cacheable(method), ttl);
    }
    ok(id, result)
}

/// A JSON-RPC result answer, as it is.
pub fn ok(id: &Value, result: Value) -> Response {
    let is_error = result.get("isError") == Some(&Value::Bool(true));
    let mut resp = axum::Json(jsonrpc::result(id, result)).into_response();
    resp.extensions_mut().insert(Answered::Result { is_error });
    resp
}

/// What an answer the gateway made is, marked on the response where it is made (so the
/// audit record of the call says how it ended without reading the body again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// A result; `is_error`: a tool result with `isError: true`.
    Result { is_error: bool },
    /// A JSON-RPC error with this code.
    Error { code: i64 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shaped(mut v: Value, era: ClientEra, cacheable: bool, ttl: Ttl) -> Value {
        shape(v.as_object_mut().unwrap(), era, cacheable, ttl);
        v
    }

    #[test]
    fn modern_results_carry_their_type_and_private_caching() {
        let list = shaped(json!({"tools": []}), ClientEra::Modern, true, Ttl::Set(500));
        assert_eq!(
            list,
            json!({"tools": [], "resultType": "complete", "ttlMs": 500, "cacheScope": "private"})
        );
        let call = shaped(
            json!({"content": []}),
            ClientEra::Modern,
            false,
            Ttl::Set(500),
        );
        assert_eq!(call, json!({"content": [], "resultType": "complete"}));
        let pending = shaped(
            json!({"resultType": "input_required"}),
            ClientEra::Modern,
            false,
            Ttl::Set(0),
        );
        assert_eq!(pending["resultType"], "input_required");
        let relayed = shaped(
            json!({"resources": [], "ttlMs": 90_000, "cacheScope": "public"}),
            ClientEra::Modern,
            true,
            Ttl::AtMost(1_000),
        );
        assert_eq!(
            (relayed["ttlMs"].as_u64(), relayed["cacheScope"].as_str()),
            (Some(1_000), Some("private"))
        );
    }

    #[test]
    fn each_era_has_its_own_requests() {
        for m in [
            "ping",
            "logging/setLevel",
            "initialize",
            "resources/subscribe",
        ] {
            assert!(is_request_of(ClientEra::Session, m), "{m}");
            assert!(!is_request_of(ClientEra::Modern, m), "{m}");
        }
        for m in ["server/discover", "subscriptions/listen"] {
            assert!(!is_request_of(ClientEra::Session, m), "{m}");
            assert!(is_request_of(ClientEra::Modern, m), "{m}");
        }
        for m in [
            "tools/list",
            "tools/call",
            "resources/read",
            "x-vendor/thing",
        ] {
            assert!(is_request_of(ClientEra::Session, m), "{m}");
            assert!(is_request_of(ClientEra::Modern, m), "{m}");
        }
    }

    #[test]
    fn session_results_carry_none_of_the_new_fields() {
        let r = shaped(
            json!({"tools": [], "resultType": "complete", "ttlMs": 5, "cacheScope": "private"}),
            ClientEra::Session,
            true,
            Ttl::Set(5),
        );
        assert_eq!(r, json!({"tools": []}));
    }
}
