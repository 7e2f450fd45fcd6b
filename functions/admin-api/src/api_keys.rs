//! `/admin/api-keys`: issue (the key is shown once), list, read and delete gateway API keys.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use mcpgw::domain::ApiKey;
use mcpgw::http::{ApiError, ApiJson, ApiPath};
use mcpgw::identity::issue_api_key;
use mcpgw::state::AppState;
use serde::{Deserialize, Serialize};

use crate::Admin;
use crate::time_fmt::{parse_rfc3339, to_rfc3339};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api-keys", get(list).post(create))
        .route("/admin/api-keys/{id}", get(read).delete(remove))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyInput {
    owner: String,
    name: String,
    #[serde(default)]
    expires_at: Option<String>,
    /// Grants the admin role to whoever holds the key.
    #[serde(default)]
    admin: bool,
}

/// A key as listed: never the hash, never the key.
#[derive(Debug, Serialize)]
struct KeyView {
    id: String,
    owner: String,
    name: String,
    admin: bool,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            owner: k.owner,
            name: k.name,
            admin: k.admin,
            created_at: to_rfc3339(k.created_at),
            expires_at: k.expires_at.map(to_rfc3339),
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_field", message)
}

/// A plausible email: one `@`, something on each side, no whitespace or control characters.
fn validate_owner(owner: &str) -> Result<(), ApiError> {
    let ok = owner.len() <= 254
        && owner.split('@').count() == 2
        && owner.split('@').all(|p| !p.is_empty())
        && !owner.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(invalid("owner must be an email address"))
    }
}

async fn create(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<KeyInput>,
) -> Result<impl IntoResponse, ApiError> {
    validate_owner(&input.owner)?;
    let name = input.name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(invalid("name must be 1 to 128 printable characters"));
    }
    let now = state.clock.now();
    let expires_at = match &input.expires_at {
        Some(s) => {
            let t = parse_rfc3339("expires_at", s)?;
            if t <= now {
                return Err(invalid("expires_at must be in the future"));
            }
            Some(t)
        }
        None => None,
    };
    let issued = issue_api_key(&input.owner, name, input.admin, now, expires_at);
    state.store.create_api_key(&issued.record).await?;
    let mut body =
        serde_json::to_value(KeyView::from(issued.record)).map_err(|e| ApiError::internal(&e))?;
    body["key"] = serde_json::Value::String(issued.plaintext);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list(_: Admin, State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let keys: Vec<KeyView> = state
        .store
        .list_api_keys()
        .await?
        .into_iter()
        .map(KeyView::from)
        .collect();
    Ok(Json(serde_json::json!({ "api_keys": keys })))
}

async fn read(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let key = state
        .store
        .get_api_key(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("api key '{id}' not found")))?;
    Ok(Json(KeyView::from(key)))
}

async fn remove(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    if state.store.delete_api_key(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("api key '{id}' not found")))
    }
}
