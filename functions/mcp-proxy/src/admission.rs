//! Who may talk to an MCP endpoint, decided once per request: browsers only from allowed
//! origins (DNS-rebinding and cross-site protection), callers with a gateway credential, and
//! only to registered endpoints they may use.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use mcpgw::domain::{McpServer, validate_name};
use mcpgw::http::ApiError;
use mcpgw::identity::Principal;
use mcpgw::policy::{Access, Subject};
use mcpgw::state::AppState;

use crate::metadata::{resource_metadata_url, resource_url};

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The name part of a `Host` header (`name`, `name:port`, `[v6]:port`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
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
    // Computed once at start (this runs on every MCP request).
    let local = state.config.public_is_loopback;
    let forbidden = || ApiError::forbidden("requests from this origin are not allowed");
    // Only a process listening on loopback is a DNS-rebinding target; behind API Gateway
    // (Lambda) the Host is the API's own and the public URL may be anything.
    let on_loopback = !state.config.in_lambda && state.config.listen.ip().is_loopback();
    if local
        && on_loopback
        && let Some(host) = headers.get(header::HOST)
    {
        let host = host.to_str().map_err(|_| forbidden())?;
        if !is_loopback_host(host_name(host)) {
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
    let allowed = serialized == state.config.public_origin
        || state.config.allowed_origins.contains(&serialized)
        || (local && parsed.host_str().is_some_and(is_loopback_host));
    if allowed { Ok(()) } else { Err(forbidden()) }
}

/// An admitted request: who, which endpoint, and what it is.
pub struct Admitted {
    pub principal: Principal,
    pub endpoint: String,
    pub target: Target,
}

/// What an admitted request is for.
pub enum Target {
    /// A registered server, and what this caller may do on it.
    Server(Arc<McpServer>, Access),
    /// A virtual server (the access carries it): the gateway is the MCP server.
    Virtual(Access),
}

/// Authenticates the caller, finds the endpoint and decides whether the caller may use it.
/// Unknown endpoints are 404 only after authentication, so unauthenticated callers cannot
/// probe what is registered; an endpoint the caller may not use is the same 404 (default
/// deny, admins included: the admin role administers, it does not grant tool access).
pub async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: String,
) -> Result<Admitted, ApiError> {
    check_origin(state, headers)?;
    // A name that cannot be registered is unknown: it never reaches the store (DynamoDB would
    // reject an oversized key) nor the challenge header (a quote would inject parameters).
    let metadata = validate_name(&endpoint)
        .is_ok()
        .then(|| resource_metadata_url(state, &endpoint));
    // A JWT must be meant for this endpoint (or the gateway as a whole).
    let resource = metadata.is_some().then(|| resource_url(state, &endpoint));
    let principal = match state
        .auth
        .authenticate_for(headers, resource.as_deref())
        .await
    {
        Ok(p) => p,
        Err(e) => {
            // Only a name the policy grants is kept (and sampled apart): any other text is
            // `*`, so a flood of invented names is one sample key, not one per name. The
            // policy is the cached snapshot every admitted request reads.
            let registered = metadata.is_some()
                && state
                    .policy()
                    .await
                    .is_ok_and(|p| p.names_endpoint(&endpoint));
            let named = if registered { &endpoint[..] } else { "*" };
            mcpgw::audit::events::auth_failed(
                (&state.audit, &state.audit_sampler),
                headers,
                named,
                &e,
            );
            let scopes = state.auth.advertised_scopes().await;
            return Err(e.into_challenge(metadata.as_deref(), &scopes));
        }
    };
    let unknown = || ApiError::not_found("no MCP endpoint by that name");
    if metadata.is_none() {
        return Err(unknown());
    }
    let policy = state.policy().await?;
    let Some(access) = policy.access(&Subject::from(&principal), &endpoint) else {
        let registered = policy.names_endpoint(&endpoint);
        crate::govern::denied(state, headers, &principal, &endpoint, registered);
        return Err(unknown());
    };
    let target = if access.virtual_server.is_some() {
        Target::Virtual(access)
    } else {
        let server = state.server(&endpoint).await?.ok_or_else(unknown)?;
        Target::Server(server, access)
    };
    // From here on the name is a registered endpoint's: the metrics and the span may carry it.
    mcpgw::trace::note_endpoint(&endpoint);
    Ok(Admitted {
        principal,
        endpoint,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(host_name("localhost:8787"), "localhost");
        assert_eq!(host_name("[::1]:8787"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("evil.example.com:80"), "evil.example.com");
        assert_eq!(host_name("evil:x"), "evil:x");
        assert!(!is_loopback_host(host_name("127.0.0.1.evil.com:80")));
    }

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
