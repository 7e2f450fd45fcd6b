//! The web console (issue 11): a small server-rendered site on the admin function's
//! routes, for people rather than scripts.
//!
//! - `/console/login`: sign in with the identity provider (OIDC code + PKCE, the gateway as
//!   the client) or by pasting a gateway API key once; `/console/logout`.
//! - `/console`: every endpoint the user may use (the access-control decision), its auth
//!   type, and per-user credentials: Connect / Reconnect / Disconnect for OAuth2 servers, a
//!   token form for `per_user_token` servers.
//! - `/console/admin/...` (admins only): servers, server groups, teams, virtual servers and
//!   identity providers with create/edit/delete forms, "what would this user see", and
//!   everyone's grants with revoke.
//! - `/console/activity` ("My activity") and `/console/admin/activity` ("Activity", admins):
//!   the audit trail, filtered (see [`activity`]).
//!
//! Every page is rendered here (no scripts at all, the stylesheet from the gateway, a strict
//! CSP); every change goes through the same admin API handlers (see [`api`]), so the console
//! shows the API's own validation errors and can do nothing the API would refuse.

// A refusal here is the page the browser gets (`Result<_, Response>`); boxing it would buy
// nothing on pages this far from the hot path.
#![allow(clippy::result_large_err)]

mod activity;
mod admin;
mod api;
mod html;
mod mine;
mod session;
mod signin;

use std::collections::HashMap;

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use mcpgw::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(mine::page))
        .route("/console/assets/console.css", get(html::stylesheet))
        .route("/console/login", get(signin::page).post(signin::with_key))
        .route("/console/login/oidc/{idp}", get(signin::start))
        .route("/console/callback", get(signin::callback))
        .route("/console/logout", post(signin::logout))
        .route("/console/connections/{server}/connect", post(mine::connect))
        .route(
            "/console/connections/{server}/disconnect",
            post(mine::disconnect),
        )
        .route("/console/credentials/{server}", post(mine::set_token))
        .route(
            "/console/credentials/{server}/clear",
            post(mine::clear_token),
        )
        .route("/console/activity", get(activity::mine))
        .route("/console/admin", get(admin::index))
        .route("/console/admin/activity", get(activity::all))
        .route("/console/admin/catalog", get(admin::catalog))
        .route("/console/admin/connections", get(admin::grants))
        .route("/console/admin/connections/revoke", post(admin::revoke))
        .route(
            "/console/admin/{kind}",
            get(admin::list).post(admin::create),
        )
        .route(
            "/console/admin/{kind}/{name}",
            get(admin::edit).post(admin::save),
        )
        .route("/console/admin/{kind}/{name}/delete", post(admin::delete))
        .route(
            "/console/admin/{kind}/{name}/discover",
            post(admin::discover),
        )
}

/// A submitted form (`application/x-www-form-urlencoded`), read within the body limit. Any
/// other body is a 415 page, an oversized one a 413 page: never a panic or a partial read.
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl FromRequest<AppState> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let base = session::base(state);
        let refuse = |status: StatusCode, what: &str| {
            html::Page::new(status, "Form refused", html::message("error", what)).render(&base)
        };
        let form_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form_type {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the console takes HTML form posts only",
            ));
        }
        let bytes = mcpgw::http::read_body(req.into_body(), state.config.max_body_bytes)
            .await
            .map_err(|e| {
                let status = axum::response::IntoResponse::into_response(e).status();
                refuse(status, "the form is too large or could not be read")
            })?;
        Ok(Form(
            url::form_urlencoded::parse(&bytes).into_owned().collect(),
        ))
    }
}
