//! Where an OAuth2 server's authorization server lives, for everything the gateway does there
//! (connect, code exchange, refresh, revocation, machine tokens, client registration): the
//! endpoints the admin configured, and for the rest the endpoints pinned on the server record
//! ([`McpServer::authorization_server`]). Nothing is looked up per request and nothing is
//! cached per process beyond the record itself, so a later change of the upstream's metadata
//! moves nothing until an admin asks for discovery again.
//!
//! Pinning ([`resolve`], then the caller stores the result):
//! - when an admin saves the server (`discovered_at_save`) or asks again
//!   (`rediscovered_by_admin`, `POST /admin/servers/{name}/discover`);
//! - at first use (`discovered_at_first_use`) when nothing was pinned, because the metadata
//!   could not be fetched at save or the record predates pinning: trust on first use,
//!   recorded. The pin is written with a compare-and-swap on the record
//!   ([`crate::store::ConfigStore::replace_config_if_unchanged`]), so of two processes pinning
//!   at once one wins and the other uses the winner's endpoints;
//! - a server whose configuration names every endpoint it needs is pinned as `configured`
//!   without any network call.
//!
//! Every URL, configured or discovered, passes [`super::endpoint_url::check`] (again at each
//! use, so a stricter egress policy applies to records pinned before it); the metadata rules
//! are in [`super::discovery`].

use std::time::Duration;

use super::GrantError;
use super::Grants;
use super::discovery::{self, DiscoveryError};
use super::endpoint_url::{self, UrlRole, excerpt};
use crate::clock::UnixTime;
use crate::domain::{McpServer, PinSource, PinnedAuthServer, UpstreamAuth};
use crate::egress::EgressPolicy;
use crate::store::{ConfigKind, StoreError, to_doc};

/// Every call to an authorization server (metadata, token, revocation) ends within this.
pub const OAUTH_CALL_TIMEOUT: Duration = Duration::from_secs(10);

// The client for authorization servers is `Grants::oauth_http`: built once per process
// by the egress policy, bounded by OAUTH_CALL_TIMEOUT, no redirects (a redirect could carry a
// code or a client secret elsewhere).

/// The endpoints in use for one server.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoints {
    /// Empty for `oauth2_client_credentials` servers (no browser).
    pub authorization: String,
    pub token: String,
    pub revocation: Option<String>,
    /// Expected `iss` in callbacks (RFC 9207), when known.
    pub issuer: Option<String>,
    /// RFC 7591 registration endpoint, when the server offers one.
    pub registration: Option<String>,
    /// `token_endpoint_auth_methods_supported`; empty when not published.
    pub auth_methods: Vec<String>,
    /// RFC 9207: the authorization server always sends `iss`, so a callback without it is
    /// refused.
    pub iss_parameter_supported: bool,
}

/// What the admin configured, and what the server needs.
struct Configured<'a> {
    authorization: Option<&'a str>,
    token: Option<&'a str>,
    revocation: Option<&'a str>,
    issuer: Option<&'a str>,
    resource: Option<&'a str>,
    /// A browser flow (`oauth2`) needs the authorization endpoint.
    needs_authorization: bool,
    /// Without a client id the gateway registers one (RFC 7591), which only metadata names.
    needs_registration: bool,
}

impl Configured<'_> {
    /// Whether the configuration alone names every endpoint the server needs.
    fn complete(&self) -> bool {
        self.token.is_some()
            && (self.authorization.is_some() || !self.needs_authorization)
            && !self.needs_registration
    }

    /// Each configured URL with its configuration field.
    fn urls(&self) -> [(&'static str, Option<&str>, UrlRole); 4] {
        [
            (
                "auth.authorization_url",
                self.authorization,
                UrlRole::Endpoint,
            ),
            ("auth.token_url", self.token, UrlRole::Endpoint),
            ("auth.revocation_url", self.revocation, UrlRole::Endpoint),
            ("auth.issuer", self.issuer, UrlRole::Issuer),
        ]
    }
}

fn configured(server: &McpServer) -> Option<Configured<'_>> {
    match &server.auth {
        UpstreamAuth::OAuth2 {
            client_id,
            authorization_url,
            token_url,
            revocation_url,
            issuer,
            resource,
            ..
        } => Some(Configured {
            authorization: authorization_url.as_deref(),
            token: token_url.as_deref(),
            revocation: revocation_url.as_deref(),
            issuer: issuer.as_deref(),
            resource: resource.as_deref(),
            needs_authorization: true,
            needs_registration: client_id.is_none(),
        }),
        UpstreamAuth::OAuth2ClientCredentials {
            token_url,
            issuer,
            resource,
            ..
        } => Some(Configured {
            authorization: None,
            token: token_url.as_deref(),
            revocation: None,
            issuer: issuer.as_deref(),
            resource: resource.as_deref(),
            needs_authorization: false,
            needs_registration: false,
        }),
        UpstreamAuth::None | UpstreamAuth::Header { .. } | UpstreamAuth::PerUserToken { .. } => {
            None
        }
    }
}

/// Whether `server` takes its credential from an authorization server (and so has endpoints).
pub fn uses_oauth(server: &McpServer) -> bool {
    configured(server).is_some()
}

/// Whether `a` and `b` would discover the same endpoints: the same URL and the same
/// configured issuer, endpoints, resource and need for registration. A server saved with
/// the same inputs keeps its pin (an unrelated edit moves no endpoint); other changes pin
/// anew.
pub fn same_discovery_inputs(a: &McpServer, b: &McpServer) -> bool {
    let key = |s: &McpServer| {
        configured(s).map(|c| {
            (
                c.authorization.map(str::to_owned),
                c.token.map(str::to_owned),
                c.revocation.map(str::to_owned),
                c.issuer.map(str::to_owned),
                c.resource.map(str::to_owned),
                c.needs_authorization,
                c.needs_registration,
            )
        })
    };
    a.url == b.url && key(a) == key(b)
}

/// Resolves `server`'s authorization server now, every URL checked: from its configuration
/// alone when that names every endpoint it needs (no network), else by discovery with the
/// configured endpoints winning. The caller stores the result on the record.
pub async fn resolve(
    http: &reqwest::Client,
    egress: &EgressPolicy,
    server: &McpServer,
    source: PinSource,
    now: UnixTime,
) -> Result<PinnedAuthServer, DiscoveryError> {
    const CONFIG: &str = "the server's configuration";
    let Some(c) = configured(server) else {
        return Err(DiscoveryError::invalid(
            "auth.type",
            CONFIG,
            "is not oauth2 or oauth2_client_credentials",
        ));
    };
    for (field, url, role) in c.urls() {
        if let Some(u) = url {
            endpoint_url::check(u, role, egress).map_err(|e| {
                DiscoveryError::invalid(field, CONFIG, format!("{} {e}", excerpt(u)))
            })?;
        }
    }
    if c.complete() {
        return Ok(PinnedAuthServer {
            issuer: c.issuer.map(str::to_owned),
            authorization_endpoint: c.authorization.map(str::to_owned),
            token_endpoint: c.token.unwrap_or_default().to_owned(),
            revocation_endpoint: c.revocation.map(str::to_owned),
            registration_endpoint: None,
            token_endpoint_auth_methods_supported: Vec::new(),
            authorization_response_iss_parameter_supported: false,
            resource_metadata_url: None,
            metadata_url: None,
            discovered_at: now,
            source: PinSource::Configured,
        });
    }
    let m = discovery::discover(http, egress, &server.url, c.issuer, c.resource).await?;
    let missing = |field: &str, why: &str| {
        DiscoveryError::invalid(field, &m.metadata_url, format!("is missing: {why}"))
    };
    let token = c
        .token
        .map(str::to_owned)
        .or(m.token_endpoint.clone())
        .ok_or_else(|| missing("token_endpoint", "and auth.token_url is not configured"))?;
    let authorization = c
        .authorization
        .map(str::to_owned)
        .or(m.authorization_endpoint.clone());
    if c.needs_authorization && authorization.is_none() {
        return Err(missing(
            "authorization_endpoint",
            "and auth.authorization_url is not configured",
        ));
    }
    if c.needs_registration && m.registration_endpoint.is_none() {
        return Err(missing(
            "registration_endpoint",
            "no auth.client_id is configured and the authorization server offers no dynamic \
             client registration (RFC 7591): register a client there and set auth.client_id",
        ));
    }
    Ok(PinnedAuthServer {
        issuer: Some(m.issuer),
        authorization_endpoint: authorization,
        token_endpoint: token,
        revocation_endpoint: c.revocation.map(str::to_owned).or(m.revocation_endpoint),
        registration_endpoint: m.registration_endpoint,
        token_endpoint_auth_methods_supported: m.auth_methods,
        authorization_response_iss_parameter_supported: m.iss_parameter_supported,
        resource_metadata_url: m.resource_metadata_url,
        metadata_url: Some(m.metadata_url),
        discovered_at: now,
        source,
    })
}

/// The endpoints stored for `server` (configured, or pinned with the configured ones
/// winning), checked again, without any network call. `None`: nothing is pinned yet and the
/// configuration does not name everything (or the server does not use OAuth).
pub fn stored(egress: &EgressPolicy, server: &McpServer) -> Option<Result<Endpoints, GrantError>> {
    let c = configured(server)?;
    let pin = server.authorization_server.as_ref();
    if !c.complete() && pin.is_none() {
        return None;
    }
    let issuer = c
        .issuer
        .map(str::to_owned)
        .or_else(|| pin.and_then(|p| p.issuer.clone()));
    let e = Endpoints {
        authorization: c
            .authorization
            .map(str::to_owned)
            .or_else(|| pin.and_then(|p| p.authorization_endpoint.clone()))
            .unwrap_or_default(),
        token: c
            .token
            .map(str::to_owned)
            .or_else(|| pin.map(|p| p.token_endpoint.clone()))
            .unwrap_or_default(),
        revocation: c
            .revocation
            .map(str::to_owned)
            .or_else(|| pin.and_then(|p| p.revocation_endpoint.clone())),
        registration: pin.and_then(|p| p.registration_endpoint.clone()),
        auth_methods: pin
            .map(|p| p.token_endpoint_auth_methods_supported.clone())
            .unwrap_or_default(),
        // The flag belongs to the issuer it was read from.
        iss_parameter_supported: pin.is_some_and(|p| {
            p.authorization_response_iss_parameter_supported && p.issuer == issuer
        }),
        issuer,
    };
    Some(check_stored(egress, e))
}

fn check_stored(egress: &EgressPolicy, e: Endpoints) -> Result<Endpoints, GrantError> {
    let optional = [
        (
            "revocation endpoint",
            e.revocation.as_deref(),
            UrlRole::Endpoint,
        ),
        (
            "registration endpoint",
            e.registration.as_deref(),
            UrlRole::Endpoint,
        ),
        ("issuer", e.issuer.as_deref(), UrlRole::Issuer),
        (
            "authorization endpoint",
            Some(e.authorization.as_str()).filter(|a| !a.is_empty()),
            UrlRole::Endpoint,
        ),
    ];
    for (what, url, role) in [("token endpoint", Some(e.token.as_str()), UrlRole::Endpoint)]
        .into_iter()
        .chain(optional)
    {
        if let Some(u) = url {
            endpoint_url::check(u, role, egress).map_err(|err| {
                GrantError::Discovery(format!("the stored {what} {} {err}", excerpt(u)))
            })?;
        }
    }
    Ok(e)
}

/// The endpoints `server` uses now: stored ones, or, when nothing is pinned yet, discovered
/// and pinned on its record first (trust on first use, recorded as such). A refused or
/// unreachable metadata document fails the caller and stores nothing.
pub async fn for_server(grants: &Grants, server: &McpServer) -> Result<Endpoints, GrantError> {
    let egress = &grants.egress;
    if !uses_oauth(server) {
        return Err(GrantError::NotOAuth);
    }
    if let Some(e) = stored(egress, server) {
        return e;
    }
    pin_at_first_use(grants, &server.name).await
}

async fn pin_at_first_use(grants: &Grants, name: &str) -> Result<Endpoints, GrantError> {
    let egress = &grants.egress;
    // A few rounds: a concurrent pin or admin edit makes us read again.
    for _ in 0..3 {
        let Some(doc) = grants.store.get_config(ConfigKind::Server, name).await? else {
            return Err(GrantError::Discovery(format!(
                "the server '{name}' is no longer registered"
            )));
        };
        let current: McpServer = serde_json::from_value(doc.clone())
            .map_err(|e| StoreError::Corrupt(format!("server '{name}': {e}")))?;
        if let Some(e) = stored(egress, &current) {
            // Pinned by another process meanwhile (this one's cache was older).
            grants.servers.invalidate(name).await;
            return e;
        }
        let pin = resolve(
            &grants.oauth_http,
            egress,
            &current,
            PinSource::DiscoveredAtFirstUse,
            grants.clock.now(),
        )
        .await
        .map_err(|e| GrantError::Discovery(e.to_string()))?;
        let mut pinned = current;
        pinned.authorization_server = Some(pin);
        if grants
            .store
            .replace_config_if_unchanged(ConfigKind::Server, name, &doc, &to_doc(&pinned))
            .await?
        {
            grants.servers.invalidate(name).await;
            let p = pinned.authorization_server.as_ref();
            tracing::warn!(server = %name,
                issuer = p.and_then(|p| p.issuer.as_deref()).unwrap_or_default(),
                token_endpoint = p.map(|p| p.token_endpoint.as_str()).unwrap_or_default(),
                "endpoints discovered and pinned at first use (trust on first use): review them in GET /admin/servers/{name}");
            return stored(egress, &pinned).unwrap_or(Err(GrantError::NotOAuth));
        }
    }
    Err(GrantError::Discovery(
        "the server kept changing while its endpoints were pinned".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn local() -> EgressPolicy {
        EgressPolicy::defaults(false)
    }

    fn server(auth: serde_json::Value) -> McpServer {
        serde_json::from_value(json!({"name": "s", "url": "https://mcp.example.com/mcp",
            "created_at": 0, "updated_at": 0, "auth": auth}))
        .unwrap()
    }

    fn pin(token: &str) -> PinnedAuthServer {
        PinnedAuthServer {
            issuer: Some("https://as.example.com".into()),
            authorization_endpoint: Some("https://as.example.com/authorize".into()),
            token_endpoint: token.into(),
            revocation_endpoint: None,
            registration_endpoint: Some("https://as.example.com/register".into()),
            token_endpoint_auth_methods_supported: vec!["none".into()],
            authorization_response_iss_parameter_supported: true,
            resource_metadata_url: None,
            metadata_url: None,
            discovered_at: 1,
            source: PinSource::DiscoveredAtSave,
        }
    }

    #[tokio::test]
    async fn a_fully_configured_server_resolves_without_the_network() {
        let s = server(json!({"type": "oauth2", "client_id": "c",
            "authorization_url": "https://as.example.com/a", "token_url": "https://as.example.com/t"}));
        // No listener anywhere: any fetch would fail.
        let p = resolve(
            &local().client_builder().build().unwrap(),
            &local(),
            &s,
            PinSource::DiscoveredAtSave,
            5,
        )
        .await
        .unwrap();
        assert_eq!(p.source, PinSource::Configured);
        assert_eq!(p.token_endpoint, "https://as.example.com/t");
        let e = stored(&local(), &s).unwrap().unwrap();
        assert_eq!(e.authorization, "https://as.example.com/a");
        assert!(!e.iss_parameter_supported);
    }

    #[tokio::test]
    async fn a_bad_configured_url_is_refused_naming_its_field() {
        let s = server(json!({"type": "oauth2", "client_id": "c",
            "authorization_url": "https://as.example.com/a", "token_url": "https://u:p@as.example.com/t"}));
        let e = resolve(
            &local().client_builder().build().unwrap(),
            &local(),
            &s,
            PinSource::DiscoveredAtSave,
            5,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, DiscoveryError::Invalid { field, .. } if field == "auth.token_url"),
            "{e}"
        );
    }

    #[test]
    fn stored_endpoints_are_the_pin_with_configured_ones_winning() {
        let mut s =
            server(json!({"type": "oauth2", "token_url": "https://configured.example.com/t"}));
        assert!(stored(&local(), &s).is_none(), "nothing pinned yet");
        s.authorization_server = Some(pin("https://as.example.com/token"));
        let e = stored(&local(), &s).unwrap().unwrap();
        assert_eq!(e.token, "https://configured.example.com/t");
        assert_eq!(e.authorization, "https://as.example.com/authorize");
        assert_eq!(
            e.registration.as_deref(),
            Some("https://as.example.com/register")
        );
        assert!(e.iss_parameter_supported);
        // A configured issuer other than the pinned one: its flag is unknown.
        let mut other = server(json!({"type": "oauth2", "issuer": "https://other.example.com"}));
        other.authorization_server = Some(pin("https://as.example.com/token"));
        let e = stored(&local(), &other).unwrap().unwrap();
        assert!(!e.iss_parameter_supported);
    }

    #[test]
    fn a_tampered_stored_endpoint_is_refused_at_use() {
        let mut s = server(json!({"type": "oauth2"}));
        s.authorization_server = Some(pin("javascript:alert(1)"));
        let e = stored(&local(), &s).unwrap().unwrap_err();
        assert!(e.to_string().contains("token endpoint"), "{e}");
    }

    #[test]
    fn only_discovery_inputs_decide_whether_a_pin_is_kept() {
        let a = server(json!({"type": "oauth2", "scopes": ["a"]}));
        let mut b = server(
            json!({"type": "oauth2", "scopes": ["b"], "extra_params": {"prompt": "consent"}}),
        );
        b.description = Some("edited".into());
        assert!(same_discovery_inputs(&a, &b));
        let c = server(json!({"type": "oauth2", "issuer": "https://as.example.com"}));
        assert!(!same_discovery_inputs(&a, &c));
        let mut d = a.clone();
        d.url = "https://elsewhere.example.com/mcp".into();
        assert!(!same_discovery_inputs(&a, &d));
        let e = server(json!({"type": "oauth2", "client_id": "c"}));
        assert!(!same_discovery_inputs(&a, &e), "registration needed or not");
    }
}
