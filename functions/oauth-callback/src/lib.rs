//! OAuth callback Lambda: the per-user connect flow of `oauth2` servers.
//!
//! - `GET /oauth/connect/{server}` with the caller's credential (or `?link=` from a connect
//!   link, single use): a page naming the gateway user and the server, whose one link
//!   (`<a id="continue">`) leads on; nothing redirects before the user has seen who is being
//!   connected, so a forwarded link cannot silently bind someone else's account.
//! - `GET /oauth/connect/{server}?go=...`: 302 to the provider (the URL sealed into the
//!   continue link by the gateway itself: no open redirect).
//! - `GET /oauth/callback/{server}`: consumes the state (once), exchanges the code, stores the
//!   grant, and says which account was connected. Every failure shows a page and stores
//!   nothing.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mcpgw::domain::UpstreamAuth;
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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A small self-contained page (no scripts, no outside assets).
fn page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><main><h1>{t}</h1>{body_html}</main></body></html>",
        t = escape(title)
    );
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
    page(
        status,
        "Not connected",
        &format!("<p id=\"error\">{}</p>", escape(what)),
    )
}

fn grant_failure(e: &GrantError) -> Response {
    tracing::warn!(error = %mcpgw::http::error_chain(e), "connect flow failed");
    let status = match e {
        GrantError::Network(_) | GrantError::Upstream(_) | GrantError::Discovery(_) => {
            StatusCode::BAD_GATEWAY
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    failure(status, &e.to_string())
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
    if let Some(go) = q.go {
        return match link::open_go(&state, &server, &go).await {
            Ok(Some(url)) => (StatusCode::FOUND, [(header::LOCATION, url)]).into_response(),
            Ok(None) => failure(StatusCode::BAD_REQUEST, "this continue link is not valid"),
            Err(e) => grant_failure(&e),
        };
    }
    let unknown = || failure(StatusCode::NOT_FOUND, "no OAuth server by that name");
    let Ok(Some(s)) = state.server(&server).await else {
        return unknown();
    };
    if !matches!(s.auth, UpstreamAuth::OAuth2 { .. }) {
        return unknown();
    }
    let user = match q.link {
        Some(l) => match link::redeem(&state, &server, &l).await {
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
    let provider_url = match flow::start(&state, &user, &s).await {
        Ok(u) => u,
        Err(e) => return grant_failure(&e),
    };
    let go = match link::seal_go(&state, &server, &provider_url).await {
        Ok(g) => g,
        Err(e) => return grant_failure(&e),
    };
    let host = url_host(&provider_url);
    page(
        StatusCode::OK,
        &format!("Connect {server}"),
        &format!(
            "<p>You are signed in to the gateway as <strong id=\"user\">{user}</strong>.</p>\
             <p>Continue to connect your account at <strong id=\"server\">{server}</strong> \
             (sign-in at {host}). The gateway will then call {server} with that account on \
             your behalf. If this is not you, close this page.</p>\
             <p><a id=\"continue\" href=\"{base}/oauth/connect/{server_q}?go={go}\">Continue</a></p>",
            user = escape(&user),
            server = escape(&server),
            host = escape(&host),
            server_q = escape(&server),
            go = escape(&go),
            // Behind a REST API stage the page's own path starts with the stage.
            base = escape(&state.config.public_path()),
        ),
    )
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
) -> Response {
    let Some(state_id) = q.state else {
        return failure(
            StatusCode::BAD_REQUEST,
            "the provider's answer has no state",
        );
    };
    if let Some(err) = q.error {
        // Used up, so the same state cannot be completed later.
        let _ = state
            .store
            .consume_state(&state_id, state.clock.now())
            .await;
        let what = if err == "access_denied" {
            "access was not granted at the provider".to_owned()
        } else {
            format!("the provider answered {err}")
        };
        return failure(StatusCode::BAD_REQUEST, &what);
    }
    let Some(code) = q.code else {
        return failure(StatusCode::BAD_REQUEST, "the provider's answer has no code");
    };
    match flow::finish(&state, &server, &code, &state_id, q.iss.as_deref()).await {
        Ok(user) => page(
            StatusCode::OK,
            "Connected",
            &format!(
                "<p id=\"connected\">Connected <strong>{}</strong> for <strong>{}</strong>. \
                 You can close this page.</p>",
                escape(&server),
                escape(&user)
            ),
        ),
        Err(
            e @ (FlowError::StateInvalid
            | FlowError::WrongServer
            | FlowError::IssuerMismatch
            | FlowError::IssuerMissing
            | FlowError::Denied(_)),
        ) => {
            tracing::warn!(error = %e, "connect callback refused");
            failure(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(FlowError::Grant(e)) => grant_failure(&e),
    }
}
