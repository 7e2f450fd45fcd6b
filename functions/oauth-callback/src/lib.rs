//! OAuth callback Lambda: the per-user connect flow of `oauth2` servers.
//!
//! - `GET /oauth/connect/{server}` with the caller's credential (or `?link=` from a connect
//!   link, single use): a page naming the gateway user and the server, whose one link
//!   (`<a id="continue">`) leads on; nothing redirects before the user has seen who is being
//!   connected. The page sets the flow's connect cookie (a random nonce, see
//!   [`mcpgw::grants::binding`]): the flow is bound to the browser that saw it.
//! - `GET /oauth/connect/{server}?go=...`: the continue link (single use) 302s to the
//!   provider (the URL the gateway built and stored: no open redirect), in the browser that
//!   holds the flow's cookie only.
//! - `GET /oauth/callback/{server}`: consumes the state (once), requires the same cookie,
//!   exchanges the code, stores the grant, says which account was connected, and clears the
//!   cookie. Every failure shows a page and stores nothing.
//!
//! A continue link or provider URL that reaches another browser (Mallory's link opened by
//! Alice) stops at a page saying to start again from the connect link, and is used up: it
//! cannot connect Alice's provider account to Mallory's gateway user. A browser signed in to
//! the console as another gateway user than the flow's is refused at every step.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};
use mcpgw::audit::Event;
use mcpgw::audit::events::{actor_without_request, connection};
use mcpgw::browser::session;
use mcpgw::domain::{UpstreamAuth, validate_name};
use mcpgw::grants::binding::{self, Browser, Nonce, Refusal};
use mcpgw::grants::flow::{self, FlowError};
use mcpgw::grants::{GrantError, link};
use mcpgw::policy::Subject;
use mcpgw::state::AppState;
use serde::Deserialize;

/// The OAuth routes, without the common layers.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/oauth/connect/{server}", get(connect))
        .route("/oauth/callback/{server}", get(callback))
        .with_state(state)
}

/// The deployable router.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    mcpgw::http::finish(routes(state), limit)
}

/// A small self-contained page (no scripts, no outside assets). A `maud` template: what it
/// shows (user and server names, provider hosts, error texts) is escaped by the template.
fn page(status: StatusCode, title: &str, body: Markup) -> Response {
    let html = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (title) } }
            body { main { h1 { (title) } (body) } }
        }
    }
    .into_string();
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

fn failure(status: StatusCode, what: &str) -> Response {
    page(status, "Not connected", html! { p id="error" { (what) } })
}

fn grant_failure(e: &GrantError) -> Response {
    tracing::warn!(error = %mcpgw::http::error_chain(e), "connect flow failed");
    let status = match e {
        GrantError::Network(_) | GrantError::Upstream(_) | GrantError::Discovery(_) => {
            StatusCode::BAD_GATEWAY
        }
        GrantError::NotConnected
        | GrantError::NeedsReconsent
        | GrantError::NotOAuth
        | GrantError::Store(_)
        | GrantError::Sealed(_)
        | GrantError::Keyring(_)
        | GrantError::Secret(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    failure(status, &e.to_string())
}

/// The page of a refused step: why, and that the way on is a fresh start. Names the
/// gateway users involved (the page already named the flow's), never a cookie or token.
fn refused(r: &Refusal) -> Response {
    let hint = match r {
        Refusal::OtherBrowser => {
            tracing::warn!("connect step refused: the browser holds no cookie of this flow");
            "Nothing was connected. Start again from the connect link, in the browser you \
             will sign in with (ask for a new link if this one was used)."
        }
        Refusal::OtherConsoleUser {
            console_user,
            flow_user,
        } => {
            tracing::warn!(%console_user, %flow_user, "connect step refused: the browser is signed in to the console as another user");
            "Nothing was connected, and this link is used up. Open a new connect link in the \
             browser of the user it is for, or sign out of the console first."
        }
    };
    page(
        StatusCode::FORBIDDEN,
        "Not connected",
        html! {
            p id="error" { (capitalized(&r.to_string())) "." }
            p id="start-again" { (hint) }
        },
    )
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `r` with `cookie` set (or cleared).
fn with_cookie(mut r: Response, cookie: &str) -> Response {
    match HeaderValue::from_str(cookie) {
        Ok(v) => {
            r.headers_mut().append(header::SET_COOKIE, v);
            r
        }
        // Built from the server's name (checked charset) and a base64url nonce: cannot
        // fail; if it ever did, no page leaves without its cookie.
        Err(_) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be built",
        ),
    }
}

/// The browser of a request to `server`'s flow: its connect cookies and who it is signed in
/// to the console as; an error page when the console session cannot be checked.
async fn browser_of(
    state: &AppState,
    server: &str,
    headers: &HeaderMap,
) -> Result<Browser, Response> {
    match session::signed_in_user(state, headers).await {
        Ok(console_user) => Ok(Browser::new(&state.config, server, headers, console_user)),
        // Fail closed: without knowing who the browser is signed in as, the flow cannot tell
        // whether it is someone else's.
        Err(session::Unchecked) => Err(failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway cannot check this browser's console session right now; try again later",
        )),
    }
}

#[derive(Deserialize)]
struct ConnectQuery {
    link: Option<String>,
    go: Option<String>,
}

async fn connect(
    State(state): State<AppState>,
    Path(server): Path<String>,
    Query(q): Query<ConnectQuery>,
    headers: HeaderMap,
) -> Response {
    let unknown = || failure(StatusCode::NOT_FOUND, "no OAuth server by that name");
    // The name goes into the flow's cookie name: only server names get that far.
    if validate_name(&server).is_err() {
        return unknown();
    }
    if let Some(go) = q.go {
        return continue_to_provider(&state, &server, &go, &headers).await;
    }
    let Ok(Some(s)) = state.server(&server).await else {
        return unknown();
    };
    if !matches!(s.auth, UpstreamAuth::OAuth2 { .. }) {
        return unknown();
    }
    let user = match q.link {
        Some(l) => match link::redeem(&state.grants, &server, &l).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "this connect link is not valid: it was already used, has expired, or is for another server. Ask for a new one.",
                );
            }
            Err(e) => return grant_failure(&e),
        },
        None => match state.auth.authenticate(&headers).await {
            Ok(p) => {
                // Only callers who reach the server (directly or through a virtual server)
                // may connect it.
                let admitted = state
                    .policy()
                    .await
                    .is_ok_and(|snap| snap.reachable_servers(&Subject::from(&p)).contains(&server));
                if !admitted {
                    return unknown();
                }
                p.user
            }
            Err(e) => return e.into_api_error(None).into_response(),
        },
    };
    // A browser signed in to the console as someone else is refused before anything is
    // started. The connect link is used up by then: one that reached the wrong browser
    // has leaked, and its user asks for a new one.
    let browser = match browser_of(&state, &server, &headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = browser.check_console(&user) {
        return refused(&r);
    }
    let nonce = Nonce::generate();
    let provider_url = match flow::start(&state.grants, &user, &s, &nonce.hash()).await {
        Ok(u) => u,
        Err(e) => return grant_failure(&e),
    };
    let go = match link::make_continue(&state.grants, &user, &server, &provider_url, &nonce.hash())
        .await
    {
        Ok(g) => g,
        Err(e) => return grant_failure(&e),
    };
    let host = url_host(&provider_url);
    // Behind a REST API stage the page's own path starts with the stage.
    let base = state.config.public_path();
    let shown = page(
        StatusCode::OK,
        &format!("Connect {server}"),
        html! {
            p { "You are signed in to the gateway as " strong id="user" { (user) } "." }
            p {
                "Continue to connect your account at " strong id="server" { (server) }
                " (sign-in at " (host) "). The gateway will then call " (server)
                " with that account on your behalf. If this is not you, close this page."
            }
            p { a id="continue" href={ (base) "/oauth/connect/" (server) "?go=" (go) } { "Continue" } }
        },
    );
    with_cookie(shown, &nonce.set_cookie(&state.config, &server))
}

/// `?go=`: the continue link, used up here whatever happens next; then to the provider
/// only in the browser that saw the connect page.
async fn continue_to_provider(
    state: &AppState,
    server: &str,
    go: &str,
    headers: &HeaderMap,
) -> Response {
    let next = match link::take_continue(&state.grants, server, go).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return failure(
                StatusCode::BAD_REQUEST,
                "this continue link is not valid: it was already used, has expired, or was not made by the gateway. Start again from the connect link.",
            );
        }
        Err(e) => return grant_failure(&e),
    };
    let browser = match browser_of(state, server, headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match browser.admits(&next.browser, &next.user) {
        Ok(()) => (StatusCode::FOUND, [(header::LOCATION, next.provider_url)]).into_response(),
        // The cookie is not this flow's: it may be another flow's (a newer page of the same
        // server in another tab), which stays usable.
        Err(r @ Refusal::OtherBrowser) => refused(&r),
        // This browser's own flow, refused: it is over, and so is its cookie.
        Err(r @ Refusal::OtherConsoleUser { .. }) => {
            with_cookie(refused(&r), &binding::clear_cookie(&state.config, server))
        }
    }
}

fn url_host(u: &str) -> String {
    url::Url::parse(u)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(state): State<AppState>,
    Path(server): Path<String>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    // The name goes into the flow's cookie name: only server names get that far.
    if validate_name(&server).is_err() {
        return failure(StatusCode::NOT_FOUND, "no OAuth server by that name");
    }
    let Some(state_id) = q.state else {
        return failure(
            StatusCode::BAD_REQUEST,
            "the provider's answer has no state",
        );
    };
    let browser = match browser_of(&state, &server, &headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // The flow's cookie is cleared when the answer ends this browser's own flow; kept when
    // the state was not this browser's (it may belong to a flow still under way here).
    let clear = |r: Response| with_cookie(r, &binding::clear_cookie(&state.config, &server));
    if let Some(err) = q.error {
        let what = if err == "access_denied" {
            "access was not granted at the provider".to_owned()
        } else {
            format!("the provider answered {err}")
        };
        // Used up, so the same state cannot be completed later.
        return match flow::cancel(&state.grants, &server, &state_id, &browser).await {
            Ok(_) => clear(failure(StatusCode::BAD_REQUEST, &what)),
            Err(FlowError::Browser(r @ Refusal::OtherBrowser)) => refused(&r),
            Err(FlowError::Browser(r @ Refusal::OtherConsoleUser { .. })) => clear(refused(&r)),
            Err(
                FlowError::StateInvalid
                | FlowError::WrongServer
                | FlowError::IssuerMismatch
                | FlowError::IssuerMissing
                | FlowError::Denied(_)
                | FlowError::Grant(_),
            ) => failure(StatusCode::BAD_REQUEST, &what),
        };
    }
    let Some(code) = q.code else {
        return failure(StatusCode::BAD_REQUEST, "the provider's answer has no code");
    };
    match flow::finish(
        &state.grants,
        &server,
        &code,
        &state_id,
        q.iss.as_deref(),
        &browser,
    )
    .await
    {
        Ok(user) => {
            // The connect flow was bound to this browser (and the user it was started for).
            let actor = actor_without_request(&user, "browser");
            let record = connection(Event::Connect, actor, &user, &server, "oauth2", None);
            state.audit.emit(record);
            clear(page(
                StatusCode::OK,
                "Connected",
                html! {
                    p id="connected" {
                        "Connected " strong { (server) } " for " strong { (user) }
                        ". You can close this page."
                    }
                },
            ))
        }
        Err(FlowError::Browser(r @ Refusal::OtherBrowser)) => refused(&r),
        Err(FlowError::Browser(r @ Refusal::OtherConsoleUser { .. })) => clear(refused(&r)),
        Err(e @ (FlowError::StateInvalid | FlowError::WrongServer)) => {
            tracing::warn!(error = %e, "connect callback refused");
            failure(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(e @ (FlowError::IssuerMismatch | FlowError::IssuerMissing | FlowError::Denied(_))) => {
            tracing::warn!(error = %e, "connect callback refused");
            clear(failure(StatusCode::BAD_REQUEST, &e.to_string()))
        }
        Err(FlowError::Grant(e)) => clear(grant_failure(&e)),
    }
}
