//! The console session: one cookie, sealed with the keyring (AES-GCM under the active key,
//! bound to its purpose), so the browser holds it but can neither read nor alter it.
//!
//! - A session from an API key keeps the key itself, sealed, and authenticates it again on
//!   every request: a revoked or expired key ends its console sessions at once.
//! - A session from an identity-provider sign-in keeps the principal the ID token named
//!   (email, groups, admin role), for [`SESSION_TTL`] or until the provider is removed.
//!
//! Every state-changing form carries the session's CSRF token, checked in constant time.
//! The cookie is `HttpOnly`, `SameSite=Lax`, and `Secure` unless the gateway's public URL is
//! loopback (browsers drop Secure cookies on plain http).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use mcpgw::identity::{AuthMethod, Principal};
use mcpgw::state::AppState;
use serde::{Deserialize, Serialize};

use super::{Form, html};

pub const COOKIE: &str = "mcpgw_console";
/// Binds a sign-in (key form or identity-provider round trip) to the browser that began it.
pub const LOGIN_COOKIE: &str = "mcpgw_console_login";
/// How long a console session lasts.
pub const SESSION_TTL: i64 = 8 * 3600;
/// How long a sign-in may take.
pub const LOGIN_TTL: i64 = 600;
const CONTEXT: &[u8] = b"console-session";

/// Who a session is for.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Who {
    /// A gateway credential pasted once (an API key), authenticated again on every request.
    Key { credential: String },
    /// Signed in at an identity provider.
    Oidc {
        user: String,
        subject: String,
        groups: Vec<String>,
        is_admin: bool,
        issuer: String,
        provider: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    who: Who,
    csrf: String,
    exp: i64,
}

/// A signed-in console user.
pub struct Console {
    pub principal: Principal,
    pub csrf: String,
    /// The gateway's path prefix (the API stage, or empty) for links.
    pub base: String,
}

impl Console {
    pub fn nav(&self) -> html::Nav<'_> {
        html::Nav {
            base: &self.base,
            user: &self.principal.user,
            is_admin: self.principal.is_admin,
            csrf: &self.csrf,
        }
    }

    /// Refuses a form without this session's CSRF token.
    pub fn check_csrf(&self, form: &Form) -> Result<(), Response> {
        let sent = form.get("csrf").unwrap_or_default();
        if mcpgw::crypto::constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            return Ok(());
        }
        tracing::warn!(user = %self.principal.user, "console form without a valid CSRF token");
        Err(html::Page::new(
            StatusCode::FORBIDDEN,
            "Form refused",
            html::message(
                "error",
                "This form did not come from your console session. Reload the page and try again.",
            ),
        )
        .with_nav(self.nav())
        .render(&self.base))
    }

    /// Refuses anyone without the admin role, as the admin API does.
    pub fn require_admin(&self) -> Result<(), Response> {
        if self.principal.is_admin {
            return Ok(());
        }
        Err(html::Page::new(
            StatusCode::FORBIDDEN,
            "Admins only",
            html::message("error", "This page is for gateway admins."),
        )
        .with_nav(self.nav())
        .render(&self.base))
    }
}

/// The gateway's path prefix: the path of its public URL (`/prod` behind a REST API stage).
pub fn base(state: &AppState) -> String {
    state.config.public_path()
}

/// A cookie attribute set for `name=value` living `max_age` seconds (0 deletes it).
pub fn cookie(state: &AppState, name: &str, value: &str, max_age: i64) -> String {
    let secure = if state.config.public_is_loopback {
        ""
    } else {
        "; Secure"
    };
    let path = match base(state) {
        b if b.is_empty() => "/".to_owned(),
        b => b,
    };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

/// The value of cookie `name` in the request, if any.
pub fn read_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// The `Set-Cookie` value of a new session for `who`.
pub async fn issue(state: &AppState, who: Who) -> Result<String, Response> {
    use base64::Engine;
    let sealed = Sealed {
        who,
        csrf: mcpgw::crypto::random_token(24),
        exp: state.clock.now() + SESSION_TTL,
    };
    let ring = state.keyring.get().await.map_err(|e| {
        tracing::error!(error = %mcpgw::http::error_chain(&e), "keyring unavailable for a console session");
        unavailable(state)
    })?;
    let plain = serde_json::to_vec(&sealed).map_err(|_| unavailable(state))?;
    let blob = ring.seal(&plain, CONTEXT).map_err(|_| unavailable(state))?;
    Ok(cookie(state, COOKIE, &b64().encode(blob), SESSION_TTL))
}

fn unavailable(state: &AppState) -> Response {
    html::Page::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again later",
        html::message("error", "The console cannot start a session right now."),
    )
    .render(&base(state))
}

/// Why there is no session.
pub enum NoSession {
    /// No cookie: the sign-in page.
    Absent,
    /// A cookie that does not open, is expired, or whose key no longer authenticates: the
    /// sign-in page, and the cookie is cleared.
    Invalid,
    /// The credential could not be checked (store down): an error page, not a sign-out.
    Unavailable,
}

/// The session of a request.
pub async fn open(state: &AppState, headers: &HeaderMap) -> Result<Console, NoSession> {
    use base64::Engine;
    let raw = read_cookie(headers, COOKIE).ok_or(NoSession::Absent)?;
    let blob = b64().decode(raw).map_err(|_| NoSession::Invalid)?;
    let ring = state
        .keyring
        .get()
        .await
        .map_err(|_| NoSession::Unavailable)?;
    let plain = ring.open(&blob, CONTEXT).map_err(|_| NoSession::Invalid)?;
    let s: Sealed = serde_json::from_slice(&plain).map_err(|_| NoSession::Invalid)?;
    if s.exp <= state.clock.now() {
        return Err(NoSession::Invalid);
    }
    let principal = match s.who {
        Who::Key { credential } => {
            let mut h = HeaderMap::new();
            let v = HeaderValue::from_str(&format!("Bearer {credential}"))
                .map_err(|_| NoSession::Invalid)?;
            h.insert(header::AUTHORIZATION, v);
            match state.auth.authenticate(&h).await {
                Ok(p) => p,
                Err(mcpgw::identity::AuthError::Store(_)) => return Err(NoSession::Unavailable),
                Err(_) => return Err(NoSession::Invalid),
            }
        }
        Who::Oidc {
            user,
            subject,
            groups,
            is_admin,
            issuer,
            provider,
        } => {
            // A provider removed (or re-pointed) by an admin ends the sessions it signed in.
            let providers = state
                .auth
                .providers()
                .await
                .map_err(|_| NoSession::Unavailable)?;
            if !providers
                .iter()
                .any(|p| p.name == provider && p.issuer == issuer && p.console.is_some())
            {
                return Err(NoSession::Invalid);
            }
            Principal {
                email: Some(user.clone()),
                user,
                subject,
                groups,
                is_admin,
                service_account: false,
                method: AuthMethod::Jwt { issuer, provider },
                api_key_id: None,
            }
        }
    };
    Ok(Console {
        principal,
        csrf: s.csrf,
        base: base(state),
    })
}

impl FromRequestParts<AppState> for Console {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match open(state, &parts.headers).await {
            Ok(c) => Ok(c),
            Err(NoSession::Absent) => Err(html::see_other(
                &format!("{}/console/login", base(state)),
                &[],
            )),
            Err(NoSession::Invalid) => Err(html::see_other(
                &format!("{}/console/login?error=session", base(state)),
                &[cookie(state, COOKIE, "", 0)],
            )),
            Err(NoSession::Unavailable) => Err(unavailable(state)),
        }
    }
}
