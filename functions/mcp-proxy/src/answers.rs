//! The gateway's own error answers on an MCP endpoint: JSON-RPC errors that carry the
//! request's id (so the client can tell which call failed), with the HTTP status that fits.
//! Upstream failures are `UPSTREAM_ERROR` with a `data.reason` from [`Reason`]; the
//! upstream's own text is never echoed, and the cause is kept for the log only.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mcpgw::http::ErrorCode;
use mcpgw::http::{ApiError, ErrorCause, error_chain};
use mcpgw::mcp::handshake::CallError;
use mcpgw::mcp::jsonrpc;
use serde_json::{Value, json};

use crate::results::{Answered, ClientEra};

/// A JSON-RPC error answer with an HTTP status.
pub fn rpc_error(
    status: StatusCode,
    id: Option<&Value>,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response {
    let mut resp = (status, axum::Json(jsonrpc::error(id, code, message, data))).into_response();
    resp.extensions_mut().insert(Answered::Error { code });
    resp
}

/// The answer to a request the gateway (speaking as the MCP server) does not implement, or
/// that is not a request of the client's era: JSON-RPC's "Method not found", HTTP 200.
pub fn method_not_found(id: &Value) -> Response {
    rpc_error(
        StatusCode::OK,
        Some(id),
        jsonrpc::METHOD_NOT_FOUND,
        "Method not found",
        None,
    )
}

/// The answer to a `resources/read` of a URI no server can read: -32002 up to 2025-11-25,
/// -32602 (invalid params) in 2026-07-28, which gave up the MCP-specific code.
pub fn resource_not_found(id: &Value, era: ClientEra) -> Response {
    let code = match era {
        ClientEra::Session => jsonrpc::RESOURCE_NOT_FOUND,
        ClientEra::Modern => jsonrpc::INVALID_PARAMS,
    };
    rpc_error(StatusCode::OK, Some(id), code, "Resource not found", None)
}

/// `data.reason` of the gateway's upstream errors: why the upstream's answer is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Timeout,
    Unavailable,
    AuthFailed,
    Redirect,
    BadAnswer,
    RefusedInitialize,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "upstream_timeout",
            Self::Unavailable => "upstream_unavailable",
            Self::AuthFailed => "upstream_auth_failed",
            Self::Redirect => "upstream_redirect",
            Self::BadAnswer => "upstream_bad_answer",
            Self::RefusedInitialize => "upstream_refused_initialize",
        }
    }
}

/// The JSON-RPC error object of an upstream failure (also written into event streams).
pub fn upstream_error(id: Option<&Value>, reason: Reason, message: &str) -> Value {
    jsonrpc::error(
        id,
        jsonrpc::UPSTREAM_ERROR,
        message,
        Some(json!({"reason": reason.as_str()})),
    )
}

/// The answer to a failed upstream call, its cause kept for the log.
pub fn call_failed(e: &CallError, id: Option<&Value>) -> Response {
    let (status, reason, message) = match e {
        e if e.is_timeout() => (
            StatusCode::GATEWAY_TIMEOUT,
            Reason::Timeout,
            "the upstream MCP server did not answer in time",
        ),
        // A denied egress answers like an unreachable upstream (the client learns nothing of
        // the policy); the log's cause says "refused by the egress policy" and the rule.
        CallError::Transport(_)
        | CallError::Egress(_)
        | CallError::Timeout(_)
        | CallError::Unavailable(_) => (
            StatusCode::BAD_GATEWAY,
            Reason::Unavailable,
            "the upstream MCP server could not be reached",
        ),
        CallError::Auth(_) => (
            StatusCode::BAD_GATEWAY,
            Reason::AuthFailed,
            "the upstream MCP server rejected the gateway's credential",
        ),
        CallError::Redirect(_) => (
            StatusCode::BAD_GATEWAY,
            Reason::Redirect,
            "the upstream MCP server answered with a redirect, which the gateway does not follow",
        ),
        CallError::BadAnswer => (
            StatusCode::BAD_GATEWAY,
            Reason::BadAnswer,
            "the upstream MCP server's answer was not valid MCP",
        ),
    };
    let mut resp = (status, axum::Json(upstream_error(id, reason, message))).into_response();
    resp.extensions_mut()
        .insert(ErrorCause(error_chain(e).into()));
    resp.extensions_mut()
        .insert(mcpgw::metrics::ErrorReason(reason.as_str()));
    resp.extensions_mut().insert(Answered::Error {
        code: jsonrpc::UPSTREAM_ERROR,
    });
    resp
}

/// Why an upstream's answer to a request was not passed on (never its text: the answer is
/// the upstream's, possibly an attacker's page, and the client must not take it as MCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadAnswer {
    /// Neither `application/json` nor `text/event-stream`.
    NotJsonOrSse,
    /// JSON that is not a JSON-RPC 2.0 message.
    NotJsonRpc,
    /// A response whose id is not the request's (another request's, the gateway's own in a
    /// bridged session, or made up).
    WrongId,
    /// Larger than the gateway holds to check or adapt it.
    TooLarge,
}

impl BadAnswer {
    fn message(self) -> &'static str {
        match self {
            Self::NotJsonOrSse => {
                "the upstream MCP server's answer was neither JSON nor an event stream"
            }
            Self::NotJsonRpc => "the upstream MCP server's answer was not a JSON-RPC message",
            Self::WrongId => "the upstream MCP server answered with a response to another request",
            Self::TooLarge => "the upstream MCP server's answer was too large to relay",
        }
    }

    /// The error object, also written into an event stream in place of the bad event.
    pub fn error(self, id: Option<&Value>, upstream_status: StatusCode) -> Value {
        let mut e = upstream_error(id, Reason::BadAnswer, self.message());
        e["error"]["data"]["upstream_status"] = upstream_status.as_u16().into();
        e
    }

    /// The answer to the client, before any header went out: 502, like every other answer
    /// the gateway gives for an upstream that failed ([`call_failed`]), with the client's id.
    pub fn response(self, id: Option<&Value>, upstream_status: StatusCode) -> Response {
        let mut resp = (
            StatusCode::BAD_GATEWAY,
            axum::Json(self.error(id, upstream_status)),
        )
            .into_response();
        resp.extensions_mut().insert(ErrorCause(
            format!("upstream bad answer ({self:?}, HTTP {upstream_status})").into(),
        ));
        resp
    }
}

/// The answer to a session id that is not (or no longer) usable: 404, so the client
/// initializes again. Which check failed is not said.
pub fn session_not_found(id: Option<&Value>) -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        id,
        jsonrpc::SESSION_NOT_FOUND,
        "Session not found: initialize a new session",
        None,
    )
}

/// A message that is neither `initialize`, nor in a session, nor a 2026-07-28 request.
pub fn no_session(id: Option<&Value>) -> Response {
    rpc_error(
        StatusCode::BAD_REQUEST,
        id,
        jsonrpc::INVALID_REQUEST,
        "Bad Request: no Mcp-Session-Id; send initialize first, or use the 2026-07-28 per-request envelope",
        None,
    )
}

/// 405 for a GET stream this deployment or this session cannot serve; the spec lets servers
/// answer so, and clients then rely on POST responses alone.
pub fn no_get_stream() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "no server-to-client stream is offered here",
    )
    .with_header(header::ALLOW, HeaderValue::from_static("POST, DELETE"))
    .into_response()
}

/// What a notification or a client's response gets: nothing but 202.
pub fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

/// A failure of the gateway's own (keyring, sealing): 500, the cause for the log.
pub fn internal(e: &(dyn std::error::Error + 'static)) -> Response {
    ApiError::internal(e).into_response()
}

/// An event stream the gateway writes itself (held connect streams, input rounds, a
/// virtual server's `list_changed`): `text/event-stream`, never cached.
pub fn event_stream(body: axum::body::Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn an_unknown_resource_has_each_eras_code() {
        let id = json!(3);
        let session = body(resource_not_found(&id, ClientEra::Session)).await;
        let modern = body(resource_not_found(&id, ClientEra::Modern)).await;
        assert_eq!(
            (&session["id"], &session["error"]["code"]),
            (&id, &json!(-32002))
        );
        assert_eq!(
            (&modern["id"], &modern["error"]["code"]),
            (&id, &json!(-32602))
        );
        let unknown = body(method_not_found(&id)).await;
        assert_eq!(
            (&unknown["id"], &unknown["error"]["code"]),
            (&id, &json!(-32601))
        );
    }
}
