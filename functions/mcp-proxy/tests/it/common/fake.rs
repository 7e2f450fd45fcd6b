//! A small hostile upstream MCP server for the tests of what the gateway forwards
//! (`strict_messages.rs`) and what it accepts back (`hostile_upstreams.rs`).
//!
//! It reads JSON the way lenient parsers do: member names matched case-insensitively and the
//! FIRST of duplicate members kept (serde_json keeps the last). Its tools: `echo` and
//! `delete_all` run (and are recorded in [`Fake::ran`]); the others answer badly on purpose:
//!
//! | tool | answer |
//! |---|---|
//! | `html` / `html500` | 200 / 500 `text/html` page |
//! | `text` | 200 `text/plain` |
//! | `notrpc` | 200 JSON that is not JSON-RPC |
//! | `request` | 200 JSON: a server request in place of the response |
//! | `wrongid` | 200 JSON response to id 999 |
//! | `gatewayid` | 200 JSON response to `mcpgw-1` (a gateway-made id of another request) |
//! | `dupid` | 200 JSON response with the right id and a second `id` |
//! | `nullid` | 400 JSON-RPC error with a null id (a server that could not read the id) |
//! | `big` | 200 JSON response to the right id, 9 MiB |
//! | `sse_wrongid` | SSE: progress, then a response to id 999 |
//! | `sse_html` | SSE: progress, then an event whose data is HTML |
//! | `sse_ok` | SSE: a priming event, a sampling request, progress, a comment, the response |
//!
//! It speaks one era: the session era (`initialize`, session ids; `server/discover` refused
//! with 400) or 2026-07-28 (`server/discover`; `initialize` refused with 400).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

use super::{Log, Seen};

/// The names the fake lists (and the policy tests allow or deny).
pub const TOOLS: &[&str] = &[
    "echo",
    "delete_all",
    "html",
    "html500",
    "text",
    "notrpc",
    "request",
    "wrongid",
    "gatewayid",
    "dupid",
    "nullid",
    "big",
    "sse_wrongid",
    "sse_html",
    "sse_ok",
    "errnocode",
];

/// JSON read as lenient parsers read it: names lower-cased, the first duplicate kept.
pub struct Lenient(pub Value);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor)
    }
}

struct LenientVisitor;

impl<'de> Visitor<'de> for LenientVisitor {
    type Value = Lenient;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Lenient, E> {
        Ok(Lenient(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Lenient, E> {
        Ok(Lenient(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Lenient, E> {
        Ok(Lenient(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Lenient, E> {
        Ok(Lenient(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Lenient, E> {
        Ok(Lenient(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Lenient, E> {
        Ok(Lenient(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient, A::Error> {
        let mut out = Vec::new();
        while let Some(Lenient(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Lenient(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lenient, A::Error> {
        let mut out = Map::new();
        while let Some((k, Lenient(v))) = map.next_entry::<String, Lenient>()? {
            out.entry(k.to_lowercase()).or_insert(v);
        }
        Ok(Lenient(Value::Object(out)))
    }
}

/// How the fake reads `text`.
pub fn lenient(text: &str) -> Option<Value> {
    serde_json::from_str::<Lenient>(text).ok().map(|l| l.0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeEra {
    Sessions,
    Stateless,
}

struct FakeState {
    era: FakeEra,
    log: Log,
    ran: Mutex<Vec<String>>,
}

/// The fake, on a loopback port.
#[derive(Clone)]
pub struct Fake {
    pub url: String,
    pub log: Log,
    state: Arc<FakeState>,
}

impl Fake {
    pub async fn start(era: FakeEra) -> Self {
        let state = Arc::new(FakeState {
            era,
            log: Log::default(),
            ran: Mutex::default(),
        });
        let handler = {
            let state = state.clone();
            move |method: Method, headers: HeaderMap, body: String| {
                let state = state.clone();
                async move { handle(&state, method, headers, body) }
            }
        };
        let app = axum::Router::new().route("/mcp", axum::routing::any(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            log: state.log.clone(),
            state,
        }
    }

    /// The tools that ran, as the fake read their names.
    pub fn ran(&self) -> Vec<String> {
        self.state.ran.lock().unwrap().clone()
    }

    /// The bodies of the `tools/call`s received, as sent.
    pub fn calls(&self) -> Vec<String> {
        self.log
            .all()
            .into_iter()
            .filter(|s| lenient(&s.body).is_some_and(|v| v["method"] == "tools/call"))
            .map(|s| s.body)
            .collect()
    }
}

fn json_answer(status: StatusCode, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

fn typed(status: StatusCode, content_type: &str, body: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn events(parts: &[String]) -> Response {
    typed(StatusCode::OK, "text/event-stream", &parts.concat())
}

fn event(v: &Value) -> String {
    format!("event: message\ndata: {v}\n\n")
}

fn handle(up: &FakeState, method: Method, headers: HeaderMap, body: String) -> Response {
    up.log.push(Seen {
        method: method.clone(),
        headers,
        body: body.clone(),
    });
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Some(msg) = lenient(&body) else {
        return json_answer(
            StatusCode::BAD_REQUEST,
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}})
                .to_string(),
        );
    };
    if let Some(items) = msg.as_array() {
        // A 2025-03-26 batch: an empty result for each request in it.
        let answers: Vec<Value> = items
            .iter()
            .filter(|i| i.get("method").is_some() && i.get("id").is_some())
            .map(|i| json!({"jsonrpc": "2.0", "id": i["id"], "result": {}}))
            .collect();
        return json_answer(StatusCode::OK, Value::Array(answers).to_string());
    }
    let rpc = msg["method"].as_str().unwrap_or_default().to_owned();
    let (Some(id), Some(_)) = (msg.get("id").cloned(), msg.get("method")) else {
        // Notifications and responses.
        return StatusCode::ACCEPTED.into_response();
    };
    let answer = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result});
    let refuse = || {
        json_answer(
            StatusCode::BAD_REQUEST,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": "wrong era"}})
                .to_string(),
        )
    };
    match (rpc.as_str(), up.era) {
        ("initialize", FakeEra::Stateless) | ("server/discover", FakeEra::Sessions) => {
            return refuse();
        }
        ("initialize", FakeEra::Sessions) => {
            let result = json!({"protocolVersion": msg["params"]["protocolversion"],
                "capabilities": {"tools": {}}, "serverInfo": {"name": "fake", "version": "1"}});
            let mut r = json_answer(StatusCode::OK, answer(result).to_string());
            r.headers_mut()
                .insert("mcp-session-id", "fake-session".parse().unwrap());
            return r;
        }
        ("server/discover", FakeEra::Stateless) => {
            let result = json!({"supportedVersions": ["2026-07-28"],
                "capabilities": {"tools": {}}, "resultType": "complete"});
            return json_answer(StatusCode::OK, answer(result).to_string());
        }
        ("tools/list", _) => {
            let tools: Vec<Value> = TOOLS
                .iter()
                .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
                .collect();
            return json_answer(StatusCode::OK, answer(json!({"tools": tools})).to_string());
        }
        ("tools/call", _) => {}
        _ => return json_answer(StatusCode::OK, answer(json!({})).to_string()),
    }
    let name = msg["params"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let text = |t: &str| json!({"content": [{"type": "text", "text": t}]});
    let progress = event(
        &json!({"jsonrpc": "2.0", "method": "notifications/progress",
        "params": {"progressToken": "p", "progress": 1}}),
    );
    match name.as_str() {
        "echo" | "delete_all" => {
            up.ran.lock().unwrap().push(name.clone());
            let args = msg["params"]["arguments"].to_string();
            json_answer(
                StatusCode::OK,
                answer(text(&format!("ran {name} with {args}"))).to_string(),
            )
        }
        "html" => typed(StatusCode::OK, "text/html", "<html><body>pwned</body></html>"),
        "html500" => typed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/html",
            "<html><body>stack trace: secret</body></html>",
        ),
        "text" => typed(StatusCode::OK, "text/plain", "all good"),
        "notrpc" => json_answer(StatusCode::OK, r#"{"hello":"world"}"#),
        // An error object no client can read (no code), carrying the upstream's text.
        "errnocode" => json_answer(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": msg["id"], "error": {"message": "pwned"}}).to_string(),
        ),
        "request" => json_answer(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {}})
                .to_string(),
        ),
        "wrongid" => json_answer(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": 999, "result": text("for someone else")}).to_string(),
        ),
        "gatewayid" => json_answer(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": "mcpgw-1", "result": text("for someone else")})
                .to_string(),
        ),
        "dupid" => json_answer(
            StatusCode::OK,
            format!(r#"{{"jsonrpc":"2.0","id":{id},"id":999,"result":{{}}}}"#),
        ),
        "nullid" => json_answer(
            StatusCode::BAD_REQUEST,
            json!({"jsonrpc": "2.0", "id": null,
                "error": {"code": -32602, "message": "bad arguments"}})
            .to_string(),
        ),
        "big" => {
            let filler = "x".repeat(9 * 1024 * 1024);
            json_answer(StatusCode::OK, answer(text(&filler)).to_string())
        }
        "sse_wrongid" => events(&[
            progress,
            event(&json!({"jsonrpc": "2.0", "id": 999, "result": text("for someone else")})),
        ]),
        "sse_html" => events(&[progress, "data: <html>pwned</html>\n\n".to_owned()]),
        "sse_ok" => events(&[
            // A priming event (resumability): an id and empty data.
            "id: ev-0\nretry: 1000\ndata: \n\n".to_owned(),
            event(&json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage",
                "params": {"messages": [], "maxTokens": 1}})),
            progress,
            ": keep-alive\n\n".to_owned(),
            event(&answer(text("streamed"))),
        ]),
        _ => json_answer(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "Unknown tool"}})
                .to_string(),
        ),
    }
}
