//! Server-to-client requests through the 2026-07-28 bridge. A session-era upstream asks its
//! client things during a call (`roots/list`, `sampling/createMessage`,
//! `elicitation/create`), on the call's event stream or on the session's `GET` stream; a
//! 2026-07-28 client has no session to be asked in. Each such request is either
//!
//! - turned into the 2026-07-28 form: the call is answered with an `input_required` result
//!   (`inputRequests` keyed by ids the gateway chooses, each `{method, params}`, and a sealed
//!   `requestState`, see `mcpgw::mcp::request_state`), while the upstream call, its stream
//!   unread, is held in process memory (`Memory::hold`, at most `HELD_TTL`); the client's retry carries `inputResponses`,
//!   which the gateway posts upstream as the answers, and the held stream is relayed on. A
//!   retry that finds nothing held (another process, too late) sends the call again and
//!   answers the upstream's repeated requests from the client's answers, matched by method
//!   and params;
//! - or answered upstream at once, so it never waits for an answer that cannot come: with an
//!   error when the client did not declare the capability (or the call cannot take input),
//!   with `{}` for `ping`.
//!
//! The upstream's `GET` stream is listened to only for calls that can take input from a
//! client that declared something to answer with ([`Inputs::asking`]): one `GET` before
//! the call's `POST` (one round trip more for those calls alone), so a request the upstream
//! sends there rather than on the call's stream (server-everything's `roots/list`) is not
//! lost. The TypeScript SDK allows one `GET` per session: of concurrent such calls in one
//! bridged session, the first listens.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use mcpgw::clock::UnixTime;
use mcpgw::crypto::Keyring;
use mcpgw::mcp::handshake::AnswerType;
use mcpgw::mcp::memory::Memory;
use mcpgw::mcp::request_state::{self, Claims};
use mcpgw::mcp::{jsonrpc, sse};
use mcpgw::upstream::Upstream;
use serde_json::{Map, Value, json};

use crate::cancel::CancelOnDrop;
use crate::results;

/// Most input responses read from one retry.
pub const MAX_INPUTS: usize = 16;
/// JSON-RPC's internal error (the gateway's own failure).
const INTERNAL_ERROR: i64 = -32603;
/// Most server requests buffered from a `GET` stream.
const LISTENED: usize = 8;

/// Methods whose 2026-07-28 result may be `input_required`.
pub fn can_ask(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

/// The client capability a server-to-client request needs.
fn capability(method: &str) -> Option<&'static str> {
    match method {
        "roots/list" => Some("roots"),
        "sampling/createMessage" => Some("sampling"),
        "elicitation/create" => Some("elicitation"),
        _ => None,
    }
}

/// What a client declared it can answer (its envelope's capabilities).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Declared {
    pub roots: bool,
    pub sampling: bool,
    pub elicitation: bool,
}

impl Declared {
    pub fn of(capabilities: &Value) -> Self {
        let has = |c: &str| capabilities.get(c).is_some_and(|v| !v.is_null());
        Self {
            roots: has("roots"),
            sampling: has("sampling"),
            elicitation: has("elicitation"),
        }
    }

    /// Whether anything an upstream may ask for was declared.
    pub fn any(self) -> bool {
        self.roots || self.sampling || self.elicitation
    }
}

/// The requests an upstream sends on its session's `GET` stream, read by a task that ends
/// with this (dropped, the stream closes).
pub struct Listener {
    rx: tokio::sync::mpsc::Receiver<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Opens the session's `GET` stream; `None` when the upstream offers none (405), already
    /// has one open (409: another call of the session listens), or fails.
    pub async fn open(up: &Upstream, session_headers: HeaderMap) -> Option<Self> {
        let resp = up.send(Method::GET, session_headers, None).await.ok()?;
        if resp.status() != StatusCode::OK || AnswerType::of(resp.headers()) != AnswerType::Sse {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(LISTENED);
        let task = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut parser = sse::Parser::default();
            while let Some(Ok(chunk)) = body.next().await {
                let Ok(events) = parser.push(&chunk) else {
                    return;
                };
                // Only requests: notifications there concern the session, not this call.
                for e in events {
                    if let Ok(v) = serde_json::from_str::<Value>(&e.data)
                        && is_request(&v)
                        && tx.send(v).await.is_err()
                    {
                        return;
                    }
                }
            }
        });
        Some(Self { rx, task })
    }
}

/// Whether a message is a JSON-RPC request (a method and an id).
pub fn is_request(v: &Value) -> bool {
    v.get("method").is_some_and(Value::is_string)
        && v.get("id")
            .is_some_and(|id| id.is_string() || id.is_number())
}

/// What the gateway needs to hold a call for its client's input.
pub struct Asking {
    /// The caller (held calls are bounded per caller).
    pub user: String,
    pub keyring: Arc<Keyring>,
    /// [`request_state::binding`] of the caller.
    pub binding: String,
    /// [`request_state::call_digest`] of the call.
    pub call: String,
    pub now: UnixTime,
}

/// Server-to-client requests of one bridged call. Answers go where the call's
/// [`CancelOnDrop`] points (its upstream and session), so nothing more is cloned per call.
pub struct Inputs {
    /// What the client declared it can answer.
    pub declared: Declared,
    /// Set when the call can take input (it is held and answered `input_required`).
    pub asking: Option<Asking>,
    /// Answers the client gave in earlier rounds: request digest and result.
    pub answered: Vec<(String, Value)>,
    pub listener: Option<Listener>,
}

/// What became of one server-to-client request.
pub enum Handled {
    /// Answered upstream (from an earlier answer, with `{}`, or with an error).
    Answered,
    /// For the client: the call is to be held.
    Ask(Ask),
}

pub struct Ask {
    upstream_id: Value,
    method: String,
    params: Option<Value>,
}

/// A held call: the upstream's answer stream as far as it was read, and what it waits for.
pub struct Held {
    pub body: BoxStream<'static, reqwest::Result<Bytes>>,
    pub parser: sse::Parser,
    /// Armed: dropped unclaimed, the call is cancelled upstream. Also where it runs.
    pub cancel_on_drop: CancelOnDrop,
    pub listener: Option<Listener>,
    /// The id the upstream answers the call under (the gateway's).
    pub gateway_id: Value,
    /// Input key and the upstream request id it answers.
    pending: Vec<(String, Value)>,
}

/// Where a held call is kept: its id and who may take it (a state that opened for another
/// caller could not name it anyway; this is defense in depth).
fn held_key(held: &str, binding: &str) -> String {
    format!("{held}\n{binding}")
}

/// The held call named by a presented state, if this process holds it for that caller.
pub fn take_held(memory: &Memory, held: &str, binding: &str) -> Option<Held> {
    let call = memory.take_held(&held_key(held, binding))?;
    call.downcast::<Held>().ok().map(|h| *h)
}

/// Posts the answer to the upstream's request `id` into the call's upstream session.
fn answer(to: &CancelOnDrop, id: &Value, outcome: Result<Value, (i64, String)>) {
    let message = match outcome {
        Ok(result) => jsonrpc::result(id, result),
        Err((code, message)) => jsonrpc::error(Some(id), code, &message, None),
    };
    to.upstream().post_later(
        to.session_headers().clone(),
        message,
        "could not answer an upstream request",
    );
}

impl Held {
    /// Posts the client's answers (`responses`, from its retry) upstream as the answers to
    /// the requests the call waits for; returns them by request digest for later rounds. A
    /// request left unanswered gets an error, so the upstream does not wait for it.
    pub fn answer(
        &self,
        responses: &Map<String, Value>,
        asked: &[(String, String)],
    ) -> Vec<(String, Value)> {
        let mut given = Vec::new();
        for (key, upstream_id) in &self.pending {
            let outcome = match responses.get(key) {
                Some(Value::Object(r)) => {
                    let mut r = r.clone();
                    // The session era has no result types.
                    r.remove("resultType");
                    let r = Value::Object(r);
                    if let Some((_, digest)) = asked.iter().find(|(k, _)| k == key) {
                        given.push((digest.clone(), r.clone()));
                    }
                    Ok(r)
                }
                _ => Err((
                    jsonrpc::INVALID_REQUEST,
                    "the client gave no answer to this request".to_owned(),
                )),
            };
            answer(&self.cancel_on_drop, upstream_id, outcome);
        }
        given
    }
}

impl Inputs {
    /// The next request from the `GET` stream (never, without a listener).
    pub async fn listened(&mut self) -> Value {
        match self.listener.as_mut() {
            Some(l) => match l.rx.recv().await {
                Some(v) => v,
                None => {
                    self.listener = None;
                    std::future::pending().await
                }
            },
            None => std::future::pending().await,
        }
    }

    fn declared(&self, capability: &str) -> bool {
        match capability {
            "roots" => self.declared.roots,
            "sampling" => self.declared.sampling,
            _ => self.declared.elicitation,
        }
    }

    /// Decides what becomes of a server-to-client request (`req`, a JSON-RPC request) in
    /// the call `to` names.
    pub fn on_request(&self, req: &Value, to: &CancelOnDrop) -> Handled {
        let id = &req["id"];
        let method = req["method"].as_str().unwrap_or_default();
        let params = req.get("params");
        if !self.answered.is_empty() {
            let digest = request_state::request_digest(method, params);
            if let Some((_, r)) = self.answered.iter().find(|(d, _)| *d == digest) {
                answer(to, id, Ok(r.clone()));
                return Handled::Answered;
            }
        }
        let refusal = match capability(method) {
            Some(cap) if !self.declared(cap) => {
                format!("the client did not declare the {cap} capability")
            }
            Some(_) if self.asking.is_some() => {
                return Handled::Ask(Ask {
                    upstream_id: id.clone(),
                    method: method.to_owned(),
                    params: params.cloned(),
                });
            }
            Some(_) => format!(
                "the client can answer {method} only during tools/call, prompts/get or resources/read"
            ),
            None if method == "ping" => {
                answer(to, id, Ok(json!({})));
                return Handled::Answered;
            }
            None => format!("the client cannot answer {method} through the gateway"),
        };
        answer(to, id, Err((jsonrpc::METHOD_NOT_FOUND, refusal)));
        Handled::Answered
    }

    /// [`Inputs::on_request`] where the call cannot be held (a JSON answer is being read):
    /// what would be asked of the client is refused upstream instead.
    pub fn refuse_unless_answered(&self, req: &Value, to: &CancelOnDrop) {
        if let Handled::Ask(ask) = self.on_request(req, to) {
            refuse(
                to,
                ask,
                "the gateway cannot ask its client while the call answers in JSON",
            );
        }
    }

    /// Holds the call for the client's answer to `ask`: the `input_required` result for the
    /// client, the call (`held`: what the relay gives up) stored under a new id. `Err`: no
    /// state could be sealed; the caller refuses the request upstream.
    pub fn hold(
        &mut self,
        ask: Ask,
        held: impl FnOnce() -> Option<HeldParts>,
    ) -> Result<Value, Ask> {
        let Some(asking) = self.asking.as_ref() else {
            return Err(ask);
        };
        let key = "input-1".to_owned();
        let digest = request_state::request_digest(&ask.method, ask.params.as_ref());
        let id = mcpgw::crypto::random_token(16);
        let mut claims = Claims {
            held: id.clone(),
            call: asking.call.clone(),
            expires_at: asking.now + request_state::STATE_TTL_SECS,
            asked: vec![(key.clone(), digest)],
            answered: self.answered.clone(),
        };
        let sealed = request_state::seal(&asking.keyring, &asking.binding, &claims).or_else(|| {
            // Too long with earlier answers: this process's hold still works without them.
            claims.answered.clear();
            request_state::seal(&asking.keyring, &asking.binding, &claims)
        });
        let Some(sealed) = sealed else {
            return Err(ask);
        };
        let Some(parts) = held() else {
            return Err(ask);
        };
        let mut request = Map::new();
        request.insert("method".into(), ask.method.into());
        if let Some(p) = ask.params {
            request.insert("params".into(), p);
        }
        let mut requests = Map::new();
        requests.insert(key.clone(), Value::Object(request));
        let held = Held {
            body: parts.body,
            parser: parts.parser,
            cancel_on_drop: parts.cancel_on_drop,
            listener: self.listener.take(),
            gateway_id: parts.gateway_id,
            pending: vec![(key, ask.upstream_id)],
        };
        // The process's memory, reached through the call's upstream (held by the call).
        let up = held.cancel_on_drop.upstream().clone();
        up.memory()
            .hold(&asking.user, held_key(&id, &asking.binding), Box::new(held));
        Ok(results::input_required(requests, sealed))
    }
}

/// Refuses what would have been asked of the client (the call cannot be held).
pub fn refuse(to: &CancelOnDrop, ask: Ask, why: &str) {
    answer(to, &ask.upstream_id, Err((INTERNAL_ERROR, why.to_owned())));
}

/// What the relay gives up to hold a call.
pub struct HeldParts {
    pub body: BoxStream<'static, reqwest::Result<Bytes>>,
    pub parser: sse::Parser,
    pub cancel_on_drop: CancelOnDrop,
    pub gateway_id: Value,
}

/// Reads a retry's `inputResponses` (absent: none): an object of at most [`MAX_INPUTS`]
/// entries; `None` when it is anything else.
pub fn input_responses(given: Option<Value>) -> Option<Map<String, Value>> {
    match given {
        None | Some(Value::Null) => Some(Map::new()),
        Some(Value::Object(m)) if m.len() <= MAX_INPUTS => Some(m),
        Some(_) => None,
    }
}

/// Answers from a state whose call is no longer held: each asked digest with the client's
/// answer under its key, after the earlier rounds'.
pub fn answered_from(claims: &Claims, responses: &Map<String, Value>) -> Vec<(String, Value)> {
    let mut out = claims.answered.clone();
    for (key, digest) in &claims.asked {
        if let Some(Value::Object(r)) = responses.get(key) {
            let mut r = r.clone();
            r.remove("resultType");
            out.push((digest.clone(), Value::Object(r)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_can_be_asked() {
        assert!(can_ask("tools/call") && can_ask("prompts/get") && can_ask("resources/read"));
        assert!(!can_ask("tools/list"));
        assert!(Declared::of(&json!({"roots": {}})).any());
        assert!(Declared::of(&json!({"elicitation": {"form": {}}})).elicitation);
        assert!(!Declared::of(&json!({"experimental": {}})).any());
        assert!(!Declared::of(&json!({"roots": null})).any());
        assert!(is_request(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "roots/list"})
        ));
        assert!(!is_request(
            &json!({"jsonrpc": "2.0", "method": "notifications/message"})
        ));
    }

    #[test]
    fn answers_are_matched_by_key_then_by_digest() {
        let digest = request_state::request_digest("roots/list", None);
        let claims = Claims {
            held: "h".into(),
            call: "c".into(),
            expires_at: 0,
            asked: vec![("input-1".into(), digest.clone())],
            answered: vec![("earlier".into(), json!({"action": "accept"}))],
        };
        let responses = json!({
            "input-1": {"roots": [{"uri": "file:///w"}], "resultType": "complete"},
            "made-up": {"roots": []}
        });
        let got = answered_from(&claims, responses.as_object().unwrap());
        assert_eq!(
            got,
            vec![
                ("earlier".into(), json!({"action": "accept"})),
                (digest, json!({"roots": [{"uri": "file:///w"}]})),
            ],
            "an unasked key is ignored; the result type is the session era's (none)"
        );
        assert!(input_responses(Some(json!([]))).is_none());
        let many: Map<String, Value> = (0..=MAX_INPUTS)
            .map(|i| (i.to_string(), json!({})))
            .collect();
        assert!(input_responses(Some(Value::Object(many))).is_none());
        assert_eq!(input_responses(None), Some(Map::new()));
    }
}
