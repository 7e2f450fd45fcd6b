//! Where an OAuth2 server's authorization server lives: the endpoints the admin configured,
//! or discovered from the upstream's protected-resource metadata (RFC 9728) and then its
//! authorization server's metadata (RFC 8414, then OIDC discovery). Discovered endpoints are
//! cached per process for an hour.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::GrantError;
use crate::domain::{McpServer, UpstreamAuth};

/// Every call to an authorization server (metadata, token, revocation) ends within this.
pub const OAUTH_CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CACHE_TTL: Duration = Duration::from_secs(3600);
const MAX_METADATA: usize = 256 * 1024;

// The client for authorization servers is `AppState::oauth_http`: built once per process
// by the egress policy, bounded by OAUTH_CALL_TIMEOUT, no redirects (a redirect could carry a
// code or a client secret elsewhere).

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
    pub revocation: Option<String>,
    /// Expected `iss` in callbacks (RFC 9207), when known.
    pub issuer: Option<String>,
    /// RFC 7591 registration endpoint, when the server offers one.
    pub registration: Option<String>,
    /// `token_endpoint_auth_methods_supported`; empty when not published.
    pub auth_methods: Vec<String>,
}

#[derive(Deserialize)]
struct ResourceMetadata {
    #[serde(default)]
    authorization_servers: Vec<String>,
}

#[derive(Deserialize)]
struct AsMetadata {
    issuer: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    registration_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
}

fn cache() -> &'static Mutex<HashMap<String, (Instant, Endpoints)>> {
    static CACHE: OnceLock<Mutex<HashMap<String, (Instant, Endpoints)>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The endpoints of `server` (an `oauth2` or `oauth2_client_credentials` server).
pub async fn resolve(
    state: &crate::state::AppState,
    server: &McpServer,
) -> Result<Endpoints, GrantError> {
    let none = None;
    let (authorization_url, token_url, revocation_url, issuer) = match &server.auth {
        UpstreamAuth::OAuth2 {
            authorization_url,
            token_url,
            revocation_url,
            issuer,
            ..
        } => (authorization_url, token_url, revocation_url, issuer),
        // No browser, so no authorization endpoint is needed.
        UpstreamAuth::OAuth2ClientCredentials {
            token_url, issuer, ..
        } => (&none, token_url, &none, issuer),
        _ => return Err(GrantError::NotOAuth),
    };
    let needs_authorization = matches!(server.auth, UpstreamAuth::OAuth2 { .. });
    // Without a client id the registration endpoint is needed, which only metadata names.
    let needs_registration = super::registration::self_registering(server);
    if let (Some(t), true) = (
        token_url,
        (authorization_url.is_some() || !needs_authorization) && !needs_registration,
    ) {
        return Ok(Endpoints {
            authorization: authorization_url.clone().unwrap_or_default(),
            token: t.clone(),
            revocation: revocation_url.clone(),
            issuer: issuer.clone(),
            registration: None,
            auth_methods: Vec::new(),
        });
    }
    if let Some((at, e)) = cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&server.url)
        && at.elapsed() < CACHE_TTL
    {
        return Ok(e.clone());
    }
    let found = discover(&state.oauth_http, &server.url, issuer.as_deref()).await?;
    // Configured endpoints win over discovered ones.
    let e = Endpoints {
        authorization: authorization_url.clone().unwrap_or(found.authorization),
        token: token_url.clone().unwrap_or(found.token),
        revocation: revocation_url.clone().or(found.revocation),
        issuer: issuer.clone().or(found.issuer),
        registration: found.registration,
        auth_methods: found.auth_methods,
    };
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(server.url.clone(), (Instant::now(), e.clone()));
    Ok(e)
}

/// `https://host/.well-known/{name}{path}` (the path-insertion rule of RFC 8414 and 9728).
fn well_known(url: &url::Url, name: &str) -> String {
    let path = url.path().trim_end_matches('/');
    format!(
        "{}/.well-known/{name}{path}",
        url.origin().ascii_serialization()
    )
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<Option<T>, GrantError> {
    let resp = http
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| GrantError::Network(format!("{url}: {}", crate::http::error_chain(&e))))?;
    if !resp.status().is_success() {
        return Ok(None);
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| GrantError::Network(format!("{url}: {e}")))?;
    if bytes.len() > MAX_METADATA {
        return Err(GrantError::Discovery(format!("{url}: metadata too large")));
    }
    Ok(serde_json::from_slice(&bytes).ok())
}

async fn discover(
    http: &reqwest::Client,
    server_url: &str,
    issuer: Option<&str>,
) -> Result<Endpoints, GrantError> {
    let issuer = match issuer {
        Some(i) => i.to_owned(),
        None => {
            let url = url::Url::parse(server_url)
                .map_err(|e| GrantError::Discovery(format!("server URL: {e}")))?;
            let mut meta: Option<ResourceMetadata> =
                get_json(http, &well_known(&url, "oauth-protected-resource")).await?;
            if meta.is_none() {
                let root = format!(
                    "{}/.well-known/oauth-protected-resource",
                    url.origin().ascii_serialization()
                );
                meta = get_json(http, &root).await?;
            }
            meta.and_then(|m| m.authorization_servers.into_iter().next())
                .ok_or_else(|| {
                    GrantError::Discovery(
                        "the server publishes no protected-resource metadata naming an authorization server".into(),
                    )
                })?
        }
    };
    let iss = url::Url::parse(&issuer)
        .map_err(|e| GrantError::Discovery(format!("issuer {issuer}: {e}")))?;
    let candidates = [
        well_known(&iss, "oauth-authorization-server"),
        well_known(&iss, "openid-configuration"),
        format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ),
    ];
    for c in candidates {
        if let Some(m) = get_json::<AsMetadata>(http, &c).await?
            && let Some(t) = m.token_endpoint
        {
            // Absent on servers that only issue machine tokens; a browser flow then fails
            // with a clear "authorization URL" error.
            let a = m.authorization_endpoint.unwrap_or_default();
            if m.issuer.as_deref().is_some_and(|i| i != issuer) {
                // RFC 8414 section 3.3: the metadata must be the issuer's own.
                return Err(GrantError::Discovery(format!("{c} names another issuer")));
            }
            return Ok(Endpoints {
                authorization: a,
                token: t,
                revocation: m.revocation_endpoint,
                issuer: Some(issuer),
                registration: m.registration_endpoint,
                auth_methods: m.token_endpoint_auth_methods_supported,
            });
        }
    }
    Err(GrantError::Discovery(format!(
        "no authorization server metadata for {issuer}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_insert_the_name_before_the_path() {
        let u = url::Url::parse("https://mcp.example.com/tools/mcp/").unwrap();
        assert_eq!(
            well_known(&u, "oauth-protected-resource"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/tools/mcp"
        );
        let u = url::Url::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(
            well_known(&u, "openid-configuration"),
            "http://127.0.0.1:9/.well-known/openid-configuration"
        );
    }
}
