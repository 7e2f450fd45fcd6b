//! Per-user OAuth2 connections, self-service and admin:
//!
//! - `GET /me/connections`: every OAuth2 server the caller reaches (directly or through a
//!   virtual server, by the access-control decision) with the grant's status;
//! - `POST /me/connections/{server}/link`: a fresh single-use connect link (for a browser
//!   that does not hold the caller's credential);
//! - `DELETE /me/connections/{server}`: deletes the grant, then revokes it at the provider
//!   (RFC 7009), reporting what the provider said;
//! - `GET /admin/connections[?user=&server=]`, `GET /admin/users/{user}/connections` and
//!   `DELETE /admin/users/{user}/connections/{server}`: everyone's grants, for review and
//!   revocation.
//!
//! Tokens never leave the store sealed or not: the views carry status and times only.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use mcpgw::domain::{Grant, GrantStatus, McpServer, UpstreamAuth, validate_name};
use mcpgw::grants::revoke::{self, Revocation};
use mcpgw::grants::{GrantError, link};
use mcpgw::http::{ApiError, ApiPath};
use mcpgw::policy::Subject;
use mcpgw::state::AppState;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::time_fmt::to_rfc3339;
use crate::{Admin, Caller};

/// At most this many grants in one admin listing.
const ADMIN_LIST_MAX: usize = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/me/connections", get(mine))
        .route("/me/connections/{server}", delete(disconnect_mine))
        .route("/me/connections/{server}/link", post(link_mine))
        .route("/admin/connections", get(everyone))
        .route("/admin/users/{user}/connections", get(for_user))
        .route(
            "/admin/users/{user}/connections/{server}",
            delete(disconnect_for_user),
        )
}

/// A user from a path or query: the principal's form (lowercase email or `service:<name>`).
pub fn check_user(raw: &str) -> Result<String, ApiError> {
    let user = raw.trim().to_lowercase();
    if user.is_empty() || user.len() > 320 || user.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_field",
            "user must be an email or service:<name>",
        ));
    }
    Ok(user)
}

fn not_found(server: &str) -> ApiError {
    ApiError::not_found(format!("no connection to '{server}'"))
}

/// What a grant is, as its user would put it.
fn status_of(g: &Grant, now: i64) -> &'static str {
    match g.status {
        GrantStatus::NeedsReconsent => "needs_reconsent",
        // An expired access token with nothing to refresh it: usable again only after the
        // upstream refuses it and a refresh fails, or the user reconnects.
        GrantStatus::Active
            if g.refresh_at.is_none() && g.access_expires_at.is_some_and(|t| t <= now) =>
        {
            "expired"
        }
        GrantStatus::Active => "connected",
    }
}

/// A grant without its tokens.
fn grant_view(g: &Grant, now: i64) -> Value {
    json!({
        "user": g.user,
        "server": g.server,
        "status": status_of(g, now),
        "scopes": g.scopes,
        "expires_at": g.access_expires_at.map(to_rfc3339),
        "last_refresh_at": g.last_refresh_at.map(to_rfc3339),
        "last_error": g.last_error,
        "updated_at": to_rfc3339(g.updated_at),
    })
}

fn revocation_view(r: &Revocation) -> Value {
    match r {
        Revocation::Revoked { token } => json!({"status": "revoked", "token": token}),
        Revocation::NotSupported => json!({"status": "not_supported"}),
        Revocation::Failed { reason } => json!({"status": "failed", "reason": reason}),
    }
}

fn grant_failed(e: GrantError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "grant_store_unavailable",
        format!("the connection could not be read ({})", e.code()),
    )
    .with_cause(&e)
}

async fn oauth_server(state: &AppState, name: &str) -> Result<Option<McpServer>, ApiError> {
    if validate_name(name).is_err() {
        return Ok(None);
    }
    Ok(state
        .server(name)
        .await?
        .filter(|s| matches!(s.auth, UpstreamAuth::OAuth2 { .. }))
        .map(|s| (*s).clone()))
}

async fn mine(
    Caller(p): Caller,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let now = state.clock.now();
    let reachable = state.policy().await?.reachable_servers(&Subject::from(&p));
    let grants = state.store.list_grants_for_user(&p.user).await?;
    let public = state.config.public_url.trim_end_matches('/').to_owned();
    let mut out = Vec::new();
    for name in &reachable {
        if oauth_server(&state, name).await?.is_none() {
            continue;
        }
        let mut v = match grants.iter().find(|g| &g.server == name) {
            Some(g) => grant_view(g, now),
            None => json!({"user": p.user, "server": name, "status": "not_connected"}),
        };
        v["auth"] = "oauth2".into();
        v["connect_url"] = format!("{public}/oauth/connect/{name}").into();
        out.push(v);
    }
    // Grants for servers the caller no longer reaches are still theirs to see and revoke.
    for g in grants.iter().filter(|g| !reachable.contains(&g.server)) {
        let mut v = grant_view(g, now);
        v["reachable"] = false.into();
        out.push(v);
    }
    Ok(Json(json!({"connections": out})))
}

async fn link_mine(
    Caller(p): Caller,
    State(state): State<AppState>,
    ApiPath(server): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let reachable = state.policy().await?.reachable_servers(&Subject::from(&p));
    if !reachable.contains(&server) || oauth_server(&state, &server).await?.is_none() {
        return Err(ApiError::not_found("no OAuth server by that name"));
    }
    let url = link::make(&state, &p.user, &server)
        .await
        .map_err(grant_failed)?;
    let expires_at = to_rfc3339(state.clock.now() + link::LINK_TTL_SECS);
    Ok((
        StatusCode::CREATED,
        Json(json!({"server": server, "url": url, "expires_at": expires_at})),
    ))
}

/// Deletes `user`'s grant for `server` and revokes it; 404 when there is none.
async fn disconnect(state: &AppState, user: &str, server: &str) -> Result<Value, ApiError> {
    if validate_name(server).is_err() {
        return Err(not_found(server));
    }
    let revocation = match oauth_server(state, server).await? {
        Some(s) => revoke::disconnect(state, user, &s)
            .await
            .map_err(grant_failed)?,
        // The server is gone (or no longer OAuth2): the grant is deleted, there is no
        // provider to tell.
        None => match state.store.delete_grant(user, server).await? {
            true => {
                state.grants.forget(user, server);
                Some(Revocation::Failed {
                    reason: "the server is no longer an OAuth2 server of this gateway".into(),
                })
            }
            false => None,
        },
    };
    let revocation = revocation.ok_or_else(|| not_found(server))?;
    tracing::info!(%server, outcome = ?revocation, "connection revoked");
    Ok(json!({
        "user": user,
        "server": server,
        "deleted": true,
        "provider_revocation": revocation_view(&revocation),
    }))
}

async fn disconnect_mine(
    Caller(p): Caller,
    State(state): State<AppState>,
    ApiPath(server): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(disconnect(&state, &p.user, &server).await?))
}

async fn disconnect_for_user(
    _: Admin,
    State(state): State<AppState>,
    ApiPath((user, server)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let user = check_user(&user)?;
    Ok(Json(disconnect(&state, &user, &server).await?))
}

async fn for_user(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(user): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let user = check_user(&user)?;
    let now = state.clock.now();
    let grants = state.store.list_grants_for_user(&user).await?;
    let views: Vec<Value> = grants.iter().map(|g| grant_view(g, now)).collect();
    Ok(Json(json!({"connections": views})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    server: Option<String>,
}

async fn everyone(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(f) = query.map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            "the query parameters are user=<user> and server=<name>",
        )
    })?;
    let user = f.user.as_deref().map(check_user).transpose()?;
    let now = state.clock.now();
    let grants = match &user {
        Some(u) => state.store.list_grants_for_user(u).await?,
        None => state.store.list_grants(ADMIN_LIST_MAX + 1).await?,
    };
    let truncated = grants.len() > ADMIN_LIST_MAX;
    let views: Vec<Value> = grants
        .iter()
        .take(ADMIN_LIST_MAX)
        .filter(|g| f.server.as_ref().is_none_or(|s| &g.server == s))
        .map(|g| grant_view(g, now))
        .collect();
    Ok(Json(json!({"connections": views, "truncated": truncated})))
}
