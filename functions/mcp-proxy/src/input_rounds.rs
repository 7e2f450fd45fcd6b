//! A session-era client in front of a stateless (2026-07-28) upstream whose answer is
//! `input_required`: the reverse of [`crate::inputs`]. Each of the upstream's
//! `inputRequests` the client declared the capability for becomes a server-to-client request
//! on the call's event stream (a gateway-made id); the client answers by posting the
//! JSON-RPC response into its gateway session (`session_era`, delivered here through
//! `Memory::give_answer`); the call is then sent again with `inputResponses` and the
//! upstream's `requestState`, up to [`MAX_ROUNDS`] times, and the final answer ends the
//! stream.
//!
//! Only a JSON `input_required` answer is taken up (an event stream is relayed as it comes);
//! the client's answers must reach the process holding the call (locally always; on Lambda,
//! a warm instance's stream and the client's POST may meet in different instances, and the
//! round then ends at the call's deadline).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use mcpgw::mcp::jsonrpc::{self, Message};
use mcpgw::mcp::sse;
use mcpgw::upstream::Upstream;
use serde_json::{Map, Value, json};

use crate::answers::event_stream;
use crate::inputs::{Declared, MAX_INPUTS};
use crate::relay::MAX_JSON_ANSWER;

/// Rounds of `input_required` one call may take (the SDKs' default cap).
pub const MAX_ROUNDS: usize = 10;

/// The id of a request the gateway sends a client for an input round: unique in the
/// process, so two calls of one session waiting at once never share one (the client's
/// answer to one call's request must not be taken for another's: the answer to "delete X?"
/// is no answer to "delete Y?").
fn ask_id() -> Value {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Value::from(format!("mcpgw-ask-{n}"))
}

/// The client capability an input request needs.
fn declares(declared: Declared, method: &str) -> bool {
    match method {
        "roots/list" => declared.roots,
        "sampling/createMessage" => declared.sampling,
        "elicitation/create" => declared.elicitation,
        _ => false,
    }
}

/// Whether `answer` (a JSON-RPC message) is an `input_required` result.
pub fn is_input_required(answer: &Value) -> bool {
    answer["result"]["resultType"] == "input_required"
}

/// Reads a JSON answer whole (bounded), or `None` when it is too large or breaks off.
pub async fn read_json(response: reqwest::Response) -> Option<(StatusCode, Bytes)> {
    let status = response.status();
    let mut body = response.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.ok()?;
        if out.len() + chunk.len() > MAX_JSON_ANSWER {
            return None;
        }
        out.extend_from_slice(&chunk);
    }
    Some((status, Bytes::from(out)))
}

/// What a round needs: where to send the call again, and how to reach the client.
pub struct Rounds {
    pub up: Upstream,
    pub headers: HeaderMap,
    pub msg: Message,
    pub client_id: Value,
    pub declared: Declared,
    /// The client's gateway session (its answers are awaited under it).
    pub fingerprint: String,
    /// The caller (answers awaited are bounded per caller).
    pub user: String,
    /// Shapes the final answer for the client (era rewriting, access control).
    pub finish: Box<dyn Fn(Value) -> Value + Send>,
    /// Set when the client cancels the call (`notifications/cancelled` in its session).
    pub cancel: tokio::sync::watch::Receiver<bool>,
    /// Keeps the call registered for that cancellation while the rounds run.
    pub _in_flight: mcpgw::mcp::memory::InFlight,
}

/// Resolves once `cancel` says the call was cancelled; never when its sender is gone
/// without saying so.
async fn cancelled(cancel: &mut tokio::sync::watch::Receiver<bool>) {
    while !*cancel.borrow_and_update() {
        if cancel.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Answers the client with an event stream that carries the rounds: the gateway's requests,
/// then the call's final answer.
pub fn run(rounds: Rounds, first: Value) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(16);
    tokio::spawn(drive(rounds, first, tx));
    let stream = tokio_stream_from(rx);
    event_stream(Body::from_stream(stream))
}

fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<String>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|s| (Ok(Bytes::from(s)), rx))
    })
}

async fn drive(mut r: Rounds, mut answer: Value, tx: tokio::sync::mpsc::Sender<String>) {
    let fail = |why: &str| {
        let err = jsonrpc::error(Some(&r.client_id), jsonrpc::UPSTREAM_ERROR, why, None);
        sse::message_event(&err)
    };
    for _ in 0..MAX_ROUNDS {
        if !is_input_required(&answer) {
            let _ = tx.send(sse::message_event(&(r.finish)(answer))).await;
            return;
        }
        let result = answer["result"].take();
        let requests = result["inputRequests"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        if requests.len() > MAX_INPUTS {
            // Each is a request to the client and an answer awaited in the process's
            // memory: a hostile upstream asking thousands at once would crowd out every
            // other caller's rounds.
            let _ = tx
                .send(fail("the upstream asked for too many inputs at once"))
                .await;
            return;
        }
        let mut waiting = Vec::new();
        for (key, request) in requests {
            let method = request["method"].as_str().unwrap_or_default();
            if !declares(r.declared, method) {
                continue;
            }
            let gid = ask_id();
            let rx =
                r.up.memory()
                    .expect_answer(&r.user, format!("{}\n{gid}", r.fingerprint));
            let mut ask = json!({"jsonrpc": "2.0", "id": gid, "method": method});
            if let Some(p) = request.get("params") {
                ask["params"] = p.clone();
            }
            if tx.send(sse::message_event(&ask)).await.is_err() {
                return;
            }
            waiting.push((key, rx));
        }
        if waiting.is_empty() {
            let _ = tx
                .send(fail(
                    "the upstream needs input this client did not declare it can give",
                ))
                .await;
            return;
        }
        let mut responses = Map::new();
        for (key, rx) in waiting {
            // A call the client cancelled, or whose stream it closed, ends here: nothing
            // would read the rest, and the awaited answers are freed with it.
            let got = tokio::select! {
                got = tokio::time::timeout_at(r.up.deadline(), rx) => got,
                () = cancelled(&mut r.cancel) => {
                    tracing::debug!("input rounds ended: the client cancelled the call");
                    return;
                }
                () = tx.closed() => return,
            };
            match got {
                Ok(Ok(reply)) if reply.get("result").is_some_and(Value::is_object) => {
                    responses.insert(key, reply["result"].clone());
                }
                // The client refused (an error) or never answered: the call ends there.
                _ => {
                    let _ = tx
                        .send(fail("the client did not answer the upstream's request"))
                        .await;
                    return;
                }
            }
        }
        if let Some(params) = r.msg.params_mut() {
            params.insert("inputResponses".into(), Value::Object(responses));
            match result.get("requestState") {
                Some(state) => params.insert("requestState".into(), state.clone()),
                None => params.remove("requestState"),
            };
        }
        answer = match r.up.exchange_message(r.headers.clone(), &r.msg).await {
            Ok(reply) => match reply.message {
                Some(m) => m,
                None => {
                    let _ = tx
                        .send(fail("the upstream MCP server's answer was not valid MCP"))
                        .await;
                    return;
                }
            },
            Err(_) => {
                let _ = tx
                    .send(fail("the upstream MCP server could not be reached"))
                    .await;
                return;
            }
        };
    }
    let _ = tx
        .send(fail("the upstream asked for input too many times"))
        .await;
}
