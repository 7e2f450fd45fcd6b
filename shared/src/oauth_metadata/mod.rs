//! OAuth 2.0 and OpenID Connect metadata discovery, for everyone in the gateway who reads an
//! issuer's metadata: the authorization servers of upstreams (`grants::discovery`, which adds
//! RFC 9728 protected-resource metadata and checks every endpoint against the egress policy),
//! identity providers whose tokens the gateway verifies (`identity::providers`, for
//! `jwks_uri`) and the identity providers the console signs in with (admin-api's console,
//! for its authorization and token endpoints).
//!
//! One routine, [`issuer_metadata`]: the well-known URLs of the issuer ([`well_known`]) in
//! the order its [`Kind`] tries them, each read with one bounded GET ([`fetch`]); the first
//! JSON object found is the document, and it counts only if its `issuer` is the issuer it
//! was fetched for ([`IssuerMetadata::read`]; RFC 8414 section 3.3, OIDC Discovery section
//! 4.3), else anyone serving a document at that URL could name another issuer's endpoints
//! or keys. What the fields may contain is each caller's own rule.
//!
//! Nothing here caches: callers keep what they learn (pinned on a server record, in an
//! identity provider's key cache).

pub mod fetch;
pub mod well_known;

use std::time::Duration;

use serde_json::{Map, Value};

use fetch::GetError;

/// Largest metadata document read.
pub const MAX_METADATA: usize = 256 * 1024;

/// Why discovery produced nothing usable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    /// Nothing could be fetched (network error, timeout, no document at any well-known URL):
    /// the metadata may appear later. At save this is a warning; at first use, a failed
    /// connect.
    #[error("{0}")]
    Unavailable(String),
    /// A document was fetched and refused (a bad endpoint, a foreign issuer or resource), or
    /// an endpoint the caller needs is missing. Never stored.
    #[error("{field} in {document}: {reason}")]
    Invalid {
        /// The metadata field (or `auth.*` configuration field) at fault.
        field: String,
        /// Where it came from: a metadata URL, or "the server's configuration".
        document: String,
        reason: String,
    },
}

impl DiscoveryError {
    pub(crate) fn invalid(field: &str, document: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            document: document.to_owned(),
            reason: reason.into(),
        }
    }
}

/// What the issuer is to the caller, which decides the well-known URLs tried (in order) and
/// how its `issuer` must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The authorization server of an upstream MCP server: RFC 8414 (path-inserted), then
    /// OIDC path-inserted, then OIDC appended, the order of the MCP authorization
    /// specification. `issuer` identical.
    AuthorizationServer,
    /// An identity provider whose JWTs the gateway verifies: OIDC first (every OpenID
    /// provider has it), then RFC 8414 (a plain OAuth authorization server issuing JWTs).
    /// `issuer` identical but for a terminating `/`, as identity providers have always been
    /// matched (a provider configured with or without it keeps working).
    TokenIssuer,
    /// An OpenID provider the console signs in with: OIDC discovery only (the sign-in needs
    /// an ID token, which only an OpenID provider issues). `issuer` identical.
    OpenIdProvider,
}

impl Kind {
    /// The well-known URLs of `issuer`, in the order they are tried (a URL that two rules
    /// spell alike is asked once).
    pub fn urls(self, issuer: &url::Url) -> Vec<String> {
        let mut urls = match self {
            Kind::AuthorizationServer => vec![
                well_known::oauth_authorization_server(issuer),
                well_known::openid_inserted(issuer),
                well_known::openid_appended(issuer.as_str()),
            ],
            Kind::TokenIssuer => vec![
                well_known::openid_appended(issuer.as_str()),
                well_known::oauth_authorization_server(issuer),
            ],
            Kind::OpenIdProvider => vec![well_known::openid_appended(issuer.as_str())],
        };
        urls.dedup();
        urls
    }

    /// Whether a document stating `stated` as its issuer is `expected`'s.
    pub fn issuer_matches(self, stated: &str, expected: &str) -> bool {
        match self {
            Kind::AuthorizationServer | Kind::OpenIdProvider => stated == expected,
            Kind::TokenIssuer => stated.trim_end_matches('/') == expected.trim_end_matches('/'),
        }
    }
}

/// A metadata document whose `issuer` was checked: only [`IssuerMetadata::read`] makes one.
#[derive(Debug, Clone)]
pub struct IssuerMetadata {
    url: String,
    issuer: String,
    doc: Map<String, Value>,
}

impl IssuerMetadata {
    /// Reads `doc`, fetched at `url` for `issuer`: a JSON object whose `issuer` is present, a
    /// string, and `issuer`'s by `kind`'s rule.
    pub fn read(doc: Value, url: &str, issuer: &str, kind: Kind) -> Result<Self, DiscoveryError> {
        let bad = |reason: String| DiscoveryError::invalid("issuer", url, reason);
        let Value::Object(doc) = doc else {
            return Err(DiscoveryError::invalid(
                "metadata",
                url,
                "is not a JSON object",
            ));
        };
        match doc.get("issuer") {
            Some(Value::String(i)) if kind.issuer_matches(i, issuer) => {}
            Some(Value::String(i)) => {
                return Err(bad(format!(
                    "is {} but the metadata was fetched for the issuer {} (RFC 8414 section 3.3: they must be identical)",
                    excerpt(i),
                    excerpt(issuer)
                )));
            }
            Some(_) => return Err(bad("must be a string".into())),
            None => {
                return Err(bad(
                    "is missing; it is required to prove the metadata is the issuer's own (RFC 8414 section 3.3)"
                        .into(),
                ));
            }
        }
        Ok(Self {
            url: url.to_owned(),
            issuer: issuer.to_owned(),
            doc,
        })
    }

    /// Where the document was read.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The issuer it was fetched for (and states, by its kind's rule).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A field as published (`None` when absent).
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.doc.get(name)
    }

    /// A string field: `None` when absent or `null`, refused when of another type.
    pub fn string(&self, name: &str) -> Result<Option<&str>, DiscoveryError> {
        match self.doc.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(DiscoveryError::invalid(name, &self.url, "must be a string")),
        }
    }
}

/// The metadata of `issuer`: the first of `kind`'s well-known URLs that answers a JSON
/// object, its issuer checked. A URL answering an error status or something else than a JSON
/// object is passed over for the next one; a network failure or an oversized document ends
/// the search (the URLs share the issuer's host, so the next one would fare no better).
/// `timeout` bounds each request (`None`: the client's own bound).
pub async fn issuer_metadata(
    http: &reqwest::Client,
    kind: Kind,
    issuer: &str,
    timeout: Option<Duration>,
) -> Result<IssuerMetadata, DiscoveryError> {
    let parsed = url::Url::parse(issuer)
        .map_err(|e| DiscoveryError::invalid("issuer", "the configuration", format!("{e}")))?;
    match first_document(http, &kind.urls(&parsed), timeout).await? {
        Some((url, doc)) => IssuerMetadata::read(doc, &url, issuer, kind),
        None => Err(DiscoveryError::Unavailable(format!(
            "no authorization server metadata for {issuer}"
        ))),
    }
}

/// The first of `urls` that answers a JSON object, and which one; `None` when none does (see
/// [`issuer_metadata`] for what ends the search early).
pub async fn first_document(
    http: &reqwest::Client,
    urls: &[String],
    timeout: Option<Duration>,
) -> Result<Option<(String, Value)>, DiscoveryError> {
    for url in urls {
        match fetch::get_json(http, url, MAX_METADATA, timeout).await {
            Ok(doc) if doc.is_object() => return Ok(Some((url.clone(), doc))),
            Ok(_) | Err(GetError::Status(_) | GetError::NotJson) => continue,
            Err(GetError::Network(e)) => {
                return Err(DiscoveryError::Unavailable(format!(
                    "{url}: {}",
                    crate::http::error_chain(&e)
                )));
            }
            Err(e @ GetError::TooLarge(_)) => {
                return Err(DiscoveryError::invalid("metadata", url, e.to_string()));
            }
        }
    }
    Ok(None)
}

/// A short, printable excerpt of a refused value for an error message: control characters and
/// quotes escaped, at most 120 characters.
pub fn excerpt(raw: &str) -> String {
    let cut: String = raw.chars().take(120).collect();
    let more = if raw.chars().count() > 120 { "…" } else { "" };
    format!("{:?}{more}", cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    fn client() -> reqwest::Client {
        crate::crypto::install_tls_provider();
        reqwest::Client::new()
    }

    #[test]
    fn each_kind_tries_its_urls_in_its_order() {
        let with_path = url("https://idp.example.com/tenant/");
        assert_eq!(
            Kind::AuthorizationServer.urls(&with_path),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server/tenant",
                "https://idp.example.com/.well-known/openid-configuration/tenant",
                "https://idp.example.com/tenant/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            Kind::TokenIssuer.urls(&with_path),
            [
                "https://idp.example.com/tenant/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server/tenant",
            ]
        );
        assert_eq!(
            Kind::OpenIdProvider.urls(&with_path),
            ["https://idp.example.com/tenant/.well-known/openid-configuration"]
        );
        // Without a path the two OIDC spellings are one URL, asked once.
        assert_eq!(
            Kind::AuthorizationServer.urls(&url("https://as.example.com")),
            [
                "https://as.example.com/.well-known/oauth-authorization-server",
                "https://as.example.com/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn the_issuer_must_be_stated_and_the_fetched_one() {
        let read = |doc: Value, kind| {
            IssuerMetadata::read(doc, "https://m/doc", "https://idp.example.com", kind)
        };
        let field = |r: Result<IssuerMetadata, DiscoveryError>| match r {
            Err(DiscoveryError::Invalid {
                field, document, ..
            }) => {
                assert_eq!(document, "https://m/doc");
                field
            }
            other => panic!("expected Invalid, got {other:?}"),
        };
        for kind in [
            Kind::AuthorizationServer,
            Kind::TokenIssuer,
            Kind::OpenIdProvider,
        ] {
            let ok = read(json!({"issuer": "https://idp.example.com", "a": "b"}), kind).unwrap();
            assert_eq!(ok.issuer(), "https://idp.example.com");
            assert_eq!(ok.url(), "https://m/doc");
            assert_eq!(ok.string("a").unwrap(), Some("b"));
            assert_eq!(ok.string("absent").unwrap(), None);
            assert!(ok.string("issuer").is_ok());
            assert_eq!(
                field(read(json!({"issuer": "https://evil.example"}), kind)),
                "issuer"
            );
            assert_eq!(field(read(json!({"issuer": 1}), kind)), "issuer");
            assert_eq!(field(read(json!({"jwks_uri": "x"}), kind)), "issuer");
            assert_eq!(
                field(read(json!(["not", "an", "object"]), kind)),
                "metadata"
            );
        }
        // A trailing slash: another issuer, except to identity providers' historic rule.
        let slash = || json!({"issuer": "https://idp.example.com/"});
        assert_eq!(field(read(slash(), Kind::AuthorizationServer)), "issuer");
        assert_eq!(field(read(slash(), Kind::OpenIdProvider)), "issuer");
        assert!(read(slash(), Kind::TokenIssuer).is_ok());
        let typed = read(
            json!({"issuer": "https://idp.example.com", "n": 1}),
            Kind::TokenIssuer,
        )
        .unwrap();
        assert!(
            matches!(typed.string("n"), Err(DiscoveryError::Invalid { field, .. }) if field == "n")
        );
    }

    /// A server answering `routes` (path -> status, body); anything else 404.
    async fn serve(routes: Vec<(&'static str, u16, String)>) -> String {
        use axum::http::StatusCode;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let found = routes.iter().find(|(p, ..)| *p == uri.path()).cloned();
            async move {
                match found {
                    Some((_, status, body)) => {
                        (StatusCode::from_u16(status).unwrap(), body).into_response()
                    }
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }

    use axum::response::IntoResponse;

    #[tokio::test]
    async fn the_first_json_object_wins_and_errors_pass_to_the_next_url() {
        let http = client();
        let base = serve(vec![
            (
                "/.well-known/oauth-authorization-server",
                500,
                "oops".into(),
            ),
            ("/.well-known/openid-configuration", 200, "not json".into()),
            ("/b/.well-known/openid-configuration", 200, "[1]".into()),
            (
                "/.well-known/oauth-authorization-server/c",
                200,
                r#"{"issuer":"x"}"#.into(),
            ),
        ])
        .await;
        let urls = [
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration",
            "/b/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server/c",
        ]
        .map(|p| format!("{base}{p}"));
        let (at, doc) = first_document(&http, &urls, None).await.unwrap().unwrap();
        assert_eq!(at, urls[3]);
        assert_eq!(doc["issuer"], "x");
        assert!(
            first_document(&http, &urls[..3], None)
                .await
                .unwrap()
                .is_none()
        );
        // The routine: a foreign issuer at the first URL that answers is refused, not
        // passed over for a later one.
        let issuer = format!("{base}/c");
        let e = issuer_metadata(&http, Kind::AuthorizationServer, &issuer, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, DiscoveryError::Invalid { field, .. } if field == "issuer"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_host_or_an_oversized_document_ends_the_search() {
        let http = client();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let e = issuer_metadata(&http, Kind::TokenIssuer, &closed, None)
            .await
            .unwrap_err();
        assert!(matches!(e, DiscoveryError::Unavailable(_)), "{e}");
        let big = format!(r#"{{"issuer":"x","pad":"{}"}}"#, "a".repeat(MAX_METADATA));
        let base = serve(vec![
            ("/.well-known/openid-configuration", 200, big),
            (
                "/.well-known/oauth-authorization-server",
                200,
                r#"{"issuer":"x"}"#.into(),
            ),
        ])
        .await;
        let e = issuer_metadata(&http, Kind::TokenIssuer, &base, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, DiscoveryError::Invalid { field, .. } if field == "metadata"),
            "{e}"
        );
        // Nothing at any URL: unavailable, naming the issuer.
        let empty = serve(vec![]).await;
        let e = issuer_metadata(&http, Kind::OpenIdProvider, &empty, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, DiscoveryError::Unavailable(m) if m.contains(&empty)),
            "{e}"
        );
    }
}
