//! Admin API: `/admin/servers`, `/admin/api-keys`, `/admin/identity-providers`, the access
//! control documents (`/admin/teams`, `/admin/server-groups`, `/admin/virtual-servers`,
//! `/admin/rate-limits`, catalogs), the audit trail (`/admin/audit`, `/admin/audit/verify`) and `/admin/openapi.json` (INTERFACE.md), for callers holding the admin role, and the self-service `/me` routes
//! (`GET /me`, `/me/api-keys`, `/me/catalog`, `/me/connections`, `/me/audit`) for any authenticated caller. Plain axum over [`AppState`];
//! `main.rs` runs it under Lambda, `functions/local` mounts it beside the other routers.
//! Tested with `tower::ServiceExt::oneshot` in `tests/` and end to end in the `e2e` crate.

mod access;
mod api_keys;
mod audit;
mod catalog;
mod changes;
mod config_path;
mod connections;
mod console;
mod identity_providers;
mod me;
mod openapi;
mod rate_limits;
mod servers;
mod time_fmt;

pub use api_keys::MAX_ACTIVE_KEYS_PER_OWNER;
pub use openapi::DOCUMENT as OPENAPI_DOCUMENT;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use mcpgw::http::ApiError;
use mcpgw::http::ErrorCode;
use mcpgw::identity::Principal;
use mcpgw::state::AppState;

/// The admin routes, without the common layers (see [`app`]).
pub fn routes(state: AppState) -> Router {
    let inner = Router::new()
        .merge(servers::routes())
        .merge(access::routes())
        .merge(catalog::routes())
        .merge(connections::routes())
        .merge(api_keys::routes())
        .merge(identity_providers::routes())
        .merge(me::routes())
        .merge(audit::routes())
        .merge(openapi::routes())
        .merge(console::routes())
        .with_state(state.clone());
    // Every document change is recorded (who, what, before/after hashes), in one place.
    changes::audited(inner, state)
}

/// The deployable router: [`routes`] plus `/healthz`, fallbacks and error logging.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    mcpgw::http::finish(routes(state), limit)
}

/// 422 `egress_denied` when the egress policy refuses the host `url` names as a literal
/// (any spelling the URL parser canonicalizes) or as `localhost`; the message names the field
/// and the rule. DNS names pass here: what they resolve to now proves nothing about what they
/// will resolve to, so they are judged on every connection instead (see `mcpgw::egress`).
pub(crate) fn check_egress(state: &AppState, field: &str, url: &str) -> Result<(), ApiError> {
    state
        .config
        .egress
        .check_url_str(url)
        .map_err(|e| ApiError::unprocessable(ErrorCode::EgressDenied, format!("{field}: {e}")))
}

/// Any authenticated caller; 401 otherwise.
pub struct Caller(pub Principal);

/// The signed-in console user, on requests the console makes to these routes in-process
/// (`console::api`). Only this crate can attach it; requests from the network never carry it.
#[derive(Clone)]
pub(crate) struct ConsoleIdentity(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(ConsoleIdentity(p)) = parts.extensions.get::<ConsoleIdentity>() {
            return Ok(Caller(p.clone()));
        }
        match state.auth.authenticate(&parts.headers).await {
            Ok(p) => Ok(Caller(p)),
            Err(e) => {
                // Sampled, per the API's part (`admin` or `me`), never the credential.
                let part = if parts.uri.path().starts_with("/me") {
                    "me"
                } else {
                    "admin"
                };
                mcpgw::audit::events::auth_failed(
                    (&state.audit, &state.audit_sampler),
                    &parts.headers,
                    part,
                    &e,
                );
                Err(ApiError::from(e))
            }
        }
    }
}

/// An authenticated caller holding the admin role; 401 or 403 otherwise.
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        if !principal.is_admin {
            return Err(ApiError::forbidden("the admin role is required"));
        }
        Ok(Admin(principal))
    }
}
