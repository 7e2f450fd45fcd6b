//! Discovery of an OAuth2 server's authorization server: the upstream's protected-resource
//! metadata (RFC 9728) names the authorization server, whose metadata (RFC 8414, then OIDC
//! discovery) names the endpoints. Both documents come from parties the gateway does not
//! trust, so each is checked before anything in it is used:
//! - the protected-resource metadata's `resource` must be the server's URL (or the RFC 8707
//!   resource the admin configured), identical after URL normalization (RFC 9728 section
//!   3.3; see [`endpoint_url::same_resource`]), and its first `authorization_servers` entry is
//!   an issuer URL the gateway accepts;
//! - the authorization-server metadata must carry an `issuer` identical to the issuer it was
//!   fetched for (RFC 8414 section 3.3; required, not merely checked when present);
//! - every endpoint in it passes [`endpoint_url::check`], and the fields the gateway reads have
//!   their documented types.
//!
//! The well-known URLs, the fetching and the issuer check are [`crate::oauth_metadata`]'s
//! (shared with identity providers and the console); this module adds what is particular to
//! an upstream's authorization server: the protected-resource metadata and the endpoint
//! rules. Nothing here is stored or cached: [`super::endpoints`] pins the result on the
//! server record. Fetching uses the OAuth client the egress policy built
//! (`Grants::oauth_http`: every resolved address judged at connect time, each call bounded
//! by `endpoints::OAUTH_CALL_TIMEOUT`), follows no redirects, reads at most
//! [`MAX_METADATA`] bytes per document and ends within [`DISCOVERY_TIMEOUT`] overall (the
//! admin API waits for it when a server is saved).

use std::time::Duration;

use serde_json::Value;

use super::endpoint_url::{self, UrlRole, excerpt};
use crate::egress::EgressPolicy;
use crate::oauth_metadata::{self, IssuerMetadata, Kind, well_known};
pub use crate::oauth_metadata::{DiscoveryError, MAX_METADATA};

/// Bound on a whole discovery (up to five documents): well inside the admin API's Lambda
/// timeout, so a blackholed upstream is a warning, not a timed-out save.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// What the metadata documents said, every URL in it checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub revocation_endpoint: Option<String>,
    pub registration_endpoint: Option<String>,
    pub auth_methods: Vec<String>,
    pub iss_parameter_supported: bool,
    /// The protected-resource metadata read (`None` when the issuer was configured).
    pub resource_metadata_url: Option<String>,
    pub metadata_url: String,
}

/// Discovers the authorization server of the upstream at `server_url`: from the configured
/// `issuer` when there is one, else from the upstream's protected-resource metadata, whose
/// `resource` must be `server_url` or `resource` (the configured RFC 8707 resource).
pub async fn discover(
    http: &reqwest::Client,
    egress: &EgressPolicy,
    server_url: &str,
    issuer: Option<&str>,
    resource: Option<&str>,
) -> Result<Metadata, DiscoveryError> {
    let run = run(http, egress, server_url, issuer, resource);
    match tokio::time::timeout(DISCOVERY_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(DiscoveryError::Unavailable(format!(
            "discovery did not finish within {} s",
            DISCOVERY_TIMEOUT.as_secs()
        ))),
    }
}

async fn run(
    http: &reqwest::Client,
    egress: &EgressPolicy,
    server_url: &str,
    issuer: Option<&str>,
    resource: Option<&str>,
) -> Result<Metadata, DiscoveryError> {
    let (issuer, resource_metadata_url) = match issuer {
        Some(i) => (i.to_owned(), None),
        None => {
            let (issuer, from) = issuer_of_resource(http, egress, server_url, resource).await?;
            (issuer, Some(from))
        }
    };
    let meta =
        oauth_metadata::issuer_metadata(http, Kind::AuthorizationServer, &issuer, None).await?;
    let mut m = authorization_server(&meta, egress)?;
    m.resource_metadata_url = resource_metadata_url;
    Ok(m)
}

/// The issuer the upstream's protected-resource metadata names, and where it was read: the
/// path-inserted well-known URL first, then the root one (RFC 9728 section 3.1, as MCP
/// clients do).
async fn issuer_of_resource(
    http: &reqwest::Client,
    egress: &EgressPolicy,
    server_url: &str,
    resource: Option<&str>,
) -> Result<(String, String), DiscoveryError> {
    let url = url::Url::parse(server_url)
        .map_err(|e| DiscoveryError::invalid("url", "the server's configuration", e.to_string()))?;
    let candidates = well_known::protected_resource(&url);
    let Some((found, doc)) = oauth_metadata::first_document(http, &candidates, None).await? else {
        return Err(DiscoveryError::Unavailable(
            "the server publishes no protected-resource metadata (RFC 9728) naming an authorization server".into(),
        ));
    };
    let accepted: Vec<&str> = std::iter::once(server_url).chain(resource).collect();
    let issuer = protected_resource(&doc, &found, &accepted, egress)?;
    Ok((issuer, found))
}

/// Checks a protected-resource metadata document read at `document`; the issuer it names.
pub fn protected_resource(
    doc: &Value,
    document: &str,
    accepted: &[&str],
    egress: &EgressPolicy,
) -> Result<String, DiscoveryError> {
    let bad = |field: &str, reason: String| DiscoveryError::invalid(field, document, reason);
    let resource = match doc.get("resource") {
        Some(Value::String(r)) => r,
        Some(_) => return Err(bad("resource", "must be a string".into())),
        None => return Err(bad("resource", "is missing (RFC 9728 section 2)".into())),
    };
    if !accepted
        .iter()
        .any(|a| endpoint_url::same_resource(a, resource))
    {
        return Err(bad(
            "resource",
            format!(
                "is {}, not this server's URL {} (RFC 9728 section 3.3: the metadata must be the server's own)",
                excerpt(resource),
                excerpt(accepted[0])
            ),
        ));
    }
    let first = match doc.get("authorization_servers") {
        Some(Value::Array(a)) => a.first(),
        Some(_) => return Err(bad("authorization_servers", "must be an array".into())),
        None => None,
    };
    let issuer = match first {
        Some(Value::String(i)) => i,
        Some(_) => {
            return Err(bad(
                "authorization_servers",
                "must hold issuer URLs (strings)".into(),
            ));
        }
        None => {
            return Err(bad(
                "authorization_servers",
                "names no authorization server; configure auth.issuer to name it".into(),
            ));
        }
    };
    endpoint_url::check(issuer, UrlRole::Issuer, egress).map_err(|e| {
        bad(
            "authorization_servers[0]",
            format!("{} {e}", excerpt(issuer)),
        )
    })?;
    Ok(issuer.clone())
}

/// Checks the endpoints and typed fields of an authorization server's metadata (its issuer
/// was checked when it was read).
pub fn authorization_server(
    meta: &IssuerMetadata,
    egress: &EgressPolicy,
) -> Result<Metadata, DiscoveryError> {
    let document = meta.url();
    let bad = |field: &str, reason: String| DiscoveryError::invalid(field, document, reason);
    let endpoint = |field: &str| -> Result<Option<String>, DiscoveryError> {
        match meta.string(field)? {
            None => Ok(None),
            Some(u) => endpoint_url::check(u, UrlRole::Endpoint, egress)
                .map(|_| Some(u.to_owned()))
                .map_err(|e| bad(field, format!("{} {e}", excerpt(u)))),
        }
    };
    let auth_methods = match meta.field("token_endpoint_auth_methods_supported") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|m| match m {
                Value::String(s) if auth_method_name(s) => Ok(s.clone()),
                _ => Err(bad(
                    "token_endpoint_auth_methods_supported",
                    "must list method names (short strings of letters, digits, '_', '-', '.')"
                        .into(),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(bad(
                "token_endpoint_auth_methods_supported",
                "must be an array".into(),
            ));
        }
    };
    let iss_parameter_supported = match meta.field("authorization_response_iss_parameter_supported")
    {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(bad(
                "authorization_response_iss_parameter_supported",
                "must be a boolean".into(),
            ));
        }
    };
    Ok(Metadata {
        issuer: meta.issuer().to_owned(),
        authorization_endpoint: endpoint("authorization_endpoint")?,
        token_endpoint: endpoint("token_endpoint")?,
        revocation_endpoint: endpoint("revocation_endpoint")?,
        registration_endpoint: endpoint("registration_endpoint")?,
        auth_methods,
        iss_parameter_supported,
        resource_metadata_url: None,
        metadata_url: document.to_owned(),
    })
}

fn auth_method_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DOC: &str = "https://as.example.com/.well-known/oauth-authorization-server";

    fn metadata(edit: impl FnOnce(&mut Value)) -> Result<Metadata, DiscoveryError> {
        let mut doc = json!({
            "issuer": "https://as.example.com",
            "authorization_endpoint": "https://as.example.com/authorize",
            "token_endpoint": "https://as.example.com/token",
            "revocation_endpoint": "https://as.example.com/revoke",
            "registration_endpoint": "https://as.example.com/register",
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
            "authorization_response_iss_parameter_supported": true,
        });
        edit(&mut doc);
        // Read as discovery reads it: the issuer checked first, then the rest.
        IssuerMetadata::read(
            doc,
            DOC,
            "https://as.example.com",
            Kind::AuthorizationServer,
        )
        .and_then(|m| authorization_server(&m, &EgressPolicy::defaults(false)))
    }

    fn field_of(r: Result<Metadata, DiscoveryError>) -> String {
        match r {
            Err(DiscoveryError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn good_metadata_is_read_whole() {
        let m = metadata(|_| {}).unwrap();
        assert_eq!(m.issuer, "https://as.example.com");
        assert_eq!(
            m.authorization_endpoint.as_deref(),
            Some("https://as.example.com/authorize")
        );
        assert_eq!(m.auth_methods, ["client_secret_basic", "none"]);
        assert!(m.iss_parameter_supported);
        assert_eq!(m.metadata_url, DOC);
        let bare = metadata(|d| {
            let o = d.as_object_mut().unwrap();
            for k in [
                "revocation_endpoint",
                "registration_endpoint",
                "token_endpoint_auth_methods_supported",
                "authorization_response_iss_parameter_supported",
            ] {
                o.remove(k);
            }
        })
        .unwrap();
        assert!(!bare.iss_parameter_supported && bare.revocation_endpoint.is_none());
    }

    #[test]
    fn the_issuer_must_be_present_and_identical() {
        assert_eq!(
            field_of(metadata(|d| d["issuer"] = json!("https://evil.example"))),
            "issuer"
        );
        assert_eq!(
            field_of(metadata(|d| d["issuer"] = json!("https://as.example.com/"))),
            "issuer",
            "identical means identical: a trailing slash is another issuer"
        );
        assert_eq!(
            field_of(metadata(|d| {
                d.as_object_mut().unwrap().remove("issuer");
            })),
            "issuer"
        );
        assert_eq!(field_of(metadata(|d| d["issuer"] = json!(1))), "issuer");
    }

    #[test]
    fn every_endpoint_is_checked_and_named() {
        for field in [
            "authorization_endpoint",
            "token_endpoint",
            "revocation_endpoint",
            "registration_endpoint",
        ] {
            for bad in [
                json!("javascript:alert(1)"),
                json!("https://a.example/$(id)"),
                json!("https://u:p@as.example.com/x"),
                json!("https://as.example.com/x#f"),
                json!(["https://as.example.com/x"]),
            ] {
                let e = metadata(|d| d[field] = bad.clone()).unwrap_err();
                assert!(
                    matches!(&e, DiscoveryError::Invalid { field: f, .. } if f == field),
                    "{field} = {bad}: {e}"
                );
                assert!(e.to_string().contains(DOC), "{e}");
            }
        }
        assert_eq!(
            field_of(metadata(
                |d| d["authorization_response_iss_parameter_supported"] = json!("yes")
            )),
            "authorization_response_iss_parameter_supported"
        );
        assert_eq!(
            field_of(metadata(
                |d| d["token_endpoint_auth_methods_supported"] = json!(["a b"])
            )),
            "token_endpoint_auth_methods_supported"
        );
    }

    #[test]
    fn protected_resource_metadata_must_be_the_servers_own() {
        let egress = EgressPolicy::defaults(false);
        let prm = |resource: Value, servers: Value| {
            protected_resource(
                &json!({"resource": resource, "authorization_servers": servers}),
                "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
                &["https://mcp.example.com/mcp"],
                &egress,
            )
        };
        assert_eq!(
            prm(
                json!("https://MCP.example.com:443/mcp"),
                json!(["https://as.example.com"])
            )
            .unwrap(),
            "https://as.example.com"
        );
        for (resource, servers, field) in [
            (
                json!("https://other.example.com/mcp"),
                json!(["https://as.example.com"]),
                "resource",
            ),
            (
                json!("https://mcp.example.com/mcp/"),
                json!(["https://as.example.com"]),
                "resource",
            ),
            (Value::Null, json!(["https://as.example.com"]), "resource"),
            (
                json!("https://mcp.example.com/mcp"),
                json!([]),
                "authorization_servers",
            ),
            (
                json!("https://mcp.example.com/mcp"),
                json!("https://as.example.com"),
                "authorization_servers",
            ),
            (
                json!("https://mcp.example.com/mcp"),
                json!(["javascript:alert(1)"]),
                "authorization_servers[0]",
            ),
            (
                json!("https://mcp.example.com/mcp"),
                json!(["https://as.example.com/?tenant=x"]),
                "authorization_servers[0]",
            ),
        ] {
            let got = prm(resource.clone(), servers.clone());
            assert!(
                matches!(&got, Err(DiscoveryError::Invalid { field: f, .. }) if f == field),
                "{resource} {servers}: {got:?}"
            );
        }
    }
}
