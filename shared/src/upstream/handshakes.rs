//! The gateway's own handshakes with an upstream: `initialize` (for a client's session, to
//! re-open a lost one, or to bridge a stateless client) and the `server/discover` probe.

use crate::mcp::envelope::{self, META_SERVER_INFO};
use crate::mcp::handshake::{CallError, Reply};
use crate::mcp::jsonrpc::Message;
use crate::mcp::memory::UpstreamSession;
use crate::mcp::session::ClientInit;
use crate::mcp::versions;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};

use super::Upstream;

/// How an `initialize` went.
pub enum InitOutcome {
    Opened(UpstreamSession),
    /// The upstream answered but refused (HTTP 4xx or a JSON-RPC error): perhaps it speaks
    /// only the stateless era.
    Refused(Reply),
}

fn gateway_client_info() -> Value {
    json!({"name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION")})
}

/// Runs `initialize` upstream at `version`. `original` is the client's own initialize when
/// it is the client's handshake (its other params travel unchanged); the client then sends
/// `notifications/initialized` itself. Otherwise the gateway completes the handshake.
pub async fn initialize(
    up: &Upstream,
    client: &ClientInit,
    version: &str,
    original: Option<&Message>,
) -> Result<InitOutcome, CallError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "mcp-protocol-version",
        HeaderValue::from_str(version)
            .unwrap_or(HeaderValue::from_static(versions::LATEST_HANDSHAKE)),
    );
    let reply = match original {
        Some(m) => {
            // The client's own handshake, as parsed (its other params travel unchanged).
            let mut m = m.clone();
            if let Some(p) = m.params_mut() {
                p.insert("protocolVersion".into(), version.into());
            }
            up.exchange_message(headers, &m).await?
        }
        None => {
            let message = json!({"jsonrpc": "2.0", "id": "mcpgw-init", "method": "initialize", "params": {
                "protocolVersion": version,
                "capabilities": client.capabilities,
                "clientInfo": client.client_info.clone().unwrap_or_else(gateway_client_info),
            }});
            up.exchange(headers, &message).await?
        }
    };
    let negotiated = reply
        .result()
        .and_then(|r| r.get("protocolVersion"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (true, Some(negotiated)) = (reply.status.is_success(), negotiated) else {
        return Ok(InitOutcome::Refused(reply));
    };
    let session = UpstreamSession {
        session_id: reply.session_id.clone(),
        version: negotiated,
        init_result: reply.result().cloned().unwrap_or_default(),
    };
    if original.is_none() {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let headers = up.session_headers(session.session_id.as_deref(), &session.version);
        let done = up.exchange(headers, &note).await?;
        if !done.status.is_success() {
            return Ok(InitOutcome::Refused(done));
        }
    }
    Ok(InitOutcome::Opened(session))
}

/// What a `server/discover` probe showed.
pub enum Discovery {
    /// A stateless-era server; its result.
    Modern(Value),
    /// A definite no: the upstream understood the request and refused it (HTTP 400, 404,
    /// 405, 406, 415, 422, or a JSON-RPC error), or answered without a stateless version.
    Refused,
    /// No verdict (5xx, 408, 429, or an answer that is not JSON-RPC): nothing is learned
    /// and nothing may be remembered.
    Unclear(StatusCode),
}

/// Classifies an answer to `server/discover`.
pub fn classify_discovery(reply: &Reply) -> Discovery {
    if let Some(result) = discover_result(reply) {
        return Discovery::Modern(result.clone());
    }
    let s = reply.status;
    let refused_status = matches!(s.as_u16(), 400 | 404 | 405 | 406 | 415 | 422);
    let rpc_answer = reply.message.is_some();
    if refused_status || (s.is_success() && rpc_answer) {
        Discovery::Refused
    } else {
        Discovery::Unclear(s)
    }
}

/// Sends `server/discover` with the client's envelope.
pub async fn discover(up: &Upstream, client: &ClientInit) -> Result<Discovery, CallError> {
    let mut msg = Message::from_value(json!({"jsonrpc": "2.0", "id": "mcpgw-discover", "method": "server/discover", "params": {}}))
        .map_err(|_| CallError::BadAnswer)?;
    envelope::apply(&mut msg, &client.capabilities, client.client_info.as_ref());
    let mut headers = HeaderMap::new();
    for (k, v) in envelope::routing_headers(&msg) {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    }
    let reply = up.exchange(headers, &msg.value).await?;
    Ok(classify_discovery(&reply))
}

/// The result of a `server/discover` answer that shows a stateless-era server.
pub fn discover_result(reply: &Reply) -> Option<&Value> {
    let result = reply.result().filter(|_| reply.status == StatusCode::OK)?;
    let speaks_modern = result
        .get("supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|vs| vs.iter().filter_map(Value::as_str).any(versions::is_modern));
    speaks_modern.then_some(result)
}

/// An `initialize` result for a session-era client, made from a stateless upstream's
/// discovery.
pub fn initialize_result_from_discover(discover: &Value, version: &str, endpoint: &str) -> Value {
    let server_info = discover
        .get("_meta")
        .and_then(|m| m.get(META_SERVER_INFO))
        .cloned()
        .unwrap_or_else(|| json!({"name": endpoint, "version": "unknown"}));
    let mut result = json!({
        "protocolVersion": version,
        "capabilities": discover.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        "serverInfo": server_info,
    });
    if let Some(i) = discover.get("instructions").filter(|i| i.is_string()) {
        result["instructions"] = i.clone();
    }
    result
}

/// A `server/discover` result for a stateless client, made from a session-era upstream's
/// `initialize` result.
pub fn discover_result_from_initialize(init: &Value) -> Value {
    let mut result = json!({
        "supportedVersions": versions::MODERN,
        "capabilities": init.get("capabilities").cloned().unwrap_or_else(|| json!({})),
    });
    if let Some(i) = init.get("instructions").filter(|i| i.is_string()) {
        result["instructions"] = i.clone();
    }
    if let Some(info) = init.get("serverInfo") {
        result["_meta"] = json!({ META_SERVER_INFO: info });
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_translate_both_ways() {
        let init = json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
            "serverInfo": {"name": "up", "version": "1"}, "instructions": "be nice"});
        let d = discover_result_from_initialize(&init);
        assert_eq!(d["supportedVersions"], json!(["2026-07-28"]));
        assert_eq!(d["_meta"][META_SERVER_INFO]["name"], "up");
        let back = initialize_result_from_discover(&d, "2025-11-25", "ep");
        assert_eq!(back["protocolVersion"], "2025-11-25");
        assert_eq!(back["capabilities"], init["capabilities"]);
        assert_eq!(back["serverInfo"], init["serverInfo"]);
        assert_eq!(back["instructions"], "be nice");
        let bare = initialize_result_from_discover(
            &json!({"supportedVersions": ["2026-07-28"]}),
            "2025-06-18",
            "ep",
        );
        assert_eq!(bare["serverInfo"]["name"], "ep");
    }
}
