//! `/admin/api-keys`: issue (the key is shown once), list, read and delete anyone's gateway
//! API keys, service accounts' included. The self-service routes (`/me/api-keys`, in
//! `me.rs`) share the issuing rules below.

use axum::Json;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use mcpgw::clock::UnixTime;
use mcpgw::domain::{ApiKey, validate_name};
use mcpgw::http::{ApiError, ApiJson, ApiPath};
use mcpgw::identity::{BOOTSTRAP_KEY_ID, SERVICE_PREFIX, issue_api_key};
use mcpgw::state::AppState;
use serde::{Deserialize, Serialize};

use crate::Admin;
use crate::time_fmt::{parse_rfc3339, to_rfc3339};
use mcpgw::http::ErrorCode;

/// Most unexpired keys one owner may hold; a leaked automation loop cannot mint keys without
/// bound, and a person with more than this many live keys has lost track of them.
pub const MAX_ACTIVE_KEYS_PER_OWNER: usize = 50;

/// Longest lifetime `expires_in_days` may ask for (ten years).
const MAX_EXPIRES_IN_DAYS: i64 = 3650;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api-keys", get(list).post(create))
        .route("/admin/api-keys/{id}", get(read).delete(remove))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyInput {
    /// The person the key acts for (an email). Exactly one of `owner` and `service_account`.
    #[serde(default)]
    owner: Option<String>,
    /// A service account name: the key acts for `service:<name>`.
    #[serde(default)]
    service_account: Option<String>,
    name: String,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    expires_in_days: Option<i64>,
    /// Grants the admin role to whoever holds the key.
    #[serde(default)]
    admin: bool,
}

/// A key as listed: never the hash, never the key.
#[derive(Debug, Serialize)]
pub struct KeyView {
    id: String,
    owner: String,
    name: String,
    admin: bool,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    /// `null` until the key is first used; updated at most about once a minute.
    last_used_at: Option<String>,
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
            last_used_at: k.last_used_at.map(to_rfc3339),
        }
    }
}

pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable(ErrorCode::InvalidField, message)
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

/// The label of a key, trimmed: 1 to 128 printable characters.
pub fn key_label(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(invalid("name must be 1 to 128 printable characters"));
    }
    Ok(name)
}

/// When a new key expires: `expires_at` (RFC 3339, in the future) or `expires_in_days` (1 to
/// 3650), at most one of them; `None` for a key that does not expire.
pub fn expiry(
    now: UnixTime,
    expires_at: Option<&str>,
    expires_in_days: Option<i64>,
) -> Result<Option<UnixTime>, ApiError> {
    match (expires_at, expires_in_days) {
        (Some(_), Some(_)) => Err(invalid(
            "give at most one of expires_at and expires_in_days",
        )),
        (Some(s), None) => {
            let t = parse_rfc3339("expires_at", s)?;
            if t <= now {
                return Err(invalid("expires_at must be in the future"));
            }
            Ok(Some(t))
        }
        (None, Some(days)) => {
            if !(1..=MAX_EXPIRES_IN_DAYS).contains(&days) {
                return Err(invalid(format!(
                    "expires_in_days must be 1 to {MAX_EXPIRES_IN_DAYS}"
                )));
            }
            Ok(Some(now + days * 86_400))
        }
        (None, None) => Ok(None),
    }
}

/// Mints and stores a key for `owner` (already validated, lowercase), refusing when the owner
/// already holds [`MAX_ACTIVE_KEYS_PER_OWNER`] unexpired keys. Answers 201 with the key
/// (shown this once).
///
/// The cap is checked, then the key written: two creates racing at the cap can both pass, so
/// an owner may end up one or two keys over it, never more than the racing requests.
pub async fn issue(
    state: &AppState,
    owner: &str,
    name: &str,
    admin: bool,
    now: UnixTime,
    expires_at: Option<UnixTime>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let active = state
        .store
        .list_api_keys_for_owner(owner)
        .await?
        .iter()
        .filter(|k| !k.is_expired(now))
        .count();
    if active >= MAX_ACTIVE_KEYS_PER_OWNER {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::KeyLimitReached,
            format!(
                "'{owner}' already holds {MAX_ACTIVE_KEYS_PER_OWNER} active API keys, the most allowed; delete one first"
            ),
        ));
    }
    let issued = issue_api_key(owner, name, admin, now, expires_at);
    state.store.create_api_key(&issued.record).await?;
    let mut body =
        serde_json::to_value(KeyView::from(issued.record)).map_err(|e| ApiError::internal(&e))?;
    body["key"] = serde_json::Value::String(issued.plaintext);
    Ok((StatusCode::CREATED, Json(body)))
}

pub fn keys_json(keys: Vec<ApiKey>) -> Json<serde_json::Value> {
    let keys: Vec<KeyView> = keys.into_iter().map(KeyView::from).collect();
    Json(serde_json::json!({ "api_keys": keys }))
}

pub fn key_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("api key '{id}' not found"))
}

/// Longest id after `key_` that [`check_key_id`] lets through; minted ids have 12.
const MAX_KEY_ID_SUFFIX: usize = 64;

/// A key id from a path, checked before it reaches the store: `key_` and 1 to 64 URL-safe
/// characters (minted ids are `key_` + 12), or the bootstrap key's `bootstrap`. Anything
/// else cannot name a key, so it is the same 404 as an unknown id, without echoing the id
/// (a DynamoDB sort key over 1 KiB would otherwise fail the request as a backend error).
pub fn check_key_id(id: &str) -> Result<(), ApiError> {
    let minted = id.strip_prefix("key_").is_some_and(|rest| {
        (1..=MAX_KEY_ID_SUFFIX).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if minted || id == BOOTSTRAP_KEY_ID {
        Ok(())
    } else {
        Err(ApiError::not_found("api key not found"))
    }
}

async fn create(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<KeyInput>,
) -> Result<impl IntoResponse, ApiError> {
    let owner = match (&input.owner, &input.service_account) {
        (Some(owner), None) => {
            validate_owner(owner)?;
            owner.to_lowercase()
        }
        (None, Some(account)) => {
            validate_name(account).map_err(|m| invalid(format!("service_account: {m}")))?;
            format!("{SERVICE_PREFIX}{account}")
        }
        _ => {
            return Err(invalid(
                "give exactly one of owner (an email) and service_account (a name)",
            ));
        }
    };
    let name = key_label(&input.name)?;
    let now = state.clock.now();
    let expires_at = expiry(now, input.expires_at.as_deref(), input.expires_in_days)?;
    issue(&state, &owner, name, input.admin, now, expires_at).await
}

/// Longest owner a key can have: owners are emails (at most 254 characters from this API,
/// 320 from an identity provider's claim), `service:<name>` or `bootstrap-admin`. A longer
/// `?owner=` matches nothing and is answered without asking the store.
const MAX_OWNER_LEN: usize = 320;

/// `?owner=<email or service:name>` narrows the list to one owner; nothing else is accepted
/// (a mistyped filter must not silently list every key).
fn owner_filter(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut owner = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "owner" if owner.is_none() => owner = Some(v.to_lowercase()),
            "owner" => {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    "give owner at most once",
                ));
            }
            _ => {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    "the only query parameter is owner",
                ));
            }
        }
    }
    Ok(owner)
}

async fn list(
    _: Admin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    let keys = match owner_filter(query.as_deref())? {
        Some(owner) if owner.len() > MAX_OWNER_LEN => Vec::new(),
        Some(owner) => state.store.list_api_keys_for_owner(&owner).await?,
        None => state.store.list_api_keys().await?,
    };
    Ok(keys_json(keys))
}

async fn read(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_key_id(&id)?;
    let key = state
        .store
        .get_api_key(&id)
        .await?
        .ok_or_else(|| key_not_found(&id))?;
    Ok(Json(KeyView::from(key)))
}

async fn remove(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_key_id(&id)?;
    if state.store.delete_api_key(&id).await? {
        state.auth.key_deleted(&id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(key_not_found(&id))
    }
}
