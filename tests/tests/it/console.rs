//! The web console in a real browser (issue 11): headless Chromium (Debian's package, driven
//! by Playwright for Python through `tests/clients/browser.py`) against the gateway's own
//! pages, the real `oidc-provider` as the customer's identity provider (console sign-in) and
//! as the upstream's authorization server, and the JWT-protected Python MCP server.
//!
//! - bob signs in at the provider, sees `notes` "not connected", connects it through the
//!   gateway's connect page and the provider, sees "connected" (his MCP calls now reach the
//!   upstream as bob), disconnects and sees "not connected";
//! - alice (an admin by her IdP group) creates a server group in the browser and carol's page
//!   changes from nothing to the server;
//! - a POST without the CSRF token, a non-admin on admin pages, a tampered session cookie and
//!   markup in a server's fields are all refused or rendered inert.
//!
//! A screenshot of every page is kept under `$MCPGW_ARTIFACTS/console` (see `e2e::browser`).

use anyhow::{Context, Result, ensure};
use e2e::mcp::{McpClient, SESSION};
use e2e::oauth_peers::Peers;
use e2e::{StoreKind, TestGateway};
use reqwest::Method;
use serde_json::{Value, json};

/// The console's client at the provider (the provider's static confidential client).
const CONSOLE_CLIENT: &str = "mcpgw-console";

/// Runs `steps` in headless Chromium, screenshots under this suite's name.
async fn browser(test: &str, steps: Value) -> Result<Value> {
    e2e::browser::run(&format!("console/{test}"), steps).await
}

struct Fixture {
    peers: Peers,
    gw: TestGateway,
}

/// A gateway whose identity provider `corp` (oidc-provider) offers console sign-in, with the
/// OAuth2 server `notes` (the protected upstream) that people in the IdP group `sales` reach.
async fn fixture() -> Result<Option<Fixture>> {
    if !e2e::browser::available() {
        return Ok(None);
    }
    let secret = mcpgw::crypto::random_token(24);
    let gw = TestGateway::start(StoreKind::Sqlite, &[("MCPGW_SECRET_CONSOLE", &secret)]).await?;
    let callback = format!("{}/console/callback", gw.base);
    let Some(peers) = e2e::oauth_peers::start(
        "600",
        &[
            ("OIDC_CLIENT_ID", CONSOLE_CLIENT),
            ("OIDC_CLIENT_SECRET", &secret),
            ("OIDC_REDIRECT", &callback),
        ],
    )
    .await?
    else {
        return Ok(None);
    };
    for (path, doc) in [
        (
            "/admin/identity-providers",
            json!({"name": "corp", "issuer": peers.issuer, "admin_groups": ["mcp-admins"],
                "console": {"client_id": CONSOLE_CLIENT, "client_secret": "secret://console",
                            "scopes": ["email", "profile", "groups"]}}),
        ),
        (
            "/admin/servers",
            json!({"name": "notes", "url": peers.upstream,
                "auth": {"type": "oauth2", "scopes": ["mcp:read"]}}),
        ),
        (
            "/admin/teams",
            json!({"name": "sales", "idp_groups": ["sales"]}),
        ),
        (
            "/admin/server-groups",
            json!({"name": "sales-notes", "servers": ["notes"], "members": {"teams": ["sales"]}}),
        ),
    ] {
        let (s, body) = gw.admin(Method::POST, path, Some(doc)).await?;
        ensure!(s == 201, "{path}: {s} {body}");
    }
    Ok(Some(Fixture { peers, gw }))
}

/// Steps that sign in at the provider as `login` (the provider logs in whoever is typed).
fn sign_in_steps(gw: &TestGateway, login: &str, shot: &str) -> Vec<Value> {
    vec![
        json!({"goto": format!("{}/console", gw.base)}),
        json!({"url": true, "as": "login_url"}),
        json!({"screenshot": shot}),
        json!({"fill": "#login-hint-corp", "value": login}),
        json!({"click": "#sso-submit-corp", "navigates": true}),
        json!({"url": true, "as": "signed_in_url"}),
        json!({"text": "#whoami", "as": "whoami"}),
        json!({"count": "#nav-admin", "as": "admin_links"}),
    ]
}

fn session_cookie(report: &Value) -> Result<Value> {
    report["values"]["cookies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "mcpgw_console")
        .cloned()
        .context("the console set its session cookie")
}

/// What the upstream says bob is, through the gateway with bob's own API key.
async fn whoami(gw: &TestGateway, key: &str) -> Result<Value> {
    let mut c = McpClient::connect(&gw.mcp_url("notes"), key, SESSION).await?;
    let r = c.call_tool("whoami", json!({})).await?;
    Ok(r.result()?.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_signs_in_connects_and_disconnects_in_the_browser() -> Result<()> {
    let Some(fx) = fixture().await? else {
        return Ok(());
    };
    let gw = &fx.gw;
    let test = "connect";

    // GIVEN bob (IdP group sales) signs in to the console at the identity provider
    let mut steps = sign_in_steps(gw, "bob", "01-sign-in");
    steps.extend([
        json!({"screenshot": "02-my-connections"}),
        json!({"attr": "#row-notes td.status", "name": "data-status", "as": "before"}),
        json!({"text": "#row-notes td.auth", "as": "auth"}),
        // WHEN he clicks Connect: the gateway's page names him and the server first
        json!({"click": "#connect-notes button", "navigates": true}),
        json!({"url": true, "as": "connect_page"}),
        json!({"text": "#user", "as": "page_user"}),
        json!({"text": "#server", "as": "page_server"}),
        json!({"screenshot": "03-connect-page"}),
        // AND continues through the provider's consent back to the gateway
        json!({"click": "#continue", "navigates": true}),
        json!({"text": "#connected", "as": "connected_page"}),
        json!({"screenshot": "04-connected"}),
        json!({"goto": format!("{}/console", gw.base)}),
        json!({"attr": "#row-notes td.status", "name": "data-status", "as": "after"}),
        json!({"text": "#row-notes td.status", "as": "after_text"}),
        json!({"count": "#disconnect-notes", "as": "disconnect_buttons"}),
        json!({"screenshot": "05-my-connections-connected"}),
        json!({"cookies": true, "as": "cookies"}),
    ]);
    let seen = browser(test, json!(steps)).await?;
    let v = &seen["values"];
    assert!(
        v["login_url"].as_str().unwrap().ends_with("/console/login"),
        "{v}"
    );
    assert!(
        v["signed_in_url"].as_str().unwrap().ends_with("/console"),
        "{v}"
    );
    assert_eq!(v["whoami"], "bob@example.com", "{v}");
    assert_eq!(v["admin_links"], 0, "bob is no admin: {v}");
    assert_eq!(v["before"], "not_connected", "{v}");
    assert_eq!(v["auth"], "oauth2", "{v}");
    assert!(
        v["connect_page"]
            .as_str()
            .unwrap()
            .contains("/oauth/connect/notes?link="),
        "{v}"
    );
    assert_eq!(v["page_user"], "bob@example.com", "{v}");
    assert_eq!(v["page_server"], "notes", "{v}");
    assert!(
        v["connected_page"].as_str().unwrap().contains("notes"),
        "{v}"
    );
    assert_eq!(v["after"], "connected", "{v}");
    assert_eq!(v["after_text"], "connected", "{v}");
    assert_eq!(v["disconnect_buttons"], 1, "{v}");
    let provider_host = fx.peers.issuer.trim_start_matches("http://");
    assert!(
        seen["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == provider_host),
        "the browser went through the provider: {seen}"
    );

    // THEN bob's MCP calls reach the upstream with his own token
    let bob_key = gw.user_key("bob@example.com").await?;
    // (an API key carries no IdP groups: admit bob by name for this check)
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/server-groups",
            Some(json!({"name": "bob-notes", "servers": ["notes"],
                "members": {"users": ["bob@example.com"]}})),
        )
        .await?;
    ensure!(s == 201, "{s} {body}");
    let said = whoami(gw, &bob_key).await?;
    assert!(said.to_string().contains("bob"), "{said}");

    // WHEN he disconnects in the console (same session)
    let cookie = session_cookie(&seen)?;
    let seen = browser(
        test,
        json!([
            {"set_cookie": {"name": cookie["name"], "value": cookie["value"], "url": gw.base}},
            {"goto": format!("{}/console", gw.base)},
            {"click": "#disconnect-notes button", "navigates": true},
            {"text": "#flash", "as": "flash"},
            {"attr": "#row-notes td.status", "name": "data-status", "as": "status"},
            {"text": "#row-notes td.status", "as": "status_text"},
            {"count": "#connect-notes", "as": "connect_buttons"},
            {"screenshot": "06-disconnected"},
        ]),
    )
    .await?;
    let v = &seen["values"];
    // THEN the page says "not connected", the provider revoked the token, the grant is gone
    assert_eq!(v["status"], "not_connected", "{v}");
    assert_eq!(v["status_text"], "not connected", "{v}");
    assert_eq!(v["connect_buttons"], 1, "{v}");
    assert!(v["flash"].as_str().unwrap().contains("revoked"), "{v}");
    assert!(
        gw.state
            .store
            .get_grant("bob@example.com", "notes")
            .await?
            .is_none()
    );
    let said = whoami(gw, &bob_key).await?;
    assert_eq!(said["isError"], true, "no grant, no upstream call: {said}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_creates_a_server_group_and_the_users_page_changes() -> Result<()> {
    let Some(fx) = fixture().await? else {
        return Ok(());
    };
    let gw = &fx.gw;
    let test = "admin";
    let carol_key = gw.user_key("carol@example.com").await?;
    let carol_page = |shot: &'static str| {
        json!([
            {"goto": format!("{}/console/login", gw.base)},
            {"fill": "#key", "value": carol_key},
            {"click": "#key-submit", "navigates": true},
            {"text": "#whoami", "as": "whoami"},
            {"count": "#row-notes", "as": "notes_rows"},
            {"count": "#nothing", "as": "nothing"},
            {"count": "#nav-admin", "as": "admin_links"},
            {"screenshot": shot},
        ])
    };

    // GIVEN carol, signed in with her API key, can use nothing yet
    let seen = browser(test, carol_page("01-carol-before")).await?;
    let v = &seen["values"];
    assert_eq!(v["whoami"], "carol@example.com", "{v}");
    assert_eq!(v["notes_rows"], 0, "{v}");
    assert_eq!(v["nothing"], 1, "{v}");
    assert_eq!(v["admin_links"], 0, "{v}");

    // WHEN alice (an admin through her IdP group) creates a server group for carol
    let group = json!({"name": "carol-notes", "servers": ["notes"],
        "members": {"users": ["carol@example.com"]}});
    let mut steps = sign_in_steps(gw, "alice", "02-admin-sign-in");
    steps.extend([
        json!({"click": "#nav-admin", "navigates": true}),
        json!({"screenshot": "03-admin"}),
        json!({"click": "#admin-server-groups", "navigates": true}),
        // a typo first: the admin API's own message comes back, nothing is stored
        json!({"fill": "#doc", "value": "{\"name\": \"carol-notes\", \"servers\": [\"nope\"]}"}),
        json!({"click": "#create-submit", "navigates": true}),
        json!({"text": "#error", "as": "error"}),
        json!({"screenshot": "04-validation-error"}),
        json!({"fill": "#doc", "value": group.to_string()}),
        json!({"click": "#create-submit", "navigates": true}),
        json!({"text": "#flash", "as": "flash"}),
        json!({"count": "#item-carol-notes", "as": "listed"}),
        json!({"screenshot": "05-server-groups"}),
        // and reviews what carol would see now
        json!({"goto": format!("{}/console/admin/catalog", gw.base)}),
        json!({"fill": "#whatif-user", "value": "carol@example.com"}),
        json!({"click": "#whatif-submit", "navigates": true}),
        json!({"count": "#endpoint-notes", "as": "whatif_notes"}),
        json!({"screenshot": "06-what-carol-sees"}),
    ]);
    let seen = browser(test, json!(steps)).await?;
    let v = &seen["values"];
    assert_eq!(v["whoami"], "alice@example.com", "{v}");
    assert_eq!(v["admin_links"], 1, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("nope"),
        "the API's validation message: {v}"
    );
    assert_eq!(v["flash"], "Created.", "{v}");
    assert_eq!(v["listed"], 1, "{v}");
    assert_eq!(v["whatif_notes"], 1, "{v}");
    let (s, stored) = gw
        .admin(Method::GET, "/admin/server-groups/carol-notes", None)
        .await?;
    assert_eq!(s, 200, "{stored}");
    assert_eq!(stored["members"]["users"], json!(["carol@example.com"]));

    // THEN carol's page lists the server, not connected
    let seen = browser(test, carol_page("07-carol-after")).await?;
    let v = &seen["values"];
    assert_eq!(v["notes_rows"], 1, "{v}");
    assert_eq!(v["nothing"], 0, "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_forms_outsiders_tampered_cookies_and_markup_are_refused_or_inert() -> Result<()> {
    let Some(fx) = fixture().await? else {
        return Ok(());
    };
    let gw = &fx.gw;
    let test = "attacks";
    // A server whose description is markup, and a group admitting bob to it by name.
    let markup = "<img src=x id=injected><script>document.title='owned'</script>";
    for (path, doc) in [
        (
            "/admin/servers",
            json!({"name": "marked", "url": "https://marked.example.com/mcp",
                "description": markup, "auth": {"type": "none"}}),
        ),
        (
            "/admin/server-groups",
            json!({"name": "marked", "servers": ["marked"],
                "members": {"users": ["bob@example.com"]}}),
        ),
    ] {
        let (s, body) = gw.admin(Method::POST, path, Some(doc)).await?;
        ensure!(s == 201, "{path}: {s} {body}");
    }
    let form = |csrf: Option<&str>| {
        let mut f = json!({"doc": json!({"name": "forged", "servers": ["notes"],
            "members": {"everyone": true}}).to_string()});
        if let Some(c) = csrf {
            f["csrf"] = c.into();
        }
        f
    };

    // An admin session (alice): a POST without the CSRF token, or with a wrong one, is
    // refused; markup in a server's description, in a draft and in a query is inert.
    let mut steps = sign_in_steps(gw, "alice", "01-admin");
    steps.extend([
        json!({"post": format!("{}/console/admin/server-groups", gw.base), "form": form(None), "as": "no_csrf"}),
        json!({"post": format!("{}/console/admin/server-groups", gw.base), "form": form(Some("guess")), "as": "wrong_csrf"}),
        json!({"goto": format!("{}/console/admin/servers", gw.base)}),
        json!({"count": "#injected", "as": "injected_list"}),
        json!({"count": "main script", "as": "scripts_list"}),
        json!({"text": "#item-marked", "as": "marked_row"}),
        json!({"screenshot": "02-markup-inert"}),
        json!({"fill": "#doc", "value": format!("{{\"name\": \"x\", \"bad\": \"{}\"", markup.replace('"', "\\\""))}),
        json!({"click": "#create-submit", "navigates": true}),
        json!({"count": "#injected", "as": "injected_draft"}),
        json!({"text": "#error", "as": "draft_error"}),
        json!({"goto": format!("{}/console/admin/catalog?user=%22%3E%3Cimg%20id%3Dinjected%3E", gw.base)}),
        json!({"count": "#injected", "as": "injected_query"}),
        json!({"attr": "#whatif-user", "name": "value", "as": "query_echo"}),
        json!({"screenshot": "03-query-inert"}),
        json!({"html": true, "as": "catalog_html"}),
        json!({"cookies": true, "as": "cookies"}),
    ]);
    let seen = browser(test, json!(steps)).await?;
    let v = &seen["values"];
    assert_eq!(v["no_csrf"]["status"], 403, "{v}");
    assert_eq!(v["wrong_csrf"]["status"], 403, "{v}");
    let (s, _) = gw
        .admin(Method::GET, "/admin/server-groups/forged", None)
        .await?;
    assert_eq!(s, 404, "a refused form stores nothing");
    assert_eq!(v["injected_list"], 0, "{v}");
    assert_eq!(v["scripts_list"], 0, "{v}");
    assert!(
        v["marked_row"].as_str().unwrap().contains("<img src=x"),
        "the markup is shown as text: {v}"
    );
    assert_eq!(v["injected_draft"], 0, "{v}");
    assert!(v["draft_error"].as_str().is_some(), "{v}");
    assert_eq!(v["injected_query"], 0, "{v}");
    assert_eq!(v["query_echo"], "\"><img id=injected>", "{v}");

    // A tampered session cookie is refused: back to the sign-in page, nothing shown.
    let cookie = session_cookie(&seen)?;
    let alice_session = cookie["value"].as_str().unwrap().to_owned();
    let value = cookie["value"].as_str().unwrap();
    let mut tampered: Vec<u8> = value.bytes().collect();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered)?;
    let seen = browser(
        test,
        json!([
            {"set_cookie": {"name": "mcpgw_console", "value": tampered, "url": gw.base}},
            {"goto": format!("{}/console/admin/servers", gw.base)},
            {"url": true, "as": "url"},
            {"count": "#whoami", "as": "whoami"},
            {"count": "#items", "as": "items"},
            {"text": "#error", "as": "error"},
            {"screenshot": "04-tampered-cookie"},
        ]),
    )
    .await?;
    let v = &seen["values"];
    assert!(v["url"].as_str().unwrap().contains("/console/login"), "{v}");
    assert_eq!(v["whoami"], 0, "{v}");
    assert_eq!(v["items"], 0, "{v}");
    assert!(v["error"].as_str().unwrap().contains("ended"), "{v}");

    // A non-admin (bob) sees no admin links and gets 403 on every admin page and form, even
    // with his own valid CSRF token.
    let mut steps = sign_in_steps(gw, "bob", "05-non-admin");
    steps.extend([
        json!({"attr": "#logout input[name=csrf]", "name": "value", "as": "csrf"}),
        json!({"count": "#row-marked", "as": "marked_rows"}),
        json!({"count": "#injected", "as": "injected_mine"}),
        json!({"goto": format!("{}/console/admin", gw.base)}),
        json!({"text": "#error", "as": "admin_error"}),
        json!({"screenshot": "06-non-admin-403"}),
        json!({"goto": format!("{}/console/admin/server-groups", gw.base)}),
        json!({"goto": format!("{}/console/admin/connections", gw.base)}),
        json!({"cookies": true, "as": "cookies"}),
    ]);
    let seen = browser(test, json!(steps)).await?;
    let v = &seen["values"];
    assert_eq!(v["admin_links"], 0, "{v}");
    assert_eq!(v["marked_rows"], 1, "{v}");
    assert_eq!(v["injected_mine"], 0, "{v}");
    let statuses: Vec<i64> = seen["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(
        statuses[statuses.len() - 3..],
        [403, 403, 403],
        "admin pages refuse bob: {seen}"
    );
    assert!(v["admin_error"].as_str().unwrap().contains("admins"), "{v}");
    // (his own session's token, in that same session: refused for the role, not the token)
    let csrf = v["csrf"].as_str().context("bob's csrf")?.to_owned();
    let cookie = session_cookie(&seen)?;
    let seen = browser(
        test,
        json!([
            {"set_cookie": {"name": "mcpgw_console", "value": cookie["value"], "url": gw.base}},
            {"post": format!("{}/console/admin/server-groups", gw.base),
                "form": form(Some(&csrf)), "as": "post"},
            {"post": format!("{}/console/admin/connections/revoke", gw.base),
                "form": {"csrf": csrf, "user": "alice@example.com", "server": "notes"}, "as": "revoke"},
        ]),
    )
    .await?;
    assert_eq!(seen["values"]["post"]["status"], 403, "{seen}");
    assert_eq!(seen["values"]["revoke"]["status"], 403, "{seen}");
    let (s, _) = gw
        .admin(Method::GET, "/admin/server-groups/forged", None)
        .await?;
    assert_eq!(s, 404, "nothing stored");

    // Removing the identity provider ends the sessions it signed in (alice's, untampered).
    let (s, body) = gw
        .admin(Method::DELETE, "/admin/identity-providers/corp", None)
        .await?;
    assert_eq!(s, 204, "{body}");
    let seen = browser(
        test,
        json!([
            {"set_cookie": {"name": "mcpgw_console", "value": alice_session, "url": gw.base}},
            {"goto": format!("{}/console", gw.base)},
            {"url": true, "as": "url"},
            {"count": "#whoami", "as": "whoami"},
        ]),
    )
    .await?;
    let v = &seen["values"];
    assert!(v["url"].as_str().unwrap().contains("/console/login"), "{v}");
    assert_eq!(v["whoami"], 0, "{v}");

    // Without any session, the console's forms and pages send the browser to sign in.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = no_redirects
        .post(format!("{}/console/admin/server-groups", gw.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("doc=%7B%7D")
        .send()
        .await?;
    let s = r.status().as_u16();
    let body = r.headers().get("location").cloned();
    assert_eq!(s, 303, "{body:?}");
    assert_eq!(body.unwrap(), "/console/login");
    Ok(())
}

/// A `per_user_token` server: the user sets a token in the console (never shown back), the
/// upstream receives it in the server's header, and the user removes it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_sets_and_removes_a_per_user_token_in_the_browser() -> Result<()> {
    if !e2e::browser::available() {
        return Ok(());
    }
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
    gw.admit_everyone("everyone", &["tracker"]).await?;
    let key = gw.user_key("erin@example.com").await?;
    let token = format!("erin-{}", mcpgw::crypto::random_token(12));
    let seen = browser(
        "token",
        json!([
            {"goto": format!("{}/console/login", gw.base)},
            {"fill": "#key", "value": key},
            {"click": "#key-submit", "navigates": true},
            {"text": "#row-tracker td.status", "as": "before"},
            {"text": "#row-tracker td.auth", "as": "auth"},
            {"screenshot": "01-no-token"},
            {"fill": "#token-tracker input[name=token]", "value": token},
            {"click": "#token-tracker button", "navigates": true},
            {"text": "#flash", "as": "saved"},
            {"text": "#row-tracker td.status", "as": "after"},
            {"html": true, "as": "page"},
            {"screenshot": "02-token-set"},
            {"cookies": true, "as": "cookies"},
        ]),
    )
    .await?;
    let v = &seen["values"];
    assert_eq!(v["before"], "no token", "{v}");
    assert_eq!(v["auth"], "per_user_token", "{v}");
    assert_eq!(v["saved"], "Token saved.", "{v}");
    assert_eq!(v["after"], "token set", "{v}");
    assert!(
        !v["page"].as_str().unwrap().contains(&token),
        "the token is never shown back"
    );
    // the upstream receives erin's token in the server's header and format
    let out =
        e2e::python_mcp_call(&gw.mcp_url("tracker"), &key, "whoami", json!({}), "auto").await?;
    assert!(out.to_string().contains(&format!("token {token}")), "{out}");

    let cookie = session_cookie(&seen)?;
    let seen = browser(
        "token",
        json!([
            {"set_cookie": {"name": "mcpgw_console", "value": cookie["value"], "url": gw.base}},
            {"goto": format!("{}/console", gw.base)},
            {"click": "#clear-token-tracker button", "navigates": true},
            {"text": "#flash", "as": "cleared"},
            {"text": "#row-tracker td.status", "as": "status"},
            {"screenshot": "03-token-removed"},
        ]),
    )
    .await?;
    let v = &seen["values"];
    assert_eq!(v["cleared"], "Token removed.", "{v}");
    assert_eq!(v["status"], "no token", "{v}");
    Ok(())
}
