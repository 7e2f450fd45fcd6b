//! Self-service for any authenticated caller, admin or not: `GET /me` (who the gateway
//! thinks you are) and `/me/api-keys` (your own keys: issue, list, read, revoke).
//!
//! A caller only ever sees their own keys: another owner's key id answers 404 exactly like
//! an id that does not exist, so ids cannot be probed.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use mcpgw::http::{ApiError, ApiJson, ApiPath};
use mcpgw::identity::{AuthMethod, Principal};
use mcpgw::state::AppState;
use serde::Deserialize;

use crate::Caller;
use crate::api_keys::{KeyView, check_key_id, expiry, issue, key_label, key_not_found, keys_json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/me", get(me))
        .route("/me/api-keys", get(list).post(create))
        .route("/me/api-keys/{id}", get(read).delete(remove))
}

/// The principal as `GET /me` shows it.
fn principal_json(p: &Principal) -> serde_json::Value {
    serde_json::json!({
        "user": p.user,
        "email": p.email,
        "subject": p.subject,
        "groups": p.groups,
        "roles": p.roles(),
        "service_account": p.service_account,
        "auth": p.method,
    })
}

async fn me(Caller(p): Caller) -> impl IntoResponse {
    Json(principal_json(&p))
}

/// Body of `POST /me/api-keys`. The owner is always the caller; no admin flag.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MyKeyInput {
    name: String,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    expires_in_days: Option<i64>,
}

/// Whether keys the caller makes for themselves carry the admin flag. A key acts as its
/// owner, and roles that come from outside the key (an identity provider's admin groups)
/// do not travel with it; `MCPGW_ADMIN_EMAILS` applies to keys by their owner anyway. The
/// bootstrap admin is an admin by definition, so its own keys are admin keys.
fn self_issued_admin(p: &Principal) -> bool {
    let bootstrap = Principal::bootstrap();
    p.is_admin && p.user == bootstrap.user && !matches!(p.method, AuthMethod::Jwt { .. })
}

async fn create(
    Caller(p): Caller,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<MyKeyInput>,
) -> Result<impl IntoResponse, ApiError> {
    let name = key_label(&input.name)?;
    let now = state.clock.now();
    let expires_at = expiry(now, input.expires_at.as_deref(), input.expires_in_days)?;
    issue(
        &state,
        &p.user,
        name,
        self_issued_admin(&p),
        now,
        expires_at,
    )
    .await
}

async fn list(
    Caller(p): Caller,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(keys_json(
        state.store.list_api_keys_for_owner(&p.user).await?,
    ))
}

/// The caller's key `id`; 404 when it does not exist or belongs to someone else.
async fn own_key(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<mcpgw::domain::ApiKey, ApiError> {
    check_key_id(id)?;
    state
        .store
        .get_api_key(id)
        .await?
        .filter(|k| k.owner == p.user)
        .ok_or_else(|| key_not_found(id))
}

async fn read(
    Caller(p): Caller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(KeyView::from(own_key(&state, &p, &id).await?)))
}

async fn remove(
    Caller(p): Caller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    own_key(&state, &p, &id).await?;
    if state.store.delete_api_key(&id).await? {
        state.auth.key_deleted(&id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(key_not_found(&id))
    }
}
