//! Signing in and out.
//!
//! - API key: the sign-in page sets a random login cookie and puts the same value in the
//!   form, so a form posted from elsewhere (login CSRF: signing the victim in as the
//!   attacker) is refused; the key is authenticated exactly as an API call would be.
//! - Identity provider (each one with a `console` client): authorization code with PKCE
//!   (S256), a single-use `state` stored for 10 minutes and bound to this browser by the
//!   login cookie, a `nonce` in the ID token, `iss` checked when returned (RFC 9207). The ID
//!   token is verified like the provider's access tokens (keys, algorithms, email and groups
//!   claims, admin groups, email domains) with `aud` = the console client.
//!
//! The provider's endpoints come from its OIDC discovery document
//! ([`mcpgw::oauth_metadata`], kind `OpenIdProvider`); the token request is the `oauth2`
//! crate's, from the client [`mcpgw::oauth_client`] builds (client credentials sent as in
//! every token request of the gateway), with a response type that keeps the ID token.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use maud::html;
use mcpgw::domain::{IdentityProvider, OAuthState};
use mcpgw::oauth_client::OidcTokenResponse;
use mcpgw::oauth_metadata::{self, Kind};
use mcpgw::state::AppState;
use oauth2::{AuthorizationCode, PkceCodeVerifier, RedirectUrl, TokenUrl};
use serde::{Deserialize, Serialize};

use super::Form;
use super::html::{self, Page, message};
use super::session::{self, Console, LOGIN_COOKIE, LOGIN_TTL, Who, cookie, read_cookie};

/// Bound on discovery at an identity provider (the token request goes through
/// `Grants::oauth_http`, which bounds every call by as much).
const IDP_TIMEOUT: Duration = Duration::from_secs(10);
/// The `OAuthState.server` of console sign-ins: `:` cannot appear in a server name, so a
/// sign-in state can never complete a server's connect flow (nor the reverse).
const STATE_PREFIX: &str = "console:";
const SIGNIN_CONTEXT: &[u8] = b"console-signin";

#[derive(Deserialize)]
pub struct LoginQuery {
    error: Option<String>,
}

/// Fixed texts for the sign-in page's `?error=` codes: nothing from the URL is shown.
fn error_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "session" => "Your console session has ended. Sign in again.",
        "signin" => "Signing in at the identity provider did not complete. Try again.",
        _ => return None,
    })
}

/// Identity providers the console can sign in with.
async fn console_providers(state: &AppState) -> Vec<IdentityProvider> {
    match state.auth.providers().await {
        Ok(all) => all.into_iter().filter(|p| p.console.is_some()).collect(),
        Err(e) => {
            tracing::warn!(error = %mcpgw::http::error_chain(&e), "identity providers unavailable for console sign-in");
            Vec::new()
        }
    }
}

fn origin_of(u: &str) -> Option<String> {
    url::Url::parse(u)
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
}

/// The sign-in page, with `error` shown above the forms.
async fn login_page(state: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    let base = session::base(state);
    let nonce = mcpgw::crypto::random_token(24);
    let providers = console_providers(state).await;
    let body = html! {
        @if let Some(e) = error { (message("error", e)) }
        @for p in &providers {
            section class="card" {
                h2 { "Sign in with " (p.name) }
                form id={ "sso-" (p.name) } method="get" action={ (base) "/console/login/oidc/" (p.name) } {
                    label {
                        "Email or username (optional) "
                        input type="text" id={ "login-hint-" (p.name) } name="login_hint"
                            autocomplete="username";
                    }
                    " "
                    button type="submit" id={ "sso-submit-" (p.name) } { "Continue to " (p.name) }
                }
            }
        }
        section class="card" {
            h2 { "Sign in with a gateway API key" }
            form id="key-login" method="post" action={ (base) "/console/login" } {
                input type="hidden" name="login_csrf" value=(nonce);
                label {
                    "API key "
                    input type="password" id="key" name="key" autocomplete="off" required;
                }
                " "
                button type="submit" id="key-submit" { "Sign in" }
            }
            p class="muted" { "The key is kept only inside the sealed session cookie." }
        }
    };
    let mut page = Page::new(status, "Sign in", body);
    // The SSO forms reach the provider through the gateway's redirect; form-action governs
    // that redirect too.
    page.form_targets = providers
        .iter()
        .filter_map(|p| origin_of(&p.issuer))
        .collect();
    page.cookies = vec![cookie(state, LOGIN_COOKIE, &nonce, LOGIN_TTL)];
    page.render(&base)
}

pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if session::open(&state, &headers).await.is_ok() {
        return html::see_other(&format!("{}/console", session::base(&state)), &[]);
    }
    let error = q.error.as_deref().and_then(error_text);
    login_page(&state, StatusCode::OK, error).await
}

/// `POST /console/login`: a pasted API key.
pub async fn with_key(State(state): State<AppState>, headers: HeaderMap, form: Form) -> Response {
    let expected = read_cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let sent = form.get("login_csrf").unwrap_or_default();
    if expected.is_empty() || !mcpgw::crypto::constant_time_eq(expected.as_bytes(), sent.as_bytes())
    {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            Some("This sign-in form did not come from this browser's sign-in page. Try again."),
        )
        .await;
    }
    let key = form.get("key").unwrap_or_default().trim();
    if key.is_empty()
        || key.len() > 4096
        || key.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return login_page(
            &state,
            StatusCode::BAD_REQUEST,
            Some("Paste a gateway API key."),
        )
        .await;
    }
    let mut h = HeaderMap::new();
    let Ok(v) = format!("Bearer {key}").parse() else {
        return login_page(
            &state,
            StatusCode::BAD_REQUEST,
            Some("Paste a gateway API key."),
        )
        .await;
    };
    h.insert(header::AUTHORIZATION, v);
    match state.auth.authenticate(&h).await {
        Ok(p) => {
            tracing::info!(user = %p.user, "console sign-in with an API key");
            start_session(
                &state,
                Who::Key {
                    credential: key.to_owned(),
                },
            )
            .await
        }
        Err(mcpgw::identity::AuthError::Store(_)) => {
            login_page(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The gateway cannot check keys right now. Try again later."),
            )
            .await
        }
        Err(_) => {
            login_page(
                &state,
                StatusCode::UNAUTHORIZED,
                Some("That API key was not accepted."),
            )
            .await
        }
    }
}

/// What a sign-in keeps while the browser is at the provider (sealed in the stored state).
#[derive(Serialize, Deserialize)]
struct Pending {
    idp: String,
    verifier: String,
    nonce: String,
    /// SHA-256 of the login cookie the browser got: the callback must come from it.
    browser: String,
}

/// The provider's endpoints (OIDC discovery).
struct Metadata {
    authorization_endpoint: String,
    token_endpoint: String,
}

async fn discover(state: &AppState, issuer: &str) -> Result<Metadata, String> {
    let meta = oauth_metadata::issuer_metadata(
        &state.http,
        Kind::OpenIdProvider,
        issuer,
        Some(IDP_TIMEOUT),
    )
    .await
    .map_err(|e| format!("discovery: {e}"))?;
    let endpoint = |k: &str| {
        meta.string(k)
            .ok()
            .flatten()
            .filter(|u| u.starts_with("https://") || origin_of(u) == origin_of(issuer))
            .map(str::to_owned)
            .ok_or_else(|| format!("discovery: no usable {k}"))
    };
    Ok(Metadata {
        authorization_endpoint: endpoint("authorization_endpoint")?,
        token_endpoint: endpoint("token_endpoint")?,
    })
}

fn redirect_uri(state: &AppState) -> String {
    format!(
        "{}/console/callback",
        state.config.public_url.trim_end_matches('/')
    )
}

async fn provider_named(state: &AppState, name: &str) -> Option<IdentityProvider> {
    console_providers(state)
        .await
        .into_iter()
        .find(|p| p.name == name)
}

#[derive(Deserialize)]
pub struct StartQuery {
    login_hint: Option<String>,
}

/// `GET /console/login/oidc/{idp}`: to the provider's authorization endpoint.
pub async fn start(
    State(state): State<AppState>,
    Path(idp): Path<String>,
    Query(q): Query<StartQuery>,
) -> Response {
    let Some(provider) = provider_named(&state, &idp).await else {
        return login_page(
            &state,
            StatusCode::NOT_FOUND,
            Some("No identity provider by that name offers console sign-in."),
        )
        .await;
    };
    let Some(client) = provider.console.as_ref() else {
        return login_page(
            &state,
            StatusCode::NOT_FOUND,
            Some("No identity provider by that name offers console sign-in."),
        )
        .await;
    };
    let meta = match discover(&state, &provider.issuer).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(idp = %provider.name, error = %e, "console sign-in: provider metadata unavailable");
            return login_page(
                &state,
                StatusCode::BAD_GATEWAY,
                Some("The identity provider cannot be reached right now."),
            )
            .await;
        }
    };
    let (verifier, challenge) = mcpgw::crypto::pkce_s256();
    let nonce = mcpgw::crypto::random_token(24);
    let browser = mcpgw::crypto::random_token(24);
    let id = mcpgw::crypto::random_token(24);
    let now = state.clock.now();
    let pending = Pending {
        idp: provider.name.clone(),
        verifier,
        nonce: nonce.clone(),
        browser: mcpgw::crypto::sha256_hex(browser.as_bytes()),
    };
    let sealed = match state.keyring.get().await {
        Ok(ring) => serde_json::to_vec(&pending)
            .ok()
            .and_then(|p| ring.seal(&p, SIGNIN_CONTEXT).ok()),
        Err(_) => None,
    };
    let Some(sealed) = sealed else {
        return login_page(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The console cannot start a sign-in right now."),
        )
        .await;
    };
    let stored = state
        .store
        .put_state(&OAuthState {
            id: format!("{STATE_PREFIX}{id}"),
            user: String::new(),
            server: format!("{STATE_PREFIX}{}", provider.name),
            sealed_payload: sealed,
            created_at: now,
            expires_at: now + LOGIN_TTL,
        })
        .await;
    if let Err(e) = stored {
        tracing::warn!(error = %mcpgw::http::error_chain(&e), "console sign-in: state not stored");
        return login_page(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The console cannot start a sign-in right now."),
        )
        .await;
    }
    let mut scopes = vec!["openid".to_owned()];
    if client.scopes.is_empty() {
        scopes.extend(["email".to_owned(), "profile".to_owned()]);
    } else {
        scopes.extend(client.scopes.iter().filter(|s| *s != "openid").cloned());
    }
    let mut url = match url::Url::parse(&meta.authorization_endpoint) {
        Ok(u) => u,
        Err(_) => {
            return login_page(
                &state,
                StatusCode::BAD_GATEWAY,
                Some("The identity provider's metadata is not usable."),
            )
            .await;
        }
    };
    {
        let mut qp = url.query_pairs_mut();
        qp.append_pair("response_type", "code")
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", &redirect_uri(&state))
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", &id)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(h) = q
            .login_hint
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty() && h.len() <= 320 && !h.chars().any(char::is_control))
        {
            qp.append_pair("login_hint", h);
        }
    }
    let mut resp = html::see_other(
        url.as_str(),
        &[cookie(&state, LOGIN_COOKIE, &browser, LOGIN_TTL)],
    );
    *resp.status_mut() = StatusCode::FOUND;
    resp
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

/// `GET /console/callback`: the provider's answer.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let refuse = |why: &str| tracing::warn!(reason = why, "console sign-in refused");
    let Some(id) = q.state.as_deref().filter(|s| s.len() <= 128) else {
        refuse("no state");
        return login_page(&state, StatusCode::BAD_REQUEST, error_text("signin")).await;
    };
    // Consumed first, whatever follows: a state is good for one answer only.
    let consumed = state
        .store
        .consume_state(&format!("{STATE_PREFIX}{id}"), state.clock.now())
        .await;
    let pending = match consumed {
        Ok(Some(s)) if s.server.starts_with(STATE_PREFIX) => match state.keyring.get().await {
            Ok(ring) => ring
                .open(&s.sealed_payload, SIGNIN_CONTEXT)
                .ok()
                .and_then(|p| serde_json::from_slice::<Pending>(&p).ok()),
            Err(_) => None,
        },
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %mcpgw::http::error_chain(&e), "console sign-in: state store unavailable");
            return login_page(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The console cannot finish signing in right now."),
            )
            .await;
        }
    };
    let Some(pending) = pending else {
        refuse("unknown, used or expired state");
        return login_page(
            &state,
            StatusCode::BAD_REQUEST,
            Some("This sign-in has expired or was already used. Sign in again."),
        )
        .await;
    };
    let browser = read_cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !mcpgw::crypto::constant_time_eq(
        mcpgw::crypto::sha256_hex(browser.as_bytes()).as_bytes(),
        pending.browser.as_bytes(),
    ) {
        refuse("state from another browser");
        return login_page(
            &state,
            StatusCode::BAD_REQUEST,
            Some("This sign-in was started in another browser. Sign in again."),
        )
        .await;
    }
    if let Some(err) = q.error {
        tracing::info!(error = %err.chars().take(64).collect::<String>(), "console sign-in: the provider answered an error");
        let text = if err == "access_denied" {
            "Sign-in was cancelled at the identity provider."
        } else {
            "The identity provider did not sign you in. Try again."
        };
        return login_page(&state, StatusCode::BAD_REQUEST, Some(text)).await;
    }
    let Some(provider) = provider_named(&state, &pending.idp).await else {
        return login_page(&state, StatusCode::BAD_REQUEST, error_text("signin")).await;
    };
    if q.iss.as_deref().is_some_and(|i| i != provider.issuer) {
        refuse("iss is not the provider's (RFC 9207)");
        return login_page(&state, StatusCode::BAD_REQUEST, error_text("signin")).await;
    }
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return login_page(&state, StatusCode::BAD_REQUEST, error_text("signin")).await;
    };
    let principal = match exchange(&state, &provider, &code, &pending).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(idp = %provider.name, error = %e, "console sign-in: code exchange or ID token refused");
            return login_page(&state, StatusCode::BAD_GATEWAY, error_text("signin")).await;
        }
    };
    let (issuer, provider_name) = match &principal.method {
        mcpgw::identity::AuthMethod::Jwt { issuer, provider } => (issuer.clone(), provider.clone()),
        _ => (provider.issuer.clone(), provider.name.clone()),
    };
    tracing::info!(user = %principal.user, idp = %provider_name, "console sign-in with the identity provider");
    start_session(
        &state,
        Who::Oidc {
            user: principal.user,
            subject: principal.subject,
            groups: principal.groups,
            is_admin: principal.is_admin,
            issuer,
            provider: provider_name,
        },
    )
    .await
}

/// The end of either sign-in: a console session for `who`, the sign-in cookie cleared, and
/// on to the console; the sign-in page again if no session can be stored.
async fn start_session(state: &AppState, who: Who) -> Response {
    let Ok(c) = session::issue(state, who).await else {
        return login_page(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The console cannot start a session right now."),
        )
        .await;
    };
    html::see_other(
        &format!("{}/console", session::base(state)),
        &[c, cookie(state, LOGIN_COOKIE, "", 0)],
    )
}

/// Exchanges the code and verifies the ID token; the principal it names.
async fn exchange(
    state: &AppState,
    provider: &IdentityProvider,
    code: &str,
    pending: &Pending,
) -> Result<mcpgw::identity::Principal, String> {
    let client = provider.console.as_ref().ok_or("no console client")?;
    let meta = discover(state, &provider.issuer).await?;
    let secret =
        match &client.client_secret {
            Some(r) => {
                Some(state.secrets.resolve(r).await.map_err(|e| {
                    format!("console client secret: {}", mcpgw::http::error_chain(&e))
                })?)
            }
            None => None,
        };
    let bad = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let oauth = mcpgw::oauth_client::new::<OidcTokenResponse>(
        &client.client_id,
        secret.as_ref().map(|s| s.expose()),
    )
    .set_token_uri(TokenUrl::new(meta.token_endpoint).map_err(|e| bad("token endpoint", &e))?)
    .set_redirect_uri(RedirectUrl::new(redirect_uri(state)).map_err(|e| bad("redirect URI", &e))?);
    let answer = oauth
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
        .request_async(&state.grants.oauth_http)
        .await
        .map_err(|e| match e {
            oauth2::RequestTokenError::ServerResponse(r) => {
                format!("token endpoint answered {}", r.error())
            }
            other => format!("token endpoint: {}", mcpgw::http::error_chain(&other)),
        })?;
    let id_token = &answer.extra_fields().id_token;
    state
        .auth
        .verify_id_token(
            id_token,
            &provider.issuer,
            &client.client_id,
            &pending.nonce,
        )
        .await
        .map_err(|e| format!("ID token: {e}"))
}

/// `POST /console/logout`.
pub async fn logout(console: Console, State(state): State<AppState>, form: Form) -> Response {
    if let Err(r) = console.check_csrf(&form) {
        return r;
    }
    html::see_other(
        &format!("{}/console/login", console.base),
        &[cookie(&state, session::COOKIE, "", 0)],
    )
}
