//! Every answer the gateway makes itself is valid for the era it answers in (issue 24, item
//! 1), judged by the official SDKs' own strict schemas: the Python SDK's pydantic wire models
//! (`tests/clients/validate_py.py`, mcp 2.3) and the TypeScript SDKs' zod schemas
//! (`tests/clients/validate_ts.mjs`: @modelcontextprotocol/sdk 1.32 for the session era, the
//! 2.x client's era codecs, which the Inspector uses, for both).
//!
//! One gateway is driven through every path where it makes or rewrites the answer, in the
//! session era (2025-03-26, 2025-11-25) and in 2026-07-28; every raw JSON-RPC message of every
//! answer (JSON bodies and each SSE event) is collected and all are validated in one run per
//! validator:
//! - the connect prompt of an unconnected `oauth2` and `per_user_token` server: `initialize`,
//!   `server/discover`, each list, `tools/call` in each form (-32042, `input_required`,
//!   `isError`), the methods it refuses;
//! - a virtual server: `initialize`, `server/discover`, lists, `tools/call` (ok, failed,
//!   unknown, a member the caller has not connected), `resources/read`, `prompts/get`,
//!   `completion/complete` (not offered), unknown methods;
//! - the gateway's JSON-RPC errors: session not found, unsupported versions, header mismatch,
//!   an unreachable upstream (-32010), a hidden tool;
//! - bridged answers: a 2026-07-28 client in front of server-everything (session era only:
//!   `server/discover` from its `initialize`, results rewritten to the new era), and a
//!   session-era client in front of a stateless-only upstream (results rewritten back);
//! - requests of the other era (-32601), and the gateway's `notifications/tools/list_changed`
//!   on held streams;
//! - rate-limited calls: a limited `tools/call` (a tool result with `isError`, registered and
//!   virtual servers) and a limited `resources/read` / `prompts/get` (429, `-32012`).
//!
//! Beyond the schemas, every answer must carry the request's id, and every list or resource a
//! 2026-07-28 caller gets must be `cacheScope: "private"`. `MCPGW_DUMP_ANSWERS=FILE` writes
//! what was collected (the validators' input) for a look by hand.
//!
//! The validators are shown to fail on known-bad answers first
//! (`the_validators_refuse_known_bad_answers`), so a green run means something.
//! Needs the peers of `scripts/test-all.sh` (server-everything, the cache venv, the Node
//! packages); skips without them unless `MCPGW_REQUIRE_PEERS=1`. By hand:
//! `d=$(mktemp -d); scripts/peers.sh start "$d" && . "$d/env";
//! cargo test -p e2e --test it answer_schemas::; scripts/peers.sh stop "$d"`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::mcp::{Answer, McpClient, STATELESS, sse_messages};
use e2e::{StoreKind, TestGateway};
use reqwest::Method;
use serde_json::{Value, json};

/// The eras every path is driven in: the oldest and newest session-era versions, and the
/// stateless era.
const ERAS: [&str; 3] = ["2025-03-26", "2025-11-25", STATELESS];
const URL_ELICITATION: &str = r#"{"elicitation": {"url": {}}}"#;

// ---------------------------------------------------------------------------------------------
// The validators

/// Where the validators run: the cache venv's Python and the Node packages.
struct Validators {
    python: String,
    node_modules: String,
}

impl Validators {
    fn from_env() -> Option<Self> {
        Some(Self {
            python: mcpgw::testing::peer_url("MCPGW_TEST_PYTHON")?,
            node_modules: mcpgw::testing::peer_url("MCPGW_TEST_NODE_MODULES")?,
        })
    }

    /// Runs both validators over `answers`; returns each one's failures (label: problem).
    async fn failures(&self, answers: &[Value]) -> Result<Vec<String>> {
        let input = serde_json::to_vec(answers)?;
        let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients");
        let runs = [
            (
                "python",
                self.python.clone(),
                vec![clients.join("validate_py.py").display().to_string()],
            ),
            (
                "typescript",
                "node".to_owned(),
                vec![
                    clients.join("validate_ts.mjs").display().to_string(),
                    self.node_modules.clone(),
                ],
            ),
        ];
        let mut found = Vec::new();
        for (name, program, args) in runs {
            let report = e2e::run_json_filter(&program, &args, &input)
                .await
                .with_context(|| format!("the {name} validator"))?;
            ensure!(
                report["checked"] == answers.len(),
                "the {name} validator checked {} of {} answers",
                report["checked"],
                answers.len()
            );
            for f in report["failures"].as_array().context("failures")? {
                found.push(format!(
                    "[{name}] {} ({} {} {}): {}",
                    f["label"].as_str().unwrap_or_default(),
                    f["era"].as_str().unwrap_or_default(),
                    f["method"].as_str().unwrap_or_default(),
                    f["kind"].as_str().unwrap_or_default(),
                    f["problem"].as_str().unwrap_or_default()
                ));
            }
        }
        Ok(found)
    }
}

/// One answer as the validators read it.
fn item(label: &str, era: &str, method: &str, message: &Value) -> Value {
    let kind = if message.get("result").is_some() {
        "result"
    } else if message.get("error").is_some() {
        "error"
    } else {
        "notification"
    };
    let method = match kind {
        "notification" => message["method"].as_str().unwrap_or_default(),
        _ => method,
    };
    json!({"label": label, "era": era, "method": method, "kind": kind, "message": message})
}

// ---------------------------------------------------------------------------------------------
// Collecting answers

/// Every message of every answer collected, and what was wrong outside the schemas (an answer
/// missing, or carrying another id than the request's).
#[derive(Default)]
struct Answers {
    items: Vec<Value>,
    wrong: Vec<String>,
}

/// The JSON-RPC messages of a body: one JSON value (or batch), else the SSE events.
fn messages_of(raw: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Array(items)) => items,
        Ok(v) => vec![v],
        Err(_) => sse_messages(raw),
    }
}

impl Answers {
    /// Collects every message of `answer` to a `method` request sent in `era`; the answer to
    /// the request itself must be there (with its id).
    fn add(&mut self, label: &str, era: &str, method: &str, answer: &Answer) {
        let label = format!("{label} [{era}]");
        if answer.message.is_null() {
            self.wrong.push(format!(
                "{label}: no answer with the request's id: HTTP {} {}",
                answer.status, answer.raw
            ));
        }
        let messages = messages_of(&answer.raw);
        if messages.is_empty() {
            self.wrong.push(format!(
                "{label}: not JSON-RPC: HTTP {} {}",
                answer.status, answer.raw
            ));
        }
        for m in messages {
            // Requests the upstream sends the client are the upstream's, not answers.
            if m.get("method").is_some() && m.get("id").is_some() {
                continue;
            }
            self.items.push(item(&label, era, method, &m));
        }
    }

    /// Notes `answer` as wrong (with `label`) unless `ok`.
    fn expect(&mut self, ok: bool, label: &str, answer: &Answer) {
        if !ok {
            self.wrong.push(format!(
                "{label}: unexpected HTTP {} {}",
                answer.status, answer.raw
            ));
        }
    }

    /// Sends `method` with `params` on `client` and collects the answer.
    async fn ask(
        &mut self,
        c: &mut McpClient,
        label: &str,
        method: &str,
        params: Value,
    ) -> Result<Answer> {
        let answer = c.request(method, params).await?;
        self.add(label, c.version(), method, &answer);
        Ok(answer)
    }

    /// Connects in `era` declaring `caps`, collecting the `initialize` answer.
    async fn connect(
        &mut self,
        label: &str,
        url: &str,
        key: &str,
        era: &'static str,
        caps: Value,
    ) -> Result<McpClient> {
        let c = McpClient::connect_with(url, key, era, caps).await?;
        if let Some(init) = c.init_answer() {
            self.add(label, era, "initialize", init);
        }
        Ok(c)
    }
}

/// The URI of the first resource a `resources/list` answer names.
fn first_uri(answer: &Answer) -> Option<String> {
    let first = answer.message["result"]["resources"].as_array()?.first()?;
    first["uri"].as_str().map(str::to_owned)
}

/// The name of a prompt a `prompts/list` answer names that needs no arguments.
fn prompt_without_arguments(answer: &Answer) -> Option<String> {
    let prompts = answer.message["result"]["prompts"].as_array()?;
    let needs = |p: &Value| {
        p["arguments"]
            .as_array()
            .is_some_and(|args| args.iter().any(|x| x["required"] == true))
    };
    let plain = prompts.iter().find(|p| !needs(p))?;
    plain["name"].as_str().map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// A stateless-only upstream (no real peer speaks only 2026-07-28): answers every request with
// the era's full results (caching fields included, public and long), refuses `initialize`.

async fn stateless_upstream() -> Result<String> {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: String| async move {
            let msg: Value = serde_json::from_str(&body).unwrap_or_default();
            let cache = |mut v: Value| {
                v["resultType"] = "complete".into();
                v["ttlMs"] = 60_000.into();
                v["cacheScope"] = "public".into();
                v
            };
            let result = match msg["method"].as_str().unwrap_or_default() {
                "server/discover" => Some(cache(json!({"supportedVersions": [STATELESS],
                    "capabilities": {"tools": {}, "resources": {}, "prompts": {}},
                    "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern-only", "version": "1"}}}))),
                "tools/list" => Some(cache(json!({"tools": [{"name": "add",
                    "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}}}}]}))),
                "tools/call" => Some(json!({"content": [{"type": "text", "text": "3"}], "resultType": "complete"})),
                "resources/list" => Some(cache(json!({"resources": [{"uri": "mem://a", "name": "a"}]}))),
                "resources/templates/list" => Some(cache(json!({"resourceTemplates": []}))),
                "resources/read" => Some(cache(json!({"contents": [{"uri": "mem://a", "text": "A"}]}))),
                "prompts/list" => Some(cache(json!({"prompts": [{"name": "p"}]}))),
                "prompts/get" => Some(json!({"messages": [{"role": "user",
                    "content": {"type": "text", "text": "hi"}}], "resultType": "complete"})),
                _ => None,
            };
            let (status, body) = match result {
                Some(r) => (200, json!({"jsonrpc": "2.0", "id": msg["id"], "result": r})),
                None => (
                    400,
                    json!({"jsonrpc": "2.0", "id": msg["id"],
                        "error": {"code": -32601, "message": "Method not found"}}),
                ),
            };
            (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(body))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/mcp", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Ok(url)
}

// ---------------------------------------------------------------------------------------------
// Set-up

struct Fixture {
    gw: TestGateway,
    alice: String,
}

async fn post(gw: &TestGateway, path: &str, body: Value) -> Result<()> {
    let (s, answer) = gw.admin(Method::POST, path, Some(body)).await?;
    ensure!(s == 201, "POST {path}: {s} {answer}");
    Ok(())
}

async fn fixture(everything: &str) -> Result<Fixture> {
    let gw = TestGateway::start(StoreKind::Sqlite, &[]).await?;
    let modern = stateless_upstream().await?;
    // A port nothing listens on: every call fails as unreachable.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}/mcp", l.local_addr()?)
    };
    let servers = [
        json!({"name": "everything", "url": everything, "auth": {"type": "none"}}),
        json!({"name": "modern", "url": modern, "auth": {"type": "none"}}),
        json!({"name": "dead", "url": dead, "auth": {"type": "none"}}),
        // Per-user credentials alice has not provided: the gateway answers in their place.
        json!({"name": "notes", "url": everything, "auth": {"type": "oauth2", "client_id": "gw",
            "authorization_url": "https://as.example.com/authorize",
            "token_url": "https://as.example.com/token"}}),
        json!({"name": "pat", "url": everything,
            "auth": {"type": "per_user_token", "header": "Authorization", "format": "Bearer {token}"}}),
    ];
    for s in servers {
        post(&gw, "/admin/servers", s).await?;
    }
    post(
        &gw,
        "/admin/server-groups",
        json!({"name": "everyone", "servers": ["everything", "modern", "dead", "notes", "pat"],
            "members": {"everyone": true},
            "tool_rules": {"everything": {"deny": ["get-tiny-image"]}}}),
    )
    .await?;
    post(
        &gw,
        "/admin/virtual-servers",
        json!({"name": "combo", "description": "a virtual server",
            "tools": [{"server": "everything", "tool": "get-sum"},
                      {"server": "everything", "tool": "echo", "alias": "say"},
                      {"server": "notes", "tool": "echo", "alias": "notes_echo"}],
            "resources_from": ["everything"], "prompts_from": ["everything"],
            "members": {"everyone": true}}),
    )
    .await?;
    let alice = gw.user_key("alice@example.com").await?;
    Ok(Fixture { gw, alice })
}

// ---------------------------------------------------------------------------------------------
// The paths

/// The connect prompt: `endpoint` needs a credential alice lacks.
async fn connect_prompt(fx: &Fixture, a: &mut Answers, endpoint: &str) -> Result<()> {
    let url = fx.gw.mcp_url(endpoint);
    for era in ERAS {
        for (caps_name, caps) in [
            ("plain", json!({})),
            ("url-eliciting", serde_json::from_str(URL_ELICITATION)?),
        ] {
            let label = format!("connect prompt {endpoint} {caps_name}");
            let mut c = a.connect(&label, &url, &fx.alice, era, caps).await?;
            let lists = [
                ("tools/list", json!({})),
                ("resources/list", json!({})),
                ("resources/templates/list", json!({})),
                ("prompts/list", json!({})),
                (
                    "tools/call",
                    json!({"name": "echo", "arguments": {"message": "hi"}}),
                ),
                // Methods the prompt cannot answer: refused with the link.
                ("resources/read", json!({"uri": "demo://x"})),
                ("prompts/get", json!({"name": "p"})),
            ];
            for (method, params) in lists {
                let answer = a.ask(&mut c, &label, method, params).await?;
                if method == "tools/call" {
                    // The form the client's capabilities and era call for.
                    let r = &answer.message["result"];
                    let ok = match (caps_name, endpoint, era) {
                        ("url-eliciting", "notes", STATELESS) => {
                            r["resultType"] == "input_required"
                        }
                        ("url-eliciting", "notes", _) => answer.message["error"]["code"] == -32042,
                        _ => r["isError"] == true,
                    };
                    a.expect(ok, &format!("{label} [{era}] tools/call form"), &answer);
                }
            }
            era_methods(a, &mut c, &label).await?;
        }
    }
    Ok(())
}

/// Every era's own methods, and the other era's (answered as unknown methods).
async fn era_methods(a: &mut Answers, c: &mut McpClient, label: &str) -> Result<()> {
    for method in ["server/discover", "ping"] {
        let answer = a.ask(c, label, method, json!({})).await?;
        let own = (method == "server/discover") == (c.version() == STATELESS);
        let ok = if own {
            answer.message.get("result").is_some()
        } else {
            answer.message["error"]["code"] == -32601
        };
        a.expect(ok, &format!("{label} [{}] {method}", c.version()), &answer);
    }
    let level = a
        .ask(c, label, "logging/setLevel", json!({"level": "info"}))
        .await?;
    if c.version() == STATELESS {
        a.expect(
            level.message["error"]["code"] == -32601,
            &format!("{label} logging/setLevel"),
            &level,
        );
    }
    Ok(())
}

/// A virtual server: the gateway is the MCP server.
async fn virtual_server(fx: &Fixture, a: &mut Answers) -> Result<()> {
    let url = fx.gw.mcp_url("combo");
    for era in ERAS {
        for (caps_name, caps) in [
            ("plain", json!({})),
            ("url-eliciting", serde_json::from_str(URL_ELICITATION)?),
        ] {
            let label = format!("virtual {caps_name}");
            let mut c = a.connect(&label, &url, &fx.alice, era, caps).await?;
            if caps_name == "url-eliciting" {
                // Only the connect prompt of a member depends on the capabilities.
                a.ask(
                    &mut c,
                    &label,
                    "tools/call",
                    json!({"name": "notes_echo", "arguments": {"message": "x"}}),
                )
                .await?;
                continue;
            }
            era_methods(a, &mut c, &label).await?;
            let tools = a.ask(&mut c, &label, "tools/list", json!({})).await?;
            ensure!(
                tools.message["result"]["tools"]
                    .as_array()
                    .is_some_and(|t| t.len() == 3),
                "{label} [{era}]: {}",
                tools.raw
            );
            let calls = [
                (
                    "sum",
                    json!({"name": "everything__get-sum", "arguments": {"a": 2, "b": 40}}),
                ),
                (
                    "echo",
                    json!({"name": "say", "arguments": {"message": "hi"}}),
                ),
                (
                    "bad arguments",
                    json!({"name": "everything__get-sum", "arguments": {"a": "x"}}),
                ),
                ("unknown tool", json!({"name": "nope", "arguments": {}})),
                (
                    "member not connected",
                    json!({"name": "notes_echo", "arguments": {"message": "x"}}),
                ),
            ];
            for (what, params) in calls {
                let answer = a
                    .ask(
                        &mut c,
                        &format!("{label} call {what}"),
                        "tools/call",
                        params,
                    )
                    .await?;
                let ok = match what {
                    "sum" | "echo" => answer.message["result"]["content"].is_array(),
                    "unknown tool" => answer.message["error"]["code"] == -32602,
                    "member not connected" => answer.message["result"]["isError"] == true,
                    _ => true,
                };
                a.expect(ok, &format!("{label} [{era}] call {what}"), &answer);
            }
            let resources = a.ask(&mut c, &label, "resources/list", json!({})).await?;
            let prompts = a.ask(&mut c, &label, "prompts/list", json!({})).await?;
            let complete = json!({"ref": {"type": "ref/prompt", "name": "p"},
                "argument": {"name": "a", "value": "x"}});
            let mut asks = vec![
                ("templates", "resources/templates/list", json!({})),
                ("read unknown", "resources/read", json!({"uri": "nope://x"})),
                ("prompt unknown", "prompts/get", json!({"name": "nope"})),
                ("not offered", "completion/complete", complete),
                ("unknown method", "nope/nothing", json!({})),
            ];
            if let Some(uri) = first_uri(&resources) {
                asks.push(("read", "resources/read", json!({"uri": uri})));
            }
            if let Some(name) = prompt_without_arguments(&prompts) {
                asks.push(("prompt", "prompts/get", json!({"name": name})));
            }
            for (what, method, params) in asks {
                a.ask(&mut c, &format!("{label} {what}"), method, params)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Registered servers whose answers the gateway rewrites or makes: server-everything (session
/// era only) and the stateless-only upstream, each in every era; an unreachable upstream; a
/// hidden tool.
async fn relayed(fx: &Fixture, a: &mut Answers, everything_calls: Vec<Value>) -> Result<()> {
    for endpoint in ["everything", "modern"] {
        let url = fx.gw.mcp_url(endpoint);
        for era in ERAS {
            let label = format!("relayed {endpoint}");
            let mut c = a.connect(&label, &url, &fx.alice, era, json!({})).await?;
            era_methods(a, &mut c, &label).await?;
            let tools = a.ask(&mut c, &label, "tools/list", json!({})).await?;
            a.expect(
                tools.message["result"]["tools"].is_array(),
                &format!("{label} [{era}] tools/list"),
                &tools,
            );
            let calls = match endpoint {
                "everything" => everything_calls.clone(),
                _ => vec![json!({"name": "add", "arguments": {"a": 1}})],
            };
            for call in calls {
                let what = format!("{label} call {}", call["name"].as_str().unwrap_or_default());
                let answer = a.ask(&mut c, &what, "tools/call", call).await?;
                a.expect(
                    answer.message["result"]["content"].is_array(),
                    &format!("{what} [{era}]"),
                    &answer,
                );
            }
            let resources = a.ask(&mut c, &label, "resources/list", json!({})).await?;
            let prompts = a.ask(&mut c, &label, "prompts/list", json!({})).await?;
            let mut asks = vec![("resources/templates/list", json!({}))];
            if let Some(uri) = first_uri(&resources) {
                asks.push(("resources/read", json!({"uri": uri})));
            }
            if let Some(name) = prompt_without_arguments(&prompts) {
                asks.push(("prompts/get", json!({"name": name})));
            }
            if endpoint == "everything" {
                // server-everything offers completions: a result the bridge rewrites too.
                asks.push((
                    "completion/complete",
                    json!({"argument": {"name": "department", "value": "E"},
                    "ref": {"type": "ref/prompt", "name": "completable-prompt"}}),
                ));
            }
            for (method, params) in asks {
                a.ask(&mut c, &label, method, params).await?;
            }
            if endpoint == "everything" {
                // Hidden by the group's rule: answered as the upstream answers an unknown tool.
                a.ask(
                    &mut c,
                    &format!("{label} hidden tool"),
                    "tools/call",
                    json!({"name": "get-tiny-image", "arguments": {}}),
                )
                .await?;
            }
        }
    }
    // An upstream that cannot be reached: the gateway's -32010, in every era.
    let url = fx.gw.mcp_url("dead");
    for era in ERAS {
        let label = "unreachable upstream";
        let answer = if era == STATELESS {
            let mut c = McpClient::connect(&url, &fx.alice, era).await?;
            c.request("tools/list", json!({})).await?
        } else {
            raw_initialize(&url, &fx.alice, era).await?
        };
        let method = if era == STATELESS {
            "tools/list"
        } else {
            "initialize"
        };
        a.add(label, era, method, &answer);
        a.expect(
            answer.message["error"]["code"] == -32010,
            &format!("{label} [{era}]"),
            &answer,
        );
    }
    Ok(())
}

/// The gateway's own notification on a held `GET` stream: `notifications/tools/list_changed`
/// when the policy changes, on a virtual server's session and a registered server's.
async fn held_streams(fx: &Fixture, a: &mut Answers) -> Result<()> {
    let era = "2025-11-25";
    let mut streams = Vec::new();
    for endpoint in ["combo", "everything"] {
        let c = McpClient::connect(&fx.gw.mcp_url(endpoint), &fx.alice, era).await?;
        let stream = reqwest::Client::new()
            .get(fx.gw.mcp_url(endpoint))
            .bearer_auth(&fx.alice)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", c.session().context("a session")?)
            .header("mcp-protocol-version", era)
            .send()
            .await?;
        ensure!(
            stream.status() == 200,
            "GET {endpoint}: {}",
            stream.status()
        );
        streams.push((endpoint, stream, c));
    }
    post(
        &fx.gw,
        "/admin/server-groups",
        json!({"name": "later", "servers": ["everything"], "members": {"users": ["bob@example.com"]}}),
    )
    .await?;
    for (endpoint, mut stream, _session) in streams {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut text = String::new();
        while !text.contains("notifications/tools/list_changed") {
            let chunk = tokio::time::timeout_at(deadline, stream.chunk())
                .await
                .with_context(|| format!("no list_changed on {endpoint}'s held stream"))??
                .context("the stream ended")?;
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let answer = Answer {
            status: 200,
            message: Value::Null,
            raw: text,
        };
        for m in messages_of(&answer.raw) {
            a.items
                .push(item(&format!("{endpoint} held stream"), era, "", &m));
        }
    }
    Ok(())
}

/// An `initialize` sent by hand (`McpClient::connect` insists on success).
async fn raw_initialize(url: &str, key: &str, era: &str) -> Result<Answer> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": era, "capabilities": {}, "clientInfo": {"name": "schemas", "version": "1"}}});
    raw_post(url, key, &[], &body.to_string()).await
}

/// One POST of `body` (a request with id 1) with extra headers; the answer to it.
async fn raw_post(url: &str, key: &str, headers: &[(&str, &str)], body: &str) -> Result<Answer> {
    let mut req = reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body.to_owned()).send().await?;
    let status = resp.status().as_u16();
    let raw = resp.text().await?;
    let message = messages_of(&raw)
        .into_iter()
        .find(|m| m["id"] == 1 && (m.get("result").is_some() || m.get("error").is_some()))
        .unwrap_or(Value::Null);
    Ok(Answer {
        status,
        message,
        raw,
    })
}

/// The gateway's own JSON-RPC errors at the transport, each with the request's id: a
/// session it does not know, versions it does not speak, a routing header that disagrees
/// with the body, a message it refuses to read.
async fn transport_errors(fx: &Fixture, a: &mut Answers) -> Result<()> {
    let session = "2025-11-25";
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).to_string();
    let envelope = |version: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": {}}}})
        .to_string()
    };
    // A member twice: read strictly, refused before anything else.
    let twice = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#;
    for endpoint in ["everything", "combo", "notes", "modern"] {
        let url = fx.gw.mcp_url(endpoint);
        let c = McpClient::connect(&url, &fx.alice, session).await?;
        let sid = c.session().context("a session")?.to_owned();
        // (what, era, headers, body, the HTTP status)
        let cases = [
            (
                "unknown session",
                session,
                vec![
                    ("mcp-session-id", "not-a-session"),
                    ("mcp-protocol-version", session),
                ],
                list.clone(),
                404,
            ),
            (
                "bad version header",
                session,
                vec![
                    ("mcp-session-id", &sid),
                    ("mcp-protocol-version", "1999-01-01"),
                ],
                list.clone(),
                400,
            ),
            (
                "unsupported version",
                STATELESS,
                vec![
                    ("mcp-protocol-version", "2099-01-01"),
                    ("mcp-method", "tools/list"),
                ],
                envelope("2099-01-01"),
                400,
            ),
            (
                "header mismatch",
                STATELESS,
                vec![
                    ("mcp-protocol-version", STATELESS),
                    ("mcp-method", "tools/call"),
                ],
                envelope(STATELESS),
                400,
            ),
            (
                "a member twice",
                session,
                vec![("mcp-session-id", &sid)],
                twice.to_owned(),
                400,
            ),
        ];
        for (what, era, headers, body, status) in cases {
            let label = format!("{endpoint} {what}");
            let r = raw_post(&url, &fx.alice, &headers, &body).await?;
            a.add(&label, era, "tools/list", &r);
            a.expect(r.status == status, &label, &r);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The tests

/// The validators fail on what they must refuse: without this, a green run could mean they
/// check nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_validators_refuse_known_bad_answers() -> Result<()> {
    let Some(v) = Validators::from_env() else {
        return Ok(());
    };
    let ok = |r: Value| json!({"jsonrpc": "2.0", "id": 1, "result": r});
    let modern_list =
        json!({"tools": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"});
    // (label, era, method, message, must fail in Python, must fail in TypeScript): the TS
    // clients are lenient where their schemas say so (`server/discover`'s caching fields
    // fall back to 0 / "private", a tool result's `content` to []).
    let cases = [
        (
            "good modern list",
            STATELESS,
            "tools/list",
            ok(modern_list.clone()),
            false,
            false,
        ),
        (
            "good session list",
            "2025-11-25",
            "tools/list",
            ok(json!({"tools": []})),
            false,
            false,
        ),
        (
            "modern list without cacheScope",
            STATELESS,
            "tools/list",
            ok(json!({"tools": [], "resultType": "complete", "ttlMs": 0})),
            true,
            true,
        ),
        (
            "modern list without resultType",
            STATELESS,
            "tools/list",
            ok(json!({"tools": [], "ttlMs": 0, "cacheScope": "private"})),
            true,
            true,
        ),
        (
            "modern discover without ttlMs",
            STATELESS,
            "server/discover",
            ok(json!({"supportedVersions": [STATELESS], "capabilities": {},
                "resultType": "complete", "cacheScope": "private"})),
            true,
            false,
        ),
        (
            "session list with 2026 fields",
            "2025-11-25",
            "tools/list",
            ok(modern_list),
            true,
            true,
        ),
        (
            "session ping with resultType",
            "2025-03-26",
            "ping",
            ok(json!({"resultType": "complete"})),
            true,
            true,
        ),
        (
            "ping in 2026",
            STATELESS,
            "ping",
            ok(json!({"resultType": "complete"})),
            true,
            true,
        ),
        (
            "a method nobody defines",
            "2025-11-25",
            "nope/nothing",
            ok(json!({})),
            true,
            true,
        ),
        (
            "input_required without requests",
            STATELESS,
            "tools/call",
            ok(json!({"resultType": "input_required"})),
            true,
            true,
        ),
        (
            "tool result without content",
            "2025-11-25",
            "tools/call",
            ok(json!({"isError": true})),
            true,
            false,
        ),
        (
            "error without a code",
            "2025-11-25",
            "tools/call",
            json!({"jsonrpc": "2.0", "id": 1, "error": {"message": "x"}}),
            true,
            true,
        ),
    ];
    let items: Vec<Value> = cases
        .iter()
        .map(|(l, e, m, msg, _, _)| item(l, e, m, msg))
        .collect();
    let failures = v.failures(&items).await?;
    for (label, _, _, _, py, ts) in &cases {
        for (lang, must_fail) in [("python", py), ("typescript", ts)] {
            let failed = failures
                .iter()
                .any(|f| f.starts_with(&format!("[{lang}] {label} (")));
            ensure!(
                failed == *must_fail,
                "[{lang}] {label}: expected {}, got:\n{}",
                if *must_fail {
                    "a failure"
                } else {
                    "no failure"
                },
                failures.join("\n")
            );
        }
    }
    Ok(())
}

/// The answers of a rate limit (`govern`): a limited `tools/call` is a tool result with
/// `isError` in each era, on a registered and on a virtual server; a limited `resources/read`
/// or `prompts/get` is HTTP 429 with `Retry-After` and a JSON-RPC error with the request's id.
async fn rate_limited(everything: &str, a: &mut Answers) -> Result<()> {
    use mcpgw::limits::{CallKey, Limits, Verdict};
    let decide = |k: &CallKey<'_>| match k.name {
        "echo" | "say" | "demo://limited" | "simple-prompt" => Verdict::Limited {
            rule: "schemas".into(),
            retry_after: Duration::from_millis(1500),
        },
        _ => Verdict::Pass { would_limit: None },
    };
    let limits = std::sync::Arc::new(Limits::decided_by_test(std::sync::Arc::new(decide)));
    let gw = TestGateway::start_limited(StoreKind::Sqlite, &[], Some(limits)).await?;
    post(
        &gw,
        "/admin/servers",
        json!({"name": "everything", "url": everything, "auth": {"type": "none"}}),
    )
    .await?;
    post(
        &gw,
        "/admin/server-groups",
        json!({"name": "everyone", "servers": ["everything"], "members": {"everyone": true}}),
    )
    .await?;
    post(
        &gw,
        "/admin/virtual-servers",
        json!({"name": "combo", "members": {"everyone": true},
            "tools": [{"server": "everything", "tool": "echo", "alias": "say"}]}),
    )
    .await?;
    let alice = gw.user_key("alice@example.com").await?;
    for era in ERAS {
        for (endpoint, tool) in [("everything", "echo"), ("combo", "say")] {
            let label = format!("rate limited {endpoint}");
            let mut c = a
                .connect(&label, &gw.mcp_url(endpoint), &alice, era, json!({}))
                .await?;
            let params = json!({"name": tool, "arguments": {"message": "hi"}});
            let answer = a.ask(&mut c, &label, "tools/call", params).await?;
            let r = &answer.message["result"];
            let ok = answer.status == 200
                && r["isError"] == true
                && r["content"][0]["text"] == "Rate limit reached: retry in 2 s";
            a.expect(ok, &format!("{label} [{era}] tools/call"), &answer);
            if endpoint == "combo" {
                continue;
            }
            for (method, params) in [
                ("resources/read", json!({"uri": "demo://limited"})),
                ("prompts/get", json!({"name": "simple-prompt"})),
            ] {
                let answer = a.ask(&mut c, &label, method, params).await?;
                let ok = answer.status == 429 && answer.message["error"]["code"] == -32012;
                a.expect(ok, &format!("{label} [{era}] {method}"), &answer);
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_the_gateway_makes_is_valid_in_its_era() -> Result<()> {
    let (Some(v), Some(everything)) = (
        Validators::from_env(),
        mcpgw::testing::peer_url("MCPGW_TEST_EVERYTHING_URL"),
    ) else {
        return Ok(());
    };
    let fx = fixture(&everything).await?;
    let mut a = Answers::default();
    connect_prompt(&fx, &mut a, "notes").await?;
    connect_prompt(&fx, &mut a, "pat").await?;
    virtual_server(&fx, &mut a).await?;
    // Results of every shape server-everything makes: text, structured content, resource
    // links, annotations, and progress notifications on the way (SSE).
    let everything_calls = vec![
        json!({"name": "get-sum", "arguments": {"a": 2, "b": 40}}),
        json!({"name": "get-structured-content", "arguments": {"location": "New York"}}),
        json!({"name": "get-resource-links", "arguments": {"count": 2}}),
        json!({"name": "get-annotated-message", "arguments": {"messageType": "error", "includeImage": true}}),
        json!({"name": "trigger-long-running-operation", "arguments": {"duration": 0.2, "steps": 2},
            "_meta": {"progressToken": "schemas-1"}}),
    ];
    relayed(&fx, &mut a, everything_calls).await?;
    transport_errors(&fx, &mut a).await?;
    held_streams(&fx, &mut a).await?;
    rate_limited(&everything, &mut a).await?;
    // Every era and every kind of answer was reached.
    for era in ERAS {
        for kind in ["result", "error"] {
            ensure!(
                a.items.iter().any(|i| i["era"] == era && i["kind"] == kind),
                "no {kind} collected in {era}"
            );
        }
    }
    // Beyond the schemas: whatever the upstream says, a list or resource the gateway answered
    // for a caller is theirs alone (made with their credential, under their policy); only a
    // stateless upstream's own `server/discover` passes as it said.
    for i in &a.items {
        let scope = &i["message"]["result"]["cacheScope"];
        let passed = i["method"] == "server/discover"
            && i["label"]
                .as_str()
                .is_some_and(|l| l.starts_with("relayed modern"));
        if !scope.is_null() && scope != "private" && !passed {
            a.wrong.push(format!("{}: cacheScope {scope}", i["label"]));
        }
    }
    if let Ok(path) = std::env::var("MCPGW_DUMP_ANSWERS") {
        // For a look at what was collected (and to feed the validators by hand).
        std::fs::write(path, serde_json::to_vec_pretty(&a.items)?)?;
    }
    let failures = v.failures(&a.items).await?;
    ensure!(
        failures.is_empty() && a.wrong.is_empty(),
        "{} of {} answers are invalid:\n{}\nanswers missing, misaddressed or unexpected:\n{}",
        failures.len(),
        a.items.len(),
        failures.join("\n"),
        a.wrong.join("\n")
    );
    Ok(())
}
