//! What the gateway reads of a client's declarations: the `initialize` of a session-era
//! client (the version it is offered, the capabilities and client info kept in the sealed
//! session id) and the envelope a 2026-07-28 request carries (checked, and its
//! capabilities).

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mcpgw::mcp::envelope::{self, META_CLIENT_CAPABILITIES};
use mcpgw::mcp::jsonrpc::{self, Kind, Message};
use mcpgw::mcp::session::ClientInit;
use mcpgw::mcp::versions;
use serde_json::{Value, json};

use crate::answers::rpc_error;

/// Largest client capabilities + clientInfo a session keeps (serialized): everything kept
/// travels in the session id on every request, so the id stays a reasonable header and never
/// exceeds what `session::open` accepts.
pub const MAX_CLIENT_INIT: usize = 4 * 1024;

/// The version the gateway offers in answer to `initialize` and what it keeps of the
/// client's parameters; the refusal when they are missing or too large.
#[allow(clippy::result_large_err)] // the refusal is the answer, built once per handshake
pub fn handshake_params(msg: &Message, id: &Value) -> Result<(String, ClientInit), Response> {
    let params = msg.params();
    let Some(requested) = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
    else {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            Some(id),
            jsonrpc::INVALID_PARAMS,
            "initialize needs params.protocolVersion",
            None,
        ));
    };
    // A version the gateway does not speak gets its newest handshake version as the counter
    // offer (the client decides whether it can live with it).
    let offered = if versions::is_handshake(requested) {
        requested.to_owned()
    } else {
        versions::LATEST_HANDSHAKE.to_owned()
    };
    let client = ClientInit {
        capabilities: params
            .and_then(|p| p.get("capabilities"))
            .cloned()
            .unwrap_or_else(|| json!({})),
        client_info: params.and_then(|p| p.get("clientInfo")).cloned(),
    };
    let kept = serde_json::to_vec(&client).map_or(usize::MAX, |v| v.len());
    if kept > MAX_CLIENT_INIT {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            Some(id),
            jsonrpc::INVALID_PARAMS,
            &format!("initialize: capabilities and clientInfo exceed {MAX_CLIENT_INIT} bytes"),
            None,
        ));
    }
    Ok((offered, client))
}

/// The refusal of a 2026-07-28 request whose envelope or routing headers fail the era's
/// checks (an unsupported version, a header that disagrees with the body): 400 with the
/// era's error, the request's id. Notifications and responses carry no envelope to check.
#[allow(clippy::result_large_err)] // the refusal is the answer
pub fn check_envelope(msg: &Message, headers: &HeaderMap) -> Result<(), Response> {
    if msg.kind != Kind::Request {
        return Ok(());
    }
    envelope::check(msg, headers).map(|_| ()).map_err(|r| {
        rpc_error(
            StatusCode::BAD_REQUEST,
            msg.id(),
            r.code,
            &r.message,
            r.data,
        )
    })
}

/// The capabilities a 2026-07-28 request declares in its envelope (none when absent).
pub fn envelope_capabilities(msg: &Message) -> Value {
    msg.params()
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_CLIENT_CAPABILITIES))
        .cloned()
        .unwrap_or_else(|| json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn request(version: &str) -> Message {
        Message::from_value(json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list",
            "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": version,
                "io.modelcontextprotocol/clientCapabilities": {"roots": {}}}}}))
        .unwrap()
    }

    fn headers(version: &str, method: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_str(version).unwrap(),
        );
        h.insert("mcp-method", HeaderValue::from_str(method).unwrap());
        h
    }

    #[tokio::test]
    async fn a_modern_envelope_is_checked_and_its_capabilities_read() {
        let ok = request("2026-07-28");
        assert!(check_envelope(&ok, &headers("2026-07-28", "tools/list")).is_ok());
        assert_eq!(envelope_capabilities(&ok), json!({"roots": {}}));
        let code = |r: Response| async move {
            let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            (v["id"].clone(), v["error"]["code"].clone())
        };
        // A routing header that disagrees with the body, an unsupported version.
        let mismatch = check_envelope(&ok, &headers("2026-07-28", "tools/call")).unwrap_err();
        assert_eq!(mismatch.status(), StatusCode::BAD_REQUEST);
        assert_eq!(code(mismatch).await, (json!(9), json!(-32020)));
        let future = request("2099-01-01");
        let refused = check_envelope(&future, &headers("2099-01-01", "tools/list")).unwrap_err();
        assert_eq!(code(refused).await, (json!(9), json!(-32022)));
        // A notification carries no envelope to check.
        let note = Message::from_value(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": 1}}),
        )
        .unwrap();
        assert!(check_envelope(&note, &HeaderMap::new()).is_ok());
    }
}
