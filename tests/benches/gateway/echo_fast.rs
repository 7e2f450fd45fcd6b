//! echo-fast: a minimal but correct MCP server for the bench, on its own thread and
//! single-threaded runtime, so the gateway's cost is not hidden behind a slow upstream.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::settings::{
    ECHO_FAST_THREAD, META_CAPABILITIES, META_SERVER, META_VERSION, MODERN_VERSION,
    SESSION_VERSION, SESSION_VERSIONS,
};

/// Every message echo-fast received, by JSON-RPC method ("DELETE" for a DELETE), and every
/// connection it accepted ("TCP accept"), so the bench can tell what one call through the
/// gateway costs the upstream.
pub(crate) static ECHO_FAST_RECEIVED: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

pub(crate) fn echo_fast_received() -> BTreeMap<String, u64> {
    ECHO_FAST_RECEIVED.lock().unwrap().clone()
}

pub(crate) fn echo_fast_count(what: &str) {
    *ECHO_FAST_RECEIVED
        .lock()
        .unwrap()
        .entry(what.to_owned())
        .or_default() += 1;
}

/// Its state: the credential it expects, and its open sessions.
pub(crate) struct EchoServer {
    pub(crate) authorization: String,
    pub(crate) sessions: Mutex<HashSet<String>>,
    pub(crate) next_session: AtomicU64,
}

pub(crate) fn rpc_error(
    status: StatusCode,
    id: Value,
    code: i64,
    message: &str,
    data: Value,
) -> Response {
    let mut error = json!({"code": code, "message": message});
    if !data.is_null() {
        error["data"] = data;
    }
    (
        status,
        axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": error})),
    )
        .into_response()
}

pub(crate) fn rpc_result(id: Value, result: Value) -> Response {
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

pub(crate) fn echo_server_info() -> Value {
    json!({"name": "mcpgw-bench-echo", "version": "1.0"})
}

/// `tools/list`, `tools/call` and `ping`, the same in both eras. `Err` is a JSON-RPC error
/// (HTTP status, code, message).
pub(crate) fn echo_method(
    method: &str,
    params: &Value,
) -> Result<Value, (StatusCode, i64, String)> {
    match method {
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": [{
            "name": "echo",
            "description": "Echo a message back.",
            "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}},
                            "required": ["message"]},
        }]})),
        "tools/call" => match (
            params["name"].as_str(),
            params["arguments"]["message"].as_str(),
        ) {
            (Some("echo"), Some(message)) => Ok(json!({
                "content": [{"type": "text", "text": message}],
                "isError": false,
            })),
            (Some("echo"), None) => Err((
                StatusCode::BAD_REQUEST,
                -32602,
                "echo needs a string `message`".into(),
            )),
            (name, _) => Err((
                StatusCode::BAD_REQUEST,
                -32602,
                format!("unknown tool {name:?}"),
            )),
        },
        _ => Err((
            StatusCode::NOT_FOUND,
            -32601,
            format!("method not found: {method}"),
        )),
    }
}

pub(crate) async fn echo_post(
    State(s): State<Arc<EchoServer>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if header("authorization") != Some(s.authorization.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if !header("content-type").is_some_and(|v| v.starts_with("application/json")) {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    if !header("accept").is_some_and(|v| v.contains("application/json") || v.contains("*/*")) {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    let bad = StatusCode::BAD_REQUEST;
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return rpc_error(bad, Value::Null, -32700, "parse error", Value::Null);
    };
    let id = msg.get("id").cloned();
    echo_fast_count(msg["method"].as_str().unwrap_or("(no method)"));
    let Some(method) = msg["method"].as_str().filter(|_| msg.is_object()) else {
        return rpc_error(
            bad,
            Value::Null,
            -32600,
            "not a JSON-RPC message",
            Value::Null,
        );
    };
    let params = &msg["params"];
    let version_header = header("mcp-protocol-version");
    let envelope = params["_meta"].get(META_VERSION);
    let modern =
        envelope.is_some() || version_header.is_some_and(|v| !SESSION_VERSIONS.contains(&v));

    if modern {
        // 2026-07-28: no session; notifications are acknowledged and dropped.
        let Some(id) = id else {
            return StatusCode::ACCEPTED.into_response();
        };
        let meta = &params["_meta"];
        if meta.get(META_VERSION).is_none() || meta.get(META_CAPABILITIES).is_none() {
            let m = "params._meta must carry protocolVersion and clientCapabilities";
            return rpc_error(bad, id, -32602, m, Value::Null);
        }
        let name_matches = method != "tools/call" || header("mcp-name") == params["name"].as_str();
        if version_header != meta[META_VERSION].as_str()
            || header("mcp-method") != Some(method)
            || !name_matches
        {
            let m = "MCP-Protocol-Version, Mcp-Method or Mcp-Name does not match the body";
            return rpc_error(bad, id, -32020, m, Value::Null);
        }
        if meta[META_VERSION] != json!(MODERN_VERSION) {
            let data = json!({"supported": [MODERN_VERSION], "requested": meta[META_VERSION]});
            return rpc_error(bad, id, -32022, "unsupported protocol version", data);
        }
        let result = if method == "server/discover" {
            Ok(json!({"supportedVersions": [MODERN_VERSION], "capabilities": {"tools": {}}}))
        } else {
            echo_method(method, params)
        };
        return match result {
            Ok(mut r) => {
                r["resultType"] = json!("complete");
                r["_meta"] = json!({ META_SERVER: echo_server_info() });
                rpc_result(id, r)
            }
            Err((status, code, m)) => rpc_error(status, id, code, &m, Value::Null),
        };
    }

    // Session era.
    if method == "initialize" {
        let Some(id) = id else {
            return rpc_error(
                bad,
                Value::Null,
                -32600,
                "initialize needs an id",
                Value::Null,
            );
        };
        let asked = params["protocolVersion"].as_str().unwrap_or_default();
        let version = SESSION_VERSIONS
            .into_iter()
            .find(|v| *v == asked)
            .unwrap_or(SESSION_VERSION);
        let session = format!(
            "echo-{}-{}",
            std::process::id(),
            s.next_session.fetch_add(1, Ordering::Relaxed)
        );
        s.sessions.lock().unwrap().insert(session.clone());
        let mut resp = rpc_result(
            id,
            json!({"protocolVersion": version, "capabilities": {"tools": {}},
                   "serverInfo": echo_server_info()}),
        );
        resp.headers_mut().insert(
            "mcp-session-id",
            session.parse().expect("a header-safe session id"),
        );
        return resp;
    }
    match header("mcp-session-id") {
        None if method != "ping" => {
            let id = id.unwrap_or(Value::Null);
            return rpc_error(bad, id, -32600, "missing Mcp-Session-Id", Value::Null);
        }
        Some(sid) if !s.sessions.lock().unwrap().contains(sid) => {
            let id = id.unwrap_or(Value::Null);
            return rpc_error(
                StatusCode::NOT_FOUND,
                id,
                -32001,
                "Session not found",
                Value::Null,
            );
        }
        _ => {}
    }
    let Some(id) = id else {
        return StatusCode::ACCEPTED.into_response();
    };
    match echo_method(method, params) {
        Ok(r) => rpc_result(id, r),
        // In the session era a JSON-RPC error travels with HTTP 200.
        Err((_, code, m)) => rpc_error(StatusCode::OK, id, code, &m, Value::Null),
    }
}

pub(crate) async fn echo_delete(
    State(s): State<Arc<EchoServer>>,
    headers: HeaderMap,
) -> StatusCode {
    echo_fast_count("DELETE");
    let sid = headers.get("mcp-session-id").and_then(|v| v.to_str().ok());
    match sid {
        Some(sid) if s.sessions.lock().unwrap().remove(sid) => StatusCode::OK,
        Some(_) => StatusCode::NOT_FOUND,
        None => StatusCode::BAD_REQUEST,
    }
}

/// Starts echo-fast on its own OS thread with a single-threaded runtime, so it takes at most
/// one core and never a worker of the gateway's or the client's runtime. It requires
/// `authorization` on every POST (401 otherwise), which checks that the gateway injected the
/// upstream credential. Returns its URL; it runs until the process ends.
pub(crate) fn start_echo_fast(authorization: String) -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let state = Arc::new(EchoServer {
        authorization,
        sessions: Mutex::default(),
        next_session: AtomicU64::new(1),
    });
    let app = axum::Router::new()
        .route(
            "/mcp",
            axum::routing::post(echo_post)
                .delete(echo_delete)
                .get(|| async { StatusCode::METHOD_NOT_ALLOWED }),
        )
        .with_state(state);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(ECHO_FAST_THREAD.into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                // TCP_NODELAY on accepted connections, like the gateway.
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    echo_fast_count("TCP accept");
                    let _ = tcp.set_nodelay(true);
                });
                let _ = axum::serve(listener, app).await;
            })
        })?;
    Ok(format!("http://{addr}/mcp"))
}
