//! The MCP proxy across protocol eras (issue 4), end to end with real clients and servers:
//! the official Python SDK (2.x) in both connect modes, the MCP Inspector CLI, and raw HTTP,
//! through the gateway to server-everything (session era only, SSE answers) and the Python echo
//! server in JSON mode (speaks 2026-07-28 and the initialize handshake).
//!
//! What is proven:
//! 1. Python client, mode "auto" (2026-07-28 first) and "legacy" (initialize), both upstreams.
//! 2. Progress notifications stream through (SSE, event by event) before the result.
//! 3. Inspector CLI lists and calls tools on both upstreams.
//! 4. Session era, raw HTTP: the gateway's sealed session id is bound to its user and endpoint,
//!    cannot be tampered with, ends with DELETE; bad `MCP-Protocol-Version` -> 400.
//! 5. Stateless era, raw HTTP: `server/discover` (bridged for server-everything), header/body
//!    mismatch -> -32020, unsupported version -> -32022.
//! 6. Transport hygiene: Origin, Host, Accept, Content-Type, body size, malformed JSON, batches.
//! 7. The caller's gateway key never reaches the upstream, in either era.
//!
//! Needs the peers of `scripts/test-all.sh`; skips without them unless `MCPGW_REQUIRE_PEERS=1`.
//! By hand: `d=$(mktemp -d); scripts/peers.sh start "$d" && . "$d/env";
//! cargo test -p e2e --test it mcp_eras::; scripts/peers.sh stop "$d"`.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use e2e::mcp::sse_messages;
use e2e::{StoreKind, TestGateway};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

/// The session-era versions the gateway serves (contract); "legacy" clients land on one.
const SESSION_ERA: &[&str] = &["2025-03-26", "2025-06-18", "2025-11-25"];
const MODERN: &str = "2026-07-28";
/// How long one client process or HTTP exchange may take before the test fails (no hangs).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Set-up

/// The two upstreams, or `None` (skip) when the peers are not running.
struct Upstreams {
    everything: String,
    echo: String,
}

fn upstreams() -> Option<Upstreams> {
    Some(Upstreams {
        everything: mcpgw::testing::peer_url("MCPGW_TEST_EVERYTHING_URL")?,
        echo: mcpgw::testing::peer_url("MCPGW_TEST_ECHO_URL")?,
    })
}

/// A gateway on SQLite with `everything` and `echo` registered (auth `none`) and alice's key.
struct Setup {
    gw: TestGateway,
    alice: String,
}

async fn setup(up: &Upstreams) -> Setup {
    let gw = TestGateway::start(StoreKind::Sqlite, &[]).await.unwrap();
    register(&gw, "everything", &up.everything).await;
    register(&gw, "echo", &up.echo).await;
    let alice = user_key(&gw, "alice@example.com").await;
    Setup { gw, alice }
}

async fn register(gw: &TestGateway, name: &str, url: &str) {
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": name, "url": url, "auth": {"type": "none"}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "registering {name}: {body}");
    gw.admit_everyone(&format!("everyone-{name}"), &[name])
        .await
        .unwrap();
}

async fn user_key(gw: &TestGateway, owner: &str) -> String {
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/api-keys",
            Some(json!({"owner": owner, "name": "k"})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "creating {owner}'s key: {body}");
    body["key"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP

/// One HTTP exchange with the gateway, body read to the end.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or("")
            .to_ascii_lowercase()
    }

    /// The JSON-RPC messages in the body: one JSON value (or array), or every SSE `data:`
    /// event of a `text/event-stream` body.
    fn messages(&self) -> Vec<Value> {
        if self.content_type().starts_with("text/event-stream") {
            sse_messages(&self.text)
        } else {
            match serde_json::from_str::<Value>(&self.text) {
                Ok(Value::Array(items)) => items,
                Ok(v) => vec![v],
                Err(_) => vec![],
            }
        }
    }

    /// The response (result or error) to the request with this id.
    fn answer(&self, id: i64) -> Value {
        self.messages()
            .into_iter()
            .find(|m| {
                m["id"] == json!(id) && (m.get("result").is_some() || m.get("error").is_some())
            })
            .unwrap_or_else(|| panic!("no answer to request {id} in {self:?}"))
    }

    /// The body as one JSON value (panics with the reply when it is not JSON).
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }
}

/// A request to the gateway as an MCP client sends it: `Content-Type: application/json` and
/// `Accept: application/json, text/event-stream` on POST, `Accept: text/event-stream` on GET,
/// the bearer key, then `extra` headers (which replace the defaults of the same name).
fn request(
    method: Method,
    url: &str,
    key: &str,
    extra: &[(&str, &str)],
    body: Option<String>,
) -> reqwest::RequestBuilder {
    mcpgw::crypto::install_tls_provider();
    let mut headers = HeaderMap::new();
    let accept = if method == Method::GET {
        "text/event-stream"
    } else {
        "application/json, text/event-stream"
    };
    headers.insert("accept", HeaderValue::from_static(accept));
    if body.is_some() {
        headers.insert("content-type", HeaderValue::from_static("application/json"));
    }
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    for (name, value) in extra {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let client = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .unwrap();
    let mut req = client.request(method, url).headers(headers);
    if let Some(body) = body {
        req = req.body(body);
    }
    req
}

async fn send(
    method: Method,
    url: &str,
    key: &str,
    extra: &[(&str, &str)],
    body: Option<String>,
) -> Reply {
    let resp = request(method, url, key, extra, body).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    Reply {
        status,
        headers,
        text,
    }
}

async fn post(url: &str, key: &str, extra: &[(&str, &str)], body: &Value) -> Reply {
    send(Method::POST, url, key, extra, Some(body.to_string())).await
}

fn initialize(id: i64, version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "mcp-eras-e2e", "version": "1.0.0"}}})
}

/// The 2026-07-28 per-request envelope for `params._meta`.
fn envelope(version: &str) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "mcp-eras-e2e", "version": "1.0.0"}
    })
}

/// A stateless-era request: `params` plus the envelope.
fn modern(id: i64, method: &str, mut params: Value, version: &str) -> Value {
    params["_meta"] = envelope(version);
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// Asserts a JSON-RPC error answer: HTTP `status`, error `code`; returns the error object.
fn assert_rpc_error(reply: &Reply, status: u16, code: i64, what: &str) -> Value {
    assert_eq!(reply.status, status, "{what}: {reply:?}");
    let messages = reply.messages();
    let error = messages
        .iter()
        .find_map(|m| m.get("error"))
        .unwrap_or_else(|| panic!("{what}: no JSON-RPC error in {reply:?}"))
        .clone();
    assert_eq!(error["code"], json!(code), "{what}: {reply:?}");
    error
}

/// The text of every `text` content item of a tools/call result.
fn texts(result: &Value) -> String {
    result["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no content in {result}"))
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Client processes

/// Runs tests/clients/mcp_eras.py (Python SDK): lists tools and calls `tool` in `mode`.
async fn python_client(
    url: &str,
    key: &str,
    mode: &str,
    tool: &str,
    args: Value,
    progress: bool,
) -> Value {
    let python = mcpgw::testing::peer_url("MCPGW_TEST_PYTHON").expect("MCPGW_TEST_PYTHON");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/mcp_eras.py");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(script)
        .args([url, key, mode, tool, &args.to_string()])
        .kill_on_drop(true);
    if progress {
        cmd.arg("--progress");
    }
    let what = format!("python client ({mode}) {tool} at {url}");
    let out = tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: bad output ({e}): {stdout}"))
}

/// Runs the MCP Inspector CLI (`--cli`, Streamable HTTP) with `args`; returns its JSON answer.
async fn inspector(url: &str, key: &str, args: &[&str]) -> Value {
    let modules = mcpgw::testing::peer_url("MCPGW_TEST_NODE_MODULES").expect("node modules");
    let modules = PathBuf::from(modules);
    let cli = modules.join(".bin/mcp-inspector-cli");
    let auth = format!("Authorization: Bearer {key}");
    // It resolves its package from the working folder: run it from node_modules, whose parent
    // holds the package.json.
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(cli)
        .args(["--cli", url, "--transport", "http", "--header", &auth])
        .args(args)
        .current_dir(&modules)
        .kill_on_drop(true);
    let what = format!("inspector-cli {args:?} at {url}");
    let out = tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: output is not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Per upstream: its endpoint name, a tool that adds 2 and 40, and its arguments.
const ADDERS: &[(&str, &str)] = &[("everything", "get-sum"), ("echo", "add")];

// ---------------------------------------------------------------------------------------------
// 1. Python SDK in both connect modes

#[tokio::test(flavor = "multi_thread")]
async fn python_client_in_both_eras_on_both_upstreams() {
    let Some(up) = upstreams() else { return };
    if mcpgw::testing::peer_url("MCPGW_TEST_PYTHON").is_none() {
        return;
    }
    let Setup { gw, alice } = setup(&up).await;

    for &(endpoint, tool) in ADDERS {
        for mode in ["auto", "legacy"] {
            // GIVEN a user's key, WHEN the SDK connects in `mode` and adds 2 and 40
            let out = python_client(
                &gw.mcp_url(endpoint),
                &alice,
                mode,
                tool,
                json!({"a": 2, "b": 40}),
                false,
            )
            .await;
            let what = format!("{mode} on {endpoint}: {out}");
            // THEN the upstream's tools are listed and the sum comes back
            let tools = out["tools"].as_array().unwrap();
            assert!(tools.iter().any(|t| t == tool), "{what}");
            assert_eq!(out["is_error"], false, "{what}");
            assert!(
                out["content"][0].as_str().unwrap_or("").contains("42"),
                "{what}"
            );
            // AND the negotiated era is the one the client asked for, whatever the upstream
            // speaks: the gateway bridges a modern client to session-only server-everything
            let protocol = out["protocol"].as_str().unwrap_or("");
            if mode == "auto" {
                assert_eq!(protocol, MODERN, "{what}");
            } else {
                assert!(SESSION_ERA.contains(&protocol), "{what}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Progress notifications stream through

#[tokio::test(flavor = "multi_thread")]
async fn progress_notifications_stream_before_the_result() {
    let Some(up) = upstreams() else { return };
    if mcpgw::testing::peer_url("MCPGW_TEST_PYTHON").is_none() {
        return;
    }
    let Setup { gw, alice } = setup(&up).await;

    for mode in ["auto", "legacy"] {
        // WHEN a 2-second operation in 4 steps runs with a progress callback
        let out = python_client(
            &gw.mcp_url("everything"),
            &alice,
            mode,
            "trigger-long-running-operation",
            json!({"duration": 2, "steps": 4}),
            true,
        )
        .await;
        let what = format!("{mode}: {out}");
        assert_eq!(out["is_error"], false, "{what}");
        assert!(
            out["content"][0]
                .as_str()
                .unwrap_or("")
                .contains("completed"),
            "{what}"
        );
        if mode == "auto" {
            assert_eq!(out["protocol"], MODERN, "progress over the bridge: {what}");
        }
        // THEN progress notifications arrived, in order, within their total
        let progress = out["progress"].as_array().unwrap();
        assert!(!progress.is_empty(), "no progress: {what}");
        let values: Vec<f64> = progress
            .iter()
            .map(|p| p["progress"].as_f64().unwrap())
            .collect();
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "progress must increase: {what}"
        );
        for p in progress {
            if let Some(total) = p["total"].as_f64() {
                assert!(p["progress"].as_f64().unwrap() <= total, "{what}");
            }
        }
        // AND the first one while the tool was still running (streamed event by event, not
        // buffered until the result): server-everything sends one every 0.5 s
        let first = progress[0]["at"].as_f64().unwrap();
        let result = out["result_at"].as_f64().unwrap();
        assert!(
            result - first >= 0.7,
            "first progress at {first:.2}s, result at {result:.2}s: progress was not streamed: {what}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. MCP Inspector CLI

#[tokio::test(flavor = "multi_thread")]
async fn inspector_cli_lists_and_calls_tools() {
    let Some(up) = upstreams() else { return };
    if mcpgw::testing::peer_url("MCPGW_TEST_NODE_MODULES").is_none() {
        return;
    }
    let Setup { gw, alice } = setup(&up).await;

    for &(endpoint, tool) in ADDERS {
        let url = gw.mcp_url(endpoint);
        // WHEN the inspector lists the tools THEN the upstream's are there
        let listed = inspector(&url, &alice, &["--method", "tools/list"]).await;
        let names: Vec<&str> = listed["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{endpoint}: {listed}"))
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(names.contains(&tool), "{endpoint}: {names:?}");
        // WHEN it calls the adder THEN the sum comes back (tool errors exit 0: read the JSON)
        let called = inspector(
            &url,
            &alice,
            &[
                "--method",
                "tools/call",
                "--tool-name",
                tool,
                "--tool-arg",
                "a=2",
                "--tool-arg",
                "b=40",
            ],
        )
        .await;
        assert_ne!(called["isError"], true, "{endpoint}: {called}");
        assert!(texts(&called).contains("42"), "{endpoint}: {called}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Session era: the gateway's sealed session id

#[tokio::test(flavor = "multi_thread")]
async fn session_ids_are_bound_to_user_and_endpoint() {
    let Some(up) = upstreams() else { return };
    let Setup { gw, alice } = setup(&up).await;
    let bob = user_key(&gw, "bob@example.com").await;
    // The same upstream under a second name: only the gateway can tell the two apart.
    register(&gw, "everything-twin", &up.everything).await;
    register(&gw, "echo-twin", &up.echo).await;
    let version = "2025-11-25";

    for &(endpoint, tool) in ADDERS {
        let url = gw.mcp_url(endpoint);
        let twin = gw.mcp_url(&format!("{endpoint}-twin"));

        // WHEN alice initializes
        let init = post(&url, &alice, &[], &initialize(1, version)).await;
        // THEN the gateway answers as JSON with a session id of its own: an opaque sealed blob
        assert_eq!(init.status, 200, "{endpoint}: {init:?}");
        assert!(
            init.content_type().starts_with("application/json"),
            "{endpoint}: initialize must be answered as JSON: {init:?}"
        );
        let answer = init.answer(1);
        assert_eq!(
            answer["result"]["protocolVersion"], version,
            "{endpoint}: {answer}"
        );
        let sid = init
            .header("mcp-session-id")
            .unwrap_or_else(|| panic!("{endpoint}: no Mcp-Session-Id: {init:?}"))
            .to_owned();
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sid.trim_end_matches('='))
            .unwrap_or_else(|e| panic!("{endpoint}: session id {sid:?} is not base64url: {e}"));
        assert!(
            sealed.len() > 64,
            "{endpoint}: session id {sid:?} is too short to seal user, endpoint and upstream session"
        );

        let call = |id: i64| {
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": tool, "arguments": {"a": 2, "b": 40}}})
        };
        let list = |id: i64| json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});

        // AND with it alice's session works: initialized, tools/list, tools/call
        let alice_sid = [
            ("mcp-session-id", sid.as_str()),
            ("mcp-protocol-version", version),
        ];
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let r = post(&url, &alice, &alice_sid, &note).await;
        assert!(
            (200..300).contains(&r.status),
            "{endpoint} initialized: {r:?}"
        );
        let r = post(&url, &alice, &alice_sid, &list(2)).await;
        assert_eq!(r.status, 200, "{endpoint} tools/list: {r:?}");
        let tools = r.answer(2)["result"]["tools"].clone();
        assert!(
            tools.as_array().unwrap().iter().any(|t| t["name"] == tool),
            "{endpoint}: {tools}"
        );
        let r = post(&url, &alice, &alice_sid, &call(3)).await;
        assert_eq!(r.status, 200, "{endpoint} tools/call: {r:?}");
        assert!(
            texts(&r.answer(3)["result"]).contains("42"),
            "{endpoint}: {r:?}"
        );

        let not_found = |r: &Reply, id: Option<i64>, what: &str| {
            let e = assert_rpc_error(r, 404, -32001, &format!("{endpoint}: {what}"));
            assert!(e["message"].is_string(), "{endpoint}: {what}: {r:?}");
            if let Some(id) = id {
                let m = r.messages();
                assert!(
                    m.iter()
                        .any(|m| m.get("id").is_some_and(|v| *v == json!(id) || v.is_null())),
                    "{endpoint}: {what}: the error must carry the request id or null: {r:?}"
                );
            }
        };

        // WHEN bob presents alice's session id THEN it does not exist for him
        let r = post(&url, &bob, &alice_sid, &list(4)).await;
        not_found(&r, Some(4), "bob with alice's session id");
        let r = send(
            Method::GET,
            &url,
            &bob,
            &[("mcp-session-id", &sid), ("mcp-protocol-version", version)],
            None,
        )
        .await;
        not_found(&r, None, "bob opening alice's GET stream");

        // WHEN the id is tampered with (one character in the middle flipped) THEN 404
        let mut chars: Vec<char> = sid.chars().collect();
        let mid = chars.len() / 2;
        chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        let r = post(
            &url,
            &alice,
            &[
                ("mcp-session-id", tampered.as_str()),
                ("mcp-protocol-version", version),
            ],
            &list(5),
        )
        .await;
        not_found(&r, Some(5), "tampered session id");

        // WHEN alice presents it at another endpoint (even one on the same upstream) THEN 404
        let r = post(&twin, &alice, &alice_sid, &list(6)).await;
        not_found(&r, Some(6), "session id at another endpoint");

        // WHEN a request comes without a session id THEN 400 (-32600)
        let r = post(&url, &alice, &[("mcp-protocol-version", version)], &list(7)).await;
        assert_rpc_error(&r, 400, -32600, &format!("{endpoint}: no session id"));

        // WHEN the MCP-Protocol-Version header names a version the gateway does not serve
        let r = post(
            &url,
            &alice,
            &[
                ("mcp-session-id", sid.as_str()),
                ("mcp-protocol-version", "1999-01-01"),
            ],
            &list(8),
        )
        .await;
        // THEN 400 -32600 listing the supported versions
        let e = assert_rpc_error(&r, 400, -32600, &format!("{endpoint}: unsupported version"));
        let supported = e["data"]["supported"]
            .as_array()
            .unwrap_or_else(|| panic!("{endpoint}: no data.supported: {r:?}"));
        assert!(supported.contains(&json!(version)), "{endpoint}: {r:?}");

        // WHEN bob tries to end alice's session THEN 404, and it still works for alice
        let r = send(
            Method::DELETE,
            &url,
            &bob,
            &[("mcp-session-id", &sid)],
            None,
        )
        .await;
        not_found(&r, None, "bob deleting alice's session");
        let r = post(&url, &alice, &alice_sid, &list(9)).await;
        assert_eq!(
            r.status, 200,
            "{endpoint}: alice's session after bob's DELETE: {r:?}"
        );

        // WHEN alice ends the session THEN it is gone
        let r = send(
            Method::DELETE,
            &url,
            &alice,
            &[("mcp-session-id", &sid), ("mcp-protocol-version", version)],
            None,
        )
        .await;
        assert!(
            r.status == 200 || r.status == 204,
            "{endpoint}: DELETE: {r:?}"
        );
        let r = post(&url, &alice, &alice_sid, &list(10)).await;
        not_found(&r, Some(10), "session id after DELETE");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Stateless era 2026-07-28

#[tokio::test(flavor = "multi_thread")]
async fn stateless_era_discover_and_validation() {
    let Some(up) = upstreams() else { return };
    let Setup { gw, alice } = setup(&up).await;
    let headers =
        |method: &'static str| vec![("mcp-protocol-version", MODERN), ("mcp-method", method)];

    for &(endpoint, tool) in ADDERS {
        let url = gw.mcp_url(endpoint);

        // WHEN a 2026-07-28 client discovers the server (bridged for server-everything)
        let r = post(
            &url,
            &alice,
            &headers("server/discover"),
            &modern(1, "server/discover", json!({}), MODERN),
        )
        .await;
        // THEN it is served, and no session is issued
        assert_eq!(r.status, 200, "{endpoint}: {r:?}");
        let result = r.answer(1)["result"].clone();
        let versions = result["supportedVersions"]
            .as_array()
            .unwrap_or_else(|| panic!("{endpoint}: no supportedVersions: {r:?}"));
        assert!(versions.contains(&json!(MODERN)), "{endpoint}: {r:?}");
        assert!(
            result["capabilities"]["tools"].is_object(),
            "{endpoint}: {r:?}"
        );
        assert!(
            r.header("mcp-session-id").is_none(),
            "{endpoint}: the stateless era has no sessions: {r:?}"
        );

        // WHEN it calls a tool statelessly THEN the answer comes back
        let mut h = headers("tools/call");
        h.push(("mcp-name", tool));
        let call = modern(
            2,
            "tools/call",
            json!({"name": tool, "arguments": {"a": 2, "b": 40}}),
            MODERN,
        );
        let r = post(&url, &alice, &h, &call).await;
        assert_eq!(r.status, 200, "{endpoint}: {r:?}");
        assert!(
            texts(&r.answer(2)["result"]).contains("42"),
            "{endpoint}: {r:?}"
        );
        assert!(r.header("mcp-session-id").is_none(), "{endpoint}: {r:?}");

        // WHEN Mcp-Method disagrees with the body THEN 400 -32020
        let r = post(
            &url,
            &alice,
            &headers("tools/list"),
            &modern(3, "server/discover", json!({}), MODERN),
        )
        .await;
        assert_rpc_error(&r, 400, -32020, &format!("{endpoint}: Mcp-Method mismatch"));

        // WHEN Mcp-Name disagrees with the tool name THEN 400 -32020
        let mut h = headers("tools/call");
        h.push(("mcp-name", "not-the-tool"));
        let r = post(
            &url,
            &alice,
            &h,
            &modern(
                4,
                "tools/call",
                json!({"name": tool, "arguments": {"a": 1, "b": 1}}),
                MODERN,
            ),
        )
        .await;
        assert_rpc_error(&r, 400, -32020, &format!("{endpoint}: Mcp-Name mismatch"));

        // WHEN the envelope names a version nobody serves THEN 400 -32022 with what is served
        let future = "2099-01-01";
        let r = post(
            &url,
            &alice,
            &[
                ("mcp-protocol-version", future),
                ("mcp-method", "server/discover"),
            ],
            &modern(5, "server/discover", json!({}), future),
        )
        .await;
        let e = assert_rpc_error(&r, 400, -32022, &format!("{endpoint}: unsupported version"));
        let supported = e["data"]["supported"]
            .as_array()
            .unwrap_or_else(|| panic!("{endpoint}: no data.supported: {r:?}"));
        assert!(supported.contains(&json!(MODERN)), "{endpoint}: {r:?}");
        assert_eq!(e["data"]["requested"], future, "{endpoint}: {r:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Transport hygiene

#[tokio::test(flavor = "multi_thread")]
async fn transport_hygiene() {
    let Some(up) = upstreams() else { return };
    let Setup { gw, alice } = setup(&up).await;
    let init = initialize(1, "2025-11-25").to_string();
    let port = gw.base.rsplit(':').next().unwrap().to_owned();

    for &(endpoint, _) in ADDERS {
        let url = gw.mcp_url(endpoint);
        let raw = |extra: Vec<(&'static str, String)>, body: String| {
            let url = url.clone();
            let alice = alice.clone();
            async move {
                let extra: Vec<(&str, &str)> =
                    extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
                send(Method::POST, &url, &alice, &extra, Some(body)).await
            }
        };

        // Loopback origins are welcome: the gateway's own, and any other loopback one (the
        // public URL is loopback)
        for origin in [gw.base.clone(), "http://localhost:5173".to_owned()] {
            let r = raw(vec![("origin", origin.clone())], init.clone()).await;
            assert_eq!(r.status, 200, "{endpoint}: Origin {origin}: {r:?}");
        }
        // WHEN the Origin is foreign THEN 403 with a JSON body
        let r = raw(
            vec![("origin", "https://evil.example".into())],
            init.clone(),
        )
        .await;
        assert_eq!(r.status, 403, "{endpoint}: foreign Origin: {r:?}");
        assert!(r.json().is_object(), "{endpoint}: foreign Origin: {r:?}");
        // WHEN the Host is not loopback (DNS rebinding) THEN 403
        let r = raw(vec![("host", format!("evil.example:{port}"))], init.clone()).await;
        assert_eq!(r.status, 403, "{endpoint}: foreign Host: {r:?}");
        assert!(r.json().is_object(), "{endpoint}: foreign Host: {r:?}");

        // WHEN the client does not accept JSON and SSE THEN 406
        let r = raw(vec![("accept", "text/html".into())], init.clone()).await;
        assert_eq!(r.status, 406, "{endpoint}: Accept text/html: {r:?}");
        // WHEN the body is not declared JSON THEN 415
        let r = raw(vec![("content-type", "text/plain".into())], init.clone()).await;
        assert_eq!(r.status, 415, "{endpoint}: Content-Type text/plain: {r:?}");
        // WHEN the body is larger than MCPGW_MAX_BODY_BYTES THEN 413
        let limit = gw.state.config.max_body_bytes;
        let padded = format!("{}{}", init, " ".repeat(limit));
        let r = raw(vec![], padded).await;
        assert_eq!(r.status, 413, "{endpoint}: {} bytes", limit + init.len());

        // WHEN the body is not JSON THEN 400 -32700
        let r = raw(vec![], r#"{"jsonrpc": "2.0", "id": 1, "method": "#.into()).await;
        assert_rpc_error(&r, 400, -32700, &format!("{endpoint}: malformed JSON"));
        // WHEN it is a batch, even of valid messages THEN 400 -32600
        let batch = json!([
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        ]);
        let r = raw(vec![], batch.to_string()).await;
        assert_rpc_error(&r, 400, -32600, &format!("{endpoint}: batch"));
    }
}

// ---------------------------------------------------------------------------------------------
// 7. The caller's key stays at the gateway

#[tokio::test(flavor = "multi_thread")]
async fn caller_key_never_reaches_the_upstream() {
    let Some(up) = upstreams() else { return };
    if mcpgw::testing::peer_url("MCPGW_TEST_PYTHON").is_none() {
        return;
    }
    let Setup { gw, alice } = setup(&up).await;

    for mode in ["auto", "legacy"] {
        // WHEN the echo server reports the headers it received, in either era
        let out = python_client(
            &gw.mcp_url("echo"),
            &alice,
            mode,
            "whoami",
            json!({}),
            false,
        )
        .await;
        let what = format!("{mode}: {out}");
        assert_eq!(out["is_error"], false, "{what}");
        let seen: Value = serde_json::from_str(out["content"][0].as_str().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("whoami answer is not JSON ({e}): {what}"));
        // THEN it really is the upstream's report (it saw the client's era)
        let names = seen["header_names"]
            .as_array()
            .unwrap_or_else(|| panic!("no header names: {what}"));
        assert!(names.contains(&json!("content-type")), "{what}");
        let era = seen["mcp_protocol_version"].as_str().unwrap_or("");
        if mode == "auto" {
            assert_eq!(era, MODERN, "the upstream speaks 2026-07-28: {what}");
        } else {
            assert!(SESSION_ERA.contains(&era), "{what}");
        }
        // AND no Authorization header arrived (the server is registered with auth `none`),
        // and the caller's key appears nowhere in what the upstream saw
        assert_eq!(seen["authorization"], Value::Null, "{what}");
        assert!(!names.contains(&json!("authorization")), "{what}");
        assert!(
            !seen.to_string().contains(&alice),
            "the key reached the upstream: {what}"
        );
        let secret_part = alice.trim_start_matches("mcpgw_");
        assert!(!seen.to_string().contains(secret_part), "{what}");
    }
}
