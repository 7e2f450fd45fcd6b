//! How the gateway proves who it is at an authorization server (issue 23): one encoding for
//! every request that carries its client credentials, the one RFC 6749 section 2.3.1 asks
//! for (the client id and the secret each form-urlencoded, then HTTP Basic). The id and
//! secret here hold `:`, `+`, `%` and spaces, which come out wrong at a provider that decodes
//! per 2.3.1 unless they were encoded:
//! - revocation (RFC 7009) at a strict in-process endpoint that refuses the unencoded form
//!   (what the gateway sent before), no peers needed;
//! - against the real `oidc-provider` (which decodes per 2.3.1): a user connects through the
//!   gateway's client (code exchange), calls the upstream, and disconnects: the provider
//!   accepts the revocation and then refuses the revoked refresh token;
//! - console sign-in at the real `oidc-provider` with such a console client: the code
//!   exchange through the `oauth2` crate keeps the ID token, which signs the user in.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use e2e::http_browser::Browser;
use e2e::{StoreKind, TestGateway, call_json};
use reqwest::Method;
use serde_json::{Value, json};

/// A client id and a secret that survive only if form-encoded before Basic: `:` is Basic's
/// separator, `+` decodes to a space, `%41` to `A`, and a lone `%` does not decode at all.
const ID: &str = "gw:client+1 %41";
const SECRET: &str = "s3:cr+t %zz/=";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// RFC 6749 section 2.3.1, strictly: the (client id, secret) of a Basic `header`, each part
/// decoded from `application/x-www-form-urlencoded`. `None` when a part holds anything that
/// form-encoding never produces (a raw `:`, space or `/`, a `%` that starts no escape), which
/// a provider decoding per 2.3.1 refuses or misreads.
fn rfc6749_basic(header: &str) -> Option<(String, String)> {
    let raw = B64.decode(header.strip_prefix("Basic ")?).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b if b.is_ascii_alphanumeric() || b"*-._".contains(&b) => out.push(b),
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// A revocation endpoint that accepts only this client, authenticated per RFC 6749 section
/// 2.3.1 (else 401 `invalid_client`, as a provider answers), recording each accepted form.
async fn strict_revocation_endpoint() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/revoke",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let s = s.clone();
            async move {
                let client = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(rfc6749_basic);
                if client != Some((ID.to_owned(), SECRET.to_owned())) {
                    return (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"error": "invalid_client"})),
                    );
                }
                s.lock().unwrap().push(body);
                (StatusCode::OK, axum::Json(json!({})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/revoke"), seen)
}

/// `ID:SECRET` as RFC 6749 section 2.3.1 sends them, for the test's own calls.
fn encoded_basic() -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        B64.encode(format!("{}:{}", enc(ID), enc(SECRET)))
    )
}

#[test]
fn the_strict_decoder_takes_the_encoded_form_only() {
    assert_eq!(
        rfc6749_basic(&encoded_basic()),
        Some((ID.to_owned(), SECRET.to_owned()))
    );
    let unencoded = format!("Basic {}", B64.encode(format!("{ID}:{SECRET}")));
    assert_eq!(rfc6749_basic(&unencoded), None);
}

/// Stores a grant for (`user`, `server`) holding the tokens `RT-{user}` and `AT-{user}`.
async fn store_grant(gw: &TestGateway, user: &str, server: &str) -> Result<()> {
    let ring = gw.state.keyring.get().await?;
    let tokens = mcpgw::grants::TokenSet {
        access_token: format!("AT-{user}"),
        refresh_token: Some(format!("RT-{user}")),
        expires_at: Some(4_000_000_000),
    };
    let grant = mcpgw::domain::Grant {
        user: user.into(),
        server: server.into(),
        version: 1,
        sealed_tokens: tokens.seal(&ring, user, server)?,
        status: mcpgw::domain::GrantStatus::Active,
        scopes: vec!["read".into()],
        access_expires_at: tokens.expires_at,
        refresh_at: None,
        updated_at: 1_700_000_000,
        last_refresh_at: None,
        last_error: None,
        refresh_lease_until: None,
    };
    gw.state.store.save_grant_if_version(&grant, None).await?;
    Ok(())
}

/// `DELETE /me/connections/{server}` as the owner of `key`: what the provider said.
async fn disconnect(gw: &TestGateway, key: &str, server: &str) -> Result<Value> {
    let (s, body) = call_json(
        Method::DELETE,
        &format!("{}/me/connections/{server}", gw.base),
        Some(key),
        None,
    )
    .await?;
    ensure!(s == 200 && body["deleted"] == true, "{s} {body}");
    Ok(body["provider_revocation"].clone())
}

#[tokio::test]
async fn revocation_sends_the_client_credentials_form_encoded() -> Result<()> {
    // GIVEN a revocation endpoint that decodes client credentials per RFC 6749 section 2.3.1,
    // and so refuses them sent without the encoding
    let (url, seen) = strict_revocation_endpoint().await;
    mcpgw::crypto::install_tls_provider();
    let unencoded = reqwest::Client::new()
        .post(&url)
        .basic_auth(ID, Some(SECRET))
        .form(&[("token", "x")])
        .send()
        .await?;
    assert_eq!(unencoded.status(), 401, "the endpoint is strict");
    // AND a server whose client at that provider has such an id and secret
    let gw =
        TestGateway::start(StoreKind::Sqlite, &[("MCPGW_SECRET_STRICT_CLIENT", SECRET)]).await?;
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "docs", "url": "http://127.0.0.1:9/mcp",
                "auth": {"type": "oauth2", "client_id": ID,
                         "client_secret": "secret://strict-client",
                         "authorization_url": "http://127.0.0.1:9/auth",
                         "token_url": "http://127.0.0.1:9/token", "revocation_url": url}})),
        )
        .await?;
    ensure!(s == 201, "{s} {body}");
    gw.admit_everyone("everyone", &["docs"]).await?;
    let alice = gw.user_key("alice@example.com").await?;
    store_grant(&gw, "alice@example.com", "docs").await?;

    // WHEN alice disconnects
    let revocation = disconnect(&gw, &alice, "docs").await?;

    // THEN the provider accepted the gateway's client and revoked the refresh token
    assert_eq!(
        revocation,
        json!({"status": "revoked", "token": "refresh_token"})
    );
    let forms = seen.lock().unwrap().clone();
    assert_eq!(forms.len(), 1, "{forms:?}");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(forms[0].as_bytes())
        .into_owned()
        .collect();
    assert!(
        form.contains(&("token".into(), "RT-alice@example.com".into())),
        "{form:?}"
    );
    assert!(
        form.iter().all(|(k, _)| k != "client_secret"),
        "the secret travels in the header only: {form:?}"
    );
    Ok(())
}

/// The real provider with this client as its static confidential client, redirecting to
/// `redirect`; `None` when the peers are not set up.
async fn provider_for(redirect: &str) -> Result<Option<e2e::oauth_peers::Peers>> {
    e2e::oauth_peers::start(
        "600",
        &[
            ("OIDC_CLIENT_ID", ID),
            ("OIDC_CLIENT_SECRET", SECRET),
            ("OIDC_REDIRECT", redirect),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_decodes_per_rfc_6749_takes_every_request_of_the_gateways_client()
-> Result<()> {
    let gw =
        TestGateway::start(StoreKind::Sqlite, &[("MCPGW_SECRET_NOTES_CLIENT", SECRET)]).await?;
    let Some(peers) = provider_for(&format!("{}/oauth/callback/notes", gw.base)).await? else {
        return Ok(());
    };
    // The provider itself: the unencoded form of these credentials is refused.
    let unencoded = reqwest::Client::new()
        .post(format!("{}/token", peers.issuer))
        .basic_auth(ID, Some(SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await?;
    assert_eq!(unencoded.status(), 400, "oidc-provider decodes per 2.3.1");
    // GIVEN the upstream `notes` whose client at the provider is this one
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "notes", "url": peers.upstream,
                "auth": {"type": "oauth2", "client_id": ID,
                         "client_secret": "secret://notes-client", "scopes": ["mcp:read"]}})),
        )
        .await?;
    ensure!(s == 201, "{s} {body}");
    gw.admit_everyone("everyone", &["notes"]).await?;
    let alice = gw.user_key("alice@example.com").await?;

    // WHEN alice connects in her browser (the code exchange authenticates the client)
    let browser = Browser::new()?;
    let page = browser
        .get_with(&format!("{}/oauth/connect/notes", gw.base), Some(&alice))
        .await?;
    assert_eq!(page.status, 200, "{}", page.body);
    let (done, visited) = browser
        .follow(&page.link("continue").context("continue link")?, "alice")
        .await?;
    // THEN she is connected, and the upstream sees her token, issued to this client
    assert_eq!(done.status, 200, "{visited:?} {}", done.body);
    assert!(done.body.contains("id=\"connected\""), "{}", done.body);
    let me = e2e::oauth_peers::whoami(&gw.mcp_url("notes"), &alice).await?;
    assert_eq!(
        (me["sub"].as_str(), me["client_id"].as_str()),
        (Some("alice"), Some(ID))
    );

    // WHEN she disconnects (her refresh token as stored, to try at the provider after)
    let sealed = gw
        .state
        .store
        .get_grant("alice@example.com", "notes")
        .await?
        .context("grant")?;
    let ring = gw.state.keyring.get().await?;
    let tokens =
        mcpgw::grants::TokenSet::open(&ring, &sealed.sealed_tokens, "alice@example.com", "notes")?;
    let refresh = tokens.refresh_token.context("a refresh token")?;
    let revocation = disconnect(&gw, &alice, "notes").await?;
    // THEN the provider authenticated the client and revoked the refresh token
    assert_eq!(
        revocation,
        json!({"status": "revoked", "token": "refresh_token"})
    );
    // AND refuses it from now on (to this very client, properly authenticated)
    let answer = reqwest::Client::new()
        .post(format!("{}/token", peers.issuer))
        .header("authorization", encoded_basic())
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
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_signs_in_with_such_a_client_through_the_oauth2_crate() -> Result<()> {
    let gw = TestGateway::start(StoreKind::Sqlite, &[("MCPGW_SECRET_CONSOLE", SECRET)]).await?;
    let Some(peers) = provider_for(&format!("{}/console/callback", gw.base)).await? else {
        return Ok(());
    };
    // GIVEN the identity provider `corp` offering console sign-in with this client
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/identity-providers",
            Some(
                json!({"name": "corp", "issuer": peers.issuer, "admin_groups": ["mcp-admins"],
                "console": {"client_id": ID, "client_secret": "secret://console",
                            "scopes": ["email", "groups"]}}),
            ),
        )
        .await?;
    ensure!(s == 201, "{s} {body}");

    // WHEN bob signs in there
    let browser = Browser::new()?;
    let (page, visited) = browser
        .follow(&format!("{}/console/login/oidc/corp", gw.base), "bob")
        .await?;

    // THEN the code exchange kept the ID token, verified for this client: he is signed in
    assert!(
        visited.iter().any(|u| u.starts_with(&peers.issuer)),
        "through the provider: {visited:?}"
    );
    assert_eq!(page.status, 200, "{visited:?} {}", page.body);
    assert_eq!(page.url, format!("{}/console", gw.base), "{visited:?}");
    assert!(
        page.text_of("whoami")
            .is_some_and(|w| w.contains("bob@example.com")),
        "{}",
        page.body
    );
    assert!(browser.cookie("mcpgw_console").is_some());
    Ok(())
}
