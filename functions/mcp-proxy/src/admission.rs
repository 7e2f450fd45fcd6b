//! Who may talk to an MCP endpoint: browsers only from allowed origins (DNS-rebinding and
//! cross-site protection), callers with a gateway credential, and only to registered
//! endpoints.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use mcpgw::domain::{McpServer, validate_name};
use mcpgw::http::ApiError;
use mcpgw::identity::Principal;
use mcpgw::state::AppState;

use crate::resource_metadata_url;

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `scheme://host[:port]` of a URL, lowercased, default ports dropped.
fn origin_of(url: &url::Url) -> String {
    url.origin().ascii_serialization().to_ascii_lowercase()
}

/// Refuses browser requests from origins other than the gateway's own (and the configured
/// ones) and, when the gateway serves on loopback, requests whose `Host` is not a loopback
/// name: a page on another site, or one whose DNS name was rebound to 127.0.0.1, must not
/// drive a local gateway with the user's credentials. Non-browser clients send no `Origin`.
pub fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Ok(public) = url::Url::parse(&state.config.public_url) else {
        return Ok(());
    };
    let local = public.host_str().is_some_and(is_loopback_host);
    let forbidden = || ApiError::forbidden("requests from this origin are not allowed");
    // Only a process listening on loopback is a DNS-rebinding target; behind API Gateway
    // (Lambda) the Host is the API's own and the public URL may be anything.
    let on_loopback = !state.config.in_lambda && state.config.listen.ip().is_loopback();
    if local
        && on_loopback
        && let Some(host) = headers.get(header::HOST)
    {
        let host = host.to_str().map_err(|_| forbidden())?;
        // Host is `name[:port]`; parse it as an authority to split off the port.
        let name = url::Url::parse(&format!("http://{host}"))
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        if !name.is_some_and(|n| is_loopback_host(&n)) {
            return Err(forbidden());
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| forbidden())?.trim();
    let Ok(parsed) = url::Url::parse(origin) else {
        // Includes the opaque origin `null` (sandboxed frames, file: pages).
        return Err(forbidden());
    };
    let serialized = origin_of(&parsed);
    let allowed = serialized == origin_of(&public)
        || state.config.allowed_origins.contains(&serialized)
        || (local && parsed.host_str().is_some_and(is_loopback_host));
    if allowed { Ok(()) } else { Err(forbidden()) }
}

/// Authenticates the caller and finds the endpoint. Unknown endpoints are 404 only after
/// authentication, so unauthenticated callers cannot probe what is registered.
pub async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<(Principal, Arc<McpServer>), ApiError> {
    check_origin(state, headers)?;
    // A name that cannot be registered is unknown: it never reaches the store (DynamoDB would
    // reject an oversized key) nor the challenge header (a quote would inject parameters).
    let metadata = validate_name(endpoint)
        .is_ok()
        .then(|| resource_metadata_url(state, endpoint));
    // A JWT must be meant for this endpoint (or the gateway as a whole).
    let resource = metadata
        .is_some()
        .then(|| crate::resource_url(state, endpoint));
    let principal = match state
        .auth
        .authenticate_for(headers, resource.as_deref())
        .await
    {
        Ok(p) => p,
        Err(e) => {
            let scopes = state.auth.challenge_scopes().await;
            return Err(e.into_challenge(metadata.as_deref(), &scopes));
        }
    };
    let unknown = || ApiError::not_found("no MCP endpoint by that name");
    if metadata.is_none() {
        return Err(unknown());
    }
    let server = state.server(endpoint).await?.ok_or_else(unknown)?;
    Ok((principal, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names() {
        for h in [
            "localhost",
            "127.0.0.1",
            "[::1]",
            "::1",
            "127.0.0.2",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["evil.example.com", "10.0.0.1", "localhost.evil.com", ""] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
