//! The stream relay: the upstream's answer streamed back to the client event by event, with
//! a deadline on the whole call, the client's cancellation, and each message checked
//! against what is owed ([`crate::owed`]) and changed on the way: era rewriting
//! ([`crate::rewrite`]) and access control ([`crate::adapt`]).
//!
//! The upstream is not trusted to answer well (OWASP API10): an answer that is neither JSON
//! nor an event stream, is not JSON-RPC, or responds to another id becomes the gateway's
//! `upstream_bad_answer` error with the client's id; the upstream's text is never echoed.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use mcpgw::http::Relayed;
use mcpgw::mcp::handshake::{AnswerType, CallError};
use mcpgw::mcp::jsonrpc::Ending;
use mcpgw::mcp::sse;
use mcpgw::upstream::{Upstream, returned_response_headers};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::adapt::Adapt;
use crate::answers::{BadAnswer, Reason, call_failed, upstream_error};
use crate::cancel::CancelOnDrop;
use crate::inputs::{Handled, Held, HeldParts, Inputs};
use crate::owed::{Expect, Verdict, judge};
use crate::rewrite::Rewrite;

/// Largest JSON answer held: every JSON answer to a request is read whole and checked before
/// its first byte goes out, and adapted between eras when it must be. A larger one is refused
/// (`BadAnswer::TooLarge`) before any header is sent. SSE answers are checked event by event
/// (events up to `sse`'s own bound).
pub const MAX_JSON_ANSWER: usize = 8 * 1024 * 1024;

/// What accompanies a relayed answer.
#[derive(Default)]
pub struct RelayOptions {
    /// What the answer must be; anything else becomes the gateway's `upstream_bad_answer`.
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
    /// A bridged call: the upstream's requests to the client are answered or turned into an
    /// `input_required` result ([`crate::inputs`]), never passed on.
    pub inputs: Option<Inputs>,
}

impl RelayOptions {
    /// Whether messages are changed on the way (rewritten, filtered, or renamed back).
    fn changes_messages(&self) -> bool {
        self.rewrite.is_some() || self.adapt.changes_results()
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
            c.settle();
        }
    }
}

/// Reads a JSON answer whole (at most [`MAX_JSON_ANSWER`] bytes) into `out`, which keeps
/// what was read if this is dropped half-way (to answer an upstream request meanwhile).
async fn read_json(
    body: &mut BoxStream<'static, reqwest::Result<Bytes>>,
    out: &mut Vec<u8>,
) -> Result<(), ReadError> {
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ReadError::Transport(e.without_url()))?;
        if out.len() + chunk.len() > MAX_JSON_ANSWER {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(())
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

/// The next request the upstream sent on its session's `GET` stream (never, without one).
async fn listened(inputs: &mut Option<Inputs>) -> Value {
    match inputs {
        Some(i) => i.listened().await,
        None => std::future::pending().await,
    }
}

/// A server-to-client request in an event, when a bridged call's requests are intercepted.
fn server_request(opts: &RelayOptions, data: &str) -> Option<Value> {
    opts.inputs.as_ref()?;
    // Notifications (progress, log messages) carry no id: not parsed for this.
    if !data.contains("\"id\"") {
        return None;
    }
    serde_json::from_str::<Value>(data)
        .ok()
        .filter(crate::inputs::is_request)
}

impl Relay {
    /// A server-to-client request of a bridged call: answered upstream (the event is
    /// dropped: `None`), or the call held for the client's input, whose `input_required`
    /// result ends the client's stream (`Some`: its bytes). `rest`: what the stream held
    /// after the request's event (kept with the held call).
    fn on_server_request(&mut self, req: &Value, rest: Vec<u8>) -> Option<Vec<u8>> {
        let opts = &mut self.opts;
        let inputs = opts.inputs.as_mut()?;
        // Every bridged request has one: it names the call's upstream session.
        let to = opts.cancel_on_drop.as_ref()?;
        let ask = match inputs.on_request(req, to) {
            Handled::Answered => return None,
            Handled::Ask(ask) => ask,
        };
        let gateway_id = match &opts.expect {
            Expect::Response(id) => id.clone(),
            Expect::Batch(_) | Expect::Nothing => Value::Null,
        };
        let (body, parser, guard) = (&mut self.body, &mut self.parser, &mut opts.cancel_on_drop);
        let held = inputs.hold(ask, || {
            // Armed: the held call is cancelled upstream if nobody comes back for it.
            let cancel_on_drop = guard.take()?;
            let unread = std::mem::replace(body, futures_util::stream::empty().boxed());
            let body = if rest.is_empty() {
                unread
            } else {
                futures_util::stream::once(async move { Ok(Bytes::from(rest)) })
                    .chain(unread)
                    .boxed()
            };
            Some(HeldParts {
                body,
                parser: std::mem::take(parser),
                cancel_on_drop,
                gateway_id,
            })
        });
        let result = match held {
            Ok(result) => result,
            Err(ask) => {
                if let Some(to) = opts.cancel_on_drop.as_ref() {
                    crate::inputs::refuse(to, ask, "the gateway could not hold the call");
                }
                return None;
            }
        };
        let id = self.opts.request_id.clone().unwrap_or(Value::Null);
        // This request ends with the `input_required` result (its retry is a request of its
        // own, with a ticket of its own).
        self.opts
            .adapt
            .tickets
            .all_ended(Ending::Result { is_error: false });
        let message = mcpgw::mcp::jsonrpc::result(&id, result);
        self.complete();
        Some(sse::message_event(&message).into_bytes())
    }

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
        self.opts.adapt.tickets.all_ended(Ending::Error {
            code: Some(mcpgw::mcp::jsonrpc::UPSTREAM_ERROR),
        });
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
        let mut blocks = match self.parser.push_blocks(&bytes) {
            Ok(b) => b,
            Err(_) => {
                self.fail(BadAnswer::TooLarge, &mut out);
                return Bytes::from(out);
            }
        };
        for i in 0..blocks.len() {
            let block = std::mem::take(&mut blocks[i]);
            let Some(event) = &block.event else {
                // Comments (they keep idle connections open), retry hints and id-only
                // events (the client's resumption point) pass as they came.
                out.extend_from_slice(&block.raw);
                continue;
            };
            let (fix_id, answered) =
                match judge(event.data.as_bytes(), &self.opts.expect, &self.answered) {
                    Verdict::Pass => {
                        if let Some(req) = server_request(&self.opts, &event.data) {
                            let rest = blocks[i + 1..].iter().flat_map(|b| b.raw.clone());
                            match self.on_server_request(&req, rest.collect()) {
                                Some(held) => {
                                    out.extend_from_slice(&held);
                                    break;
                                }
                                None => continue,
                            }
                        }
                        (None, None)
                    }
                    Verdict::Answer {
                        ids,
                        endings,
                        null_id,
                    } => {
                        self.opts.adapt.tickets.all_of(&ids, endings);
                        (
                            null_id.then(|| self.opts.request_id.clone().unwrap_or(Value::Null)),
                            Some(ids),
                        )
                    }
                    Verdict::Bad(why) => {
                        self.fail(why, &mut out);
                        break;
                    }
                };
            if self.opts.changes_messages() || fix_id.is_some() {
                // Re-framed: the data changed; its id and retry stay, so the client resumes
                // from the upstream's own event ids.
                let data = self.opts.transform(event.data.as_bytes(), fix_id.as_ref());
                let data = String::from_utf8(data).unwrap_or_else(|_| event.data.clone());
                out.extend_from_slice(&block.with_data(&data));
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

    fn into_body(self) -> Body {
        Body::from_stream(futures_util::stream::unfold(self, |mut r| async move {
            r.next().await.map(|item| (item, r))
        }))
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
                let err = upstream_error(
                    self.opts.request_id.as_ref(),
                    Reason::Timeout,
                    "the upstream MCP server did not finish in time",
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
            req = listened(&mut self.opts.inputs) => {
                let held = self.on_server_request(&req, Vec::new());
                Some(Ok(held.map(Bytes::from).unwrap_or_default()))
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
/// a response to another id becomes the gateway's `upstream_bad_answer` with the client's id.
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
            let mut text = Vec::new();
            let read = loop {
                tokio::select! {
                    r = tokio::time::timeout_at(up.deadline(), read_json(&mut body, &mut text)) => break r,
                    _ = cancelled(&mut opts.cancel) => {
                        // The client cancelled: nothing is owed to it any more (and it ignores
                        // whatever comes, so the answer is the one a notification gets).
                        opts.settle();
                        return StatusCode::ACCEPTED.into_response();
                    }
                    // A bridged upstream answering in JSON asks on its session's stream: a
                    // JSON answer cannot be held for the client's input, so the request is
                    // refused at once rather than left to stall the call.
                    req = listened(&mut opts.inputs) => {
                        if let (Some(inputs), Some(to)) = (opts.inputs.as_ref(), opts.cancel_on_drop.as_ref()) {
                            inputs.refuse_unless_answered(&req, to);
                        }
                    }
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
                Ok(Ok(())) => text,
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
                Verdict::Answer {
                    ids,
                    endings,
                    null_id,
                } => {
                    opts.adapt.tickets.all_of(&ids, endings);
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
    relayed(status, headers, relay.into_body())
}

/// Relays the rest of a held call ([`crate::inputs`]) to the client's retry, its answers
/// posted upstream: an event stream, as the held one was.
pub fn resume(up: &Upstream, held: Held, mut opts: RelayOptions) -> Response {
    opts.cancel_on_drop = Some(held.cancel_on_drop);
    if let Some(inputs) = opts.inputs.as_mut() {
        inputs.listener = held.listener;
    }
    let relay = Relay {
        body: held.body,
        deadline: up.deadline(),
        done: false,
        opts,
        parser: held.parser,
        answered: Vec::new(),
        status: StatusCode::OK,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    relayed(StatusCode::OK, headers, relay.into_body())
}
