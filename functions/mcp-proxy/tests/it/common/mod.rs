//! Shared by `proxy.rs` and `eras.rs`: in-process upstream MCP servers (one per protocol era)
//! that record everything they receive, a gateway fixture on SQLite with registered servers
//! and two users, more processes of the same deployment, and helpers that speak MCP to the
//! proxy router.

// Each test crate uses part of this module.
#![allow(dead_code)]

pub mod fake;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use mcpgw::state::AppState;
use mcpgw::testing::{TEST_ADMIN_KEY, local_state};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The credential the upstreams require in `X-Api-Key`, stored as secret `up-key`.
pub const SECRET: &str = "upstream-s3cr3t";
/// What the session-era upstream negotiates when offered a version it does not know.
pub const UPSTREAM_VERSION: &str = "2025-06-18";
pub const MODERN: &str = "2026-07-28";
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// How long a test waits for something the upstream should receive before failing.
pub const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// What an upstream received

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: String,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The JSON-RPC method of a POST.
    pub fn rpc(&self) -> Option<String> {
        self.json()["method"].as_str().map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn session(&self) -> Option<&str> {
        self.header("mcp-session-id")
    }
}

/// Everything an upstream received, in order.
#[derive(Clone)]
pub struct Log {
    entries: Arc<Mutex<Vec<Seen>>>,
    changed: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            entries: Arc::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl Log {
    fn push(&self, seen: Seen) {
        self.entries.lock().unwrap().push(seen);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn all(&self) -> Vec<Seen> {
        self.entries.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    /// The JSON-RPC methods received, in order (`GET`/`DELETE` for those HTTP methods).
    pub fn methods(&self) -> Vec<String> {
        self.all()
            .iter()
            .map(|s| match s.method {
                Method::POST => s.rpc().unwrap_or_else(|| "<not json-rpc>".into()),
                ref m => m.to_string(),
            })
            .collect()
    }

    /// The POSTs carrying JSON-RPC `method`.
    pub fn rpc(&self, method: &str) -> Vec<Seen> {
        self.all()
            .into_iter()
            .filter(|s| s.rpc().as_deref() == Some(method))
            .collect()
    }

    /// The one POST carrying `method`; fails unless there is exactly one.
    pub fn only(&self, method: &str) -> Seen {
        let found = self.rpc(method);
        assert_eq!(found.len(), 1, "{method} received: {:?}", self.methods());
        found.into_iter().next().unwrap()
    }

    /// The answer (a JSON-RPC response the gateway posted) to the upstream's own request
    /// `id`, waited for at most `wait`.
    pub async fn answer_to(&self, id: &str, wait: Duration) -> Option<Value> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let found =
                self.all().into_iter().map(|s| s.json()).find(|m| {
                    m["id"] == id && (m.get("result").is_some() || m.get("error").is_some())
                });
            if found.is_some() {
                return found;
            }
            tokio::time::timeout_at(deadline, rx.changed())
                .await
                .ok()?
                .ok()?;
        }
    }

    /// Waits (at most [`WAIT`]) for a received request matching `pred`.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self.all().into_iter().find(|s| pred(s)) {
                return s;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!(
                    "upstream never received {what} within {WAIT:?}; got {:?}",
                    self.methods()
                );
            }
        }
    }

    /// The `notifications/cancelled` received for `request_id`.
    pub fn cancellations_of(&self, request_id: &Value) -> Vec<Seen> {
        self.rpc("notifications/cancelled")
            .into_iter()
            .filter(|s| &s.json()["params"]["requestId"] == request_id)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream MCP servers

/// Which protocol era an upstream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaks {
    /// `initialize` handshake and `Mcp-Session-Id` (session ids `up-session-1`, `-2`, ...);
    /// answers `server/discover` with 400 like the SDKs' session servers do. Tools:
    /// `tools/call` answers in SSE (a progress notification, then the result); named `hang`
    /// it never finishes, named `long` it sends progress forever, named `gated` it waits for
    /// [`Upstream::open_gate`] before the result. `tools/list` and others answer JSON, or SSE
    /// when the request carries a `progressToken`. Method `slow` answers after 5 s, method
    /// `redirect` with a 302. A batch gets an array of answers; GET a one-event stream;
    /// DELETE ends the session. Unknown or forgotten sessions get 404.
    Sessions,
    /// 2026-07-28 only: refuses `initialize` (HTTP 400 with a JSON-RPC error), answers
    /// `server/discover`, checks every request's envelope and routing headers strictly
    /// (400 -32020 otherwise), has no GET stream. `tools/call` named `long` sends progress
    /// forever.
    Stateless,
}

struct UpState {
    speaks: Speaks,
    log: Log,
    sessions: AtomicUsize,
    live: Mutex<HashSet<String>>,
    amnesiac: std::sync::atomic::AtomicBool,
    unavailable: AtomicUsize,
    gate: tokio::sync::Notify,
    /// Notifications and responses posted to it are held 30 s before their 202.
    stalls_notes: std::sync::atomic::AtomicBool,
}

/// An in-process upstream MCP server over real HTTP.
#[derive(Clone)]
pub struct Upstream {
    pub url: String,
    pub log: Log,
    state: Arc<UpState>,
}

impl Upstream {
    pub async fn start(speaks: Speaks) -> Self {
        let state = Arc::new(UpState {
            speaks,
            log: Log::default(),
            sessions: AtomicUsize::new(0),
            live: Mutex::default(),
            amnesiac: Default::default(),
            unavailable: AtomicUsize::new(0),
            gate: tokio::sync::Notify::new(),
            stalls_notes: Default::default(),
        });
        let handler = {
            let state = state.clone();
            move |method: Method, headers: HeaderMap, body: String| {
                let state = state.clone();
                async move { handle(state, method, headers, body).await }
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

    /// The upstream forgets a session (a restart): requests presenting it get 404.
    pub fn forget(&self, session_id: &str) {
        assert!(
            self.state.live.lock().unwrap().remove(session_id),
            "{session_id} was not live"
        );
    }

    /// The upstream keeps no session from now on: every request presenting one gets 404.
    pub fn amnesia(&self) {
        self.state.amnesiac.store(true, Ordering::SeqCst);
        self.state.live.lock().unwrap().clear();
    }

    /// The next `n` requests get 503 (a deployment rolling over).
    pub fn unavailable_for(&self, n: usize) {
        self.state.unavailable.store(n, Ordering::SeqCst);
    }

    /// From now on, notifications and responses posted to it hang 30 s (a hostile or
    /// overloaded upstream tying up the gateway's detached messages).
    pub fn stall_notifications(&self) {
        self.state.stalls_notes.store(true, Ordering::SeqCst);
    }

    /// Lets a `gated` tool call finish.
    pub fn open_gate(&self) {
        self.state.gate.notify_one();
    }
}

fn rpc_error_response(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

fn event(message: &Value) -> String {
    format!("event: message\ndata: {message}\n\n")
}

fn progress(n: u64) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/progress",
        "params": {"progressToken": "p", "progress": n}})
}

fn sse(
    stream: impl futures_util::Stream<Item = String> + Send + 'static,
    extra: &[(&str, &str)],
) -> Response {
    let mut b = Response::builder().header("content-type", "text/event-stream");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Body::from_stream(stream.map(Ok::<_, std::io::Error>)))
        .unwrap()
}

fn json_response(message: &Value, extra: &[(&str, &str)]) -> Response {
    let mut b = Response::builder().header("content-type", "application/json");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Body::from(message.to_string())).unwrap()
}

/// SSE that sends progress every 50 ms until the reader goes away.
fn endless_progress() -> impl futures_util::Stream<Item = String> + Send + 'static {
    futures_util::stream::unfold(0u64, |n| async move {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some((event(&progress(n)), n + 1))
    })
}

async fn handle(up: Arc<UpState>, method: Method, headers: HeaderMap, body: String) -> Response {
    up.log.push(Seen {
        method: method.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(SECRET) {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer realm=upstream")],
            "no",
        )
            .into_response();
    }
    let down = up
        .unavailable
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if down.is_ok() {
        return (StatusCode::SERVICE_UNAVAILABLE, "rolling over").into_response();
    }
    match up.speaks {
        Speaks::Sessions => session_server(&up, method, &headers, &body).await,
        Speaks::Stateless => stateless_server(&up, method, &headers, &body).await,
    }
}

async fn session_server(
    up: &Arc<UpState>,
    method: Method,
    headers: &HeaderMap,
    body: &str,
) -> Response {
    let sid = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let live = sid
        .as_ref()
        .is_some_and(|s| up.live.lock().unwrap().contains(s));
    if method == Method::DELETE || method == Method::GET {
        if !live {
            return StatusCode::NOT_FOUND.into_response();
        }
        if method == Method::DELETE {
            up.live.lock().unwrap().remove(sid.as_deref().unwrap());
            return StatusCode::NO_CONTENT.into_response();
        }
        let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "info", "data": "from the GET stream"}});
        return sse(futures_util::stream::iter([event(&note)]), &[]);
    }
    let Ok(msg) = serde_json::from_str::<Value>(body) else {
        return rpc_error_response(StatusCode::BAD_REQUEST, Value::Null, -32700, "Parse error");
    };
    let id = msg.get("id").cloned();
    let rpc = msg["method"].as_str().unwrap_or_default();
    if rpc == "initialize" {
        let n = up.sessions.fetch_add(1, Ordering::SeqCst) + 1;
        let new_sid = format!("up-session-{n}");
        if !up.amnesiac.load(Ordering::SeqCst) {
            up.live.lock().unwrap().insert(new_sid.clone());
        }
        let requested = msg["params"]["protocolVersion"]
            .as_str()
            .unwrap_or_default();
        let version = if ["2025-03-26", "2025-06-18"].contains(&requested) {
            requested
        } else {
            UPSTREAM_VERSION
        };
        let result = json!({"protocolVersion": version, "capabilities": {"tools": {}},
            "serverInfo": {"name": "session-upstream", "version": "1.0"},
            "instructions": "session-era upstream"});
        return json_response(
            &json!({"jsonrpc": "2.0", "id": id, "result": result}),
            &[("mcp-session-id", &new_sid), ("set-cookie", "upstream=1")],
        );
    }
    let Some(sid) = sid else {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32000,
            "Bad Request: No valid session ID provided",
        );
    };
    if !live {
        return rpc_error_response(
            StatusCode::NOT_FOUND,
            Value::Null,
            -32001,
            "Session not found",
        );
    }
    if let Some(items) = msg.as_array() {
        // A 2025-03-26 batch: an answer for each request in it.
        let answers: Vec<Value> = items
            .iter()
            .filter(|i| i.get("method").is_some() && i.get("id").is_some())
            .map(|i| json!({"jsonrpc": "2.0", "id": i["id"], "result": {}}))
            .collect();
        if answers.is_empty() {
            return StatusCode::ACCEPTED.into_response();
        }
        return json_response(&Value::Array(answers), &[]);
    }
    let Some(id) = id else {
        // Notifications and responses.
        if up.stalls_notes.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        return StatusCode::ACCEPTED.into_response();
    };
    let echo = [
        ("mcp-session-id", sid.as_str()),
        ("set-cookie", "upstream=2"),
        ("www-authenticate", "Bearer realm=upstream"),
    ];
    match rpc {
        "redirect" => {
            return (
                StatusCode::FOUND,
                [("location", "http://elsewhere.example/mcp")],
                "",
            )
                .into_response();
        }
        "slow" => tokio::time::sleep(Duration::from_secs(5)).await,
        "tools/call" => {
            let result = json!({"jsonrpc": "2.0", "id": id,
                "result": {"content": [{"type": "text", "text": "done"}]}});
            let first = event(&progress(1));
            return match msg["params"]["name"].as_str() {
                Some("hang") => sse(
                    futures_util::stream::iter([first]).chain(futures_util::stream::pending()),
                    &echo,
                ),
                Some("long") => sse(endless_progress(), &echo),
                // Asks its client for roots on the call's stream, then answers the call with
                // the client's answer as it came back (or "no answer" after 30 s).
                Some("asks-roots") => {
                    let ask = json!({"jsonrpc": "2.0", "id": "ask-1", "method": "roots/list"});
                    let (up, id) = (up.clone(), id.clone());
                    let rest = futures_util::stream::once(async move {
                        let got = up.log.answer_to("ask-1", Duration::from_secs(30)).await;
                        let text = got.map_or_else(|| "no answer".to_owned(), |a| a.to_string());
                        event(&json!({"jsonrpc": "2.0", "id": id,
                            "result": {"content": [{"type": "text", "text": text}]}}))
                    });
                    sse(futures_util::stream::iter([event(&ask)]).chain(rest), &echo)
                }
                Some("gated") => {
                    let up = up.clone();
                    let rest = futures_util::stream::once(async move {
                        up.gate.notified().await;
                        event(&result)
                    });
                    sse(futures_util::stream::iter([first]).chain(rest), &echo)
                }
                _ => {
                    let rest = futures_util::stream::once(async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        event(&result)
                    });
                    sse(futures_util::stream::iter([first]).chain(rest), &echo)
                }
            };
        }
        _ => {}
    }
    let result = if rpc == "tools/list" {
        json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]})
    } else {
        json!({})
    };
    let answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
    if msg["params"]["_meta"].get("progressToken").is_some() {
        let events = [event(&progress(1)), event(&answer)];
        return sse(futures_util::stream::iter(events), &echo);
    }
    json_response(&answer, &echo)
}

async fn stateless_server(
    _up: &UpState,
    method: Method,
    headers: &HeaderMap,
    body: &str,
) -> Response {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Ok(msg) = serde_json::from_str::<Value>(body) else {
        return rpc_error_response(StatusCode::BAD_REQUEST, Value::Null, -32700, "Parse error");
    };
    let Some(id) = msg.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let rpc = msg["method"].as_str().unwrap_or_default();
    if rpc == "initialize" {
        let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32022,
            "message": "Unsupported protocol version",
            "data": {"supported": [MODERN], "requested": msg["params"]["protocolVersion"]}}});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let meta = &msg["params"]["_meta"];
    let name = msg["params"]["name"].as_str();
    let envelope_ok = meta[META_VERSION] == MODERN
        && meta.get(META_CAPABILITIES).is_some_and(Value::is_object)
        && header("mcp-protocol-version") == Some(MODERN)
        && header("mcp-method") == Some(rpc)
        && (rpc != "tools/call" || header("mcp-name") == name);
    if !envelope_ok {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            id,
            -32020,
            "envelope or headers wrong",
        );
    }
    let result = match rpc {
        "server/discover" => json!({"supportedVersions": [MODERN],
            "capabilities": {"tools": {}, "logging": {}},
            "instructions": "stateless upstream",
            "_meta": {META_SERVER_INFO: {"name": "stateless-upstream", "version": "2.0"}},
            "resultType": "complete", "ttlMs": 60000, "cacheScope": "public"}),
        "tools/list" => json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}],
            "resultType": "complete", "ttlMs": 60000, "cacheScope": "public"}),
        "tools/call" if name == Some("long") => return sse(endless_progress(), &[]),
        // Needs the client's roots (2026-07-28 multi-round trip), then answers with what the
        // retry carried.
        "tools/call" if name == Some("asks-roots") => match msg["params"].get("inputResponses") {
            Some(responses) => json!({"resultType": "complete", "content": [{"type": "text",
                "text": json!({"inputResponses": responses,
                    "requestState": msg["params"]["requestState"]}).to_string()}]}),
            None => json!({"resultType": "input_required", "requestState": "st-1",
                "inputRequests": {"r1": {"method": "roots/list"}}}),
        },
        // Asks for more inputs in one round than a retry may answer (16).
        "tools/call" if name == Some("asks-many") => {
            let many: serde_json::Map<String, Value> = (0..64)
                .map(|i| (format!("r{i}"), json!({"method": "roots/list"})))
                .collect();
            json!({"resultType": "input_required", "requestState": "st-1", "inputRequests": many})
        }
        "tools/call" => json!({"content": [{"type": "text", "text": "stateless done"}],
            "resultType": "complete"}),
        _ => json!({"resultType": "complete"}),
    };
    json_response(&json!({"jsonrpc": "2.0", "id": id, "result": result}), &[])
}

// ---------------------------------------------------------------------------------------------
// The gateway

pub struct Gateway {
    pub state: AppState,
    pub app: axum::Router,
    /// API keys of alice@example.com and bob@example.com.
    pub alice: String,
    pub bob: String,
    _dir: mcpgw::testing::tempfile_guard::TempDir,
}

/// A gateway (public URL `https://gw.example.com`, 4 KiB body limit; `vars` override) with
/// `servers` registered as (name, url, secret name) with the secret in `X-Api-Key`. The
/// secret `up-key` holds [`SECRET`]; `wrong` holds something else.
pub async fn gateway(vars: &[(&str, &str)], servers: &[(&str, &str, &str)]) -> Gateway {
    let mut all = vec![
        ("MCPGW_MAX_BODY_BYTES", "4096"),
        ("MCPGW_PUBLIC_URL", "https://gw.example.com"),
    ];
    all.extend_from_slice(vars);
    let (state, dir) = local_state(
        &[
            ("MCPGW_SECRET_UP_KEY", SECRET),
            ("MCPGW_SECRET_WRONG", "nope"),
        ],
        &all,
    );
    let admin = admin_api::app(state.clone());
    let call_admin = |path: &str, body: Value| {
        Request::post(path)
            .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    for (name, url, secret) in servers {
        let body = json!({"name": name, "url": url, "auth": {"type": "header",
            "headers": {"X-Api-Key": format!("secret://{secret}")}}});
        let resp = send(&admin, call_admin("/admin/servers", body)).await;
        assert_eq!(resp.status, 201, "registering {name}: {}", resp.body);
    }
    // Access is denied by default; these fixtures test the proxy, not the policy, so one
    // group admits every caller to every registered server.
    if !servers.is_empty() {
        let names: Vec<&str> = servers.iter().map(|(name, _, _)| *name).collect();
        let body = json!({"name": "everyone", "servers": names, "members": {"everyone": true}});
        let resp = send(&admin, call_admin("/admin/server-groups", body)).await;
        assert_eq!(resp.status, 201, "admitting everyone: {}", resp.body);
    }
    let mut keys = Vec::new();
    for owner in ["alice@example.com", "bob@example.com"] {
        let body = json!({"owner": owner, "name": "t"});
        let resp = send(&admin, call_admin("/admin/api-keys", body)).await;
        assert_eq!(resp.status, 201, "{}", resp.body);
        keys.push(resp.json()["key"].as_str().unwrap().to_owned());
    }
    let bob = keys.pop().unwrap();
    let alice = keys.pop().unwrap();
    Gateway {
        app: mcp_proxy::app(state.clone()),
        state,
        alice,
        bob,
        _dir: dir,
    }
}

/// Replaces the fixture's admit-everyone server group with `group` (its name is set).
pub async fn replace_everyone_group(gw: &Gateway, mut group: Value) {
    group["name"] = "everyone".into();
    let req = Request::put("/admin/server-groups/everyone")
        .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(group.to_string()))
        .unwrap();
    let r = send(&admin_api::app(gw.state.clone()), req).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

// ---------------------------------------------------------------------------------------------
// Several processes of one deployment (Lambda instances)

/// What the test sees of the store the processes of one deployment share: it counts the
/// reads of ended-session records and can make every ended-session call fail.
pub struct SharedStore {
    session_reads: AtomicUsize,
    failing: AtomicBool,
}

impl SharedStore {
    /// How many times a process asked whether a session was ended.
    pub fn session_reads(&self) -> usize {
        self.session_reads.load(Ordering::SeqCst)
    }

    /// From now on, recording and reading ended sessions fail (`on`) or work again.
    pub fn fail_sessions(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    fn observe(&self, call: mcpgw::testing::StoreCall<'_>) -> mcpgw::store::StoreResult<()> {
        if call.method == "session_ended" {
            self.session_reads.fetch_add(1, Ordering::SeqCst);
        }
        let session_call = matches!(call.method, "session_ended" | "end_session");
        if session_call && self.failing.load(Ordering::SeqCst) {
            return Err(mcpgw::store::StoreError::backend(std::io::Error::other(
                "store down (test)",
            )));
        }
        Ok(())
    }
}

/// Two processes of `gw`'s deployment (two Lambda instances), A and B: each with its own
/// memory, caches and HTTP client, both with `gw`'s configuration (so the same keyring file
/// and secrets) and its store, shared under a [`SharedStore`].
pub fn two_instances(gw: &Gateway) -> (axum::Router, axum::Router, Arc<SharedStore>) {
    let watch = Arc::new(SharedStore {
        session_reads: AtomicUsize::new(0),
        failing: AtomicBool::new(false),
    });
    let seen = watch.clone();
    let store: Arc<dyn mcpgw::store::Store> = Arc::new(mcpgw::testing::ObservedStore::new(
        gw.state.store.clone(),
        move |call| seen.observe(call),
    ));
    let instance = || {
        let state = AppState::from_parts(
            (*gw.state.config).clone(),
            store.clone(),
            gw.state.secrets.clone(),
            gw.state.clock.clone(),
        )
        .expect("another process's state");
        mcp_proxy::app(state)
    };
    (instance(), instance(), watch)
}

/// Serves `app` on a loopback port (for tests that need a real connection to drop); the
/// base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

// ---------------------------------------------------------------------------------------------
// Talking to the proxy

/// A response, body read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// The JSON-RPC answer of a JSON or SSE reply (the last result or error event).
pub fn answer(r: &Reply) -> Value {
    if r.body.trim_start().starts_with('{') {
        r.json()
    } else {
        r.events()
            .into_iter()
            .rfind(|m| m.get("result").is_some() || m.get("error").is_some())
            .unwrap_or(Value::Null)
    }
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code: an API error's string code or a JSON-RPC error's number.
    pub fn error_code(&self) -> String {
        let v = self.json();
        v["error"]["code"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v["error"]["code"].to_string())
    }

    /// Asserts a JSON-RPC error answer with this HTTP status, id and code; its `error`.
    pub fn rpc_error(&self, status: u16, id: Value, code: i64) -> Value {
        let v = self.json();
        assert_eq!(
            (
                self.status.as_u16(),
                &v["jsonrpc"],
                &v["id"],
                &v["error"]["code"]
            ),
            (status, &json!("2.0"), &id, &json!(code)),
            "{}",
            self.body
        );
        assert!(v["error"]["message"].is_string(), "{}", self.body);
        v["error"].clone()
    }

    /// The JSON messages of an SSE body, in order.
    pub fn events(&self) -> Vec<Value> {
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("text/event-stream")),
            "not SSE: {:?}",
            self.headers
        );
        sse_messages(&self.body)
    }
}

/// The JSON messages in SSE text (multi-line data joined with `\n`).
pub fn sse_messages(text: &str) -> Vec<Value> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            // An event with empty data (a priming event) carries no message.
            (!data.is_empty() && !data.concat().is_empty()).then(|| {
                serde_json::from_str(&data.join("\n"))
                    .unwrap_or_else(|_| panic!("event data is not JSON: {event}"))
            })
        })
        .collect()
}

/// A request to `/mcp/{endpoint}`; POSTs get MCP's Content-Type and Accept.
pub fn mcp_request(
    method: Method,
    endpoint: &str,
    key: Option<&str>,
) -> axum::http::request::Builder {
    let mut b = Request::builder()
        .method(method.clone())
        .uri(format!("/mcp/{endpoint}"));
    if method == Method::POST {
        b = b
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
    }
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b
}

pub async fn send(app: &axum::Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// POSTs `body` with extra headers.
pub async fn post_with<K: AsRef<str>, V: AsRef<str>>(
    app: &axum::Router,
    endpoint: &str,
    key: &str,
    headers: &[(K, V)],
    body: &Value,
) -> Reply {
    let mut b = mcp_request(Method::POST, endpoint, Some(key));
    for (k, v) in headers {
        b = b.header(k.as_ref(), v.as_ref());
    }
    send(app, b.body(Body::from(body.to_string())).unwrap()).await
}

/// POSTs `body` in gateway session `session` and returns the answer's body as it streams
/// (after checking the answer is a 200).
pub async fn post_streaming(
    app: &axum::Router,
    endpoint: &str,
    key: &str,
    session: &str,
    body: &Value,
) -> axum::body::BodyDataStream {
    let req = mcp_request(Method::POST, endpoint, Some(key))
        .header("mcp-session-id", session)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().into_data_stream()
}

/// POSTs raw bytes within a gateway session (or none).
pub async fn post_raw(
    app: &axum::Router,
    endpoint: &str,
    key: &str,
    session: Option<&str>,
    body: &str,
) -> Reply {
    let mut b = mcp_request(Method::POST, endpoint, Some(key));
    if let Some(s) = session {
        b = b.header("mcp-session-id", s);
    }
    send(app, b.body(Body::from(body.to_owned())).unwrap()).await
}

/// POSTs `body` within a gateway session (or none).
pub async fn post(
    app: &axum::Router,
    endpoint: &str,
    key: &str,
    session: Option<&str>,
    body: &Value,
) -> Reply {
    let headers: Vec<(&str, &str)> = session.map(|s| ("mcp-session-id", s)).into_iter().collect();
    post_with(app, endpoint, key, &headers, body).await
}

/// A GET or DELETE within a gateway session.
pub async fn session_request(
    app: &axum::Router,
    method: Method,
    endpoint: &str,
    key: &str,
    session: &str,
) -> Reply {
    let req = mcp_request(method, endpoint, Some(key))
        .header("mcp-session-id", session)
        .body(Body::empty())
        .unwrap();
    send(app, req).await
}

/// A session-era client's `initialize` (at 2025-06-18).
pub fn init_message(id: i64) -> Value {
    init_message_at(id, "2025-06-18")
}

pub fn init_message_at(id: i64, version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": version,
        "capabilities": {"roots": {"listChanged": true}},
        "clientInfo": {"name": "old-client", "version": "1.0"}}})
}

pub fn request(id: impl Into<Value>, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": method, "params": params})
}

pub fn tools_call(id: impl Into<Value>, name: &str) -> Value {
    request(id, "tools/call", json!({"name": name, "arguments": {}}))
}

/// Initializes a gateway session for `key` on `endpoint`; its sealed id.
pub async fn open_session(app: &axum::Router, endpoint: &str, key: &str) -> String {
    let reply = post(app, endpoint, key, None, &init_message(1)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply
        .header("mcp-session-id")
        .unwrap_or_else(|| panic!("no session id: {:?}", reply.headers))
        .to_owned()
}

/// The capabilities and info a 2026-07-28 client sends in its envelope.
pub fn modern_client() -> (Value, Value) {
    (
        json!({"sampling": {}}),
        json!({"name": "new-client", "version": "2.0"}),
    )
}

/// A 2026-07-28 request: the body with the envelope in `params._meta` (merged with any
/// `_meta` already in `params`), and the routing headers that mirror it.
pub fn modern(
    id: impl Into<Value>,
    method: &str,
    params: Value,
) -> (Value, Vec<(&'static str, String)>) {
    let (caps, info) = modern_client();
    let mut body = request(id, method, params);
    let meta = body["params"]
        .as_object_mut()
        .unwrap()
        .entry("_meta")
        .or_insert_with(|| json!({}));
    meta[META_VERSION] = MODERN.into();
    meta[META_CAPABILITIES] = caps;
    meta[META_CLIENT_INFO] = info;
    let mut headers = vec![
        ("mcp-protocol-version", MODERN.to_owned()),
        ("mcp-method", method.to_owned()),
    ];
    if let Some(name) = body["params"]["name"].as_str() {
        headers.push(("mcp-name", name.to_owned()));
    }
    (body, headers)
}
