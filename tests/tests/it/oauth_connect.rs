//! Per-user OAuth2 grants end to end (issue 10, first part): a real authorization server
//! (`oidc-provider`, rotating refresh tokens for the client the gateway registers by RFC 7591)
//! and the JWT-protected Python MCP server as the upstream. A token becomes due for a refresh
//! when a test moves the gateways' clock (`TestGateway::clock`), never by waiting.
//!
//! - without a grant, a call answers `connect_required` with a single-use connect link;
//! - two users connect through a headless browser (the link, or their own credential): the
//!   gateway page names the user and the server before anything redirects; the provider's
//!   login and consent, the callback, the grant stored;
//! - each user's calls reach the upstream with their own token (the upstream reports `sub`);
//! - an expired token is refreshed on demand, and so is one the upstream refuses (401: one
//!   refresh and a retry); the scheduled sweep refreshes due grants and
//!   a second sweep right after refreshes nothing;
//! - disconnecting deletes the grant and revokes the refresh token at the provider, which
//!   then refuses it; the next call asks to connect again;
//! - replayed state, a state from another server's callback, a reused or forged link, and
//!   a tampered sealed grant are refused, storing nothing;
//! - the flow is bound to the browser that saw the connect page: mallory's continue link or
//!   provider URL in alice's browser (two browsers, separate cookie jars), or mallory's
//!   connect link in a browser signed in to the console as alice, connects nothing.

use anyhow::{Context, Result, ensure};
use e2e::mcp::{McpClient, SESSION};
use e2e::{StoreKind, TestGateway, call_json};
use mcpgw::clock::Clock;
use reqwest::Method;
use serde_json::{Value, json};

/// Access tokens live 10 minutes, so a token stays fresh (outside the gateway's 60 s refresh
/// margin) for as long as any test takes, however loaded the machine: a test that expects
/// exactly N refreshes cannot see one more because its own calls were slow. (With 66 s tokens
/// each new token was due again 6 s later, and 50 concurrent calls on a busy 2-core machine
/// took longer than that.) Tests make a token due with [`advance_until_due`].
const ACCESS_TTL: &str = "600";

use e2e::oauth_peers::Peers;

/// Its own oidc-provider (short tokens) and protected server, so the test controls both.
async fn peers() -> Result<Option<Peers>> {
    peers_with(&[]).await
}

/// [`peers`] with extra environment for the provider.
async fn peers_with(provider_env: &[(&str, &str)]) -> Result<Option<Peers>> {
    e2e::oauth_peers::start(ACCESS_TTL, provider_env).await
}

use e2e::http_browser::Browser;
use e2e::oauth_peers::browse;

struct Fixture {
    peers: Peers,
    gw: TestGateway,
    alice: String,
    bob: String,
}

async fn fixture() -> Result<Option<Fixture>> {
    fixture_on(StoreKind::Sqlite).await
}

async fn fixture_on(store: StoreKind) -> Result<Option<Fixture>> {
    let Some(peers) = peers().await? else {
        return Ok(None);
    };
    fixture_from(store, peers).await.map(Some)
}

async fn fixture_from(store: StoreKind, peers: Peers) -> Result<Fixture> {
    let gw = TestGateway::start(store, &[]).await?;
    // No client id: the gateway registers its own client at the provider (RFC 7591).
    for name in ["notes", "other"] {
        let (s, body) = gw
            .admin(
                Method::POST,
                "/admin/servers",
                Some(json!({"name": name, "url": peers.upstream,
                    "auth": {"type": "oauth2", "scopes": ["mcp:read"]}})),
            )
            .await?;
        ensure!(s == 201, "registering {name}: {s} {body}");
    }
    gw.admit_everyone("everyone", &["notes", "other"]).await?;
    let alice = gw.user_key("alice@example.com").await?;
    let bob = gw.user_key("bob@example.com").await?;
    Ok(Fixture {
        peers,
        gw,
        alice,
        bob,
    })
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": SESSION, "capabilities": {},
        "clientInfo": {"name": "oauth-e2e", "version": "1"}}})
}

/// The connect link in a `connect_required` answer.
async fn connect_link(gw: &TestGateway, key: &str, endpoint: &str) -> Result<String> {
    let (s, body) = call_json(
        Method::POST,
        &gw.mcp_url(endpoint),
        Some(key),
        Some(initialize()),
    )
    .await?;
    // The gateway answers initialize itself (the in-band connect prompt), the link in
    // its instructions.
    ensure!(s == 200, "without a grant: {s} {body}");
    let msg = body["result"]["instructions"].as_str().unwrap_or_default();
    let link = msg
        .split("open ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .context("no link in the instructions")?;
    ensure!(
        link.starts_with(&format!("{}/oauth/connect/{endpoint}?link=", gw.base)),
        "{msg}"
    );
    Ok(link.to_owned())
}

async fn whoami(gw: &TestGateway, key: &str) -> Result<Value> {
    whoami_at(gw, key, "notes").await
}

async fn whoami_at(gw: &TestGateway, key: &str, endpoint: &str) -> Result<Value> {
    e2e::oauth_peers::whoami(&gw.mcp_url(endpoint), key).await
}

/// Moves the clock of `gw` (and of the gateways beside it) to the first second in which the
/// access token of `grant` is within the refresh margin: the next call refreshes it.
fn advance_until_due(gw: &TestGateway, grant: &mcpgw::domain::Grant) -> Result<()> {
    let due_at = grant.access_expires_at.context("an expiry")?
        - mcpgw::grants::tokens::REFRESH_MARGIN_SECS
        + 1;
    gw.clock.advance_to(due_at);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn users_connect_their_own_accounts_and_tokens_refresh() -> Result<()> {
    let Some(fx) = fixture().await? else {
        return Ok(());
    };
    let gw = &fx.gw;

    // GIVEN alice has not connected: the call answers with a connect link
    let link = connect_link(gw, &fx.alice, "notes").await?;
    // WHEN she opens it in a browser and logs in at the provider
    let seen = browse(&link, "", "alice").await?;
    // THEN the gateway's page named her and the server before anything redirected
    assert_eq!(seen["page_user"], "alice@example.com", "{seen}");
    assert_eq!(seen["page_server"], "notes", "{seen}");
    assert_eq!(seen["status"], 200, "{seen}");
    assert!(
        seen["body"].as_str().unwrap().contains("id=\"connected\""),
        "{seen}"
    );
    let provider_host = fx.peers.issuer.trim_start_matches("http://");
    assert!(
        seen["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == provider_host),
        "the browser went through the provider: {seen}"
    );
    // AND the link is used up
    let again = browse(&link, "", "alice").await?;
    assert_eq!(again["status"], 400, "{again}");
    assert!(again["page_user"].is_null(), "{again}");

    // WHEN bob connects with his own credential (a CLI user)
    let seen = browse(&format!("{}/oauth/connect/notes", gw.base), &fx.bob, "bob").await?;
    assert_eq!(
        (seen["page_user"].as_str(), seen["status"].as_i64()),
        (Some("bob@example.com"), Some(200)),
        "{seen}"
    );

    // THEN each call reaches the upstream with the caller's own token
    let a = whoami(gw, &fx.alice).await?;
    let b = whoami(gw, &fx.bob).await?;
    assert_eq!(a["sub"], "alice", "{a}");
    assert_eq!(b["sub"], "bob", "{b}");
    assert_eq!(
        a["aud"],
        fx.peers.upstream.as_str(),
        "the RFC 8707 resource: {a}"
    );
    assert_ne!(a["token_sha256"], b["token_sha256"]);
    // AND the grants are stored sealed, version 1
    let store = &gw.state.store;
    let grant = store
        .get_grant("alice@example.com", "notes")
        .await?
        .context("grant")?;
    assert_eq!(grant.version, 1);
    assert!(grant.refresh_at.is_some(), "a refresh token was issued");

    // WHEN the access token is within the refresh margin THEN the next call refreshes it
    advance_until_due(gw, &grant)?;
    let before = fx.peers.refreshes().await?;
    let a2 = whoami(gw, &fx.alice).await?;
    assert_eq!(a2["sub"], "alice");
    assert_ne!(
        a2["token_sha256"], a["token_sha256"],
        "a new token after the refresh"
    );
    let grant = store
        .get_grant("alice@example.com", "notes")
        .await?
        .unwrap();
    assert_eq!(
        fx.peers.refreshes().await?,
        (before.0 + 1, before.1),
        "one refresh at the provider"
    );
    assert!(grant.last_refresh_at.is_some() && grant.refresh_lease_until.is_none());

    // WHEN the scheduled sweep runs (its clock two minutes later, past the recent-write skip)
    let later = gw.state_later(120)?;
    let before = fx.peers.refreshes().await?;
    let report = token_refresh::sweep(&later).await?;
    // THEN both grants are refreshed, and a second run right after refreshes nothing
    assert_eq!(
        (report.due, report.refreshed, report.failed),
        (2, 2, 0),
        "{report:?}"
    );
    let again = token_refresh::sweep(&later).await?;
    assert_eq!(
        (again.refreshed, again.failed, again.skipped),
        (0, 0, 2),
        "{again:?}"
    );
    assert_eq!(
        fx.peers.refreshes().await?,
        (before.0 + 2, before.1),
        "one refresh per grant at the provider"
    );
    let grant = store.get_grant("bob@example.com", "notes").await?.unwrap();
    assert!(grant.last_refresh_at.is_some() && grant.refresh_lease_until.is_none());
    // AND the swept tokens work
    gw.state.grants.forget("bob@example.com", "notes");
    assert_eq!(whoami(gw, &fx.bob).await?["sub"], "bob");

    // WHEN alice disconnects (her refresh token as stored, to try at the provider after)
    let sealed = store
        .get_grant("alice@example.com", "notes")
        .await?
        .context("grant")?;
    let ring = gw.state.keyring.get().await?;
    let tokens =
        mcpgw::grants::TokenSet::open(&ring, &sealed.sealed_tokens, "alice@example.com", "notes")?;
    let refresh = tokens.refresh_token.context("a refresh token")?;
    let (s, body) = call_json(
        Method::DELETE,
        &format!("{}/me/connections/notes", gw.base),
        Some(&fx.alice),
        None,
    )
    .await?;
    // THEN the provider accepted the revocation of the refresh token
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["provider_revocation"],
        json!({"status": "revoked", "token": "refresh_token"}),
        "{body}"
    );
    // AND her next call asks her to connect again, while bob's still works
    connect_link(gw, &fx.alice, "notes").await?;
    assert_eq!(whoami(gw, &fx.bob).await?["sub"], "bob");
    // AND the provider refuses the revoked refresh token
    let client = client_of(gw, "notes").await?;
    let answer = reqwest::Client::new()
        .post(format!("{}/token", fx.peers.issuer))
        .basic_auth(&client.client_id, client.client_secret.as_deref())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .await?;
    let status = answer.status().as_u16();
    let refused: Value = answer.json().await?;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant")),
        "{refused}"
    );
    // AND her connections say so, bob's do not change
    let (_, mine) = call_json(
        Method::GET,
        &format!("{}/me/connections", gw.base),
        Some(&fx.alice),
        None,
    )
    .await?;
    let status_of = |list: &Value, server: &str| {
        list["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["server"] == server)
            .map(|c| c["status"].clone())
    };
    assert_eq!(
        status_of(&mine, "notes"),
        Some(json!("not_connected")),
        "{mine}"
    );
    let (_, his) = call_json(
        Method::GET,
        &format!("{}/me/connections", gw.base),
        Some(&fx.bob),
        None,
    )
    .await?;
    assert_eq!(status_of(&his, "notes"), Some(json!("connected")), "{his}");
    Ok(())
}

/// The client the gateway uses for `server` (registered by itself).
async fn client_of(
    gw: &TestGateway,
    server: &str,
) -> Result<mcpgw::grants::registration::ClientCredentials> {
    let s = gw.state.server(server).await?.context("server")?;
    let e = mcpgw::grants::endpoints::for_server(&gw.state.grants, &s).await?;
    Ok(mcpgw::grants::registration::credentials(&gw.state.grants, &s, &e).await?)
}

/// The gateway's registered clients, as stored.
async fn registrations(gw: &TestGateway) -> Result<Vec<Value>> {
    Ok(gw
        .state
        .store
        .list_configs(mcpgw::store::ConfigKind::ClientRegistration)
        .await?)
}

async fn add_server(gw: &TestGateway, name: &str, upstream: &str) -> Result<()> {
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": name, "url": upstream,
                "auth": {"type": "oauth2", "scopes": ["mcp:read"]}})),
        )
        .await?;
    ensure!(s == 201, "registering {name}: {s} {body}");
    gw.admit_everyone(&format!("everyone-{name}"), &[name])
        .await
}

async fn whoami_on(gw: &TestGateway, key: &str, endpoint: &str) -> Result<String> {
    let v = whoami_at(gw, key, endpoint).await?;
    Ok(v["sub"].as_str().unwrap_or_default().to_owned())
}

/// Servers without a client id: the gateway registers one client per issuer (RFC 7591),
/// however many connects race for it, listing every such server's callback; its secret is
/// sealed in the store. A server added later joins that client by RFC 7592 (same client
/// id); where the provider has no client configuration endpoint it gets a client of its
/// own, and the first client's grants keep working.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_registers_one_client_per_issuer() -> Result<()> {
    let Some(fx) = fixture().await? else {
        return Ok(());
    };
    let gw = &fx.gw;
    // WHEN five connects start at once, before any client exists
    let page = format!("{}/oauth/connect/notes", gw.base);
    let http = reqwest::Client::new();
    let starts = futures_util::future::join_all(
        (0..5).map(|_| http.get(&page).bearer_auth(&fx.alice).send()),
    )
    .await;
    for r in starts {
        let r = r?;
        ensure!(r.status() == 200, "connect page: {}", r.status());
    }
    // THEN one registration is kept, for the issuer, naming both servers' callbacks
    let regs = registrations(gw).await?;
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0]["issuer"], fx.peers.issuer.as_str());
    let uris = regs[0]["redirect_uris"].clone();
    for name in ["notes", "other"] {
        let cb = format!("{}/oauth/callback/{name}", gw.base);
        assert!(uris.as_array().unwrap().contains(&json!(cb)), "{uris}");
    }
    // AND its secret is stored sealed, never in the clear
    let client = client_of(gw, "notes").await?;
    let secret = client
        .client_secret
        .clone()
        .context("a confidential client")?;
    assert!(!regs[0].to_string().contains(&secret), "sealed secret");
    assert_eq!(client.client_id, regs[0]["client_id"].as_str().unwrap());
    // AND alice's connect through it works end to end
    let seen = browse(
        &format!("{}/oauth/connect/notes", gw.base),
        &fx.alice,
        "alice",
    )
    .await?;
    ensure!(seen["status"] == 200, "{seen}");
    assert_eq!(whoami_on(gw, &fx.alice, "notes").await?, "alice");

    // WHEN a server of the same issuer is added later and bob connects it
    add_server(gw, "late", &fx.peers.upstream).await?;
    let seen = browse(&format!("{}/oauth/connect/late", gw.base), &fx.bob, "bob").await?;
    ensure!(seen["status"] == 200, "{seen}");
    assert_eq!(whoami_on(gw, &fx.bob, "late").await?, "bob");
    // THEN the same client took its callback (RFC 7592), still one registration
    let regs = registrations(gw).await?;
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0]["client_id"], client.client_id.as_str());
    assert_eq!(regs[0]["redirect_uris"].as_array().unwrap().len(), 3);
    // AND alice's grant, issued to it, still refreshes-and-works
    assert_eq!(whoami_on(gw, &fx.alice, "notes").await?, "alice");
    Ok(())
}

/// Without RFC 7592 at the provider, a later server gets a client of its own; grants issued
/// to the first client keep using it.
#[tokio::test(flavor = "multi_thread")]
async fn a_later_server_gets_its_own_client_without_registration_management() -> Result<()> {
    let Some(peers) = peers_with(&[("OIDC_NO_REGISTRATION_MANAGEMENT", "1")]).await? else {
        return Ok(());
    };
    let fx = fixture_from(StoreKind::Sqlite, peers).await?;
    let gw = &fx.gw;
    let seen = browse(
        &format!("{}/oauth/connect/notes", gw.base),
        &fx.alice,
        "alice",
    )
    .await?;
    ensure!(seen["status"] == 200, "{seen}");
    let first = client_of(gw, "notes").await?.client_id;
    add_server(gw, "late", &fx.peers.upstream).await?;
    let seen = browse(
        &format!("{}/oauth/connect/late", gw.base),
        &fx.alice,
        "alice",
    )
    .await?;
    ensure!(seen["status"] == 200, "{seen}");
    let regs = registrations(gw).await?;
    assert_eq!(regs.len(), 2, "{regs:?}");
    let late = client_of(gw, "late").await?.client_id;
    assert_ne!(late, first, "a client of its own");
    assert_eq!(client_of(gw, "notes").await?.client_id, first);
    assert_eq!(whoami_on(gw, &fx.alice, "late").await?, "alice");
    assert_eq!(whoami_on(gw, &fx.alice, "notes").await?, "alice");
    Ok(())
}

/// An upstream that refuses a token the gateway holds as valid (401) gets one refresh and a
/// retry: the call succeeds with a new token; concurrent calls that all saw the 401 cause
/// one refresh between them.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_401_refreshes_once_and_retries() -> Result<()> {
    let Some(fx) = fixture().await? else {
        return Ok(());
    };
    let gw = &fx.gw;
    let seen = browse(
        &format!("{}/oauth/connect/notes", gw.base),
        &fx.alice,
        "alice",
    )
    .await?;
    ensure!(seen["status"] == 200, "{seen}");
    let first = whoami(gw, &fx.alice).await?;
    // GIVEN the upstream stops trusting alice's current (unexpired) token
    let mut c = McpClient::connect(&gw.mcp_url("notes"), &fx.alice, SESSION).await?;
    let r = c.call_tool("distrust_my_token", json!({})).await?;
    ensure!(r.result()?["isError"] != true, "{}", r.raw);
    // WHEN ten calls come at once
    let before = fx.peers.refreshes().await?;
    let answers = futures_util::future::join_all((0..10).map(|_| whoami(gw, &fx.alice))).await;
    // THEN every one succeeds, all with the same new token
    let mut tokens = std::collections::BTreeSet::new();
    for a in answers {
        let a = a?;
        ensure!(a["sub"] == "alice", "{a}");
        tokens.insert(a["token_sha256"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(!tokens.contains(first["token_sha256"].as_str().unwrap()));
    // AND the grant was refreshed exactly once
    let grant = gw
        .state
        .store
        .get_grant("alice@example.com", "notes")
        .await?
        .context("grant")?;
    assert_eq!(
        fx.peers.refreshes().await?,
        (before.0 + 1, before.1),
        "one refresh at the provider after the 401"
    );
    assert!(grant.last_refresh_at.is_some() && grant.last_error.is_none());
    Ok(())
}

/// An `oauth2_client_credentials` server: every caller's call carries the gateway's one
/// machine token (fetched once, by the client credentials grant with the client secret from
/// the secrets port and the RFC 8707 resource), no user connects anything, and an upstream
/// 401 gets a new machine token and a retry.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_credentials_server_gets_one_machine_token_for_everyone() -> Result<()> {
    let Some(peers) = peers().await? else {
        return Ok(());
    };
    let (s, reg) = call_json(
        Method::POST,
        &format!("{}/reg", peers.issuer),
        None,
        Some(json!({
            "grant_types": ["client_credentials"],
            "response_types": [],
            "redirect_uris": [],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": "mcp:read"})),
    )
    .await?;
    ensure!(s == 201, "client registration: {s} {reg}");
    let client_id = reg["client_id"].as_str().context("client_id")?;
    let secret = reg["client_secret"].as_str().context("client_secret")?;
    let gw = TestGateway::start(StoreKind::Sqlite, &[("MCPGW_SECRET_MACHINE", secret)]).await?;
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "notes", "url": peers.upstream,
                "auth": {"type": "oauth2_client_credentials", "client_id": client_id,
                         "client_secret": "secret://machine", "scopes": ["mcp:read"]}})),
        )
        .await?;
    ensure!(s == 201, "{s} {body}");
    gw.admit_everyone("everyone", &["notes"]).await?;
    let alice = gw.user_key("alice@example.com").await?;
    let bob = gw.user_key("bob@example.com").await?;

    // WHEN two users call THEN both reach the upstream with the same machine token
    let a = whoami(&gw, &alice).await?;
    let b = whoami(&gw, &bob).await?;
    assert_eq!(a["client_id"], client_id, "{a}");
    assert_eq!(a["aud"], peers.upstream.as_str(), "the resource: {a}");
    assert_eq!(a["token_sha256"], b["token_sha256"], "one token: {a} {b}");
    // AND nothing was stored per user
    assert!(gw.state.store.list_grants(10).await?.is_empty());

    // WHEN the upstream stops trusting the machine token THEN the next call gets a new one
    let mut c = McpClient::connect(&gw.mcp_url("notes"), &alice, SESSION).await?;
    let r = c.call_tool("distrust_my_token", json!({})).await?;
    ensure!(r.result()?["isError"] != true, "{}", r.raw);
    let answers = futures_util::future::join_all((0..5).map(|_| whoami(&gw, &bob))).await;
    let mut tokens = std::collections::BTreeSet::new();
    for x in answers {
        tokens.insert(x?["token_sha256"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(!tokens.contains(a["token_sha256"].as_str().unwrap()));

    // AND a wrong secret is an upstream_credential_unavailable answer, never a leak
    let gw2 = TestGateway::start(StoreKind::Sqlite, &[("MCPGW_SECRET_MACHINE", "wrong")]).await?;
    let (s, body) = gw2
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "notes", "url": peers.upstream,
                "auth": {"type": "oauth2_client_credentials", "client_id": client_id,
                         "client_secret": "secret://machine"}})),
        )
        .await?;
    ensure!(s == 201, "{s} {body}");
    gw2.admit_everyone("everyone", &["notes"]).await?;
    let carol = gw2.user_key("carol@example.com").await?;
    let (s, body) = call_json(
        Method::POST,
        &gw2.mcp_url("notes"),
        Some(&carol),
        Some(initialize()),
    )
    .await?;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (502, Some("upstream_credential_unavailable")),
        "{body}"
    );
    assert!(!body.to_string().contains("wrong"), "{body}");
    Ok(())
}

/// 50 concurrent calls of one user whose access token is due, spread over `processes`
/// gateways on one store (each with its own caches and locks, as Lambda instances are):
/// the provider sees exactly one refresh (one redemption of the rotating refresh token; a
/// second would be a reuse and revoke the grant), and every call succeeds with the new token.
async fn concurrent_calls_refresh_once(store: StoreKind, processes: usize) -> Result<()> {
    let Some(fx) = fixture_on(store).await? else {
        return Ok(());
    };
    let mut gateways = vec![];
    for _ in 1..processes {
        gateways.push(fx.gw.beside().await?);
    }
    let gws: Vec<&TestGateway> = std::iter::once(&fx.gw).chain(gateways.iter()).collect();
    let seen = browse(
        &format!("{}/oauth/connect/notes", fx.gw.base),
        &fx.alice,
        "alice",
    )
    .await?;
    ensure!(seen["status"] == 200, "{seen}");
    // Every gateway has used (and cached) the first token before it goes stale.
    let mut first = None;
    for gw in &gws {
        let a = whoami(gw, &fx.alice).await?;
        ensure!(
            first.is_none() || first.as_ref() == Some(&a["token_sha256"]),
            "{a}"
        );
        first = Some(a["token_sha256"].clone());
    }
    let grant = fx
        .gw
        .state
        .store
        .get_grant("alice@example.com", "notes")
        .await?
        .context("grant")?;
    advance_until_due(&fx.gw, &grant)?;
    let before = fx.peers.refreshes().await?;

    let calls = (0..50).map(|i| whoami(gws[i % gws.len()], &fx.alice));
    let answers = futures_util::future::join_all(calls).await;
    let mut tokens = std::collections::BTreeSet::new();
    for a in answers {
        let a = a?;
        ensure!(a["sub"] == "alice", "{a}");
        tokens.insert(a["token_sha256"].as_str().unwrap_or_default().to_owned());
    }
    let first = first.context("a first call")?;
    ensure!(
        tokens.len() == 1 && !tokens.contains(first.as_str().unwrap_or("")),
        "every call used the one new token: {tokens:?}"
    );
    let after = fx.peers.refreshes().await?;
    ensure!(
        after == (before.0 + 1, before.1),
        "the provider answered exactly one refresh (succeeded, refused): {before:?} -> {after:?}"
    );
    let now = fx
        .gw
        .state
        .store
        .get_grant("alice@example.com", "notes")
        .await?
        .context("grant")?;
    ensure!(
        now.status == mcpgw::domain::GrantStatus::Active
            && now.last_refresh_at.is_some()
            && now.refresh_lease_until.is_none(),
        "the refresh was written and its claim released: {now:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_calls_refresh_once_on_sqlite() -> Result<()> {
    concurrent_calls_refresh_once(StoreKind::Sqlite, 1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_calls_refresh_once_on_dynamodb() -> Result<()> {
    let Some(endpoint) = mcpgw::testing::peer_url("MCPGW_TEST_AWS_ENDPOINT") else {
        return Ok(());
    };
    concurrent_calls_refresh_once(StoreKind::Dynamo(endpoint), 1).await
}

/// The same across processes: two gateways on one SQLite file, each with its own
/// connection, caches and locks; only the store's lease keeps them from both refreshing.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_through_two_gateways_refresh_once_on_sqlite() -> Result<()> {
    concurrent_calls_refresh_once(StoreKind::Sqlite, 2).await
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_through_two_gateways_refresh_once_on_dynamodb() -> Result<()> {
    let Some(endpoint) = mcpgw::testing::peer_url("MCPGW_TEST_AWS_ENDPOINT") else {
        return Ok(());
    };
    concurrent_calls_refresh_once(StoreKind::Dynamo(endpoint), 2).await
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_misdirected_and_forged_flows_store_nothing() -> Result<()> {
    let Some(fx) = fixture().await? else {
        return Ok(());
    };
    let gw = &fx.gw;
    let store = &gw.state.store;

    // a forged or altered link
    for bad in ["AAAA", "not-base64!"] {
        let seen = browse(
            &format!("{}/oauth/connect/notes?link={bad}", gw.base),
            "",
            "alice",
        )
        .await?;
        assert_eq!(seen["status"], 400, "{seen}");
    }
    // a link for one server used at another
    let link = connect_link(gw, &fx.alice, "notes").await?;
    let moved = link.replace("/oauth/connect/notes?", "/oauth/connect/other?");
    let seen = browse(&moved, "", "alice").await?;
    assert_eq!(seen["status"], 400, "{seen}");

    // Drive a flow by hand, in one browser (the connect page's cookie carried), to hold a
    // real state.
    let browser = Browser::new()?;
    let page = browser
        .get_with(&format!("{}/oauth/connect/notes", gw.base), Some(&fx.alice))
        .await?;
    assert_eq!(page.status, 200, "{}", page.body);
    let go = page.link("continue").context("continue link")?;
    let r = browser.get(&go).await?;
    assert_eq!(r.status, 302, "{}", r.body);
    let location = r.location.context("a redirect")?;
    assert!(
        location.starts_with(&fx.peers.issuer),
        "redirects to the provider only: {location}"
    );
    let state_param = url::Url::parse(&location)?
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .context("state")?;
    // a continue link the gateway did not make is refused (no open redirect)
    let (s, _) = redirect_of(&format!(
        "{}/oauth/connect/notes?go=aHR0cHM6Ly9ldmlsLmV4YW1wbGU",
        gw.base
    ))
    .await?;
    assert_eq!(s, 400);

    // the state presented at another server's callback: refused, and used up
    let seen = browser
        .get(&format!(
            "{}/oauth/callback/other?code=x&state={state_param}",
            gw.base
        ))
        .await?;
    assert_eq!(seen.status, 400, "{}", seen.body);
    assert!(seen.body.contains("another server"), "{}", seen.body);
    // replayed at the right one, in the browser that started it: unknown now
    let seen = browser
        .get(&format!(
            "{}/oauth/callback/notes?code=x&state={state_param}",
            gw.base
        ))
        .await?;
    assert_eq!(seen.status, 400, "{}", seen.body);
    assert!(seen.body.contains("already used"), "{}", seen.body);
    // denied consent and a missing state
    let (s, _) = call_text(
        &format!(
            "{}/oauth/callback/notes?error=access_denied&state=zz",
            gw.base
        ),
        None,
    )
    .await?;
    assert_eq!(s, 400);
    let (s, _) = call_text(&format!("{}/oauth/callback/notes?code=x", gw.base), None).await?;
    assert_eq!(s, 400);
    assert!(
        store
            .get_grant("alice@example.com", "notes")
            .await?
            .is_none(),
        "nothing stored"
    );

    // a tampered sealed grant, and a sealed grant moved onto another user, are not used
    let seen = browse(
        &format!("{}/oauth/connect/notes", gw.base),
        &fx.alice,
        "alice",
    )
    .await?;
    assert_eq!(seen["status"], 200, "{seen}");
    let mut g = store
        .get_grant("alice@example.com", "notes")
        .await?
        .unwrap();
    let mut moved = g.clone();
    moved.user = "bob@example.com".into();
    moved.version = 1;
    store.save_grant_if_version(&moved, None).await?;
    let (s, body) = call_json(
        Method::POST,
        &gw.mcp_url("notes"),
        Some(&fx.bob),
        Some(initialize()),
    )
    .await?;
    assert_eq!(s, 502, "alice's sealed tokens do not open as bob's: {body}");
    assert_eq!(
        body["error"]["code"], "upstream_credential_unavailable",
        "{body}"
    );
    // no token (JWTs start with eyJ) and no credential in the answer
    assert!(
        !body.to_string().contains("eyJ") && !body.to_string().contains("Bearer"),
        "{body}"
    );
    *g.sealed_tokens.last_mut().unwrap() ^= 1;
    g.version += 1;
    store.save_grant_if_version(&g, Some(g.version - 1)).await?;
    gw.state.grants.forget("alice@example.com", "notes");
    let (s, body) = call_json(
        Method::POST,
        &gw.mcp_url("notes"),
        Some(&fx.alice),
        Some(initialize()),
    )
    .await?;
    assert_eq!(s, 502, "{body}");
    Ok(())
}

/// The name of the connect cookie of `notes` on the test gateway (plain http: no prefix).
const NOTES_COOKIE: &str = "mcpgw_connect_notes";

/// The account-linking swap (login CSRF), with two users in two browsers through the real
/// provider: a flow started for mallory's gateway user cannot connect the account alice signs
/// in with at the provider, whichever piece of it reaches alice's browser (the continue
/// link, the provider's authorization URL, the connect link itself while alice is signed in
/// to the console). Each attempt is refused with a page, stores nothing, and the provider
/// never sees the code redeemed; then each user connects their own account in their own
/// browser, and the upstream sees each one's own subject.
#[tokio::test(flavor = "multi_thread")]
async fn a_flow_for_one_user_cannot_connect_another_users_browser() -> Result<()> {
    let Some(fx) = fixture().await? else {
        return Ok(());
    };
    let gw = &fx.gw;
    let mallory_key = gw.user_key("mallory@example.com").await?;
    let (mallory, alice) = (Browser::new()?, Browser::new()?);
    let nothing_stored = || async {
        for user in ["mallory@example.com", "alice@example.com"] {
            ensure!(
                gw.state.store.get_grant(user, "notes").await?.is_none(),
                "no grant for {user}"
            );
        }
        Ok::<_, anyhow::Error>(())
    };
    let codes_before = fx.peers.code_redemptions().await?;

    // GIVEN mallory opens her connect page in her browser
    let link = connect_link(gw, &mallory_key, "notes").await?;
    let page = mallory.get(&link).await?;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.text_of("user").as_deref(), Some("mallory@example.com"));
    // THEN her browser holds the flow's cookie: HttpOnly, SameSite=Lax, the OAuth routes only,
    // ten minutes (not Secure: this gateway is plain http on loopback)
    let c = mallory.cookie(NOTES_COOKIE).context("the connect cookie")?;
    assert!(c.http_only && !c.secure, "{c:?}");
    assert_eq!(c.same_site.as_deref(), Some("Lax"), "{c:?}");
    assert_eq!(c.path, "/oauth/", "{c:?}");
    let lifetime = c.expires_at.context("an expiry")? - mcpgw::clock::SystemClock.now();
    assert!((590..=600).contains(&lifetime), "{lifetime}");
    let go = page.link("continue").context("continue link")?;

    // WHEN alice's browser follows mallory's continue link
    let seen = alice.get(&go).await?;
    // THEN it is refused, asks to start again, and goes nowhere
    assert_eq!(seen.status, 403, "{}", seen.body);
    assert!(
        seen.body.contains("Start again from the connect link"),
        "{}",
        seen.body
    );
    assert!(seen.location.is_none());
    // AND the leaked link is used up for mallory too
    let seen = mallory.get(&go).await?;
    assert_eq!(seen.status, 400, "{}", seen.body);
    nothing_stored().await?;

    // GIVEN mallory takes a new flow as far as the provider in her browser...
    let page = mallory
        .get(&connect_link(gw, &mallory_key, "notes").await?)
        .await?;
    let to_provider = mallory
        .get(&page.link("continue").context("continue link")?)
        .await?;
    assert_eq!(to_provider.status, 302, "{}", to_provider.body);
    let provider_url = to_provider.location.context("the provider's URL")?;
    assert!(provider_url.starts_with(&fx.peers.issuer), "{provider_url}");
    // ...and hands its authorization URL to alice, who signs in there as herself
    let (seen, visited) = alice.follow(&provider_url, "alice").await?;
    // THEN the provider sent alice's browser back to the gateway's callback, which refused it
    let callback = format!("{}/oauth/callback/notes?", gw.base);
    assert!(seen.url.starts_with(&callback), "{visited:?}");
    assert!(seen.url.contains("code="), "{}", seen.url);
    assert_eq!(seen.status, 403, "{}", seen.body);
    assert!(
        seen.body.contains("Start again from the connect link"),
        "{}",
        seen.body
    );
    nothing_stored().await?;
    // AND mallory, replaying that callback (alice's code) in her own browser, gets nothing:
    // the state was used up
    let replay = mallory.get(&seen.url).await?;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("already used"), "{}", replay.body);
    nothing_stored().await?;
    // AND the provider never saw alice's code redeemed
    assert_eq!(fx.peers.code_redemptions().await?, codes_before);

    // GIVEN alice is signed in to the console in her browser
    alice.sign_in_to_console(&gw.base, &fx.alice).await?;
    // WHEN she opens mallory's connect link herself THEN it is refused, naming why
    let seen = alice
        .get(&connect_link(gw, &mallory_key, "notes").await?)
        .await?;
    assert_eq!(seen.status, 403, "{}", seen.body);
    assert!(
        seen.body
            .contains("signed in to the gateway console as alice@example.com"),
        "{}",
        seen.body
    );
    assert!(seen.link("continue").is_none());
    assert!(alice.cookie(NOTES_COOKIE).is_none(), "no flow started");
    nothing_stored().await?;
    assert_eq!(fx.peers.code_redemptions().await?, codes_before);

    // BASELINE: alice connects her own account in her browser (console session and all)
    let page = alice
        .get(&connect_link(gw, &fx.alice, "notes").await?)
        .await?;
    assert_eq!(page.text_of("user").as_deref(), Some("alice@example.com"));
    let (done, visited) = alice
        .follow(&page.link("continue").context("continue link")?, "alice")
        .await?;
    assert_eq!(done.status, 200, "{visited:?} {}", done.body);
    assert!(done.body.contains("id=\"connected\""), "{}", done.body);
    assert!(
        visited.iter().any(|u| u.starts_with(&fx.peers.issuer)),
        "through the provider: {visited:?}"
    );
    // AND the callback cleared the flow's cookie
    assert!(
        alice.cookie(NOTES_COOKIE).is_none(),
        "{:?}",
        alice.cookies()
    );
    // AND mallory connects hers in her browser
    let page = mallory
        .get(&connect_link(gw, &mallory_key, "notes").await?)
        .await?;
    let (done, _) = mallory
        .follow(&page.link("continue").context("continue link")?, "mallory")
        .await?;
    assert_eq!(done.status, 200, "{}", done.body);
    // THEN the upstream sees each one's own subject
    assert_eq!(whoami(gw, &fx.alice).await?["sub"], "alice");
    assert_eq!(whoami(gw, &mallory_key).await?["sub"], "mallory");
    assert_eq!(fx.peers.code_redemptions().await?, codes_before + 2);
    Ok(())
}

/// A GET without following redirects: (status, Location, body).
async fn get(url: &str, bearer: Option<&str>) -> Result<(u16, String, String)> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut req = client.get(url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let r = req.send().await?;
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((r.status().as_u16(), loc, r.text().await?))
}

async fn call_text(url: &str, bearer: Option<&str>) -> Result<(u16, String)> {
    let (s, _, body) = get(url, bearer).await?;
    Ok((s, body))
}

async fn redirect_of(url: &str) -> Result<(u16, String)> {
    let (s, loc, _) = get(url, None).await?;
    Ok((s, loc))
}

/// The in-band prompt in both eras, for clients that declare URL elicitation: the session
/// era's `-32042` error and the 2026-07-28 `input_required` result both carry a connect
/// link; once the user has connected through it, the same client's retry reaches the
/// upstream as that user (the session one in the very session that got the prompt).
#[tokio::test(flavor = "multi_thread")]
async fn url_eliciting_clients_are_prompted_and_their_retry_goes_through() -> Result<()> {
    let Some(fx) = fixture().await? else {
        return Ok(());
    };
    let gw = &fx.gw;
    let url_capable = json!({"elicitation": {"url": {}}});

    // GIVEN alice's session-era client declares URL elicitation and has no grant
    let mut session = McpClient::connect_with(
        &gw.mcp_url("notes"),
        &fx.alice,
        SESSION,
        url_capable.clone(),
    )
    .await?;
    // WHEN it calls a tool
    let r = session.call_tool("whoami", json!({})).await?;
    // THEN the answer is the URL elicitation error with a connect link
    let error = r.error().context("expected -32042")?;
    assert_eq!(error["code"], -32042, "{}", r.raw);
    let link = error["data"]["elicitations"][0]["url"]
        .as_str()
        .context("no url")?
        .to_owned();
    assert!(link.contains("/oauth/connect/notes?link="), "{link}");
    // WHEN she follows it and connects, THEN the same session's retry is hers upstream
    let seen = browse(&link, "", "alice").await?;
    assert_eq!(seen["status"], 200, "{seen}");
    let r = session.call_tool("whoami", json!({})).await?;
    assert!(r.result()?["isError"] != true, "{}", r.raw);
    assert!(r.raw.contains("alice"), "{}", r.raw);

    // GIVEN bob's stateless client declares URL elicitation and has no grant
    let mut stateless = McpClient::connect_with(
        &gw.mcp_url("notes"),
        &fx.bob,
        e2e::mcp::STATELESS,
        url_capable,
    )
    .await?;
    let r = stateless.call_tool("whoami", json!({})).await?;
    // THEN the answer is an input_required result whose input request is the URL
    let result = r.result()?;
    assert_eq!(result["resultType"], "input_required", "{}", r.raw);
    let ask = &result["inputRequests"]["mcpgw-connect"];
    assert_eq!(ask["method"], "elicitation/create", "{}", r.raw);
    assert_eq!(ask["params"]["mode"], "url", "{}", r.raw);
    let link = ask["params"]["url"].as_str().context("no url")?.to_owned();
    let seen = browse(&link, "", "bob").await?;
    assert_eq!(seen["status"], 200, "{seen}");
    // AND the retried call reaches the upstream as bob
    let r = stateless.call_tool("whoami", json!({})).await?;
    assert!(r.result()?["isError"] != true, "{}", r.raw);
    assert!(
        r.raw.contains("bob") && !r.raw.contains("alice"),
        "{}",
        r.raw
    );
    Ok(())
}

/// A virtual server whose member takes per-user OAuth2: a caller without a grant gets the
/// same in-band prompt on the virtual endpoint (URL elicitation or a tool result with the
/// link), and after connecting through it the virtual tool reaches the upstream as them.
#[tokio::test(flavor = "multi_thread")]
async fn a_virtual_server_prompts_for_a_members_missing_grant() -> Result<()> {
    let Some(fx) = fixture().await? else {
        return Ok(());
    };
    let gw = &fx.gw;
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/virtual-servers",
            Some(json!({"name": "desk", "tools": [{"server": "notes", "tool": "whoami", "alias": "who"}],
                "members": {"everyone": true}})),
        )
        .await?;
    ensure!(s == 201, "{s} {body}");

    // GIVEN alice's client does not declare URL elicitation: the tool is listed, saying it
    // needs her account, and calling it answers a tool result carrying the link
    let mut plain = McpClient::connect(&gw.mcp_url("desk"), &fx.alice, SESSION).await?;
    let listed = plain.tools().await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "who");
    assert!(
        listed[0]["description"]
            .as_str()
            .unwrap()
            .contains("Needs your own account at 'notes'"),
        "{listed:?}"
    );
    let r = plain.call_tool("who", json!({})).await?;
    let result = r.result()?;
    assert_eq!(result["isError"], true, "{}", r.raw);
    let text = result["content"][0]["text"].as_str().context("text")?;
    assert!(text.contains("/oauth/connect/notes?link="), "{text}");

    // AND bob's declares it: the -32042 error with the link
    let mut eliciting = McpClient::connect_with(
        &gw.mcp_url("desk"),
        &fx.bob,
        SESSION,
        json!({"elicitation": {"url": {}}}),
    )
    .await?;
    let r = eliciting.call_tool("who", json!({})).await?;
    let error = r.error().context("expected -32042")?;
    assert_eq!(error["code"], -32042, "{}", r.raw);
    let link = error["data"]["elicitations"][0]["url"]
        .as_str()
        .context("url")?
        .to_owned();

    // WHEN bob connects through the link, THEN the same session's retry is his upstream
    let seen = browse(&link, "", "bob").await?;
    assert_eq!(seen["status"], 200, "{seen}");
    let r = eliciting.call_tool("who", json!({})).await?;
    assert!(r.result()?["isError"] != true, "{}", r.raw);
    assert!(r.raw.contains("bob"), "{}", r.raw);
    // AND his list now carries the upstream's own definition of the tool
    let listed = eliciting.tools().await?;
    assert_eq!(listed[0]["name"], "who");
    assert!(
        !listed[0]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("Needs your own account"),
        "{listed:?}"
    );
    // AND alice, still unconnected, still gets the prompt, never bob's token
    let r = plain.call_tool("who", json!({})).await?;
    assert_eq!(r.result()?["isError"], true, "{}", r.raw);
    Ok(())
}
