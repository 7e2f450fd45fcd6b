//! `GET /.well-known/oauth-protected-resource/mcp/{endpoint}`: each endpoint described as an
//! OAuth protected resource (RFC 9728), and the URLs the challenges and audiences use.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use mcpgw::http::{ApiError, ApiPath};
use mcpgw::state::AppState;

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
/// gets a token the gateway accepts here. `scopes_supported` is what clients should ask for
/// ([`mcpgw::identity::Authenticator::advertised_scopes`]).
pub async fn resource_metadata(
    State(state): State<AppState>,
    ApiPath(endpoint): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    // Names that cannot be registered are not resources; they also never reach a URL or header.
    if mcpgw::domain::validate_name(&endpoint).is_err() {
        return Err(ApiError::not_found("no MCP endpoint by that name"));
    }
    let providers = state.auth.providers().await?;
    let issuers: Vec<&str> = providers.iter().map(|p| p.issuer.as_str()).collect();
    // The same scopes the 401 challenge names: a client that registers and logs in with
    // them (the MCP Inspector registers with exactly these) gets a token the gateway takes.
    let scopes = state.auth.advertised_scopes().await;
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
