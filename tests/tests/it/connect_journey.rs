//! The connect journey as clients see it (issue 24, item 4): a server that needs each
//! user's own account (`oauth2`, the JWT-protected Python server behind the real
//! oidc-provider; `per_user_token`, the Python echo server).
//!
//! - Before connecting, `tools/list` shows the server's tools, each marked as needing a
//!   connection and filtered by the caller's access (a denied tool stays invisible): from the
//!   snapshot of the list a connected user got (read by another gateway process from the
//!   store), or from the upstream's own unauthenticated list where it answers one.
//! - A session-era client holding a GET stream on one gateway process gets
//!   `notifications/tools/list_changed` and `notifications/elicitation/complete` (the id its
//!   `-32042` carried) when the user connects through ANOTHER process on the same store
//!   (SQLite file, DynamoDB on moto); its next list is the upstream's real one.
//! - A 2026-07-28 client's `subscriptions/listen` is acknowledged, then told
//!   `notifications/tools/list_changed`; its list before connecting is short-lived and
//!   private, the next one is the real list. Malformed listen params: a JSON-RPC error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::mcp::{McpClient, SESSION, STATELESS, sse_messages};
use e2e::oauth_peers::{Peers, browse};
use e2e::{StoreKind, TestGateway, call_json};
use reqwest::Method;
use serde_json::{Value, json};

const NOTE: &str = "Needs your own account at 'notes'";

struct Fixture {
    _peers: Peers,
    gw: TestGateway,
    /// A second gateway process on the same store and keyring.
    other: TestGateway,
}

/// Both gateways, `notes` registered (oauth2 at the protected server) and open to everyone
/// but for `distrust_my_token`, which no one may see.
async fn fixture(store: StoreKind) -> Result<Option<Fixture>> {
    let Some(peers) = e2e::oauth_peers::start("600", &[]).await? else {
        return Ok(None);
    };
    let gw = TestGateway::start(store, &[]).await?;
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            // The admin says the list is the same for every account: the snapshot source.
            Some(
                json!({"name": "notes", "url": peers.upstream, "share_tool_list": true,
                "auth": {"type": "oauth2", "scopes": ["mcp:read"]}}),
            ),
        )
        .await?;
    ensure!(s == 201, "registering notes: {s} {body}");
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/server-groups",
            Some(json!({"name": "everyone", "servers": ["notes"],
                "members": {"everyone": true},
                "tool_rules": {"notes": {"deny": ["distrust_*"]}}})),
        )
        .await?;
    ensure!(s == 201, "group: {s} {body}");
    let other = gw.beside().await?;
    Ok(Some(Fixture {
        _peers: peers,
        gw,
        other,
    }))
}

fn names(tools: &[Value]) -> Vec<&str> {
    tools.iter().filter_map(|t| t["name"].as_str()).collect()
}

/// Connects `user` (key `key`) to `notes` through `gw`'s browser flow.
async fn connect(gw: &TestGateway, key: &str, login: &str) -> Result<()> {
    let seen = browse(&format!("{}/oauth/connect/notes", gw.base), key, login).await?;
    ensure!(seen["status"] == 200, "connecting {login}: {seen}");
    Ok(())
}

/// A held event stream read in the background: everything received so far.
struct Held {
    text: Arc<Mutex<String>>,
    status: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Held {
    async fn open(req: reqwest::RequestBuilder) -> Result<Self> {
        let mut resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(chunk)) = resp.chunk().await {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk));
            }
            sink.lock().unwrap().push_str("\n<closed>");
        });
        Ok(Self { text, status, task })
    }

    fn messages(&self) -> Vec<Value> {
        sse_messages(&self.text.lock().unwrap())
    }

    fn closed(&self) -> bool {
        self.text.lock().unwrap().ends_with("<closed>")
    }

    /// Waits (at most `secs`) until the stream has closed; its messages.
    async fn until_closed(&self, secs: u64) -> Result<Vec<Value>> {
        for _ in 0..secs * 10 {
            if self.closed() {
                return Ok(self.messages());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the stream did not end: {}", self.text.lock().unwrap())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A session-era client's GET stream request.
fn get_stream(url: &str, key: &str, session: &str) -> reqwest::RequestBuilder {
    http()
        .get(url)
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", SESSION)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// GIVEN nobody connected, alice sees no tools (the protected upstream lists nothing to
/// strangers); WHEN bob connects and lists THEN alice, on another gateway process, sees the
/// tools he got, marked, without the denied one; her call still gets the link.
async fn unconnected_list_comes_from_the_snapshot(store: StoreKind) -> Result<()> {
    let Some(fx) = fixture(store).await? else {
        return Ok(());
    };
    let alice = fx.gw.user_key("alice@example.com").await?;
    let bob = fx.gw.user_key("bob@example.com").await?;
    let mut a = McpClient::connect(&fx.other.mcp_url("notes"), &alice, SESSION).await?;
    assert_eq!(a.tools().await?, Vec::<Value>::new(), "nothing to show yet");

    connect(&fx.gw, &bob, "bob").await?;
    let mut b = McpClient::connect(&fx.gw.mcp_url("notes"), &bob, SESSION).await?;
    let real = b.tools().await?;
    assert_eq!(names(&real), ["whoami"], "bob's own list is filtered too");
    ensure!(
        !real[0]["description"]
            .as_str()
            .unwrap_or_default()
            .contains(NOTE)
    );

    // The snapshot is written off the request's path; another process reads it (through
    // its cache, empty for this server until now: its earlier read found none and is kept
    // for the cache period, so a fresh process is asked).
    let third = fx.gw.beside().await?;
    let mut shown = Vec::new();
    for _ in 0..50 {
        let mut a = McpClient::connect(&third.mcp_url("notes"), &alice, SESSION).await?;
        shown = a.tools().await?;
        if !shown.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(names(&shown), ["whoami"], "{shown:?}");
    let description = shown[0]["description"].as_str().unwrap_or_default();
    ensure!(description.starts_with(NOTE), "{description}");
    ensure!(
        description.contains("subject"),
        "the upstream's own words follow: {description}"
    );
    assert_eq!(shown[0]["inputSchema"], real[0]["inputSchema"]);
    // Session-era lists carry none of the 2026-07-28 caching fields.
    let raw = a.request("tools/list", json!({})).await?;
    let r = raw.result()?;
    ensure!(
        r.get("ttlMs").is_none() && r.get("cacheScope").is_none(),
        "{r}"
    );

    // A 2026-07-28 client's list is private and short-lived while unconnected.
    let mut m = McpClient::connect(&third.mcp_url("notes"), &alice, STATELESS).await?;
    let listed = m.request("tools/list", json!({})).await?;
    let r = listed.result()?;
    assert_eq!(names(r["tools"].as_array().context("tools")?), ["whoami"]);
    assert_eq!(
        (r["ttlMs"].as_u64(), r["cacheScope"].as_str()),
        (Some(5000), Some("private")),
        "{r}"
    );

    // The first call of a listed tool answers with the link.
    let mut a = McpClient::connect(&third.mcp_url("notes"), &alice, SESSION).await?;
    let called = a.call_tool("whoami", json!({})).await?;
    let text = called.result()?["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        text.contains("/oauth/connect/notes?link="),
        "{}",
        called.raw
    );
    // A hidden tool and one that does not exist get that same answer (no oracle).
    let shape = |r: &e2e::mcp::Answer| {
        let mut v = r.message.clone();
        v["result"]["content"][0]["text"] = json!("link");
        v["id"] = json!(0);
        v
    };
    let hidden = a.call_tool("distrust_my_token", json!({})).await?;
    let unknown = a.call_tool("no_such_tool", json!({})).await?;
    assert_eq!(shape(&hidden), shape(&called), "{}", hidden.raw);
    assert_eq!(shape(&unknown), shape(&called), "{}", unknown.raw);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn unconnected_list_comes_from_the_snapshot_on_sqlite() -> Result<()> {
    unconnected_list_comes_from_the_snapshot(StoreKind::Sqlite).await
}

#[tokio::test(flavor = "multi_thread")]
async fn unconnected_list_comes_from_the_snapshot_on_dynamodb() -> Result<()> {
    let Some(endpoint) = mcpgw::testing::peer_url("MCPGW_TEST_AWS_ENDPOINT") else {
        return Ok(());
    };
    unconnected_list_comes_from_the_snapshot(StoreKind::Dynamo(endpoint)).await
}

/// A held GET stream on one process hears of a connection made through another.
async fn held_stream_hears_of_the_connection(store: StoreKind) -> Result<()> {
    let Some(fx) = fixture(store).await? else {
        return Ok(());
    };
    let alice = fx.gw.user_key("alice@example.com").await?;
    // GIVEN alice's session-era client, declaring URL elicitation, on the second process
    let url = fx.other.mcp_url("notes");
    let mut a =
        McpClient::connect_with(&url, &alice, SESSION, json!({"elicitation": {"url": {}}})).await?;
    let called = a.call_tool("whoami", json!({})).await?;
    let error = called.error().context("a URL elicitation")?;
    assert_eq!(error["code"], -32042, "{}", called.raw);
    let elicitation = error["data"]["elicitations"][0]["elicitationId"]
        .as_str()
        .context("an elicitationId")?
        .to_owned();
    // AND its GET stream held there
    let sid = a.session().context("a session")?.to_owned();
    let held = Held::open(get_stream(&url, &alice, &sid)).await?;
    assert_eq!(held.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        held.messages().is_empty() && !held.closed(),
        "nothing before connecting"
    );

    // WHEN she connects through the FIRST process
    connect(&fx.gw, &alice, "alice").await?;

    // THEN the stream on the second says so (its poll of the store) and ends
    let told = held.until_closed(15).await?;
    assert_eq!(
        told,
        [
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
            json!({"jsonrpc": "2.0", "method": "notifications/elicitation/complete",
                "params": {"elicitationId": elicitation}}),
        ]
    );
    // AND the session's next list is the upstream's real one (the session settles)
    let tools = a.tools().await?;
    assert_eq!(names(&tools), ["whoami"]);
    ensure!(
        !tools[0]["description"]
            .as_str()
            .unwrap_or_default()
            .contains(NOTE)
    );
    let who = a.call_tool("whoami", json!({})).await?;
    ensure!(who.raw.contains("alice"), "{}", who.raw);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn held_stream_hears_of_a_connection_through_another_process_on_sqlite() -> Result<()> {
    held_stream_hears_of_the_connection(StoreKind::Sqlite).await
}

#[tokio::test(flavor = "multi_thread")]
async fn held_stream_hears_of_a_connection_through_another_process_on_dynamodb() -> Result<()> {
    let Some(endpoint) = mcpgw::testing::peer_url("MCPGW_TEST_AWS_ENDPOINT") else {
        return Ok(());
    };
    held_stream_hears_of_the_connection(StoreKind::Dynamo(endpoint)).await
}

/// The listen request of a 2026-07-28 client, as the raw client sends it.
fn listen_request(url: &str, key: &str, id: i64, notifications: Value) -> reqwest::RequestBuilder {
    http()
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", STATELESS)
        .header("mcp-method", "subscriptions/listen")
        .body(
            json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen", "params": {
                "notifications": notifications,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": STATELESS,
                    "io.modelcontextprotocol/clientCapabilities": {},
                    "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"}}}})
            .to_string(),
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listening_stateless_client_hears_of_the_connection() -> Result<()> {
    let Some(fx) = fixture(StoreKind::Sqlite).await? else {
        return Ok(());
    };
    let carol = fx.gw.user_key("carol@example.com").await?;
    let url = fx.other.mcp_url("notes");
    // Malformed params: a JSON-RPC error, no stream.
    for bad in [
        json!("all"),
        json!({"toolsListChanged": "yes"}),
        json!({"resourceSubscriptions": [1]}),
    ] {
        let resp = listen_request(&url, &carol, 9, bad.clone()).send().await?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await?;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!(-32602)),
            "{bad}: {body}"
        );
        assert_eq!(body["id"], 9);
    }
    // GIVEN carol listens on the second process
    let held = Held::open(listen_request(
        &url,
        &carol,
        7,
        json!({"toolsListChanged": true, "promptsListChanged": true}),
    ))
    .await?;
    assert_eq!(held.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let meta = json!({"io.modelcontextprotocol/subscriptionId": 7});
    assert_eq!(
        held.messages(),
        [
            json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": {"toolsListChanged": true}, "_meta": meta}})
        ],
        "acknowledged first, only what is honored"
    );
    // WHEN she connects through the first
    connect(&fx.gw, &carol, "carol").await?;
    // THEN the stream says the tools changed, and ends with the listen's result
    let told = held.until_closed(15).await?;
    assert_eq!(told.len(), 3, "{told:?}");
    assert_eq!(
        told[1],
        json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {"_meta": meta}})
    );
    assert_eq!(told[2]["id"], 7);
    assert_eq!(told[2]["result"]["_meta"], meta);
    // AND her next list is the real one, with the ordinary caching
    let mut c = McpClient::connect(&url, &carol, STATELESS).await?;
    let listed = c.request("tools/list", json!({})).await?;
    let r = listed.result()?;
    let tools = r["tools"].as_array().context("tools")?;
    assert_eq!(names(tools), ["whoami"], "{r}");
    ensure!(
        !tools[0]["description"]
            .as_str()
            .unwrap_or_default()
            .contains(NOTE),
        "{r}"
    );
    assert_eq!(r["cacheScope"], "private");
    Ok(())
}

/// An upstream that lists its tools to anyone (the echo server, registered as needing
/// each user's token): a user who stored none sees them, marked; storing one wakes a
/// held stream in this process at once.
#[tokio::test(flavor = "multi_thread")]
async fn unconnected_list_comes_from_the_upstreams_own_list() -> Result<()> {
    mcpgw::crypto::install_tls_provider();
    let Some(echo) = mcpgw::testing::peer_url("MCPGW_TEST_ECHO_URL") else {
        return Ok(());
    };
    let gw = TestGateway::start(StoreKind::Sqlite, &[]).await?;
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "tracker", "url": echo,
                "auth": {"type": "per_user_token", "header": "Authorization", "format": "token {token}"}})),
        )
        .await?;
    ensure!(s == 201, "{s} {body}");
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/server-groups",
            Some(
                json!({"name": "g", "servers": ["tracker"], "members": {"everyone": true},
                "tool_rules": {"tracker": {"deny": ["whoami"]}}}),
            ),
        )
        .await?;
    ensure!(s == 201, "{s} {body}");
    let dave = gw.user_key("dave@example.com").await?;
    let url = gw.mcp_url("tracker");
    let mut d = McpClient::connect(&url, &dave, SESSION).await?;
    let shown = d.tools().await?;
    let mut listed = names(&shown);
    listed.sort();
    assert_eq!(
        listed,
        ["add", "echo"],
        "the denied tool stays invisible: {shown:?}"
    );
    for t in &shown {
        let text = t["description"].as_str().unwrap_or_default();
        ensure!(
            text.starts_with("Needs your own account at 'tracker'"),
            "{text}"
        );
    }
    // A held stream in this process wakes at once when the token is stored here.
    let held = Held::open(get_stream(&url, &dave, d.session().context("session")?)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let (s, _) = call_json(
        Method::PUT,
        &format!("{}/me/credentials/tracker", gw.base),
        Some(&dave),
        Some(json!({"token": "dave-1"})),
    )
    .await?;
    assert_eq!(s, 204);
    let told = held.until_closed(10).await?;
    assert_eq!(
        told,
        [json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})],
        "no elicitation was sent to this client"
    );
    ensure!(
        started.elapsed() < Duration::from_millis(700),
        "woken in process, not by the poll: {:?}",
        started.elapsed()
    );
    let mut real = names(&d.tools().await?)
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    real.sort();
    assert_eq!(real, ["add", "echo"]);
    Ok(())
}

/// The journey through the official Python SDK (`tests/clients/connect_journey.py`) in
/// `mode`, on the second process while the user connects through the first: the lines it
/// printed, by step.
async fn python_journey(fx: &Fixture, key: &str, login: &str, mode: &str) -> Result<Vec<Value>> {
    use tokio::io::AsyncBufReadExt;
    let python = mcpgw::testing::peer_url("MCPGW_TEST_PYTHON").context("python")?;
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/connect_journey.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .args([&fx.other.mcp_url("notes"), key, "whoami"])
        .env("MCP_MODE", mode)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut seen = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await? {
            let v: Value = serde_json::from_str(&line).with_context(|| line.clone())?;
            if v["step"] == "ready" {
                connect(&fx.gw, key, login).await?;
            }
            let last = v["step"] == "relisted";
            seen.push(v);
            if last {
                break;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(90), read)
        .await
        .context("the Python client took too long")??;
    let out = child.wait_with_output().await?;
    ensure!(
        out.status.success(),
        "{mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(seen)
}

fn step<'a>(seen: &'a [Value], name: &str) -> Result<&'a Value> {
    seen.iter()
        .find(|v| v["step"] == name)
        .with_context(|| format!("no {name} in {seen:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_sees_the_journey_in_legacy_and_default_modes() -> Result<()> {
    let Some(fx) = fixture(StoreKind::Sqlite).await? else {
        return Ok(());
    };
    // Someone connected before, so the list is there to show.
    let bob = fx.gw.user_key("bob@example.com").await?;
    connect(&fx.gw, &bob, "bob").await?;
    McpClient::connect(&fx.gw.mcp_url("notes"), &bob, SESSION)
        .await?
        .tools()
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (mode, login) in [("legacy", "alice"), ("auto", "carol")] {
        let key = fx.gw.user_key(&format!("{login}@example.com")).await?;
        let seen = python_journey(&fx, &key, login, mode).await?;
        let listed = &step(&seen, "listed")?["tools"];
        assert_eq!(listed[0]["name"], "whoami", "{mode}: {seen:?}");
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{mode}: {seen:?}");
        ensure!(
            listed[0]["description"]
                .as_str()
                .unwrap_or_default()
                .starts_with(NOTE),
            "{mode}: {seen:?}"
        );
        let notes = &step(&seen, "notified")?["notes"];
        let methods: Vec<&str> = notes
            .as_array()
            .context("notes")?
            .iter()
            .filter_map(|n| n["method"].as_str())
            .collect();
        if mode == "legacy" {
            assert_eq!(step(&seen, "called")?["code"], -32042, "{seen:?}");
            let id = &step(&seen, "called")?["elicitation_id"];
            ensure!(
                methods.contains(&"notifications/tools/list_changed"),
                "{seen:?}"
            );
            let complete = notes
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["method"] == "notifications/elicitation/complete")
                .with_context(|| format!("no elicitation/complete: {seen:?}"))?;
            assert_eq!(&complete["params"]["elicitationId"], id, "{seen:?}");
        } else {
            assert_eq!(step(&seen, "listed")?["protocol"], STATELESS, "{seen:?}");
            assert_eq!(methods, ["ToolsListChanged"], "{seen:?}");
        }
        let relisted = &step(&seen, "relisted")?["tools"];
        assert_eq!(relisted[0]["name"], "whoami", "{mode}: {seen:?}");
        ensure!(
            !relisted[0]["description"]
                .as_str()
                .unwrap_or_default()
                .contains(NOTE),
            "{mode}: the real list after connecting: {seen:?}"
        );
    }
    Ok(())
}

/// An `oauth2` server whose admin allowed it: with no snapshot and no unauthenticated list,
/// a caller not connected yet is shown what the upstream lists to the gateway's own client
/// (a machine token from the client credentials grant), marked and filtered; calls still
/// need the caller's own grant. The setting needs a configured client and secret.
#[tokio::test(flavor = "multi_thread")]
async fn unconnected_list_comes_from_the_client_credentials_path_where_allowed() -> Result<()> {
    let Some(peers) = e2e::oauth_peers::start("600", &[]).await? else {
        return Ok(());
    };
    let (s, reg) = call_json(
        Method::POST,
        &format!("{}/reg", peers.issuer),
        None,
        Some(json!({
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types": ["code"],
            "redirect_uris": ["http://127.0.0.1:9/oauth/callback/crm"],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": "mcp:read"})),
    )
    .await?;
    ensure!(s == 201, "client registration: {s} {reg}");
    let client_id = reg["client_id"].as_str().context("client_id")?;
    let secret = reg["client_secret"].as_str().context("client_secret")?;
    let gw = TestGateway::start(StoreKind::Sqlite, &[("MCPGW_SECRET_CRM", secret)]).await?;
    // The setting without a secret is refused.
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "crm", "url": peers.upstream,
                "auth": {"type": "oauth2", "client_id": client_id,
                         "list_tools_with_client_credentials": true}})),
        )
        .await?;
    assert_eq!(
        (s, &body["error"]["code"]),
        (422, &json!("invalid_field")),
        "{body}"
    );
    for (name, allowed) in [("crm", true), ("crm-plain", false)] {
        let (s, body) = gw
            .admin(
                Method::POST,
                "/admin/servers",
                Some(json!({"name": name, "url": peers.upstream,
                    "auth": {"type": "oauth2", "client_id": client_id,
                             "client_secret": "secret://crm", "scopes": ["mcp:read"],
                             "list_tools_with_client_credentials": allowed}})),
            )
            .await?;
        ensure!(s == 201, "{name}: {s} {body}");
    }
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/server-groups",
            Some(
                json!({"name": "g", "servers": ["crm", "crm-plain"], "members": {"everyone": true},
                "tool_rules": {"crm": {"deny": ["distrust_*"]}}}),
            ),
        )
        .await?;
    ensure!(s == 201, "{s} {body}");
    let alice = gw.user_key("alice@example.com").await?;
    let mut a = McpClient::connect(&gw.mcp_url("crm"), &alice, SESSION).await?;
    let shown = a.tools().await?;
    assert_eq!(names(&shown), ["whoami"], "{shown:?}");
    let text = shown[0]["description"].as_str().unwrap_or_default();
    ensure!(
        text.starts_with("Needs your own account at 'crm'"),
        "{text}"
    );
    // Calls still take her own grant.
    let called = a.call_tool("whoami", json!({})).await?;
    ensure!(
        called.raw.contains("/oauth/connect/crm?link="),
        "{}",
        called.raw
    );
    // Without the setting, nothing is listed with the gateway's client.
    let mut p = McpClient::connect(&gw.mcp_url("crm-plain"), &alice, SESSION).await?;
    assert_eq!(p.tools().await?, Vec::<Value>::new());
    Ok(())
}
