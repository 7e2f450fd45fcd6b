//! Where metadata documents live: the well-known URLs of an issuer (RFC 8414 section 3.1,
//! OpenID Connect Discovery 1.0 section 4) and of a protected resource (RFC 9728 section
//! 3.1). Pure string building, no I/O; tested below with `proptest` properties (every URL
//! stays on the issuer's origin, keeps its path, and never ends in the issuer's `/`).

use url::Url;

/// RFC 8414 section 3.1, and RFC 9728 section 3.1 for resources: the well-known segment
/// inserted between the host and the path, `{origin}/.well-known/{name}{path}`, the path's
/// terminating `/` removed first. A query or fragment is never part of it (an issuer has
/// neither).
pub fn inserted(url: &Url, name: &str) -> String {
    let path = url.path().trim_end_matches('/');
    format!(
        "{}/.well-known/{name}{path}",
        url.origin().ascii_serialization()
    )
}

/// OpenID Connect Discovery section 4: `/.well-known/openid-configuration` appended to the
/// issuer, its terminating `/` removed first.
pub fn openid_appended(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// RFC 8414 metadata of `issuer` (path-inserted).
pub fn oauth_authorization_server(issuer: &Url) -> String {
    inserted(issuer, "oauth-authorization-server")
}

/// OIDC metadata with the segment inserted before the issuer's path, as the MCP
/// authorization specification has clients try it (for an issuer without a path it is the
/// same URL as [`openid_appended`]).
pub fn openid_inserted(issuer: &Url) -> String {
    inserted(issuer, "openid-configuration")
}

/// RFC 9728 section 3.1: the protected-resource metadata of `resource`, path-inserted first,
/// then at the origin's root (as MCP clients look for it).
pub fn protected_resource(resource: &Url) -> [String; 2] {
    [
        inserted(resource, "oauth-protected-resource"),
        format!(
            "{}/.well-known/oauth-protected-resource",
            resource.origin().ascii_serialization()
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn an_issuer_without_a_path() {
        let i = url("https://as.example.com");
        assert_eq!(
            oauth_authorization_server(&i),
            "https://as.example.com/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            openid_inserted(&i),
            "https://as.example.com/.well-known/openid-configuration"
        );
        assert_eq!(
            openid_appended("https://as.example.com/"),
            "https://as.example.com/.well-known/openid-configuration"
        );
    }

    #[test]
    fn an_issuer_with_a_path() {
        // RFC 8414 section 3.1's own example, and OIDC Discovery section 4.1's.
        let i = url("https://example.com/issuer1");
        assert_eq!(
            oauth_authorization_server(&i),
            "https://example.com/.well-known/oauth-authorization-server/issuer1"
        );
        assert_eq!(
            openid_inserted(&i),
            "https://example.com/.well-known/openid-configuration/issuer1"
        );
        assert_eq!(
            openid_appended("https://example.com/issuer1"),
            "https://example.com/issuer1/.well-known/openid-configuration"
        );
        // A terminating slash is removed before the segment goes in.
        assert_eq!(
            oauth_authorization_server(&url("https://example.com/tenant/a/")),
            "https://example.com/.well-known/oauth-authorization-server/tenant/a"
        );
        assert_eq!(
            openid_appended("https://example.com/tenant/a/"),
            "https://example.com/tenant/a/.well-known/openid-configuration"
        );
    }

    #[test]
    fn a_port_is_kept_and_a_default_one_dropped() {
        assert_eq!(
            openid_inserted(&url("http://127.0.0.1:9")),
            "http://127.0.0.1:9/.well-known/openid-configuration"
        );
        assert_eq!(
            oauth_authorization_server(&url("https://as.example.com:443/x")),
            "https://as.example.com/.well-known/oauth-authorization-server/x"
        );
    }

    #[test]
    fn protected_resource_metadata_is_looked_up_inserted_then_at_the_root() {
        assert_eq!(
            protected_resource(&url("https://mcp.example.com/tools/mcp/")),
            [
                "https://mcp.example.com/.well-known/oauth-protected-resource/tools/mcp",
                "https://mcp.example.com/.well-known/oauth-protected-resource"
            ]
        );
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._~-]{0,8}"
    }

    prop_compose! {
        /// An issuer URL: https or http, a host, an optional port, zero to three path
        /// segments, with or without a terminating slash.
        fn issuer()(
            https in any::<bool>(),
            host in "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,6}){0,2}",
            port in proptest::option::of(1u16..),
            segments in proptest::collection::vec(segment(), 0..4),
            slash in any::<bool>(),
        ) -> (String, String) {
            let scheme = if https { "https" } else { "http" };
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let path: String = segments.iter().map(|s| format!("/{s}")).collect();
            let raw = format!("{scheme}://{host}{port}{path}{}", if slash { "/" } else { "" });
            (raw, path)
        }
    }

    proptest! {
        /// Every well-known URL of an issuer is on the issuer's own origin: discovery never
        /// leaves the host the admin (or the checked resource metadata) named.
        #[test]
        fn every_url_stays_on_the_issuers_origin((raw, _) in issuer()) {
            let i = url(&raw);
            let origin = i.origin();
            for u in [
                oauth_authorization_server(&i),
                openid_inserted(&i),
                openid_appended(&raw),
            ]
            .into_iter()
            .chain(protected_resource(&i))
            {
                prop_assert_eq!(url(&u).origin(), origin.clone(), "{}", u);
            }
        }

        /// Insertion puts the segment between origin and path, keeping the path whole but
        /// for its terminating slash; appending keeps the whole issuer in front.
        #[test]
        fn the_issuers_path_survives_whole((raw, path) in issuer()) {
            let i = url(&raw);
            let origin = i.origin().ascii_serialization();
            for (name, u) in [
                ("oauth-authorization-server", oauth_authorization_server(&i)),
                ("openid-configuration", openid_inserted(&i)),
            ] {
                prop_assert_eq!(u, format!("{origin}/.well-known/{name}{path}"));
            }
            let appended = openid_appended(&raw);
            prop_assert!(appended.starts_with(raw.trim_end_matches('/')));
            prop_assert!(appended.ends_with("/.well-known/openid-configuration"));
            prop_assert!(!appended.contains("//.well-known"), "{}", appended);
            // Without a path, the two OIDC spellings are one URL.
            if path.is_empty() {
                prop_assert_eq!(openid_inserted(&i), appended);
            }
        }
    }
}
