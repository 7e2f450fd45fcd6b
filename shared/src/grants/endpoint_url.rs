//! Which URLs the gateway accepts as an authorization server's issuer or endpoint, whether an
//! admin configured them or an upstream's metadata named them: the authorization endpoint is
//! where the gateway sends users' browsers, the token endpoint receives the client secret, so
//! a hostile upstream must not be able to point either anywhere it likes.
//!
//! The rules, in order (the first broken one is the error):
//! - at most [`MAX_LEN`] characters, every one an ASCII letter, digit or one of
//!   `- . _ ~ : / ? # [ ] @ % & = + , ;`, and `%` only as a percent-escape. This is RFC 3986
//!   without the sub-delimiters `! $ ' ( ) *`, which no real OAuth endpoint uses and which a
//!   shell or a template treats specially (`$(id)`). Checked on the raw string, before
//!   parsing, because the URL parser silently drops tabs and newlines and percent-encodes
//!   spaces, backticks and the like: what was checked must be what is used;
//! - absolute, `https` (plain `http` only where the egress policy allows it), so never
//!   `javascript:`, `data:` or `file:`;
//! - a host, no userinfo (`user:pass@`), no fragment; an issuer also no query (RFC 8414
//!   section 2);
//! - the host passes the egress policy (the addresses a name resolves to are checked again at
//!   connect time by the egress policy's resolver).
//!
//! Tested below, with `proptest` properties for the character rule and the scheme rule.

use crate::egress::{EgressDenied, EgressPolicy};
pub use crate::oauth_metadata::excerpt;

/// Longest accepted URL.
pub const MAX_LEN: usize = 2048;

/// What a URL is for: an issuer identifier has no query either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlRole {
    Issuer,
    Endpoint,
}

/// Why a URL is not accepted. The messages never repeat the URL (the caller names the field
/// and shows an escaped excerpt).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EndpointUrlError {
    #[error("is longer than {MAX_LEN} characters")]
    TooLong,
    #[error(
        "contains {0:?}, which is not allowed in an endpoint URL (only ASCII letters, digits and - . _ ~ : / ? # [ ] @ % & = + , ;)"
    )]
    Character(char),
    #[error("contains a '%' that does not start a percent-escape")]
    PercentEscape,
    #[error("is not an absolute URL ({0})")]
    NotAbsolute(String),
    #[error("uses the scheme {0}; only https is allowed")]
    Scheme(String),
    #[error("uses plain http, which the egress policy does not allow for OAuth endpoints")]
    PlainHttp,
    #[error("names no host")]
    NoHost,
    #[error("contains credentials (userinfo)")]
    Userinfo,
    #[error("contains a fragment")]
    Fragment,
    #[error("contains a query, which an issuer identifier may not (RFC 8414 section 2)")]
    IssuerQuery,
    #[error("is refused by the egress policy: {0}")]
    Egress(EgressDenied),
}

/// Whether `c` may appear in an endpoint URL (see the module doc).
pub fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@%&=+,;".contains(c)
}

/// Checks `raw` against every rule; the parsed URL when it passes.
pub fn check(
    raw: &str,
    role: UrlRole,
    egress: &EgressPolicy,
) -> Result<url::Url, EndpointUrlError> {
    let url = check_form(raw, role, egress.allow_plain_http())?;
    egress.check_url(&url).map_err(EndpointUrlError::Egress)?;
    Ok(url)
}

/// Every rule but the egress policy's (for callers that report that one themselves, as the
/// admin API does for configured URLs with `egress_denied`).
pub fn check_form(
    raw: &str,
    role: UrlRole,
    allow_plain_http: bool,
) -> Result<url::Url, EndpointUrlError> {
    if raw.len() > MAX_LEN {
        return Err(EndpointUrlError::TooLong);
    }
    // A scheme the gateway never follows is named as such, before any other rule.
    if let Some((scheme, _)) = raw.split_once(':')
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !scheme.eq_ignore_ascii_case("https")
        && !scheme.eq_ignore_ascii_case("http")
    {
        return Err(EndpointUrlError::Scheme(scheme.to_ascii_lowercase()));
    }
    if let Some(c) = raw.chars().find(|c| !allowed_char(*c)) {
        return Err(EndpointUrlError::Character(c));
    }
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let escape = bytes.get(i + 1..i + 3);
        if *b == b'%' && !escape.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
            return Err(EndpointUrlError::PercentEscape);
        }
    }
    // Written out as `scheme://host`: the parser would read `https:host` or `https:///host`
    // as `https://host/`, a second spelling of the same URL that other parsers disagree on.
    let authority = raw
        .split_once("://")
        .map(|(_, rest)| rest)
        .filter(|rest| !rest.is_empty() && !rest.starts_with(['/', '?', '#']));
    if authority.is_none() {
        return Err(EndpointUrlError::NotAbsolute(
            "it must start with https:// and a host".into(),
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| EndpointUrlError::NotAbsolute(e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_plain_http => {}
        "http" => return Err(EndpointUrlError::PlainHttp),
        other => return Err(EndpointUrlError::Scheme(other.to_owned())),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(EndpointUrlError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointUrlError::Userinfo);
    }
    if url.fragment().is_some() {
        return Err(EndpointUrlError::Fragment);
    }
    if role == UrlRole::Issuer && url.query().is_some() {
        return Err(EndpointUrlError::IssuerQuery);
    }
    Ok(url)
}

/// Whether two resource identifiers are the same after the URL parser's normalization
/// (scheme and host case, default port, an empty path as `/`), and nothing more: RFC 9728
/// section 3.3 asks for identical values, so `/mcp` and `/mcp/` differ, and so do different
/// percent-encodings of one character.
pub fn same_resource(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(raw: &str) -> bool {
        check(raw, UrlRole::Endpoint, &EgressPolicy::defaults(false)).is_ok()
    }

    fn err(raw: &str) -> EndpointUrlError {
        check(raw, UrlRole::Endpoint, &EgressPolicy::defaults(false)).unwrap_err()
    }

    #[test]
    fn real_provider_endpoints_pass() {
        for good in [
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            "https://tenant.b2clogin.com/tenant.onmicrosoft.com/oauth2/v2.0/authorize?p=b2c_1_signin",
            "https://example.okta.com/oauth2/default/v1/token",
            "https://kc.example.com:8443/realms/a-b/protocol/openid-connect/token",
            "https://[2001:db8::1]/token",
            "https://as.example.com/t%C3%A9st",
            "http://127.0.0.1:8080/token",
        ] {
            assert!(
                ok(good),
                "{good}: {:?}",
                check(good, UrlRole::Endpoint, &EgressPolicy::defaults(false))
            );
        }
    }

    #[test]
    fn hostile_endpoints_are_refused_with_the_rule_they_break() {
        assert!(
            matches!(err("javascript:alert(1)"), EndpointUrlError::Scheme(s) if s == "javascript")
        );
        assert!(
            matches!(err("JavaScript:alert(1)"), EndpointUrlError::Scheme(s) if s == "javascript")
        );
        assert!(
            matches!(err("javascript:alert"), EndpointUrlError::Scheme(s) if s == "javascript")
        );
        assert!(matches!(err("data:text/html,hi"), EndpointUrlError::Scheme(s) if s == "data"));
        assert!(matches!(err("file:///etc/passwd"), EndpointUrlError::Scheme(s) if s == "file"));
        assert!(matches!(
            err("https://a.example/$(id)"),
            EndpointUrlError::Character('$')
        ));
        assert!(matches!(
            err("https://a.example/`id`"),
            EndpointUrlError::Character('`')
        ));
        assert!(matches!(
            err("https://a.example/a b"),
            EndpointUrlError::Character(' ')
        ));
        assert!(matches!(
            err("https://a.example/a\nb"),
            EndpointUrlError::Character('\n')
        ));
        assert!(matches!(
            err("https://a.example/a\tb"),
            EndpointUrlError::Character('\t')
        ));
        assert!(matches!(
            err("https://a.example/é"),
            EndpointUrlError::Character('é')
        ));
        assert!(matches!(
            err("https://a.example/%zz"),
            EndpointUrlError::PercentEscape
        ));
        assert!(matches!(
            err("https://a.example/%4"),
            EndpointUrlError::PercentEscape
        ));
        assert!(matches!(
            err("https://user:pw@a.example/t"),
            EndpointUrlError::Userinfo
        ));
        assert!(matches!(
            err("https://user@a.example/t"),
            EndpointUrlError::Userinfo
        ));
        assert!(matches!(
            err("https://a.example/t#x"),
            EndpointUrlError::Fragment
        ));
        assert!(matches!(
            err("https://a.example/t#"),
            EndpointUrlError::Fragment
        ));
        assert!(matches!(err("/token"), EndpointUrlError::NotAbsolute(_)));
        assert!(matches!(
            err("https:///token"),
            EndpointUrlError::NotAbsolute(_)
        ));
        assert!(matches!(
            err("https:token"),
            EndpointUrlError::NotAbsolute(_)
        ));
        assert!(matches!(err("https://"), EndpointUrlError::NotAbsolute(_)));
        let long = format!("https://a.example/{}", "a".repeat(MAX_LEN));
        assert!(matches!(err(&long), EndpointUrlError::TooLong));
        assert!(matches!(
            check(
                "https://as.example/?x=1",
                UrlRole::Issuer,
                &EgressPolicy::defaults(false)
            ),
            Err(EndpointUrlError::IssuerQuery)
        ));
        assert!(
            ok("https://as.example/?x=1"),
            "a query is fine on an endpoint"
        );
    }

    #[test]
    fn the_message_never_carries_a_raw_control_character() {
        let e = err("https://a.example/a\r\nSet-Cookie: x");
        assert!(
            !e.to_string().contains('\n') && !e.to_string().contains('\r'),
            "{e}"
        );
        assert_eq!(excerpt("a\nb"), "\"a\\nb\"");
    }

    #[test]
    fn resources_compare_after_normalization_only() {
        assert!(same_resource(
            "https://MCP.example.com:443/mcp",
            "https://mcp.example.com/mcp"
        ));
        assert!(same_resource(
            "https://mcp.example.com",
            "https://mcp.example.com/"
        ));
        assert!(!same_resource(
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/mcp/"
        ));
        assert!(!same_resource(
            "https://mcp.example.com/mcp",
            "http://mcp.example.com/mcp"
        ));
        assert!(!same_resource(
            "https://mcp.example.com/mcp",
            "https://evil.example/mcp"
        ));
        assert!(!same_resource("not a url", "not a url"));
    }

    proptest! {
        /// Any character outside the allowed set, anywhere in an otherwise good URL, is refused.
        #[test]
        fn a_disallowed_character_anywhere_is_refused(
            prefix in "[a-z0-9/]{0,12}",
            bad in any::<char>().prop_filter("disallowed", |c| !allowed_char(*c)),
            suffix in "[a-z0-9/]{0,12}",
        ) {
            let raw = format!("https://as.example.com/{prefix}{bad}{suffix}");
            prop_assert!(matches!(err(&raw), EndpointUrlError::Character(c) if c == bad));
        }

        /// Whatever passes is https (or plain http, allowed here), has a host, no userinfo and
        /// no fragment, and parses to a URL made only of allowed characters.
        #[test]
        fn whatever_passes_keeps_every_rule(raw in "[a-z]{2,8}:(//)?[a-zA-Z0-9@:.%\\[\\]/?#&=+,;_~-]{0,40}") {
            if let Ok(u) = check(&raw, UrlRole::Endpoint, &EgressPolicy::defaults(false)) {
                prop_assert!(matches!(u.scheme(), "https" | "http"));
                prop_assert!(u.host_str().is_some_and(|h| !h.is_empty()));
                prop_assert!(u.username().is_empty() && u.password().is_none());
                prop_assert!(u.fragment().is_none());
                prop_assert!(u.as_str().chars().all(allowed_char), "{}", u);
            }
        }

        /// A scheme other than https and http is refused, whatever follows it, and named.
        #[test]
        fn other_schemes_are_refused(
            scheme in "[a-z][a-z0-9+.-]{0,10}".prop_filter("not http(s)", |s| s != "http" && s != "https"),
            rest in "[a-z0-9/.]{0,20}",
        ) {
            let raw = format!("{scheme}://{rest}");
            prop_assert!(matches!(err(&raw), EndpointUrlError::Scheme(s) if s == scheme));
        }

        /// Good URLs built from allowed parts pass unchanged in meaning: the host and path
        /// the parser keeps are the ones written.
        #[test]
        fn good_urls_pass(
            host in "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){1,3}"
                .prop_filter("no punycode labels", |h| !h.contains("xn--")),
            path in "(/[a-zA-Z0-9][a-zA-Z0-9._~-]{0,9}){0,4}",
        ) {
            let raw = format!("https://{host}{path}");
            let u = check(&raw, UrlRole::Endpoint, &EgressPolicy::defaults(false)).unwrap();
            prop_assert_eq!(u.host_str(), Some(host.as_str()));
            let want = if path.is_empty() { "/" } else { path.as_str() };
            prop_assert_eq!(u.path(), want);
        }
    }
}
