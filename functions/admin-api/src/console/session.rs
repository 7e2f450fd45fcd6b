//! The console session in the console's pages: the sealed cookie itself (what it holds, how
//! it is sealed and opened) is [`mcpgw::browser::session`], shared with the connect flow;
//! here are its cookie attributes, its extractor and the pages it answers with.
//!
//! Every state-changing form carries the session's CSRF token, checked in constant time.
//! The cookie is `HttpOnly`, `SameSite=Lax`, and `Secure` unless the gateway's public URL is
//! loopback (browsers drop Secure cookies on plain http).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mcpgw::identity::Principal;
use mcpgw::state::AppState;

use super::{Form, html};

pub use mcpgw::browser::read_cookie;
pub use mcpgw::browser::session::{COOKIE, NoSession, SESSION_TTL, Who};

/// Binds a sign-in (key form or identity-provider round trip) to the browser that began it.
pub const LOGIN_COOKIE: &str = "mcpgw_console_login";
/// How long a sign-in may take.
pub const LOGIN_TTL: i64 = 600;

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

/// The `Set-Cookie` value of a new session for `who`.
pub async fn issue(state: &AppState, who: Who) -> Result<String, Response> {
    match mcpgw::browser::session::seal(state, who).await {
        Ok(value) => Ok(cookie(state, COOKIE, &value, SESSION_TTL)),
        Err(e) => {
            tracing::error!(error = %mcpgw::http::error_chain(&e), "console session not sealed");
            Err(unavailable(state))
        }
    }
}

fn unavailable(state: &AppState) -> Response {
    html::Page::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again later",
        html::message("error", "The console cannot start a session right now."),
    )
    .render(&base(state))
}

/// The session of a request.
pub async fn open(state: &AppState, headers: &HeaderMap) -> Result<Console, NoSession> {
    let s = mcpgw::browser::session::open(state, headers).await?;
    Ok(Console {
        principal: s.principal,
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
