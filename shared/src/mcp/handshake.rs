//! Calls the gateway makes to an upstream on its own account: `initialize` (and the
//! `notifications/initialized` that follows), the `server/discover` probe, cancellations and
//! session ends. Each sends one JSON-RPC message and reads its one answer, whether the
//! upstream replies with JSON or with an SSE stream (notifications before the answer are
//! dropped: nobody asked for them).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use futures_util::StreamExt;
use serde_json::Value;

use super::jsonrpc::Message;
use super::sse;

/// Largest answer read for a handshake call.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Why a call to an upstream failed. Shared by the proxy's own forwarding.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("upstream request failed")]
    Transport(#[source] reqwest::Error),
    /// The egress policy refused the connection (the upstream's address is denied): logged
    /// as such, answered to the client like an unreachable upstream.
    #[error("upstream connection refused by the egress policy")]
    Egress(#[source] crate::egress::EgressDenied),
    #[error("upstream sent no response within {0:?}")]
    Timeout(Duration),
    #[error("upstream rejected the gateway's credential (HTTP {0})")]
    Auth(u16),
    #[error("upstream answered with a redirect (HTTP {0}), which the gateway does not follow")]
    Redirect(u16),
    #[error("upstream answer is not a JSON-RPC response to the gateway's request")]
    BadAnswer,
    /// An answer that says the upstream is not available right now (5xx, 408, 429).
    #[error("upstream is unavailable (HTTP {0})")]
    Unavailable(u16),
}

impl CallError {
    /// Transport errors keep no URL: an upstream's query string may carry its API key, and
    /// these errors are logged. An egress denial anywhere in the chain becomes [`Self::Egress`]
    /// (it names the host and the rule, never the URL).
    pub fn transport(e: reqwest::Error) -> Self {
        match crate::egress::EgressDenied::find(&e) {
            Some(denied) => Self::Egress(denied.clone()),
            None => Self::Transport(e.without_url()),
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_)) || matches!(self, Self::Transport(e) if e.is_timeout())
    }
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub session_id: Option<String>,
    /// The JSON-RPC response to the request (None for notifications and non-2xx answers
    /// without a JSON-RPC body).
    pub message: Option<Value>,
}

impl Reply {
    /// The `result` of a successful response.
    pub fn result(&self) -> Option<&Value> {
        self.message.as_ref()?.get("result")
    }
}

/// Sends a request to `url` and checks the status classes every caller refuses.
pub async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, CallError> {
    let response = tokio::time::timeout(timeout, request.send())
        .await
        .map_err(|_| CallError::Timeout(timeout))?
        .map_err(CallError::transport)?;
    let status = response.status();
    if status.is_redirection() {
        return Err(CallError::Redirect(status.as_u16()));
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(CallError::Auth(status.as_u16()));
    }
    Ok(response)
}

/// Posts `message` with `headers` (credential, session, version) and reads its answer.
pub async fn exchange(
    http: &reqwest::Client,
    url: &str,
    headers: HeaderMap,
    message: &Value,
    timeout: Duration,
) -> Result<Reply, CallError> {
    // A Value always serializes.
    let body = serde_json::to_vec(message).unwrap_or_default();
    exchange_bytes(http, url, headers, message.get("id"), body, timeout).await
}

/// [`exchange`] for a client's message: sent as [`Message::to_bytes`] writes it.
pub async fn exchange_message(
    http: &reqwest::Client,
    url: &str,
    headers: HeaderMap,
    message: &Message,
    timeout: Duration,
) -> Result<Reply, CallError> {
    let body = message.to_bytes();
    exchange_bytes(http, url, headers, message.id(), body, timeout).await
}

async fn exchange_bytes(
    http: &reqwest::Client,
    url: &str,
    headers: HeaderMap,
    id: Option<&Value>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Reply, CallError> {
    let request = http
        .post(url)
        .headers(headers)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        )
        .body(body);
    // One budget for the whole exchange: sending and reading the answer share it.
    let deadline = tokio::time::Instant::now() + timeout;
    let response = send(request, timeout).await?;
    let status = response.status();
    let session_id = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let media = AnswerType::of(response.headers());
    let message = match (id, media) {
        (None, _) => None,
        // Neither JSON nor SSE (an HTML error page, text): no answer, whatever the body says.
        (Some(_), AnswerType::Other) => None,
        (Some(id), media) => {
            let read = read_answer(response, id, media == AnswerType::Sse);
            tokio::time::timeout_at(deadline, read)
                .await
                .map_err(|_| CallError::Timeout(timeout))??
        }
    };
    if status.is_success() && id.is_some() && message.is_none() {
        return Err(CallError::BadAnswer);
    }
    Ok(Reply {
        status,
        session_id,
        message,
    })
}

/// What an upstream's answer says it is, by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerType {
    Json,
    Sse,
    /// Anything else (HTML, text, none): not an MCP answer.
    Other,
}

impl AnswerType {
    pub fn of(headers: &HeaderMap) -> Self {
        let Some(ct) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        else {
            return Self::Other;
        };
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("application/json") {
            Self::Json
        } else if essence.eq_ignore_ascii_case("text/event-stream") {
            Self::Sse
        } else {
            Self::Other
        }
    }
}

async fn read_answer(
    response: reqwest::Response,
    id: &Value,
    is_sse: bool,
) -> Result<Option<Value>, CallError> {
    let matches = |v: &Value| {
        v.get("id") == Some(id) && (v.get("result").is_some() || v.get("error").is_some())
    };
    let mut stream = response.bytes_stream();
    let mut parser = sse::Parser::default();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(CallError::transport)?;
        if is_sse {
            for event in parser.push(&chunk).map_err(|_| CallError::BadAnswer)? {
                if let Ok(v) = serde_json::from_str::<Value>(&event.data)
                    && matches(&v)
                {
                    return Ok(Some(v));
                }
            }
        } else {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ANSWER {
                return Err(CallError::BadAnswer);
            }
        }
    }
    if is_sse {
        return Ok(None);
    }
    // A JSON-RPC error with a null id (a server that refused before reading the id) still
    // answers this request.
    Ok(serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(|v| matches(v) || (v.get("error").is_some() && v.get("id") == Some(&Value::Null))))
}
