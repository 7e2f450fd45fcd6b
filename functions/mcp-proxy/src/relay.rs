//! Talking to the upstream for a client: the credential-bearing request, and the answer
//! streamed back event by event with a deadline on the whole call, cancellation, and a
//! `notifications/cancelled` sent upstream when the client goes away mid-call.
//!
//! The upstream is not trusted to answer well (OWASP API10): what a request is owed
//! ([`Expect`]) is checked on the way back. An answer that is neither JSON nor an event
//! stream, is not JSON-RPC, or responds to another id (in a bridged session: anything but the
//! gateway's own id for this request) becomes `-32002` with `data.reason:
//! "upstream_bad_answer"` and the client's id; the upstream's text is never echoed.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use mcpgw::http::{ErrorCause, Relayed, error_chain};
use mcpgw::mcp::handshake::{AnswerType, CallError};
use mcpgw::mcp::jsonrpc::{Message, UpstreamMessage};
use mcpgw::mcp::{jsonrpc, sse};
use mcpgw::policy::Access;
use mcpgw::upstream::{Upstream, returned_response_headers};
use serde_json::{Value, json};
use tokio::sync::watch;

/// A JSON-RPC error answer with an HTTP status.
pub fn rpc_error(
    status: StatusCode,
    id: Option<&Value>,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response {
    (status, axum::Json(jsonrpc::error(id, code, message, data))).into_response()
}

/// The answer to a failed upstream call: a JSON-RPC error that carries the request's id, so
/// the client can tell which call failed, with a reason in `data` and the cause kept for the
/// log only.
pub fn call_failed(e: &CallError, id: Option<&Value>) -> Response {
    let (status, reason, message) = match e {
        e if e.is_timeout() => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "the upstream MCP server did not answer in time",
        ),
        // A denied egress answers like an unreachable upstream (the client learns nothing of
        // the policy); the log's cause says "refused by the egress policy" and the rule.
        CallError::Transport(_)
        | CallError::Egress(_)
        | CallError::Timeout(_)
        | CallError::Unavailable(_) => (
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            "the upstream MCP server could not be reached",
        ),
        CallError::Auth(_) => (
            StatusCode::BAD_GATEWAY,
            "upstream_auth_failed",
            "the upstream MCP server rejected the gateway's credential",
        ),
        CallError::Redirect(_) => (
            StatusCode::BAD_GATEWAY,
            "upstream_redirect",
            "the upstream MCP server answered with a redirect, which the gateway does not follow",
        ),
        CallError::BadAnswer => (
            StatusCode::BAD_GATEWAY,
            "upstream_bad_answer",
            "the upstream MCP server's answer was not valid MCP",
        ),
    };
    let mut resp = rpc_error(
        status,
        id,
        jsonrpc::UPSTREAM_ERROR,
        message,
        Some(json!({"reason": reason})),
    );
    resp.extensions_mut()
        .insert(ErrorCause(error_chain(e).into()));
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

    fn error(self, id: Option<&Value>, upstream_status: StatusCode) -> Value {
        jsonrpc::error(
            id,
            jsonrpc::UPSTREAM_ERROR,
            self.message(),
            Some(
                json!({"reason": "upstream_bad_answer", "upstream_status": upstream_status.as_u16()}),
            ),
        )
    }

    /// The answer to the client, before any header went out: 502, like every other answer
    /// the gateway gives for an upstream that failed (`call_failed`), with the client's id.
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

/// Sends `notifications/cancelled` upstream when dropped armed: the client disconnected (or
/// the call outlived its deadline) before the answer was complete. Session-era upstreams
/// keep working on a request whose stream closed; stateless ones stop on the close itself.
pub struct CancelOnDrop {
    upstream: Upstream,
    headers: HeaderMap,
    request_id: Value,
    armed: bool,
}

impl CancelOnDrop {
    pub fn new(upstream: &Upstream, headers: HeaderMap, request_id: Value) -> Self {
        Self {
            upstream: upstream.clone(),
            headers,
            request_id,
            armed: true,
        }
    }
}

impl CancelOnDrop {
    /// The request is settled another way (retried, answered): nothing to cancel.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.upstream.cancel_later(
                std::mem::take(&mut self.headers),
                self.request_id.take(),
                "the client disconnected or the call timed out",
            );
        }
    }
}

/// How results are adapted when the client and the upstream speak different eras. Only
/// JSON-RPC results are touched; notifications and errors pass as they are.
#[derive(Debug, Clone, PartialEq)]
pub enum Rewrite {
    /// Session-era answers to a stateless-era client: 2026-07-28 requires `resultType` on
    /// every result and the caching fields on cacheable ones (immediately stale, private:
    /// the gateway cannot vouch for more). The upstream session is shared by the user's
    /// stateless clients, so their requests carry gateway-made ids: `restore_id` maps the
    /// answer's id (the gateway's) back to the client's.
    ToModern {
        cacheable: bool,
        restore_id: Option<(Value, Value)>,
    },
    /// Stateless-era answers to a session-era client: the new fields are dropped, since
    /// some older SDKs validate results (empty ones especially) strictly.
    ToSession,
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

impl Rewrite {
    pub fn apply(&self, message: &mut Value) {
        if let Self::ToModern {
            restore_id: Some((gateway, client)),
            ..
        } = self
            && message.get("id") == Some(gateway)
            && (message.get("result").is_some() || message.get("error").is_some())
        {
            message["id"] = client.clone();
        }
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
            return;
        };
        match self {
            Self::ToModern { cacheable, .. } => {
                result
                    .entry("resultType")
                    .or_insert_with(|| Value::from("complete"));
                if *cacheable {
                    result.entry("ttlMs").or_insert_with(|| Value::from(0));
                    result
                        .entry("cacheScope")
                        .or_insert_with(|| Value::from("private"));
                }
            }
            Self::ToSession => {
                for k in ["resultType", "ttlMs", "cacheScope"] {
                    result.remove(k);
                }
            }
        }
    }
}

/// What access control changes in an answer (see `forward::shape`). Applied to every
/// JSON-RPC result in the answer, batches included.
#[derive(Clone, Default)]
pub struct Adapt {
    /// Drops the tools the caller may not use from `tools/list` results.
    pub filter: Option<Arc<Access>>,
    /// For 2026-07-28 clients: list results are per caller (`cacheScope: "private"`) and
    /// cached no longer than this many milliseconds (the policy's own reuse time).
    pub private_lists: Option<u64>,
    /// Hidden tools were called under names that cannot exist (`sentinel`, `original`): the
    /// upstream's unknown-tool answer is relayed with the caller's name put back.
    pub renames: Vec<(String, String)>,
}

impl Adapt {
    fn apply(&self, message: &mut Value) {
        if let Value::Array(items) = message {
            items.iter_mut().for_each(|m| self.apply(m));
            return;
        }
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
            return;
        };
        if let Some(access) = &self.filter
            && let Some(Value::Array(tools)) = result.get_mut("tools")
        {
            mcpgw::upstream::catalog::filter_listed(access, tools);
        }
        if let Some(max_ttl) = self.private_lists
            && ["tools", "prompts", "resources", "resourceTemplates"]
                .iter()
                .any(|k| result.get(*k).is_some_and(Value::is_array))
        {
            result.insert("cacheScope".into(), "private".into());
            let ttl = result.get("ttlMs").and_then(Value::as_u64).unwrap_or(0);
            result.insert("ttlMs".into(), ttl.min(max_ttl).into());
        }
    }

    /// The caller's names back in place of the sentinels, in serialized JSON.
    fn rename_back(&self, mut text: Vec<u8>) -> Vec<u8> {
        for (sentinel, original) in &self.renames {
            let Ok(s) = String::from_utf8(text.clone()) else {
                return text;
            };
            // The original as it appears inside a JSON string (quotes stripped).
            let escaped = serde_json::to_string(original).unwrap_or_default();
            let inner = &escaped[1..escaped.len().saturating_sub(1).max(1)];
            text = s.replace(sentinel.as_str(), inner).into_bytes();
        }
        text
    }
}

/// Largest JSON answer held: every JSON answer to a request is read whole and checked before
/// its first byte goes out, and adapted between eras when it must be. A larger one is refused
/// (`BadAnswer::TooLarge`) before any header is sent. SSE answers are checked event by event
/// (events up to `sse`'s own bound).
pub const MAX_JSON_ANSWER: usize = 8 * 1024 * 1024;

/// What the upstream owes the client for the message it was sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Expect {
    /// One response with this id: the id the upstream was sent (the gateway's own in a
    /// bridged session, else the client's).
    Response(Value),
    /// A batch: one response per request id.
    Batch(Vec<Value>),
    /// Nothing in particular (notifications, responses, a GET stream): what comes back is
    /// passed on, but only as JSON or an event stream.
    #[default]
    Nothing,
}

impl Expect {
    /// Whether `id` is owed, and still pending.
    fn owed(&self, id: &Value, answered: &[Value]) -> bool {
        let listed = match self {
            Self::Response(expected) => expected == id,
            Self::Batch(ids) => ids.contains(id),
            Self::Nothing => false,
        };
        listed && !answered.contains(id)
    }

    fn count(&self) -> usize {
        match self {
            Self::Response(_) => 1,
            Self::Batch(ids) => ids.len(),
            Self::Nothing => 0,
        }
    }
}

/// What the upstream owes for a client's message sent as it is (same id).
pub fn expect_for(msg: &Message, id: Option<&Value>) -> Expect {
    match (msg.kind, id) {
        (jsonrpc::Kind::Request, Some(id)) => Expect::Response(id.clone()),
        _ => Expect::Nothing,
    }
}

/// What accompanies a relayed answer.
#[derive(Default)]
pub struct RelayOptions {
    /// What the answer must be; anything else becomes a `-32002 upstream_bad_answer` error.
    pub expect: Expect,
    /// Adapt results between eras (buffers JSON answers, re-frames SSE events).
    pub rewrite: Option<Rewrite>,
    /// Access control's changes to the answer (also buffers and re-frames).
    pub adapt: Adapt,
    /// On a server-to-client stream: announces policy changes as
    /// `notifications/tools/list_changed`.
    pub policy_changes: Option<watch::Receiver<u64>>,
    /// The client's id for the request: the id of every error the gateway writes for it.
    pub request_id: Option<Value>,
    /// Turns true when the client cancels the request (`notifications/cancelled`).
    pub cancel: Option<watch::Receiver<bool>>,
    pub cancel_on_drop: Option<CancelOnDrop>,
    /// The request's in-flight registration (for cancellation), released with the answer.
    pub in_flight: Option<mcpgw::mcp::memory::InFlight>,
    /// No deadline (long-lived GET streams end when the deployment ends them).
    pub unbounded: bool,
}

impl RelayOptions {
    /// Whether messages are changed on the way (rewritten, filtered, or renamed back).
    fn changes_messages(&self) -> bool {
        self.rewrite.is_some() || self.adapt.filter.is_some() || self.adapt.private_lists.is_some()
    }

    /// One message (JSON text) as the client gets it; `fix_id`: the client's id in place of
    /// a null one. Unparseable text passes unchanged (but for the names put back).
    fn transform(&self, data: &[u8], fix_id: Option<&Value>) -> Vec<u8> {
        let out = if self.changes_messages() || fix_id.is_some() {
            match serde_json::from_slice::<Value>(data) {
                Ok(mut v) => {
                    if let Some(id) = fix_id {
                        v["id"] = id.clone();
                    }
                    if let Some(r) = &self.rewrite {
                        r.apply(&mut v);
                    }
                    self.adapt.apply(&mut v);
                    serde_json::to_vec(&v).unwrap_or_else(|_| data.to_vec())
                }
                Err(_) => data.to_vec(),
            }
        } else {
            data.to_vec()
        };
        self.adapt.rename_back(out)
    }

    /// The request is answered: registrations end with the answer, not when the client gets
    /// around to closing, and nothing is left to cancel.
    fn settle(&mut self) {
        self.in_flight = None;
        if let Some(c) = self.cancel_on_drop.as_mut() {
            c.armed = false;
        }
    }
}

/// How one upstream message relates to what is owed.
enum Verdict {
    /// Passed on (server-to-client requests and notifications; anything when nothing is
    /// owed).
    Pass,
    /// A response owed; `null_id`: an error the upstream could not tie to the request, given
    /// the client's id.
    Answer {
        ids: Vec<Value>,
        null_id: bool,
    },
    Bad(BadAnswer),
}

/// Judges one upstream message (JSON text) against what is owed and already answered.
fn judge(data: &[u8], expect: &Expect, answered: &[Value]) -> Verdict {
    if *expect == Expect::Nothing {
        return Verdict::Pass;
    }
    let batch = matches!(expect, Expect::Batch(_));
    let messages = if batch {
        jsonrpc::read_upstream_messages(data)
    } else {
        jsonrpc::read_upstream_message(data).map(|m| vec![m])
    };
    let Some(messages) = messages else {
        return Verdict::Bad(BadAnswer::NotJsonRpc);
    };
    let mut ids = Vec::new();
    let mut null_id = false;
    for m in messages {
        match m {
            UpstreamMessage::RequestOrNotification => {}
            UpstreamMessage::Response { id, is_error } => {
                // An error the upstream could not tie to the request (it could not read it)
                // still answers it; the client gets its own id in it.
                if is_error && id.is_null() && !batch {
                    null_id = true;
                } else if !expect.owed(&id, answered) || ids.contains(&id) {
                    return Verdict::Bad(BadAnswer::WrongId);
                }
                ids.push(id);
            }
        }
    }
    if ids.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Answer { ids, null_id }
    }
}

/// Reads a JSON answer whole (at most [`MAX_JSON_ANSWER`] bytes).
async fn read_json(
    body: &mut BoxStream<'static, reqwest::Result<Bytes>>,
) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ReadError::Transport(e.without_url()))?;
        if out.len() + chunk.len() > MAX_JSON_ANSWER {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

enum ReadError {
    Transport(reqwest::Error),
    TooLarge,
}

struct Relay {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    deadline: tokio::time::Instant,
    done: bool,
    opts: RelayOptions,
    parser: sse::Parser,
    /// Ids of the responses already relayed.
    answered: Vec<Value>,
    /// The upstream's status, for the errors written into the stream.
    status: StatusCode,
}

async fn cancelled(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(rx) => {
            while !*rx.borrow() {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
        None => std::future::pending().await,
    }
}

/// Resolves when the policy changed (never, without a receiver or once its sender is gone).
async fn policy_changed(rx: &mut Option<watch::Receiver<u64>>) -> Option<()> {
    match rx {
        Some(r) => match r.changed().await {
            Ok(()) => Some(()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

impl Relay {
    /// Whether the stream's bytes pass as they come: nothing is owed, checked or changed,
    /// and no notification of the gateway's own may need a place between two events.
    fn passes_raw(&self) -> bool {
        self.opts.expect == Expect::Nothing
            && !self.opts.changes_messages()
            && self.opts.adapt.renames.is_empty()
            && self.opts.policy_changes.is_none()
    }

    /// Ends the stream with the gateway's error in place of the upstream's message.
    fn fail(&mut self, why: BadAnswer, out: &mut Vec<u8>) {
        self.done = true;
        let err = why.error(self.opts.request_id.as_ref(), self.status);
        out.extend_from_slice(sse::message_event(&err).as_bytes());
    }

    /// One upstream chunk as the client gets it: as it is, or checked and rewritten event by
    /// event. An event that is not a JSON-RPC message, or a response to another request,
    /// ends the stream with the gateway's error (the client's id), and the stream ends
    /// once everything owed was relayed.
    fn adapt(&mut self, bytes: Bytes) -> Bytes {
        if self.passes_raw() {
            return bytes;
        }
        let mut out = Vec::new();
        let blocks = match self.parser.push_blocks(&bytes) {
            Ok(b) => b,
            Err(_) => {
                self.fail(BadAnswer::TooLarge, &mut out);
                return Bytes::from(out);
            }
        };
        for block in blocks {
            let Some(event) = block.event else {
                // Comments and retry hints: they keep idle connections open.
                out.extend_from_slice(&block.raw);
                continue;
            };
            let (fix_id, answered) =
                match judge(event.data.as_bytes(), &self.opts.expect, &self.answered) {
                    Verdict::Pass => (None, None),
                    Verdict::Answer { ids, null_id } => (
                        null_id.then(|| self.opts.request_id.clone().unwrap_or(Value::Null)),
                        Some(ids),
                    ),
                    Verdict::Bad(why) => {
                        self.fail(why, &mut out);
                        break;
                    }
                };
            if self.opts.changes_messages() || fix_id.is_some() {
                // Re-framed: the data changed.
                if let Some(id) = &event.id {
                    out.extend_from_slice(format!("id: {id}\n").as_bytes());
                }
                if let Some(name) = &event.event {
                    out.extend_from_slice(format!("event: {name}\n").as_bytes());
                }
                let data = self.opts.transform(event.data.as_bytes(), fix_id.as_ref());
                let data = String::from_utf8(data).unwrap_or(event.data);
                for line in data.split('\n') {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
                out.push(b'\n');
            } else {
                // The upstream's own framing, with only the callers' names put back.
                out.extend_from_slice(&self.opts.adapt.rename_back(block.raw));
            }
            if let Some(ids) = answered {
                self.answered.extend(ids);
                if self.answered.len() >= self.opts.expect.count() {
                    // Everything owed is relayed: the request is over for the client.
                    self.complete();
                    break;
                }
            }
        }
        Bytes::from(out)
    }

    fn complete(&mut self) {
        self.done = true;
        self.opts.settle();
    }

    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        tokio::select! {
            chunk = self.body.next() => match chunk {
                Some(Ok(bytes)) => Some(Ok(self.adapt(bytes))),
                Some(Err(e)) => {
                    self.done = true;
                    Some(Err(std::io::Error::other(e.without_url())))
                }
                None => {
                    self.complete();
                    None
                }
            },
            _ = tokio::time::sleep_until(self.deadline), if !self.opts.unbounded => {
                // Still armed: the upstream is told to stop working on it.
                self.done = true;
                let err = jsonrpc::error(
                    self.opts.request_id.as_ref(),
                    jsonrpc::UPSTREAM_ERROR,
                    "the upstream MCP server did not finish in time",
                    Some(json!({"reason": "upstream_timeout"})),
                );
                Some(Ok(Bytes::from(sse::message_event(&err))))
            }
            Some(()) = policy_changed(&mut self.opts.policy_changes) => {
                let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
                Some(Ok(Bytes::from(sse::message_event(&note))))
            }
            _ = cancelled(&mut self.opts.cancel) => {
                // The client cancelled: closing the upstream stream is the stateless era's
                // cancellation; nothing more is owed to the client.
                self.done = true;
                None
            }
        }
    }
}

/// A response with the relayed status and headers.
fn relayed(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp.extensions_mut().insert(Relayed);
    resp
}

/// Relays an upstream answer: status, the safe headers (never the upstream's session id or
/// challenge), and the body. An event stream flows as it arrives, checked event by event;
/// a JSON answer to a request is read whole and checked (and adapted) before anything goes
/// out, so a bad one is answered with the gateway's error and a proper status. What is owed
/// is `opts.expect`: an answer to a request that is neither JSON nor SSE, not JSON-RPC, or
/// a response to another id becomes `-32002 upstream_bad_answer` with the client's id.
pub async fn stream_back(
    up: &Upstream,
    upstream: reqwest::Response,
    mut opts: RelayOptions,
) -> Response {
    let status = upstream.status();
    let mut headers = returned_response_headers(upstream.headers());
    headers.remove(HeaderName::from_static("mcp-session-id"));
    let kind = AnswerType::of(upstream.headers());
    let owed = opts.expect != Expect::Nothing;
    let mut body = upstream.bytes_stream().boxed();
    match kind {
        AnswerType::Sse => {}
        AnswerType::Other if owed => {
            return BadAnswer::NotJsonOrSse.response(opts.request_id.as_ref(), status);
        }
        AnswerType::Other => {
            // Nothing owed (a notification's 202): the status alone, never a page.
            headers.remove(header::CONTENT_TYPE);
            return relayed(status, headers, Body::empty());
        }
        AnswerType::Json if !owed && !opts.changes_messages() && opts.adapt.renames.is_empty() => {
            return relayed(status, headers, Body::from_stream(body));
        }
        AnswerType::Json => {
            let read = tokio::select! {
                r = tokio::time::timeout_at(up.deadline(), read_json(&mut body)) => r,
                _ = cancelled(&mut opts.cancel) => {
                    // The client cancelled: nothing is owed to it any more (and it ignores
                    // whatever comes, so the answer is the one a notification gets).
                    opts.settle();
                    return StatusCode::ACCEPTED.into_response();
                }
            };
            let text = match read {
                Err(_) => {
                    // Still armed: the upstream is told to stop working on it.
                    let e = CallError::Timeout(up.call_timeout());
                    return call_failed(&e, opts.request_id.as_ref());
                }
                Ok(Err(ReadError::Transport(e))) => {
                    return call_failed(&CallError::Transport(e), opts.request_id.as_ref());
                }
                Ok(Err(ReadError::TooLarge)) => {
                    return BadAnswer::TooLarge.response(opts.request_id.as_ref(), status);
                }
                Ok(Ok(text)) => text,
            };
            let fix_id = match judge(&text, &opts.expect, &[]) {
                Verdict::Bad(why) => {
                    opts.settle();
                    return why.response(opts.request_id.as_ref(), status);
                }
                Verdict::Pass if owed => {
                    // JSON carries one answer; a request or notification in its place is none.
                    opts.settle();
                    return BadAnswer::NotJsonRpc.response(opts.request_id.as_ref(), status);
                }
                Verdict::Pass => None,
                Verdict::Answer { null_id, .. } => {
                    null_id.then(|| opts.request_id.clone().unwrap_or(Value::Null))
                }
            };
            opts.settle();
            let out = opts.transform(&text, fix_id.as_ref());
            return relayed(status, headers, Body::from(out));
        }
    }
    let relay = Relay {
        body,
        deadline: up.deadline(),
        done: false,
        opts,
        parser: sse::Parser::default(),
        answered: Vec::new(),
        status,
    };
    let stream = futures_util::stream::unfold(relay, |mut r| async move {
        r.next().await.map(|item| (item, r))
    });
    relayed(status, headers, Body::from_stream(stream))
}
