//! Resuming a stream the gateway rewrote (issue 23, item 5). An upstream that supports
//! resumability (MCP 2025-11-25: event ids, a priming event, `retry:` before it closes a
//! stream) sends `id:` and `retry:` with the events of a `tools/list` answer, which the
//! gateway rewrites (the list is filtered for the caller). The client must still see the
//! upstream's ids and reconnection delay, so that a GET with `Last-Event-ID` through the
//! gateway reaches the upstream with the right id and brings the rest of the stream; and
//! what comes back on the resumed stream is filtered as the first part was.
//!
//! The upstream here is a small resumable server: `tools/list` answers on an event stream
//! (or, in polling mode, closes the stream after its priming event without the answer), and
//! a GET with `Last-Event-ID` replays what followed that event.

use crate::common;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{Value, json};

/// The tool the caller may not see.
const HIDDEN: &str = "secret_admin";

#[derive(Default)]
struct Resumable {
    /// Answer `tools/list` on the GET that resumes the stream (polling), not on the POST.
    polling: bool,
    /// The id of the `tools/list` request, for the replay.
    list_id: Mutex<Option<Value>>,
    /// The `Last-Event-ID` of each GET.
    resumed_from: Mutex<Vec<Option<String>>>,
}

fn stream(body: String) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(body))
        .unwrap()
}

fn message(id: &str, retry: Option<u64>, v: &Value) -> String {
    let retry = retry.map(|r| format!("retry: {r}\n")).unwrap_or_default();
    format!("id: {id}\n{retry}event: message\ndata: {v}\n\n")
}

fn tools_list_answer(id: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
        {"name": "echo", "inputSchema": {"type": "object"}},
        {"name": HIDDEN, "inputSchema": {"type": "object"}},
    ]}})
}

fn handle(up: &Resumable, method: Method, headers: &HeaderMap, body: &str) -> Response {
    if method == Method::GET {
        let from = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        up.resumed_from.lock().unwrap().push(from.clone());
        let list_id = up.list_id.lock().unwrap().clone().unwrap_or(Value::Null);
        // What followed each event the client may resume after.
        return stream(match from.as_deref() {
            Some("list-0") if up.polling => message("list-1", None, &tools_list_answer(&list_id)),
            Some("list-1") if !up.polling => message(
                "list-2",
                None,
                &json!({"jsonrpc": "2.0", "method": "notifications/message",
                    "params": {"level": "info", "data": "after the list"}}),
            ),
            _ => String::new(),
        });
    }
    let msg: Value = serde_json::from_str(body).unwrap_or_default();
    let Some(id) = msg.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    match msg["method"].as_str().unwrap_or_default() {
        "initialize" => {
            let result = json!({"protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}}, "serverInfo": {"name": "resumable", "version": "1"}});
            let mut r =
                axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response();
            r.headers_mut()
                .insert("mcp-session-id", "resumable-1".parse().unwrap());
            r
        }
        "tools/list" => {
            *up.list_id.lock().unwrap() = Some(id.clone());
            // A priming event: an id and empty data, with the reconnection delay.
            let priming = "id: list-0\nretry: 1000\ndata: \n\n".to_owned();
            if up.polling {
                // The server closes the stream now; the client polls with Last-Event-ID.
                return stream(priming);
            }
            stream(priming + &message("list-1", Some(250), &tools_list_answer(&id)))
        }
        _ => axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {}})).into_response(),
    }
}

async fn start(polling: bool) -> (String, Arc<Resumable>) {
    let up = Arc::new(Resumable {
        polling,
        ..Default::default()
    });
    let handler = {
        let up = up.clone();
        move |method: Method, headers: HeaderMap, body: String| {
            let up = up.clone();
            async move { handle(&up, method, &headers, &body) }
        }
    };
    let app = axum::Router::new().route("/mcp", axum::routing::any(handler));
    (serve(app).await + "/mcp", up)
}

/// A gateway with the upstream as `res`, where every caller may use every tool but
/// [`HIDDEN`]: `tools/list` answers are rewritten.
async fn gateway_for(url: &str) -> Gateway {
    let gw = gateway(
        &[("MCPGW_ALLOW_GET_STREAM", "1")],
        &[("res", url, "up-key")],
    )
    .await;
    let group = json!({"servers": ["res"], "members": {"everyone": true},
        "tool_rules": {"res": {"deny": [HIDDEN]}}});
    replace_everyone_group(&gw, group).await;
    gw
}

/// What an EventSource client keeps of a stream: its last event id and reconnection delay
/// (WHATWG: `id:` and digit-only `retry:` fields, whichever event they came with).
fn client_view(body: &str) -> (Option<String>, Option<u64>) {
    let (mut id, mut retry) = (None, None);
    for line in body.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "retry" => retry = value.parse().ok().or(retry),
            _ => {}
        }
    }
    (id, retry)
}

fn tool_names(answer: &Value) -> Vec<&str> {
    answer["result"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect()
}

/// A resumable upstream behind a gateway, a session with it, and the answer to the
/// session's `tools/list` (request id `id`).
async fn listed(polling: bool, id: i64) -> (Gateway, Arc<Resumable>, String, Reply) {
    let (url, up) = start(polling).await;
    let gw = gateway_for(&url).await;
    let session = open_session(&gw.app, "res", &gw.alice).await;
    let list = request(id, "tools/list", json!({}));
    let r = post(&gw.app, "res", &gw.alice, Some(&session), &list).await;
    assert_eq!(r.status, 200, "{}", r.body);
    (gw, up, session, r)
}

/// GET with `Last-Event-ID` in the gateway session.
async fn resume(gw: &Gateway, session: &str, last_event_id: &str) -> Reply {
    let req = mcp_request(Method::GET, "res", Some(&gw.alice))
        .header("mcp-session-id", session)
        .header("last-event-id", last_event_id)
        .body(Body::empty())
        .unwrap();
    send(&gw.app, req).await
}

#[tokio::test]
async fn a_rewritten_answer_keeps_its_event_id_and_retry_and_the_stream_resumes_after_it() {
    let (gw, up, session, r) = listed(false, 7).await;
    let events = r.events();
    assert_eq!(events.len(), 1, "{}", r.body);
    assert_eq!(events[0]["id"], 7);
    assert_eq!(
        tool_names(&events[0]),
        ["echo"],
        "rewritten: filtered for the caller"
    );
    // The priming event passes as it came; the rewritten answer keeps its id and retry.
    assert!(
        r.body.starts_with("id: list-0\nretry: 1000\ndata: \n\n"),
        "{}",
        r.body
    );
    assert_eq!(
        client_view(&r.body),
        (Some("list-1".to_owned()), Some(250)),
        "{}",
        r.body
    );

    // The client resumes after the last event it saw, through the gateway.
    let (last, _) = client_view(&r.body);
    let rest = resume(&gw, &session, &last.unwrap()).await;
    assert_eq!(rest.status, 200, "{}", rest.body);
    assert_eq!(
        up.resumed_from.lock().unwrap().as_slice(),
        [Some("list-1".to_owned())],
        "the upstream was asked to resume after the rewritten answer"
    );
    let events = rest.events();
    assert_eq!(events.len(), 1, "{}", rest.body);
    assert_eq!(events[0]["params"]["data"], "after the list");
    assert_eq!(client_view(&rest.body).0.as_deref(), Some("list-2"));
}

/// Polling (the server closes the stream after its priming event): the answer comes on the
/// resumed GET stream, and is filtered there as it would have been on the POST stream.
#[tokio::test]
async fn a_polled_answer_arrives_on_the_resumed_stream_rewritten() {
    let (gw, up, session, r) = listed(true, 8).await;
    assert!(r.events().is_empty(), "{}", r.body);
    assert_eq!(
        client_view(&r.body),
        (Some("list-0".to_owned()), Some(1000)),
        "the id-only priming event and its retry reach the client: {}",
        r.body
    );

    let rest = resume(&gw, &session, "list-0").await;
    assert_eq!(rest.status, 200, "{}", rest.body);
    assert_eq!(
        up.resumed_from.lock().unwrap().as_slice(),
        [Some("list-0".to_owned())]
    );
    let events = rest.events();
    assert_eq!(events.len(), 1, "{}", rest.body);
    assert_eq!(events[0]["id"], 8);
    assert_eq!(
        tool_names(&events[0]),
        ["echo"],
        "the resumed answer is filtered too: {}",
        rest.body
    );
    assert_eq!(client_view(&rest.body).0.as_deref(), Some("list-1"));
}
