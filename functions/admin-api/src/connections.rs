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
//! - `PUT /me/credentials/{server}` `{"token"}` and `DELETE /me/credentials/{server}`: the
//!   caller's own token for a `per_user_token` server (listed in `/me/connections` too).
//!
//! Tokens never leave the store sealed or not: the views carry status and times only.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use mcpgw::audit::events::connection;
use mcpgw::audit::{Actor, Event};
use mcpgw::domain::{Grant, GrantStatus, McpServer, UpstreamAuth, validate_name};
use mcpgw::grants::revoke::{self, Revocation};
use mcpgw::grants::{link, user_token};
use mcpgw::http::{ApiError, ApiJson, ApiPath};
use mcpgw::policy::Subject;
use mcpgw::state::AppState;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::time_fmt::to_rfc3339;
use crate::{Admin, Caller};
use mcpgw::http::ErrorCode;

/// At most this many grants in one admin listing.
const ADMIN_LIST_MAX: usize = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/me/connections", get(mine))
        .route("/me/connections/{server}", delete(disconnect_mine))
        .route("/me/connections/{server}/link", post(link_mine))
        .route(
            "/me/credentials/{server}",
            put(set_credential).delete(clear_credential),
        )
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
            ErrorCode::InvalidField,
            "user must be an email or service:<name>",
        ));
    }
    Ok(user)
}

/// Not echoing the name: a path segment is not reflected back.
fn not_found() -> ApiError {
    ApiError::not_found("no connection to that server")
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
        Revocation::NotApplicable => json!({"status": "not_applicable"}),
    }
}

/// Which per-user credential a server takes.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    OAuth2,
    UserToken,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::OAuth2 => "oauth2",
            Kind::UserToken => "per_user_token",
        }
    }
}

/// The server `name` if it takes a per-user credential, with its kind.
async fn per_user_server(
    state: &AppState,
    name: &str,
) -> Result<Option<(McpServer, Kind)>, ApiError> {
    if validate_name(name).is_err() {
        return Ok(None);
    }
    Ok(state.server(name).await?.and_then(|s| {
        let kind = match s.auth {
            UpstreamAuth::OAuth2 { .. } => Kind::OAuth2,
            UpstreamAuth::PerUserToken { .. } => Kind::UserToken,
            _ => return None,
        };
        Some(((*s).clone(), kind))
    }))
}

async fn oauth_server(state: &AppState, name: &str) -> Result<Option<McpServer>, ApiError> {
    Ok(per_user_server(state, name)
        .await?
        .filter(|(_, k)| *k == Kind::OAuth2)
        .map(|(s, _)| s))
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
        let Some((_, kind)) = per_user_server(&state, name).await? else {
            continue;
        };
        let mut v = match grants.iter().find(|g| &g.server == name) {
            Some(g) => grant_view(g, now),
            None => json!({"user": p.user, "server": name, "status": "not_connected"}),
        };
        v["auth"] = kind.name().into();
        match kind {
            Kind::OAuth2 => v["connect_url"] = format!("{public}/oauth/connect/{name}").into(),
            Kind::UserToken => {
                v["credentials_url"] = format!("{public}/me/credentials/{name}").into()
            }
        }
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
    let url = link::make(&state.grants, &p.user, &server).await?;
    let expires_at = to_rfc3339(state.clock.now() + link::LINK_TTL_SECS);
    Ok((
        StatusCode::CREATED,
        Json(json!({"server": server, "url": url, "expires_at": expires_at})),
    ))
}

/// Deletes the stored grant and what this process remembers of it; whether there was one.
async fn forget(state: &AppState, user: &str, server: &str) -> Result<bool, ApiError> {
    let deleted = state.store.delete_grant(user, server).await?;
    state.grants.forget(user, server);
    Ok(deleted)
}

/// Deletes `user`'s grant for `server` and revokes it; 404 when there is none. Recorded as
/// `event` (`Disconnect` by the user, `Revoke` by an admin) done by `by`.
async fn disconnect(
    state: &AppState,
    user: &str,
    server: &str,
    by: &mcpgw::identity::Principal,
    event: Event,
) -> Result<Value, ApiError> {
    if validate_name(server).is_err() {
        return Err(not_found());
    }
    let found = per_user_server(state, server).await?;
    let kind = match &found {
        Some((_, Kind::OAuth2)) => "oauth2",
        Some((_, Kind::UserToken)) => "per_user_token",
        None => "unknown",
    };
    let revocation = match found {
        Some((s, Kind::OAuth2)) => revoke::disconnect(&state.grants, user, &s).await?,
        Some((_, Kind::UserToken)) => forget(state, user, server)
            .await?
            .then_some(Revocation::NotApplicable),
        // The server is gone (or no longer OAuth2): the grant is deleted, there is no
        // provider to tell.
        None => forget(state, user, server)
            .await?
            .then(|| Revocation::Failed {
                reason: "the server no longer takes per-user credentials".into(),
            }),
    };
    let revocation = revocation.ok_or_else(not_found)?;
    tracing::info!(%server, outcome = ?revocation, "connection revoked");
    let view = revocation_view(&revocation);
    state.audit.emit(connection(
        event,
        Actor::of(by),
        user,
        server,
        kind,
        Some(json!({"provider_revocation": view})),
    ));
    Ok(json!({
        "user": user,
        "server": server,
        "deleted": true,
        "provider_revocation": view,
    }))
}

async fn disconnect_mine(
    Caller(p): Caller,
    State(state): State<AppState>,
    ApiPath(server): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        disconnect(&state, &p.user, &server, &p, Event::Disconnect).await?,
    ))
}

async fn disconnect_for_user(
    Admin(admin): Admin,
    State(state): State<AppState>,
    ApiPath((user, server)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let user = check_user(&user)?;
    Ok(Json(
        disconnect(&state, &user, &server, &admin, Event::Revoke).await?,
    ))
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
            ErrorCode::InvalidQuery,
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

/// Body of `PUT /me/credentials/{server}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialInput {
    token: String,
}

impl std::fmt::Debug for CredentialInput {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialInput { .. }")
    }
}

/// The `per_user_token` server `server` if the caller reaches it; 404 otherwise (a server
/// the caller may not use is answered like an unknown one).
async fn my_token_server(
    state: &AppState,
    p: &mcpgw::identity::Principal,
    server: &str,
) -> Result<McpServer, ApiError> {
    let unknown = || ApiError::not_found("no per-user-token server by that name");
    let Some((s, Kind::UserToken)) = per_user_server(state, server).await? else {
        return Err(unknown());
    };
    if !state
        .policy()
        .await?
        .reachable_servers(&Subject::from(p))
        .contains(server)
    {
        return Err(unknown());
    }
    Ok(s)
}

async fn set_credential(
    Caller(p): Caller,
    State(state): State<AppState>,
    ApiPath(server): ApiPath<String>,
    ApiJson(input): ApiJson<CredentialInput>,
) -> Result<impl IntoResponse, ApiError> {
    let s = my_token_server(&state, &p, &server).await?;
    user_token::check_token(&input.token)
        .map_err(|e| ApiError::unprocessable(ErrorCode::InvalidField, e.to_string()))?;
    if user_token::header_for(&s, &input.token).is_none() {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            "the token cannot be sent in this server's header",
        ));
    }
    user_token::store(&state.grants, &p.user, &s, &input.token).await?;
    tracing::info!(%server, "per-user token stored");
    token_record(&state, &p, &server, Event::Connect);
    Ok(StatusCode::NO_CONTENT)
}

/// Records `p` storing (`Connect`) or removing (`Disconnect`) their token for `server`.
fn token_record(state: &AppState, p: &mcpgw::identity::Principal, server: &str, event: Event) {
    let actor = Actor::of(p);
    let record = connection(event, actor, &p.user, server, "per_user_token", None);
    state.audit.emit(record);
}

async fn clear_credential(
    Caller(p): Caller,
    State(state): State<AppState>,
    ApiPath(server): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    // Like disconnecting: allowed even after losing access to the server.
    if !matches!(
        per_user_server(&state, &server).await?,
        Some((_, Kind::UserToken))
    ) || !forget(&state, &p.user, &server).await?
    {
        return Err(ApiError::not_found("no token stored for that server"));
    }
    token_record(&state, &p, &server, Event::Disconnect);
    Ok(StatusCode::NO_CONTENT)
}
