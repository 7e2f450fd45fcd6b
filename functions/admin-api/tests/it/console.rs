//! The console's routes through the router, over a real SQLite store: sessions, sign-in by
//! key, and what every bad request gets (a page with the right status, nothing written).
//! The browser flows (identity provider, connect, admin pages) are in `tests/tests/it/console.rs`.

use crate::common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use common::{api, api_at, api_with};
use mcpgw::clock::FixedClock;
use mcpgw::testing::TEST_ADMIN_KEY;
use tower::ServiceExt;

pub(crate) struct Seen {
    pub status: StatusCode,
    headers: HeaderMap,
    pub body: String,
}

impl Seen {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// `name=value` of the Set-Cookie for `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }
}

pub(crate) async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> Seen {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    if let Some(t) = content_type {
        req = req.header(header::CONTENT_TYPE, t);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Seen {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

pub(crate) fn value_of(cookie: &str) -> &str {
    cookie.split(';').next().unwrap()
}

/// The login cookie and form token of a fresh sign-in page.
async fn login_token(app: &axum::Router) -> (String, String) {
    let page = send(app, "GET", "/console/login", None, None, "").await;
    assert_eq!(page.status, 200);
    let cookie = page.set_cookie("mcpgw_console_login").unwrap();
    let token = value_of(&cookie).split_once('=').unwrap().1.to_owned();
    (value_of(&cookie).to_owned(), token)
}

/// Signs in with `key`; the answer.
pub(crate) async fn sign_in(app: &axum::Router, key: &str) -> Seen {
    let (cookie, token) = login_token(app).await;
    let body = format!("login_csrf={token}&key={key}");
    send(app, "POST", "/console/login", Some(&cookie), FORM, &body).await
}

#[tokio::test]
async fn without_a_session_every_page_and_form_leads_to_sign_in() {
    let api = api();
    for (method, path) in [
        ("GET", "/console"),
        ("GET", "/console/admin/servers"),
        ("POST", "/console/admin/servers"),
        ("POST", "/console/connections/notes/connect"),
        ("POST", "/console/logout"),
    ] {
        let seen = send(&api.app, method, path, None, FORM, "csrf=x").await;
        assert_eq!(seen.status, 303, "{method} {path}");
        assert_eq!(seen.location(), "/console/login", "{method} {path}");
    }
    let page = send(&api.app, "GET", "/console/login", None, None, "").await;
    assert_eq!(page.status, 200);
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(page.body.contains("id=\"key-login\""));
    let css = send(
        &api.app,
        "GET",
        "/console/assets/console.css",
        None,
        None,
        "",
    )
    .await;
    assert_eq!(css.status, 200);
    assert!(
        css.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

#[tokio::test]
async fn key_sign_in_sets_a_sealed_http_only_cookie_and_refuses_bad_forms() {
    let api = api();
    // a good key: a session cookie, HttpOnly, SameSite=Lax, not Secure on loopback
    let ok = sign_in(&api.app, TEST_ADMIN_KEY).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(ok.location(), "/console");
    let session = ok.set_cookie("mcpgw_console").unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "{session}");
    assert!(
        !session.contains(TEST_ADMIN_KEY),
        "the key is sealed, not readable in the cookie"
    );
    let home = send(
        &api.app,
        "GET",
        "/console",
        Some(value_of(&session)),
        None,
        "",
    )
    .await;
    assert_eq!(home.status, 200);
    assert!(
        home.body.contains("id=\"nav-admin\""),
        "the admin key is an admin"
    );

    // a wrong key: 401 page, no session
    let bad = sign_in(&api.app, "mcpgw_not-a-key").await;
    assert_eq!(bad.status, 401);
    assert!(bad.set_cookie("mcpgw_console").is_none());
    assert!(bad.body.contains("not accepted"));

    // no login cookie (a form posted from elsewhere): 403
    let forged = send(
        &api.app,
        "POST",
        "/console/login",
        None,
        FORM,
        &format!("login_csrf=abc&key={TEST_ADMIN_KEY}"),
    )
    .await;
    assert_eq!(forged.status, 403);
    assert!(forged.set_cookie("mcpgw_console").is_none());

    // not a form, or too large: 415 and 413 pages
    let (cookie, token) = login_token(&api.app).await;
    let json = send(
        &api.app,
        "POST",
        "/console/login",
        Some(&cookie),
        Some("application/json"),
        "{}",
    )
    .await;
    assert_eq!(json.status, 415);
    assert!(
        json.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let huge = format!("login_csrf={token}&key={}", "k".repeat(4096));
    let big = send(
        &api.app,
        "POST",
        "/console/login",
        Some(&cookie),
        FORM,
        &huge,
    )
    .await;
    assert_eq!(big.status, 413);
}

#[tokio::test]
async fn a_secure_public_url_makes_the_cookie_secure() {
    let api = api_with(&[("MCPGW_PUBLIC_URL", "https://gw.example.com/prod")]);
    let ok = sign_in(&api.app, TEST_ADMIN_KEY).await;
    assert_eq!(ok.status, 303);
    // links and the cookie's path follow the public URL's path (an API stage)
    assert_eq!(ok.location(), "/prod/console");
    let session = ok.set_cookie("mcpgw_console").unwrap();
    assert!(session.contains("; Secure"), "{session}");
    assert!(session.contains("Path=/prod"), "{session}");
}

#[tokio::test]
async fn a_revoked_key_or_an_expired_session_ends_the_console_session() {
    let clock = Arc::new(FixedClock::at(1_800_000_000));
    let api = api_at(clock.clone());
    let (s, key) = api
        .admin(
            "POST",
            "/admin/api-keys",
            Some(serde_json::json!({"owner": "dana@example.com", "name": "console"})),
        )
        .await;
    assert_eq!(s, 201);
    let ok = sign_in(&api.app, key["key"].as_str().unwrap()).await;
    let session = value_of(&ok.set_cookie("mcpgw_console").unwrap()).to_owned();
    let home = send(&api.app, "GET", "/console", Some(&session), None, "").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("dana@example.com"));
    assert!(!home.body.contains("id=\"nav-admin\""));

    // eight hours later the session is over: back to sign-in, the cookie cleared
    clock.advance(8 * 3600 + 1);
    let late = send(&api.app, "GET", "/console", Some(&session), None, "").await;
    assert_eq!(late.status, 303);
    assert_eq!(late.location(), "/console/login?error=session");
    assert!(
        late.set_cookie("mcpgw_console")
            .unwrap()
            .contains("Max-Age=0")
    );

    // a new session, then the key is deleted: the session ends with it
    let ok = sign_in(&api.app, key["key"].as_str().unwrap()).await;
    let session = value_of(&ok.set_cookie("mcpgw_console").unwrap()).to_owned();
    let (s, _) = api
        .admin(
            "DELETE",
            &format!("/admin/api-keys/{}", key["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let after = send(&api.app, "GET", "/console", Some(&session), None, "").await;
    assert_eq!(after.status, 303);
    assert_eq!(after.location(), "/console/login?error=session");
}

#[tokio::test]
async fn sign_in_answers_that_were_never_asked_for_store_nothing() {
    let api = api();
    for query in [
        "",
        "?state=never-issued&code=c",
        "?state=never-issued&error=access_denied",
        "?code=c",
    ] {
        let seen = send(
            &api.app,
            "GET",
            &format!("/console/callback{query}"),
            None,
            None,
            "",
        )
        .await;
        assert_eq!(seen.status, 400, "{query}: {}", seen.body);
        assert!(seen.set_cookie("mcpgw_console").is_none(), "{query}");
        assert!(seen.body.contains("id=\"error\""), "{query}");
    }
    // an identity provider without a console client offers no sign-in
    let seen = send(&api.app, "GET", "/console/login/oidc/corp", None, None, "").await;
    assert_eq!(seen.status, 404);
}

/// A server's page shows its pinned authorization server read-only (the edit form's document
/// leaves it out, so saving the form back is accepted) with a "Discover again" button that
/// needs the session's CSRF token.
#[tokio::test]
async fn a_servers_page_shows_its_pinned_endpoints_and_discovers_again() {
    let api = api();
    let (s, body) = api
        .admin(
            "POST",
            "/admin/servers",
            Some(
                serde_json::json!({"name": "crm", "url": "https://crm.example.com/mcp",
                "auth": {"type": "oauth2", "client_id": "gw",
                         "authorization_url": "https://as.example.com/authorize",
                         "token_url": "https://as.example.com/token"}}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["authorization_server"]["source"], "configured",
        "{body}"
    );
    let ok = sign_in(&api.app, TEST_ADMIN_KEY).await;
    let session = value_of(&ok.set_cookie("mcpgw_console").unwrap()).to_owned();
    let page = send(
        &api.app,
        "GET",
        "/console/admin/servers/crm",
        Some(&session),
        None,
        "",
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("id=\"authorization-server\""),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("https://as.example.com/token"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"discover\""), "{}", page.body);
    let textarea = page.body.split("<textarea").nth(1).unwrap();
    assert!(!textarea.contains("authorization_server"), "{textarea}");
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    // without the CSRF token: refused
    let forged = send(
        &api.app,
        "POST",
        "/console/admin/servers/crm/discover",
        Some(&session),
        FORM,
        "csrf=forged",
    )
    .await;
    assert_ne!(forged.status, 200, "{}", forged.body);
    // with it: discovered again (all configured: nothing fetched, nothing changed)
    let done = send(
        &api.app,
        "POST",
        "/console/admin/servers/crm/discover",
        Some(&session),
        FORM,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Discovered again"), "{}", done.body);
    // another kind has no discovery
    let other = send(
        &api.app,
        "POST",
        "/console/admin/teams/crm/discover",
        Some(&session),
        FORM,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(other.status, 404, "{}", other.body);
}

#[tokio::test]
async fn the_rate_limits_page_lists_rules_and_edits_through_the_api() {
    let api = api();
    let (s, body) = api
        .admin(
            "POST",
            "/admin/rate-limits",
            Some(
                serde_json::json!({"name": "per-user", "mode": "enforce", "per": "user",
                "limits": [{"count": 60, "window": "1m"}, {"count": 1000, "window": "1d"}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let ok = sign_in(&api.app, TEST_ADMIN_KEY).await;
    let session = value_of(&ok.set_cookie("mcpgw_console").unwrap()).to_owned();
    let list = send(
        &api.app,
        "GET",
        "/console/admin/rate-limits",
        Some(&session),
        None,
        "",
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains("per-user"), "{}", list.body);
    assert!(
        list.body.contains("per user, enforce: 60/1m, 1000/1d"),
        "{}",
        list.body
    );
    let edit = send(
        &api.app,
        "GET",
        "/console/admin/rate-limits/per-user",
        Some(&session),
        None,
        "",
    )
    .await;
    assert_eq!(edit.status, 200, "{}", edit.body);
    assert!(
        edit.body.contains("&quot;window&quot;: &quot;1d&quot;"),
        "{}",
        edit.body
    );
}
