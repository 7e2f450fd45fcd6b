//! The audit trail end to end (issue 25, "what must be shown"), on SQLite and on DynamoDB
//! (moto): a user's calls through a direct server and a virtual server, a denied hidden tool,
//! a failed login, a connect through the real oidc-provider flow and a disconnect each
//! produce the right record, as the JSON lines the gateway process writes on stdout; and no
//! credential the run used (API keys, the OAuth tokens, the registered client's secret)
//! appears anywhere in the process's output, stdout or stderr.
//!
//! The gateway runs in a child process: this test binary again, running only
//! [`scenario_child`] with `MCPGW_AUDIT_SCENARIO` set, whose whole stdout and stderr are
//! captured here. The child writes the credentials it used to a file (never to its output),
//! so the parent knows what to look for.
//!
//! The store half (the same records found through `GET /admin/audit` and the console's
//! "Activity" page) needs the audit store; `MCPGW_AUDIT_SKIP_STORE=1` leaves it out.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use e2e::http_browser::Browser;
use e2e::mcp::{McpClient, SESSION, STATELESS};
use e2e::oauth_peers::browse;
use e2e::{StoreKind, TestGateway, call_json};
use mcpgw::audit::AuditRecord;
use reqwest::Method;
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";

/// Runs the scenario in a child process on `store` (`sqlite` or `dynamo`) and checks what it
/// wrote.
async fn audit_trail(store: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let secrets_file = dir.path().join("secrets.json");
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe)
        .args(["audit::scenario_child", "--exact", "--nocapture"])
        .env("MCPGW_AUDIT_SCENARIO", store)
        .env("MCPGW_AUDIT_SECRETS_FILE", &secrets_file)
        .env("RUST_LOG", "debug")
        .kill_on_drop(true)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "the scenario failed:\n{stdout}\n{stderr}"
    );
    if !secrets_file.exists() {
        // The peers are not set up (the child skipped).
        ensure!(
            std::env::var("MCPGW_REQUIRE_PEERS").is_err(),
            "the scenario did not run:\n{stdout}\n{stderr}"
        );
        return Ok(());
    }
    let records = records_in(&stdout)?;
    check_records(&records)?;
    check_no_secret(&secrets_file, &format!("{stdout}\n{stderr}"))
}

/// The audit records among the process's stdout lines (`{"audit": {...}}`).
fn records_in(stdout: &str) -> Result<Vec<AuditRecord>> {
    let mut out = Vec::new();
    for line in stdout.lines() {
        // Test harness text may share a line's start; a record line is the JSON object.
        let Some(start) = line.find("{\"audit\":") else {
            continue;
        };
        let v: Value = serde_json::from_str(&line[start..])
            .with_context(|| format!("a record line that is not JSON: {line}"))?;
        out.push(serde_json::from_value(v["audit"].clone())?);
    }
    Ok(out)
}

fn find<'a>(
    records: &'a [AuditRecord],
    what: &str,
    pred: impl Fn(&AuditRecord) -> bool,
) -> Result<&'a AuditRecord> {
    let found: Vec<_> = records.iter().filter(|r| pred(r)).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => bail!("no record of {what} among {records:#?}"),
        many => bail!("{} records of {what}: {many:#?}", many.len()),
    }
}

/// A record's field as JSON (the form the trail writes).
macro_rules! json_of {
    ($e:expr) => {
        serde_json::to_value(&$e).unwrap_or(Value::Null)
    };
}

fn check_records(records: &[AuditRecord]) -> Result<()> {
    let by = |r: &AuditRecord| r.principal.as_ref().map(|p| p.user.clone());
    let event = |r: &AuditRecord| json_of!(r.event);
    let decision = |r: &AuditRecord| json_of!(r.decision);
    let outcome = |r: &AuditRecord| r.outcome.as_ref().map(|o| o.status.clone());
    let grant = json!({"kind": "oauth2", "grant": "alice@example.com/notes"});

    // A direct call, with the user's own OAuth grant.
    let direct = find(records, "the direct call", |r| {
        event(r) == "tool_call"
            && r.endpoint.as_deref() == Some("notes")
            && r.tool.as_deref() == Some("whoami")
    })?;
    ensure!(
        by(direct).as_deref() == Some(ALICE) && decision(direct) == "allow",
        "{direct:?}"
    );
    ensure!(
        direct.principal.as_ref().unwrap().auth == "api_key",
        "{direct:?}"
    );
    ensure!(
        direct.upstream_server.as_deref() == Some("notes"),
        "{direct:?}"
    );
    ensure!(json_of!(direct.credential) == grant, "{direct:?}");
    ensure!(outcome(direct).as_deref() == Some("ok"), "{direct:?}");
    ensure!(
        direct.request_id.is_some() && direct.args_hmac.is_some(),
        "{direct:?}"
    );
    ensure!(
        direct.latency_ms >= direct.upstream_ms && direct.upstream_ms.is_some(),
        "{direct:?}"
    );

    // Through the virtual server: its alias, the member and the member's own tool name.
    let virt = find(records, "the virtual call", |r| {
        event(r) == "tool_call" && r.endpoint.as_deref() == Some("combo")
    })?;
    ensure!(virt.tool.as_deref() == Some("who"), "{virt:?}");
    ensure!(virt.upstream_server.as_deref() == Some("notes"), "{virt:?}");
    ensure!(virt.upstream_tool.as_deref() == Some("whoami"), "{virt:?}");
    ensure!(json_of!(virt.credential) == grant, "{virt:?}");
    ensure!(outcome(virt).as_deref() == Some("ok"), "{virt:?}");

    // The hidden tool: denied, its rule named.
    let hidden = find(records, "the hidden tool", |r| {
        r.tool.as_deref() == Some("distrust_my_token")
    })?;
    ensure!(
        decision(hidden) == "deny" && hidden.rule.as_deref() == Some("hidden_tool"),
        "{hidden:?}"
    );

    // The failed login: its reason and the kind of credential, nothing of it.
    let failed = find(records, "the failed login", |r| event(r) == "auth_failed")?;
    ensure!(failed.endpoint.as_deref() == Some("notes"), "{failed:?}");
    ensure!(
        failed.detail
            == Some(json!({"reason": "invalid_credential", "credential": "api_key", "count": 1})),
        "{failed:?}"
    );

    // Connect (the provider's callback) and disconnect, naming the grant.
    let connect = find(records, "the connect", |r| event(r) == "connect")?;
    ensure!(
        by(connect).as_deref() == Some(ALICE) && json_of!(connect.credential) == grant,
        "{connect:?}"
    );
    let gone = find(records, "the disconnect", |r| event(r) == "disconnect")?;
    ensure!(
        by(gone).as_deref() == Some(ALICE) && json_of!(gone.credential) == grant,
        "{gone:?}"
    );
    ensure!(
        gone.principal.as_ref().unwrap().auth == "api_key",
        "{gone:?}"
    );

    // The admin's set-up: one change record per document, before/after hashes.
    let created = find(records, "the server's creation", |r| {
        event(r) == "admin_change"
            && r.detail
                .as_ref()
                .is_some_and(|d| d["kind"] == "server" && d["name"] == "notes")
    })?;
    let d = created.detail.as_ref().unwrap();
    ensure!(
        d["action"] == "create" && d["before"].is_null() && d["after"].is_string(),
        "{d}"
    );
    Ok(())
}

/// Fails if any credential the run used appears in `output`.
fn check_no_secret(secrets_file: &Path, output: &str) -> Result<()> {
    let secrets: Vec<String> = serde_json::from_slice(&std::fs::read(secrets_file)?)?;
    ensure!(
        secrets.len() >= 5,
        "the child names what it used: {secrets:?}"
    );
    for s in &secrets {
        ensure!(s.len() >= 8, "too short to look for: {s}");
        if let Some(at) = output.find(s.as_str()) {
            let from = at.saturating_sub(200);
            bail!(
                "a credential appears in the gateway's output: ...{}...",
                &output[from..at]
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decision_is_a_record_and_no_credential_is_written_on_sqlite() -> Result<()> {
    audit_trail("sqlite").await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decision_is_a_record_and_no_credential_is_written_on_dynamodb() -> Result<()> {
    if mcpgw::testing::peer_url("MCPGW_TEST_AWS_ENDPOINT").is_none() {
        return Ok(());
    }
    audit_trail("dynamo").await
}

/// The scenario, run only as the child of [`audit_trail`].
#[tokio::test(flavor = "multi_thread")]
async fn scenario_child() -> Result<()> {
    let (Ok(store), Ok(secrets_file)) = (
        std::env::var("MCPGW_AUDIT_SCENARIO"),
        std::env::var("MCPGW_AUDIT_SECRETS_FILE"),
    ) else {
        return Ok(());
    };
    // The gateway's own logs, as a deployment writes them.
    mcpgw::telemetry::init(false);
    let store = match store.as_str() {
        "dynamo" => {
            StoreKind::Dynamo(mcpgw::testing::peer_url("MCPGW_TEST_AWS_ENDPOINT").context("moto")?)
        }
        _ => StoreKind::Sqlite,
    };
    let Some(peers) = e2e::oauth_peers::start("600", &[]).await? else {
        return Ok(());
    };
    let gw = TestGateway::start(store, &[]).await?;
    let admin = |method: Method, path: &'static str, body: Value| {
        let gw = &gw;
        async move {
            let (s, b) = gw.admin(method, path, Some(body)).await?;
            ensure!((200..300).contains(&s), "{path}: {s} {b}");
            Ok(())
        }
    };
    admin(
        Method::POST,
        "/admin/servers",
        json!({"name": "notes", "url": peers.upstream,
            "auth": {"type": "oauth2", "scopes": ["mcp:read"]}}),
    )
    .await?;
    admin(
        Method::POST,
        "/admin/server-groups",
        json!({"name": "everyone", "servers": ["notes"], "members": {"everyone": true},
            "tool_rules": {"notes": {"deny": ["distrust_*"]}}}),
    )
    .await?;
    admin(
        Method::POST,
        "/admin/virtual-servers",
        json!({"name": "combo", "members": {"everyone": true},
            "tools": [{"server": "notes", "tool": "whoami", "alias": "who"}]}),
    )
    .await?;
    let alice = gw.user_key(ALICE).await?;

    // Connect through the provider's real login.
    let seen = browse(&format!("{}/oauth/connect/notes", gw.base), &alice, "alice").await?;
    ensure!(seen["status"] == 200, "connecting: {seen}");

    // A direct call, a virtual one, a hidden tool.
    let mut c = McpClient::connect(&gw.mcp_url("notes"), &alice, SESSION).await?;
    c.call_tool("whoami", json!({})).await?.result()?;
    let hidden = c
        .call_tool("distrust_my_token", json!({"token": "x"}))
        .await?;
    ensure!(
        hidden.result().is_err() || hidden.message["result"]["isError"] == true,
        "{hidden:?}"
    );
    let mut v = McpClient::connect(&gw.mcp_url("combo"), &alice, STATELESS).await?;
    v.call_tool("who", json!({})).await?.result()?;

    // A failed login.
    let forged = format!("mcpgw_{}", mcpgw::crypto::random_token(32));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": SESSION, "capabilities": {},
            "clientInfo": {"name": "x", "version": "1"}}});
    let (s, _) = call_json(
        Method::POST,
        &gw.mcp_url("notes"),
        Some(&forged),
        Some(init),
    )
    .await?;
    ensure!(s == 401, "forged key: {s}");

    // What the run used, to look for in the output: the grant's tokens and the client's
    // secret, read from the store before the disconnect deletes them.
    let grant = gw
        .state
        .store
        .get_grant(ALICE, "notes")
        .await?
        .context("alice's grant")?;
    let ring = gw.state.keyring.get().await?;
    let tokens = mcpgw::grants::TokenSet::open(&ring, &grant.sealed_tokens, ALICE, "notes")?;
    let server = gw.state.server("notes").await?.context("notes")?;
    let endpoints = mcpgw::grants::endpoints::for_server(&gw.state.grants, &server).await?;
    let client =
        mcpgw::grants::registration::credentials(&gw.state.grants, &server, &endpoints).await?;
    let mut secrets = vec![
        gw.admin_key.clone(),
        alice.clone(),
        forged,
        tokens.access_token,
    ];
    secrets.extend(tokens.refresh_token);
    secrets.extend(client.client_secret);

    // Disconnect.
    let url = format!("{}/me/connections/notes", gw.base);
    let (s, b) = call_json(Method::DELETE, &url, Some(&alice), None).await?;
    ensure!(s == 200, "disconnect: {s} {b}");

    if std::env::var("MCPGW_AUDIT_SKIP_STORE").is_err() {
        store_half(&gw).await?;
    }
    std::fs::write(secrets_file, serde_json::to_vec(&secrets)?)?;
    Ok(())
}

/// The same records found through the admin query and the console's Activity page.
/// NEEDS the audit store (`GET /admin/audit`, the console page): the audit-store branch.
async fn store_half(gw: &TestGateway) -> Result<()> {
    // The store write is batched (in the background locally): poll briefly.
    let mut records = Vec::new();
    for _ in 0..50 {
        let (s, body) = gw
            .admin(Method::GET, "/admin/audit?user=alice%40example.com", None)
            .await?;
        ensure!(s == 200, "GET /admin/audit: {s} {body}");
        records = body["records"].as_array().cloned().unwrap_or_default();
        let events: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
        if ["tool_call", "connect", "disconnect"]
            .iter()
            .all(|e| events.contains(e))
            && events.iter().filter(|e| **e == "tool_call").count() >= 3
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let has = |pred: &dyn Fn(&Value) -> bool| records.iter().any(pred);
    ensure!(
        has(&|r| r["endpoint"] == "notes" && r["tool"] == "whoami"),
        "{records:#?}"
    );
    ensure!(
        has(&|r| r["endpoint"] == "combo" && r["upstream_tool"] == "whoami"),
        "{records:#?}"
    );
    ensure!(has(&|r| r["rule"] == "hidden_tool"), "{records:#?}");
    ensure!(
        has(&|r| r["event"] == "connect") && has(&|r| r["event"] == "disconnect"),
        "{records:#?}"
    );
    let (s, body) = gw
        .admin(Method::GET, "/admin/audit?tool=who&endpoint=combo", None)
        .await?;
    ensure!(s == 200, "{body}");
    let found = body["records"].as_array().map(Vec::len).unwrap_or(0);
    ensure!(found == 1, "the query by tool and endpoint: {body}");

    // The console's Activity page lists them for the admin.
    let browser = Browser::new()?;
    browser.sign_in_to_console(&gw.base, &gw.admin_key).await?;
    let page = browser
        .get(&format!("{}/console/admin/activity", gw.base))
        .await?;
    ensure!(page.status == 200, "Activity page: {}", page.status);
    for text in ["whoami", "who", "distrust_my_token", ALICE, "hidden_tool"] {
        ensure!(page.body.contains(text), "the Activity page shows {text}");
    }
    Ok(())
}
