//! Discovered endpoints are pinned and validated (issue 22, items 2 and 3), against a small
//! fake upstream written here (its protected-resource and authorization-server metadata are
//! whatever the test says, changed between calls) and, for the baselines, the real
//! `oidc-provider` with the JWT-protected Python MCP server:
//! - hostile metadata (`javascript:`, `data:`, shell characters, whitespace, userinfo,
//!   fragments, a foreign or missing issuer, a foreign resource) is a 422 at save naming the
//!   field, and nothing is stored; a link-local endpoint is refused by the egress policy;
//! - metadata that changes after save (token, registration and revocation endpoints moved to
//!   an attacker's listener) moves nothing: registration, connect, refresh, revocation and
//!   machine tokens use the pinned endpoints, the attacker sees no request, until an admin
//!   discovers again (validated too);
//! - an upstream unreachable at save: saved with a warning, pinned at the first connect
//!   (recorded as such), hostile metadata then refused on the connect page; two gateways
//!   pinning at once agree on one pin;
//! - RFC 9207: a callback without `iss` is refused when the pinned metadata says the provider
//!   sends it, a wrong `iss` always; the right one connects.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use e2e::{StoreKind, TestGateway, call_json};
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The fake upstream: protected-resource metadata, authorization-server metadata, and the
// authorization server's token, registration and revocation endpoints.

/// A form posted to `/token` and the Authorization header it came with.
type TokenRequest = (BTreeMap<String, String>, String);

#[derive(Clone, Default)]
struct Shared {
    /// `GET /.well-known/oauth-protected-resource/mcp` (`Null`: 404).
    prm: Arc<Mutex<Value>>,
    /// `GET /.well-known/oauth-authorization-server` (`Null`: 404).
    meta: Arc<Mutex<Value>>,
    /// When set, every read of the authorization-server metadata names a new token endpoint
    /// (`/token/{n}`).
    rotate_token: Arc<std::sync::atomic::AtomicBool>,
    meta_reads: Arc<Mutex<u32>>,
    /// Every request: `METHOD /path`.
    seen: Arc<Mutex<Vec<String>>>,
    /// What was posted to `/token`.
    token_forms: Arc<Mutex<Vec<TokenRequest>>>,
    tokens_issued: Arc<Mutex<u32>>,
}

struct Fake {
    base: String,
    shared: Shared,
}

impl Fake {
    /// A fake on a free port, serving metadata naming itself.
    async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener)
    }

    /// A fake on `port` (reserved earlier, unreachable until now).
    async fn start_on(port: u16) -> Fake {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        Self::serve(listener)
    }

    fn serve(listener: tokio::net::TcpListener) -> Fake {
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared::default();
        *shared.prm.lock().unwrap() = json!({
            "resource": format!("{base}/mcp"),
            "authorization_servers": [base],
        });
        *shared.meta.lock().unwrap() = metadata_of(&base, &base);
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { base, shared }
    }

    fn edit_meta(&self, f: impl FnOnce(&mut Value)) {
        f(&mut self.shared.meta.lock().unwrap());
    }

    fn edit_prm(&self, f: impl FnOnce(&mut Value)) {
        f(&mut self.shared.prm.lock().unwrap());
    }

    fn seen(&self) -> Vec<String> {
        self.shared.seen.lock().unwrap().clone()
    }

    fn token_forms(&self) -> Vec<TokenRequest> {
        self.shared.token_forms.lock().unwrap().clone()
    }

    fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }
}

/// Authorization-server metadata for the issuer `issuer` whose endpoints live at `at`.
fn metadata_of(issuer: &str, at: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{at}/authorize"),
        "token_endpoint": format!("{at}/token"),
        "revocation_endpoint": format!("{at}/revoke"),
        "registration_endpoint": format!("{at}/register"),
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "authorization_response_iss_parameter_supported": true,
    })
}

async fn handle(State(s): State<Shared>, req: Request) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    s.seen.lock().unwrap().push(format!("{method} {path}"));
    let doc = |v: &Mutex<Value>| {
        let v = v.lock().unwrap().clone();
        if v.is_null() {
            StatusCode::NOT_FOUND.into_response()
        } else {
            axum::Json(v).into_response()
        }
    };
    match (method.as_str(), path.as_str()) {
        ("GET", "/.well-known/oauth-protected-resource/mcp") => doc(&s.prm),
        ("GET", "/.well-known/oauth-authorization-server")
            if s.rotate_token.load(std::sync::atomic::Ordering::SeqCst) =>
        {
            let n = {
                let mut n = s.meta_reads.lock().unwrap();
                *n += 1;
                *n
            };
            // Slow enough that every racer is inside its discovery before the first one pins
            // (else a fast machine lets the first finish alone and the race is not a race).
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let mut m = s.meta.lock().unwrap().clone();
            let base = m["issuer"].as_str().unwrap_or_default().to_owned();
            m["token_endpoint"] = json!(format!("{base}/token/{n}"));
            axum::Json(m).into_response()
        }
        ("GET", "/.well-known/oauth-authorization-server") => doc(&s.meta),
        ("POST", "/token") => {
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            s.token_forms.lock().unwrap().push((form, auth));
            let n = {
                let mut n = s.tokens_issued.lock().unwrap();
                *n += 1;
                *n
            };
            axum::Json(json!({"access_token": format!("AT{n}"), "token_type": "Bearer",
                "expires_in": 3600, "refresh_token": format!("RT{n}"), "scope": "read"}))
            .into_response()
        }
        ("POST", "/register") => (
            StatusCode::CREATED,
            axum::Json(json!({"client_id": "registered-client", "client_secret": "registered-secret",
                "client_secret_expires_at": 0, "token_endpoint_auth_method": "client_secret_basic"})),
        )
            .into_response(),
        ("POST", "/revoke") => StatusCode::OK.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    e2e::oauth_peers::free_port().unwrap()
}

// ---------------------------------------------------------------------------------------------
// A browser, by hand: no redirects followed, cookies kept (the connect flow may bind itself to
// the browser with a cookie).

struct Browser {
    http: reqwest::Client,
    cookies: Mutex<BTreeMap<String, String>>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Mutex::default(),
        }
    }

    /// GET `url`: (status, Location, body).
    async fn get(&self, url: &str, bearer: Option<&str>) -> Result<(u16, String, String)> {
        let mut req = self.http.get(url);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let jar = self
            .cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        if !jar.is_empty() {
            req = req.header("cookie", jar);
        }
        let r = req.send().await?;
        for c in r.headers().get_all("set-cookie") {
            let pair = c.to_str()?.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                self.cookies
                    .lock()
                    .unwrap()
                    .insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((r.status().as_u16(), location, r.text().await?))
    }
}

/// Starts `key`'s connect of `server` in a fresh browser: the connect page, then its continue
/// link; the browser and where the gateway sent it (the provider's authorization URL).
async fn start_connect(gw: &TestGateway, key: &str, server: &str) -> Result<(Browser, url::Url)> {
    let b = Browser::new();
    let (s, _, page) = b
        .get(&format!("{}/oauth/connect/{server}", gw.base), Some(key))
        .await?;
    ensure!(s == 200, "connect page: {s} {page}");
    let go = page
        .split("id=\"continue\" href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .context("continue link")?
        .replace("&amp;", "&");
    let (s, location, body) = b.get(&format!("{}{go}", gw.base), None).await?;
    ensure!(s == 302, "continue: {s} {body}");
    Ok((b, url::Url::parse(&location)?))
}

fn state_of(authorize: &url::Url) -> String {
    authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The provider sends the browser back: (status, page).
async fn callback(
    gw: &TestGateway,
    b: &Browser,
    server: &str,
    state: &str,
    iss: Option<&str>,
) -> Result<(u16, String)> {
    let mut url = url::Url::parse(&format!("{}/oauth/callback/{server}", gw.base))?;
    url.query_pairs_mut()
        .append_pair("code", "the-code")
        .append_pair("state", state);
    if let Some(i) = iss {
        url.query_pairs_mut().append_pair("iss", i);
    }
    let (s, _, page) = b.get(url.as_str(), None).await?;
    Ok((s, page))
}

async fn server_view(gw: &TestGateway, name: &str) -> Result<(u16, Value)> {
    gw.admin(Method::GET, &format!("/admin/servers/{name}"), None)
        .await
}

fn oauth2(url: &str, name: &str) -> Value {
    json!({"name": name, "url": url,
        "auth": {"type": "oauth2", "client_id": "gw", "client_secret": "secret://crm", "scopes": ["read"]}})
}

const SECRETS: &[(&str, &str)] = &[("MCPGW_SECRET_CRM", "crm-client-secret")];

// ---------------------------------------------------------------------------------------------

/// GIVEN metadata that breaks one rule WHEN an admin saves the server THEN 422
/// `invalid_discovered_metadata` naming the field, and nothing is stored; the same upstream
/// with good metadata saves and shows what was pinned.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_metadata_is_refused_at_save_and_nothing_is_stored() -> Result<()> {
    let gw = TestGateway::start(StoreKind::Sqlite, SECRETS).await?;
    let fake = Fake::start().await;
    let base = fake.base.clone();
    type Edit = Box<dyn Fn(&Fake)>;
    fn edit(f: impl Fn(&Fake) + 'static) -> Edit {
        Box::new(f)
    }
    let meta =
        |field: &'static str, v: Value| edit(move |f: &Fake| f.edit_meta(|m| m[field] = v.clone()));
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "javascript",
            "authorization_endpoint",
            meta("authorization_endpoint", json!("javascript:alert(1)")),
        ),
        (
            "data",
            "authorization_endpoint",
            meta(
                "authorization_endpoint",
                json!("data:text/html,<script>alert(1)</script>"),
            ),
        ),
        (
            "file",
            "token_endpoint",
            meta("token_endpoint", json!("file:///etc/passwd")),
        ),
        (
            "ftp",
            "token_endpoint",
            meta("token_endpoint", json!("ftp://a.example/token")),
        ),
        (
            "shell-subst",
            "authorization_endpoint",
            meta("authorization_endpoint", json!("https://a.example/$(id)")),
        ),
        (
            "backticks",
            "token_endpoint",
            meta("token_endpoint", json!("https://a.example/`id`")),
        ),
        (
            "space",
            "authorization_endpoint",
            meta("authorization_endpoint", json!("https://a.example/a b")),
        ),
        (
            "newline",
            "token_endpoint",
            meta(
                "token_endpoint",
                json!("https://a.example/token\nHost: evil"),
            ),
        ),
        (
            "tab",
            "token_endpoint",
            meta("token_endpoint", json!("https://a.example/to\tken")),
        ),
        (
            "userinfo",
            "token_endpoint",
            meta("token_endpoint", json!("https://user:pw@a.example/token")),
        ),
        (
            "fragment",
            "token_endpoint",
            meta("token_endpoint", json!("https://a.example/token#x")),
        ),
        (
            "revocation",
            "revocation_endpoint",
            meta("revocation_endpoint", json!("javascript:alert(1)")),
        ),
        (
            "not-a-string",
            "token_endpoint",
            meta("token_endpoint", json!({"url": "x"})),
        ),
        (
            "foreign-issuer",
            "issuer",
            meta("issuer", json!("https://evil.example")),
        ),
        (
            "issuer-slash",
            "issuer",
            meta("issuer", json!(format!("{base}/"))),
        ),
        (
            "no-issuer",
            "issuer",
            edit(|f: &Fake| {
                f.edit_meta(|m| {
                    m.as_object_mut().unwrap().remove("issuer");
                })
            }),
        ),
        (
            "foreign-resource",
            "resource",
            edit(|f: &Fake| f.edit_prm(|p| p["resource"] = json!("https://other.example/mcp"))),
        ),
        (
            "no-resource",
            "resource",
            edit(|f: &Fake| {
                f.edit_prm(|p| {
                    p.as_object_mut().unwrap().remove("resource");
                })
            }),
        ),
        (
            "issuer-scheme",
            "authorization_servers[0]",
            edit(|f: &Fake| {
                f.edit_prm(|p| p["authorization_servers"] = json!(["javascript:alert(1)"]))
            }),
        ),
        (
            "no-token",
            "token_endpoint",
            edit(|f: &Fake| {
                f.edit_meta(|m| {
                    m.as_object_mut().unwrap().remove("token_endpoint");
                })
            }),
        ),
    ];
    for (name, field, edit) in &cases {
        let before = (
            fake.shared.prm.lock().unwrap().clone(),
            fake.shared.meta.lock().unwrap().clone(),
        );
        edit(&fake);
        let (s, body) = gw
            .admin(
                Method::POST,
                "/admin/servers",
                Some(oauth2(&fake.mcp_url(), name)),
            )
            .await?;
        assert_eq!(s, 422, "{name}: {body}");
        assert_eq!(
            body["error"]["code"], "invalid_discovered_metadata",
            "{name}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field),
            "{name}: the message names {field}: {message}"
        );
        assert!(
            !message.contains('\n'),
            "{name}: no raw control characters: {message}"
        );
        let (s, _) = server_view(&gw, name).await?;
        assert_eq!(s, 404, "{name}: nothing stored");
        *fake.shared.prm.lock().unwrap() = before.0;
        *fake.shared.meta.lock().unwrap() = before.1;
    }
    // A self-registering server needs the registration endpoint, checked like the rest.
    fake.edit_meta(|m| m["registration_endpoint"] = json!("https://a.example/reg#x"));
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "dcr", "url": fake.mcp_url(),
            "auth": {"type": "oauth2"}})),
        )
        .await?;
    assert_eq!(s, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("registration_endpoint"),
        "{body}"
    );
    fake.edit_meta(|m| {
        m.as_object_mut().unwrap().remove("registration_endpoint");
    });
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "dcr", "url": fake.mcp_url(),
            "auth": {"type": "oauth2"}})),
        )
        .await?;
    assert_eq!(
        s, 422,
        "without registration and without a client id: {body}"
    );
    *fake.shared.meta.lock().unwrap() = metadata_of(&base, &base);
    let (_, list) = gw.admin(Method::GET, "/admin/servers", None).await?;
    assert_eq!(list["servers"], json!([]), "nothing stored: {list}");

    // The pin is the gateway's to write: a request body cannot carry one.
    let mut smuggled = oauth2(&fake.mcp_url(), "smuggled");
    smuggled["authorization_server"] = json!({"token_endpoint": "https://attacker.example/token",
        "discovered_at": 0, "source": "configured", "authorization_response_iss_parameter_supported": false});
    let (s, body) = gw
        .admin(Method::POST, "/admin/servers", Some(smuggled))
        .await?;
    assert!((400..500).contains(&s), "{s} {body}");
    assert_eq!(server_view(&gw, "smuggled").await?.0, 404);

    // Configured endpoints follow the same rules.
    let (s, body) = gw
        .admin(Method::POST, "/admin/servers", Some(json!({"name": "conf", "url": fake.mcp_url(),
            "auth": {"type": "oauth2", "client_id": "gw", "authorization_url": "https://a.example/$(id)",
                     "token_url": "https://a.example/token"}})))
        .await?;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (422, Some("invalid_field")),
        "{body}"
    );

    // BASELINE: the same upstream with good metadata
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(oauth2(&fake.mcp_url(), "crm")),
        )
        .await?;
    assert_eq!(s, 201, "{body}");
    assert!(body.get("warnings").is_none(), "{body}");
    let pin = &body["authorization_server"];
    assert_eq!(pin["source"], "discovered_at_save", "{body}");
    assert_eq!(pin["issuer"], base.as_str());
    assert_eq!(pin["authorization_endpoint"], format!("{base}/authorize"));
    assert_eq!(pin["token_endpoint"], format!("{base}/token"));
    assert_eq!(pin["revocation_endpoint"], format!("{base}/revoke"));
    assert_eq!(pin["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        pin["metadata_url"],
        format!("{base}/.well-known/oauth-authorization-server")
    );
    assert_eq!(
        pin["resource_metadata_url"],
        format!("{base}/.well-known/oauth-protected-resource/mcp")
    );
    assert!(
        pin["discovered_at"].as_str().unwrap().ends_with('Z'),
        "{pin}"
    );
    let (_, read) = server_view(&gw, "crm").await?;
    assert_eq!(read["authorization_server"], *pin, "GET shows the pin");

    // A PUT pointing the server at a hostile upstream is refused and keeps the stored one.
    let evil = Fake::start().await;
    evil.edit_meta(|m| m["token_endpoint"] = json!("https://a.example/`id`"));
    let (s, body) = gw
        .admin(
            Method::PUT,
            "/admin/servers/crm",
            Some(oauth2(&evil.mcp_url(), "crm")),
        )
        .await?;
    assert_eq!(s, 422, "{body}");
    let (_, after) = server_view(&gw, "crm").await?;
    assert_eq!(after, read, "nothing changed");
    Ok(())
}

/// Link-local and cloud-metadata endpoints in discovered metadata are refused by the egress
/// policy (the gateway's own loopback upstreams stay allowed in local mode): 422 naming the
/// field and the rule, nothing stored; non-canonical spellings of the address too.
#[tokio::test(flavor = "multi_thread")]
async fn link_local_endpoints_are_refused_by_the_egress_policy() -> Result<()> {
    let gw = TestGateway::start(StoreKind::Sqlite, SECRETS).await?;
    let fake = Fake::start().await;
    for (i, (field, target, rule)) in [
        (
            "token_endpoint",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "metadata",
        ),
        (
            "authorization_endpoint",
            "http://169.254.1.1/authorize",
            "link-local",
        ),
        (
            "token_endpoint",
            "http://[::ffff:169.254.169.254]/token",
            "metadata",
        ),
        (
            "revocation_endpoint",
            "http://0xa9fea9fe/revoke",
            "metadata",
        ),
        (
            "registration_endpoint",
            "https://[fe80::1]/register",
            "link-local",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let before = fake.shared.meta.lock().unwrap().clone();
        fake.edit_meta(|m| m[field] = json!(target));
        let name = format!("imds-{i}");
        let (s, body) = gw
            .admin(
                Method::POST,
                "/admin/servers",
                Some(oauth2(&fake.mcp_url(), &name)),
            )
            .await?;
        assert_eq!(s, 422, "{target}: {body}");
        assert_eq!(
            body["error"]["code"], "invalid_discovered_metadata",
            "{body}"
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field) && message.contains("egress policy") && message.contains(rule),
            "{target}: {message}"
        );
        assert_eq!(server_view(&gw, &name).await?.0, 404, "nothing stored");
        *fake.shared.meta.lock().unwrap() = before;
    }
    // BASELINE: the same upstream with its own (loopback, allowed locally) endpoints
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(oauth2(&fake.mcp_url(), "ok")),
        )
        .await?;
    assert_eq!(s, 201, "{body}");
    Ok(())
}

/// GIVEN a pinned server WHEN its upstream's metadata moves the token, registration,
/// revocation and authorization endpoints to an attacker THEN registration, connect, refresh,
/// revocation and machine tokens still use the pinned ones, and the attacker (who would have
/// received the client secret) sees nothing; an unrelated edit keeps the pin; after an admin
/// discovers again the new endpoints are shown (and a hostile rediscovery changes nothing).
#[tokio::test(flavor = "multi_thread")]
async fn metadata_changed_after_save_moves_nothing_until_an_admin_discovers_again() -> Result<()> {
    let gw = TestGateway::start(StoreKind::Sqlite, SECRETS).await?;
    let fake = Fake::start().await;
    let attacker = Fake::start().await;
    // GIVEN a self-registering server and a client-credentials server, pinned at save
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "crm", "url": fake.mcp_url(),
            "auth": {"type": "oauth2", "scopes": ["read"]}})),
        )
        .await?;
    assert_eq!(s, 201, "{body}");
    let (s, body) = gw
        .admin(Method::POST, "/admin/servers", Some(json!({"name": "machine", "url": fake.mcp_url(),
            "auth": {"type": "oauth2_client_credentials", "client_id": "m2m", "client_secret": "secret://crm"}})))
        .await?;
    assert_eq!(s, 201, "{body}");
    gw.admit_everyone("everyone", &["crm", "machine"]).await?;
    let alice = gw.user_key("alice@example.com").await?;
    let (_, pinned) = server_view(&gw, "crm").await?;

    // WHEN the upstream's metadata moves every endpoint to the attacker
    fake.edit_meta(|m| *m = metadata_of(&fake.base, &attacker.base));
    // AND an admin edits something unrelated
    let (s, body) = gw
        .admin(
            Method::PUT,
            "/admin/servers/crm",
            Some(json!({"url": fake.mcp_url(),
            "description": "CRM", "auth": {"type": "oauth2", "scopes": ["read", "write"]}})),
        )
        .await?;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["authorization_server"], pinned["authorization_server"],
        "the pin is kept"
    );

    // THEN alice connects through the pinned endpoints: registration, authorization, token
    let (b, authorize) = start_connect(&gw, &alice, "crm").await?;
    assert!(
        authorize
            .as_str()
            .starts_with(&format!("{}/authorize?", fake.base)),
        "the browser goes to the pinned authorization endpoint: {authorize}"
    );
    let (s, page) = callback(&gw, &b, "crm", &state_of(&authorize), Some(&fake.base)).await?;
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("id=\"connected\""), "{page}");
    assert!(
        fake.seen().contains(&"POST /register".to_owned()),
        "{:?}",
        fake.seen()
    );
    let forms = fake.token_forms();
    assert_eq!(forms.len(), 1, "{forms:?}");
    assert_eq!(forms[0].0["grant_type"], "authorization_code");
    assert!(
        forms[0].1.starts_with("Basic "),
        "the registered client's secret went to the pinned endpoint"
    );

    // AND the scheduled refresh uses the pinned token endpoint
    let later = gw.state_later(3600)?;
    let report = token_refresh::sweep(&later).await?;
    assert_eq!((report.refreshed, report.failed), (1, 0), "{report:?}");
    let forms = fake.token_forms();
    assert_eq!(forms.len(), 2);
    assert_eq!(forms[1].0["grant_type"], "refresh_token");

    // AND the machine token comes from the pinned token endpoint with the configured secret
    let machine = gw.state.server("machine").await?.context("machine")?;
    let token = mcpgw::grants::machine::token(&gw.state.grants, &machine, None).await?;
    assert!(token.starts_with("AT"), "{token}");
    let forms = fake.token_forms();
    assert_eq!(forms[2].0["grant_type"], "client_credentials");

    // AND disconnecting revokes at the pinned revocation endpoint
    let (s, body) = call_json(
        Method::DELETE,
        &format!("{}/me/connections/crm", gw.base),
        Some(&alice),
        None,
    )
    .await?;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["provider_revocation"]["status"], "revoked", "{body}");
    assert!(fake.seen().contains(&"POST /revoke".to_owned()));
    assert!(
        attacker.seen().is_empty(),
        "the attacker saw: {:?}",
        attacker.seen()
    );

    // WHEN an admin discovers again THEN the new endpoints are shown, and said to have changed
    let (s, body) = gw
        .admin(Method::POST, "/admin/servers/crm/discover", None)
        .await?;
    assert_eq!(s, 200, "{body}");
    let pin = &body["authorization_server"];
    assert_eq!(pin["source"], "rediscovered_by_admin");
    assert_eq!(pin["token_endpoint"], format!("{}/token", attacker.base));
    let changed: Vec<&str> = body["changed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for f in [
        "authorization_endpoint",
        "token_endpoint",
        "revocation_endpoint",
        "registration_endpoint",
    ] {
        assert!(changed.contains(&f), "{f} in {changed:?}");
    }
    assert!(!changed.contains(&"issuer"), "{changed:?}");
    let (_, read) = server_view(&gw, "crm").await?;
    assert_eq!(read["authorization_server"], *pin);
    // AND a rediscovery of hostile metadata is refused and keeps the pin
    fake.edit_meta(|m| m["token_endpoint"] = json!("https://a.example/token?x=$(id)"));
    let (s, body) = gw
        .admin(Method::POST, "/admin/servers/crm/discover", None)
        .await?;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (422, Some("invalid_discovered_metadata")),
        "{body}"
    );
    let (_, again) = server_view(&gw, "crm").await?;
    assert_eq!(again, read, "unchanged");
    // AND discovery is for admins, for OAuth servers, for servers that exist
    let (s, _) = call_json(
        Method::POST,
        &format!("{}/admin/servers/crm/discover", gw.base),
        Some(&alice),
        None,
    )
    .await?;
    assert_eq!(s, 403);
    let (s, body) = gw
        .admin(Method::POST, "/admin/servers/nope/discover", None)
        .await?;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    gw.admin(
        Method::POST,
        "/admin/servers",
        Some(json!({"name": "plain", "url": fake.mcp_url(), "auth": {"type": "none"}})),
    )
    .await?;
    let (s, body) = gw
        .admin(Method::POST, "/admin/servers/plain/discover", None)
        .await?;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (422, Some("not_oauth")),
        "{body}"
    );
    Ok(())
}

/// GIVEN an upstream unreachable at save THEN the server is saved with a warning and nothing
/// pinned; the first connect discovers and pins (`discovered_at_first_use`), later connects
/// use that pin even after the metadata changes; hostile metadata at first use is a failed
/// connect page and pins nothing.
#[tokio::test(flavor = "multi_thread")]
async fn unreachable_at_save_is_pinned_at_first_use_and_hostile_first_use_pins_nothing()
-> Result<()> {
    let gw = TestGateway::start(StoreKind::Sqlite, SECRETS).await?;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let (s, body) = gw
        .admin(Method::POST, "/admin/servers", Some(oauth2(&url, "crm")))
        .await?;
    assert_eq!(s, 201, "{body}");
    let warning = body["warnings"][0].as_str().context("a warning")?;
    assert!(warning.contains("first connect"), "{warning}");
    assert!(body.get("authorization_server").is_none(), "{body}");
    gw.admit_everyone("everyone", &["crm"]).await?;
    let alice = gw.user_key("alice@example.com").await?;
    let (s, _) = gw
        .admin(Method::POST, "/admin/servers/crm/discover", None)
        .await?;
    assert_eq!(
        s, 502,
        "still unreachable: the admin is told, nothing changes"
    );

    // WHEN the upstream comes up and alice connects
    let fake = Fake::start_on(port).await;
    let (b, authorize) = start_connect(&gw, &alice, "crm").await?;
    assert!(
        authorize
            .as_str()
            .starts_with(&format!("{}/authorize?", fake.base))
    );
    // THEN the endpoints are pinned, recorded as trust on first use
    let (_, read) = server_view(&gw, "crm").await?;
    let pin = read["authorization_server"].clone();
    assert_eq!(pin["source"], "discovered_at_first_use", "{read}");
    assert_eq!(pin["token_endpoint"], format!("{}/token", fake.base));
    // AND a later change of the metadata moves nothing
    let attacker = Fake::start().await;
    fake.edit_meta(|m| *m = metadata_of(&fake.base, &attacker.base));
    let (s, page) = callback(&gw, &b, "crm", &state_of(&authorize), Some(&fake.base)).await?;
    assert_eq!(s, 200, "{page}");
    let (b2, authorize2) = start_connect(&gw, &alice, "crm").await?;
    assert!(
        authorize2
            .as_str()
            .starts_with(&format!("{}/authorize?", fake.base))
    );
    drop(b2);
    assert!(attacker.seen().is_empty(), "{:?}", attacker.seen());
    assert_eq!(
        server_view(&gw, "crm").await?.1["authorization_server"],
        pin
    );

    // GIVEN another server unreachable at save whose metadata is hostile once it is up
    let port = free_port();
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(oauth2(&format!("http://127.0.0.1:{port}/mcp"), "evil")),
        )
        .await?;
    assert_eq!(s, 201, "{body}");
    gw.admit_everyone("everyone-evil", &["evil"]).await?;
    let evil = Fake::start_on(port).await;
    evil.edit_meta(|m| m["authorization_endpoint"] = json!("javascript:alert(document.cookie)"));
    // WHEN alice opens its connect page THEN it shows the error, and nothing is pinned
    let b = Browser::new();
    let (s, _, page) = b
        .get(&format!("{}/oauth/connect/evil", gw.base), Some(&alice))
        .await?;
    assert_eq!(s, 502, "{page}");
    assert!(page.contains("authorization_endpoint"), "{page}");
    assert!(!page.contains("href=\"javascript"), "{page}");
    assert!(!page.contains("id=\"continue\""), "{page}");
    let (_, read) = server_view(&gw, "evil").await?;
    assert!(read.get("authorization_server").is_none(), "{read}");
    assert!(
        gw.state
            .store
            .get_grant("alice@example.com", "evil")
            .await?
            .is_none()
    );
    // AND once the metadata is fixed the next connect pins it
    evil.edit_meta(|m| *m = metadata_of(&evil.base, &evil.base));
    start_connect(&gw, &alice, "evil").await?;
    assert_eq!(
        server_view(&gw, "evil").await?.1["authorization_server"]["source"],
        "discovered_at_first_use"
    );
    Ok(())
}

/// Two gateways on one store pinning the same server at first use at once, while the
/// upstream's metadata names a different token endpoint on every read: they agree on one pin
/// (the first write wins, the other reads it back), which is the one stored.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_use_pins_once_across_processes() -> Result<()> {
    let gw = TestGateway::start(StoreKind::Sqlite, SECRETS).await?;
    let other = gw.beside().await?;
    let port = free_port();
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(oauth2(&format!("http://127.0.0.1:{port}/mcp"), "crm")),
        )
        .await?;
    assert_eq!(s, 201, "{body}");
    // An AS whose metadata answers a new token endpoint each time it is read.
    let fake = Fake::start_on(port).await;
    fake.shared
        .rotate_token
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let server = gw.state.server("crm").await?.context("crm")?;
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut calls = Vec::new();
    for i in 0..8 {
        let state = if i % 2 == 0 {
            gw.state.clone()
        } else {
            other.state.clone()
        };
        let (server, barrier) = (server.clone(), barrier.clone());
        calls.push(tokio::spawn(async move {
            barrier.wait().await;
            mcpgw::grants::endpoints::for_server(&state.grants, &server).await
        }));
    }
    let mut tokens = std::collections::BTreeSet::new();
    for c in calls {
        tokens.insert(c.await??.token);
    }
    assert_eq!(tokens.len(), 1, "one pin for everyone: {tokens:?}");
    let stored = gw.state.store.get_server("crm").await?.context("crm")?;
    let pin = stored.authorization_server.context("pinned")?;
    assert!(tokens.contains(&pin.token_endpoint), "{tokens:?} {pin:?}");
    assert_eq!(pin.source, mcpgw::domain::PinSource::DiscoveredAtFirstUse);
    assert!(
        *fake.shared.meta_reads.lock().unwrap() >= 2,
        "the race was real: several discoveries, one pin"
    );
    Ok(())
}

use mcpgw::store::ConfigStoreExt as _;

/// RFC 9207 against the fake: when the pinned metadata says the provider sends `iss`, a
/// callback without it is refused (the code is never sent anywhere) and nothing is stored;
/// a wrong `iss` is refused whatever the metadata says; the right one connects; a provider
/// that does not send `iss` still connects without it.
#[tokio::test(flavor = "multi_thread")]
async fn rfc9207_iss_is_required_when_advertised_and_must_match() -> Result<()> {
    let gw = TestGateway::start(StoreKind::Sqlite, SECRETS).await?;
    let strict = Fake::start().await;
    let lax = Fake::start().await;
    lax.edit_meta(|m| m["authorization_response_iss_parameter_supported"] = json!(false));
    for (name, fake) in [("strict", &strict), ("lax", &lax)] {
        let (s, body) = gw
            .admin(
                Method::POST,
                "/admin/servers",
                Some(oauth2(&fake.mcp_url(), name)),
            )
            .await?;
        assert_eq!(s, 201, "{body}");
    }
    gw.admit_everyone("everyone", &["strict", "lax"]).await?;
    let alice = gw.user_key("alice@example.com").await?;
    let grant = |server: &'static str| {
        let store = gw.state.store.clone();
        async move { store.get_grant("alice@example.com", server).await }
    };

    // the flag is set: no iss
    let (b, authorize) = start_connect(&gw, &alice, "strict").await?;
    let (s, page) = callback(&gw, &b, "strict", &state_of(&authorize), None).await?;
    assert_eq!(s, 400, "{page}");
    assert!(
        page.contains("does not say which authorization server"),
        "{page}"
    );
    // a wrong iss
    let (b, authorize) = start_connect(&gw, &alice, "strict").await?;
    let (s, page) = callback(
        &gw,
        &b,
        "strict",
        &state_of(&authorize),
        Some("https://evil.example"),
    )
    .await?;
    assert_eq!(s, 400, "{page}");
    assert!(page.contains("unexpected authorization server"), "{page}");
    assert!(grant("strict").await?.is_none(), "nothing stored");
    assert!(
        strict.token_forms().is_empty(),
        "the code was never exchanged"
    );
    // the right iss
    let (b, authorize) = start_connect(&gw, &alice, "strict").await?;
    let (s, page) = callback(&gw, &b, "strict", &state_of(&authorize), Some(&strict.base)).await?;
    assert_eq!(s, 200, "{page}");
    assert!(grant("strict").await?.is_some());

    // the flag is not set: a wrong iss is still refused, none is accepted
    let (b, authorize) = start_connect(&gw, &alice, "lax").await?;
    let (s, page) = callback(
        &gw,
        &b,
        "lax",
        &state_of(&authorize),
        Some("https://evil.example"),
    )
    .await?;
    assert_eq!(s, 400, "{page}");
    assert!(grant("lax").await?.is_none());
    let (b, authorize) = start_connect(&gw, &alice, "lax").await?;
    let (s, page) = callback(&gw, &b, "lax", &state_of(&authorize), None).await?;
    assert_eq!(s, 200, "{page}");
    assert!(grant("lax").await?.is_some());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Baselines through the real oidc-provider and the JWT-protected Python MCP server.

/// GIVEN the real upstream unreachable when it is saved THEN 201 with a warning; WHEN it is up
/// and alice connects through a real browser and the real provider THEN the endpoints are
/// pinned at that first connect (`discovered_at_first_use`, the provider's issuer, RFC 9207
/// advertised) and her calls reach the upstream as her.
#[tokio::test(flavor = "multi_thread")]
async fn real_provider_unreachable_at_save_is_pinned_at_first_connect() -> Result<()> {
    let Some(peers) = e2e::oauth_peers::start("600", &[]).await? else {
        return Ok(());
    };
    let gw = TestGateway::start(StoreKind::Sqlite, &[]).await?;
    let port = free_port();
    let upstream = format!("http://127.0.0.1:{port}/mcp");
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "notes", "url": upstream,
            "auth": {"type": "oauth2", "scopes": ["mcp:read"]}})),
        )
        .await?;
    assert_eq!(s, 201, "{body}");
    assert!(body["warnings"][0].as_str().is_some(), "{body}");
    assert!(body.get("authorization_server").is_none(), "{body}");
    gw.admit_everyone("everyone", &["notes"]).await?;
    let alice = gw.user_key("alice@example.com").await?;

    let _up = e2e::oauth_peers::start_protected_server(port, &peers.issuer).await?;
    let seen =
        e2e::oauth_peers::browse(&format!("{}/oauth/connect/notes", gw.base), &alice, "alice")
            .await?;
    assert_eq!(seen["status"], 200, "{seen}");
    assert!(
        seen["body"]
            .as_str()
            .unwrap_or_default()
            .contains("id=\"connected\""),
        "{seen}"
    );
    let (_, read) = server_view(&gw, "notes").await?;
    let pin = &read["authorization_server"];
    assert_eq!(pin["source"], "discovered_at_first_use", "{read}");
    assert_eq!(pin["issuer"], peers.issuer.as_str());
    assert_eq!(pin["token_endpoint"], format!("{}/token", peers.issuer));
    assert_eq!(
        pin["authorization_response_iss_parameter_supported"], true,
        "oidc-provider advertises RFC 9207"
    );
    let who = e2e::oauth_peers::whoami(&gw.mcp_url("notes"), &alice).await?;
    assert_eq!(who["sub"], "alice", "{who}");
    Ok(())
}

/// RFC 9207 with the real provider, which advertises it: a callback without `iss`, or with
/// another issuer's, is refused and stores nothing; the provider's own answer (with its
/// `iss`) connects.
#[tokio::test(flavor = "multi_thread")]
async fn real_provider_callbacks_without_or_with_a_wrong_iss_are_refused() -> Result<()> {
    let Some(peers) = e2e::oauth_peers::start("600", &[]).await? else {
        return Ok(());
    };
    let gw = TestGateway::start(StoreKind::Sqlite, &[]).await?;
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "notes", "url": peers.upstream,
            "auth": {"type": "oauth2", "scopes": ["mcp:read"]}})),
        )
        .await?;
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        body["authorization_server"]["source"], "discovered_at_save",
        "{body}"
    );
    assert_eq!(
        body["authorization_server"]["authorization_response_iss_parameter_supported"], true,
        "{body}"
    );
    gw.admit_everyone("everyone", &["notes"]).await?;
    let alice = gw.user_key("alice@example.com").await?;

    let (b, authorize) = start_connect(&gw, &alice, "notes").await?;
    assert!(authorize.as_str().starts_with(&peers.issuer), "{authorize}");
    let (s, page) = callback(&gw, &b, "notes", &state_of(&authorize), None).await?;
    assert_eq!(s, 400, "{page}");
    let (b, authorize) = start_connect(&gw, &alice, "notes").await?;
    let (s, page) = callback(
        &gw,
        &b,
        "notes",
        &state_of(&authorize),
        Some("http://127.0.0.1:1"),
    )
    .await?;
    assert_eq!(s, 400, "{page}");
    assert!(
        gw.state
            .store
            .get_grant("alice@example.com", "notes")
            .await?
            .is_none()
    );

    let seen =
        e2e::oauth_peers::browse(&format!("{}/oauth/connect/notes", gw.base), &alice, "alice")
            .await?;
    assert_eq!(seen["status"], 200, "{seen}");
    assert!(
        seen["body"]
            .as_str()
            .unwrap_or_default()
            .contains("id=\"connected\""),
        "{seen}"
    );
    assert_eq!(
        e2e::oauth_peers::whoami(&gw.mcp_url("notes"), &alice).await?["sub"],
        "alice"
    );
    Ok(())
}
