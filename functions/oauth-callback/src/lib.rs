//! OAuth callback Lambda: will serve `/oauth/connect/{server}` and `/oauth/callback/{server}`
//! once the per-user OAuth issue lands. Today it carries only the common routes (`/healthz`),
//! so the function, its wiring and its deployment exist and are tested from the start.

use axum::Router;
use mcpgw::state::AppState;

/// The OAuth routes, without the common layers. None yet: unknown routes answer a JSON 404.
pub fn routes(state: AppState) -> Router {
    Router::new().with_state(state)
}

/// The deployable router.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    mcpgw::http::finish(routes(state), limit)
}
