//! MCP proxy: `POST/GET/DELETE /mcp/{endpoint}` forwards MCP Streamable HTTP to the
//! registered upstream with the gateway's credential for it, and
//! `GET /.well-known/oauth-protected-resource/mcp/{endpoint}` describes the endpoint as an
//! OAuth protected resource (RFC 9728).
//!
//! The caller authenticates with a gateway credential that never travels upstream: only the
//! allowlisted transport headers do (see `mcpgw::upstream`). Client messages are read strictly
//! and forwarded as the gateway parsed and authorized them, re-serialized
//! (`mcpgw::mcp::jsonrpc::parse_client_message`). Answers are checked before they reach the
//! client (`relay`): JSON whole, SSE event by event, as they arrive; one that is not JSON-RPC
//! or answers another id becomes the gateway's `-32002 upstream_bad_answer`. Tested in
//! `tests/proxy.rs`, `tests/strict_messages.rs` and `tests/hostile_upstreams.rs` against
//! in-process upstreams and in the `e2e` crate against server-everything and the Python MCP SDK.

mod admission;
mod connect_prompt;
mod forward;
mod relay;
mod session_era;
mod stateless_era;
mod virtual_endpoint;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use mcpgw::http::{ApiError, ApiPath};
use mcpgw::state::AppState;

/// The proxy routes, without the common layers (see [`app`]).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/mcp/{endpoint}",
            get(forward::get)
                .post(forward::post)
                .delete(forward::delete),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp/{endpoint}",
            get(resource_metadata),
        )
        .with_state(state)
}

/// The deployable router: [`routes`] plus `/healthz`, fallbacks and error logging.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    mcpgw::http::finish(routes(state), limit)
}

/// URL of an endpoint's protected-resource metadata, for `WWW-Authenticate` challenges.
pub fn resource_metadata_url(state: &AppState, endpoint: &str) -> String {
    format!(
        "{}/.well-known/oauth-protected-resource/mcp/{endpoint}",
        state.config.public_url
    )
}

/// Canonical URL of an endpoint: the `resource` of its metadata and the audience its tokens
/// carry (RFC 8707).
pub fn resource_url(state: &AppState, endpoint: &str) -> String {
    format!("{}/mcp/{endpoint}", state.config.public_url)
}

/// RFC 9728 metadata. Open to everyone (clients read it before they have a credential), and
/// the same for known and unknown endpoints so it reveals nothing about what is registered
/// (only names that could never be registered get a 404). The authorization servers are the
/// configured identity providers; a client that logs in at one and asks for this resource
/// gets a token the gateway accepts here.
async fn resource_metadata(
    State(state): State<AppState>,
    ApiPath(endpoint): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    // Names that cannot be registered are not resources; they also never reach a URL or header.
    if mcpgw::domain::validate_name(&endpoint).is_err() {
        return Err(ApiError::not_found("no MCP endpoint by that name"));
    }
    let providers = state.auth.providers().await?;
    let issuers: Vec<&str> = providers.iter().map(|p| p.issuer.as_str()).collect();
    let mut scopes: Vec<&str> = providers
        .iter()
        .flat_map(|p| p.required_scopes.iter().map(String::as_str))
        .collect();
    scopes.sort();
    scopes.dedup();
    let mut doc = serde_json::json!({
        "resource": resource_url(&state, &endpoint),
        "authorization_servers": issuers,
        "bearer_methods_supported": ["header"],
        "resource_name": format!("MCP gateway endpoint {endpoint}"),
    });
    if !scopes.is_empty() {
        doc["scopes_supported"] = scopes.into();
    }
    Ok(Json(doc))
}
