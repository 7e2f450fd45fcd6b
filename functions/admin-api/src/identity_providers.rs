//! `/admin/identity-providers`: register, list, read, replace and delete the identity
//! providers whose JWTs the gateway accepts. After every write this process's authenticator
//! forgets its cached providers (`Authenticator::providers_changed`), so the change applies
//! here at once and in other processes within their cache lifetime.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use mcpgw::domain::IdentityProvider;
use mcpgw::http::{ApiError, ApiJson, ApiPath};
use mcpgw::state::AppState;
use mcpgw::store::{ConfigKind, ConfigStoreExt, to_doc};
use serde_json::{Map, Value};

use crate::Admin;
use crate::api_keys::invalid;
use crate::config_path::{check_path_name, not_found};
use crate::time_fmt::to_rfc3339;
use mcpgw::http::ErrorCode;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/identity-providers", get(list).post(create))
        .route(
            "/admin/identity-providers/{name}",
            get(read).put(replace).delete(remove),
        )
}

const KIND: ConfigKind = ConfigKind::IdentityProvider;

/// A provider from a request body: the domain type's fields and defaults, minus the
/// timestamps, which the gateway sets. Unknown fields (a typo such as "audience") are a 400,
/// as is a wrong type; values are then checked by [`IdentityProvider::validate`] (422).
fn provider_from(mut body: Map<String, Value>, name: &str) -> Result<IdentityProvider, ApiError> {
    for stamp in ["created_at", "updated_at"] {
        if body.contains_key(stamp) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidJson,
                format!("invalid request body: {stamp} is set by the gateway"),
            ));
        }
    }
    body.insert("name".into(), Value::String(name.to_owned()));
    let idp: IdentityProvider = serde_json::from_value(Value::Object(body)).map_err(|e| {
        ApiError::bad_request(ErrorCode::InvalidJson, format!("invalid request body: {e}"))
    })?;
    idp.validate().map_err(invalid)?;
    Ok(idp)
}

/// The gateway fetches the issuer's metadata and the JWKS itself: both must pass the egress
/// policy (422 `egress_denied`).
fn check_egress(state: &AppState, idp: &IdentityProvider) -> Result<(), ApiError> {
    crate::check_egress(state, "issuer", &idp.issuer)?;
    if let Some(j) = &idp.jwks_uri {
        crate::check_egress(state, "jwks_uri", j)?;
    }
    Ok(())
}

/// The body's `name` (a string), if given.
fn body_name(body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match body.get("name") {
        None => Ok(None),
        Some(Value::String(n)) => Ok(Some(n.clone())),
        Some(_) => Err(invalid("name must be a string")),
    }
}

/// Two providers with one issuer would make the token's `iss` ambiguous: 409. The provider
/// configured by environment (`MCPGW_IDP_*`) counts too: it wins every token of its issuer,
/// so a stored provider with that issuer would be silently ignored.
async fn check_issuer_free(state: &AppState, idp: &IdentityProvider) -> Result<(), ApiError> {
    if let Some(configured) = state
        .config
        .identity_provider
        .as_ref()
        .filter(|p| p.issuer == idp.issuer)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::IssuerTaken,
            format!(
                "identity provider '{}' (configured by environment) already has issuer '{}'",
                configured.name, idp.issuer
            ),
        ));
    }
    let providers: Vec<IdentityProvider> = state.store.list_typed(KIND).await?;
    if let Some(other) = providers
        .iter()
        .find(|p| p.issuer == idp.issuer && p.name != idp.name)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::IssuerTaken,
            format!(
                "identity provider '{}' already has issuer '{}'",
                other.name, idp.issuer
            ),
        ));
    }
    Ok(())
}

/// A provider as the API shows it (timestamps as RFC 3339).
fn view(idp: &IdentityProvider) -> Value {
    let mut v = to_doc(idp);
    v["created_at"] = Value::String(to_rfc3339(idp.created_at));
    v["updated_at"] = Value::String(to_rfc3339(idp.updated_at));
    v
}

async fn create(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<impl IntoResponse, ApiError> {
    let name = body_name(&body)?.ok_or_else(|| invalid("name is required"))?;
    let mut idp = provider_from(body, &name)?;
    check_egress(&state, &idp)?;
    check_issuer_free(&state, &idp).await?;
    let now = state.clock.now();
    (idp.created_at, idp.updated_at) = (now, now);
    state
        .store
        .create_config(KIND, &name, &to_doc(&idp))
        .await?;
    state.auth.providers_changed();
    Ok((StatusCode::CREATED, Json(view(&idp))))
}

async fn list(_: Admin, State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let providers: Vec<IdentityProvider> = state.store.list_typed(KIND).await?;
    let views: Vec<Value> = providers.iter().map(view).collect();
    Ok(Json(serde_json::json!({ "identity_providers": views })))
}

async fn read(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_path_name(KIND, &name)?;
    let idp: IdentityProvider = state
        .store
        .get_typed(KIND, &name)
        .await?
        .ok_or_else(|| not_found(KIND, &name))?;
    Ok(Json(view(&idp)))
}

async fn replace(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<impl IntoResponse, ApiError> {
    if body_name(&body)?.is_some_and(|n| n != name) {
        return Err(invalid(
            "name in the body must match the path (identity providers cannot be renamed)",
        ));
    }
    let mut idp = provider_from(body, &name)?;
    check_egress(&state, &idp)?;
    let existing: IdentityProvider = state
        .store
        .get_typed(KIND, &name)
        .await?
        .ok_or_else(|| not_found(KIND, &name))?;
    check_issuer_free(&state, &idp).await?;
    (idp.created_at, idp.updated_at) = (existing.created_at, state.clock.now());
    state
        .store
        .replace_config(KIND, &name, &to_doc(&idp))
        .await?;
    state.auth.providers_changed();
    Ok(Json(view(&idp)))
}

async fn remove(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_path_name(KIND, &name)?;
    let deleted = state.store.delete_config(KIND, &name).await?;
    state.auth.providers_changed();
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(KIND, &name))
    }
}
