//! Binds a connect flow to the browser that saw the page naming its gateway user, so a
//! continue link or a provider authorization URL that reaches another browser cannot connect
//! that browser's provider account to someone else's gateway user (account-linking swap,
//! login CSRF).
//!
//! - The connect page sets a cookie holding a fresh 256-bit [`Nonce`]; the continue record
//!   and the authorization state keep only its SHA-256 ([`Nonce::hash`]), never the value.
//! - Continue and callback require a cookie whose hash equals the recorded one (compared in
//!   constant time): [`Browser::admits`]. Without it the step is refused and stores nothing.
//! - A browser signed in to the console as a different gateway user than the flow's is
//!   refused at every step, even with the cookie ([`Browser::check_console`]).
//!
//! The cookie is named per server: connect pages for different servers in several tabs run
//! side by side; a second connect page for the same server in the same browser replaces the
//! first's cookie, and the first tab's continue then asks to start again. It lives as long
//! as the authorization state ([`super::flow::STATE_TTL_SECS`]) and only on the OAuth routes.

use axum::http::HeaderMap;

use crate::config::Config;

/// The cookie's name without its prefix; the server's name follows (server names are
/// lowercase letters, digits, `-` and `_`: valid in a cookie name).
const COOKIE_STEM: &str = "mcpgw_connect_";
/// At most this many cookies of one name are looked at (a browser sends one, or two when a
/// sibling domain set one too): a request cannot make the gateway hash without bound.
const MAX_PRESENTED: usize = 4;

/// The value the connect page gives the browser.
pub struct Nonce(String);

impl Nonce {
    /// A fresh nonce: 32 random bytes.
    pub fn generate() -> Self {
        Self(crate::crypto::random_token(32))
    }

    /// What the continue record and the authorization state keep: lowercase hex SHA-256.
    pub fn hash(&self) -> String {
        crate::crypto::sha256_hex(self.0.as_bytes())
    }

    /// The `Set-Cookie` value that hands this nonce to the browser for `server`'s flow.
    pub fn set_cookie(&self, config: &Config, server: &str) -> String {
        cookie(config, server, &self.0, super::flow::STATE_TTL_SECS)
    }
}

impl std::fmt::Debug for Nonce {
    // The value is the browser's proof: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonce(…)")
    }
}

/// Whether the gateway's public URL is https: the cookie is then `Secure` (browsers refuse
/// to store a `Secure` cookie from a plain-http page, so a plain-http gateway, local or
/// behind a TLS-terminating proxy that forwards http, gets one without).
fn secure(config: &Config) -> bool {
    url::Url::parse(&config.public_url).is_ok_and(|u| u.scheme() == "https")
}

/// The cookie's name for `server`. `__Host-` would also stop a sibling subdomain from
/// planting the cookie (`Domain=`), but it requires `Path=/`, and the cookie is kept to the
/// OAuth routes; `__Secure-` (allowed whenever the cookie is `Secure`) at least makes
/// browsers refuse it from plain-http pages.
pub fn cookie_name(config: &Config, server: &str) -> String {
    let prefix = if secure(config) { "__Secure-" } else { "" };
    format!("{prefix}{COOKIE_STEM}{server}")
}

/// The OAuth routes under the public URL's path (`/prod/oauth/` behind a REST API stage).
fn cookie_path(config: &Config) -> String {
    format!("{}/oauth/", config.public_path())
}

fn cookie(config: &Config, server: &str, value: &str, max_age: i64) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        name = cookie_name(config, server),
        path = cookie_path(config),
        // Lax, not Strict: the provider's redirect back to the callback is a cross-site
        // top-level navigation, which carries Lax cookies and not Strict ones.
        secure = if secure(config) { "; Secure" } else { "" },
    )
}

/// The `Set-Cookie` value that deletes `server`'s connect cookie (the flow is over).
pub fn clear_cookie(config: &Config, server: &str) -> String {
    cookie(config, server, "", 0)
}

/// Why a connect step was refused for this browser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No cookie of this flow: another browser, a cookie replaced by a newer connect page
    /// of the same server, or one past its 10 minutes.
    #[error(
        "this step must happen in the browser that opened the connect page, within 10 minutes of opening it"
    )]
    OtherBrowser,
    /// The browser is signed in to the console as another gateway user.
    #[error(
        "this browser is signed in to the gateway console as {console_user}, but this connection is for {flow_user}"
    )]
    OtherConsoleUser {
        console_user: String,
        flow_user: String,
    },
}

/// What a request to a connect step brings: the hashes of the flow cookies it carries, and
/// the gateway user of its console session, if any.
#[derive(Debug, Default)]
pub struct Browser {
    presented: Vec<String>,
    console_user: Option<String>,
}

impl Browser {
    /// The browser of a request to `server`'s flow; `console_user` as the console session
    /// names it ([`crate::browser::session::signed_in_user`]).
    pub fn new(
        config: &Config,
        server: &str,
        headers: &HeaderMap,
        console_user: Option<String>,
    ) -> Self {
        let name = cookie_name(config, server);
        Self {
            presented: crate::browser::cookie_values(headers, &name)
                .filter(|v| !v.is_empty())
                .take(MAX_PRESENTED)
                .map(|v| crate::crypto::sha256_hex(v.as_bytes()))
                .collect(),
            console_user,
        }
    }

    /// Refuses a browser signed in to the console as another user than `flow_user`. No
    /// console session, or one of the same user, passes.
    pub fn check_console(&self, flow_user: &str) -> Result<(), Refusal> {
        match &self.console_user {
            Some(c) if c != flow_user => Err(Refusal::OtherConsoleUser {
                console_user: c.clone(),
                flow_user: flow_user.to_owned(),
            }),
            Some(_) | None => Ok(()),
        }
    }

    /// Admits this browser to a step of the flow recorded with `binding` (a [`Nonce::hash`])
    /// for `flow_user`: it must hold the flow's cookie, and not be signed in to the console
    /// as someone else.
    pub fn admits(&self, binding: &str, flow_user: &str) -> Result<(), Refusal> {
        // Every presented value is compared (no early exit): which one matched says nothing
        // the browser does not know, but the comparison itself stays constant-time.
        let held = self.presented.iter().fold(false, |any, h| {
            crate::crypto::constant_time_eq(h.as_bytes(), binding.as_bytes()) | any
        });
        if !held || binding.is_empty() {
            return Err(Refusal::OtherBrowser);
        }
        self.check_console(flow_user)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::header;

    use super::*;

    fn config(public_url: &str) -> Config {
        Config::from_lookup(|k| (k == "MCPGW_PUBLIC_URL").then(|| public_url.to_owned())).unwrap()
    }

    fn with_cookies(cookies: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, cookies.parse().unwrap());
        h
    }

    #[test]
    fn the_cookie_is_short_lived_http_only_lax_and_kept_to_the_oauth_routes() {
        let n = Nonce::generate();
        let local = n.set_cookie(&config("http://127.0.0.1:8787"), "notes");
        assert_eq!(
            local,
            format!(
                "mcpgw_connect_notes={}; Path=/oauth/; Max-Age=600; HttpOnly; SameSite=Lax",
                n.0
            )
        );
        // 256 bits, base64url
        assert_eq!(n.0.len(), 43);
        let staged = n.set_cookie(&config("https://api.example.com/prod/"), "notes");
        assert_eq!(
            staged,
            format!(
                "__Secure-mcpgw_connect_notes={}; Path=/prod/oauth/; Max-Age=600; HttpOnly; SameSite=Lax; Secure",
                n.0
            )
        );
        assert_eq!(
            clear_cookie(&config("https://gw.example.com"), "notes"),
            "__Secure-mcpgw_connect_notes=; Path=/oauth/; Max-Age=0; HttpOnly; SameSite=Lax; Secure"
        );
        // the record keeps the hash, not the value
        assert_eq!(n.hash(), crate::crypto::sha256_hex(n.0.as_bytes()));
        assert_ne!(n.hash(), n.0);
        assert!(!format!("{n:?}").contains(&n.0));
    }

    #[test]
    fn only_the_flows_own_cookie_admits_and_only_for_its_server() {
        let c = config("http://127.0.0.1:8787");
        let n = Nonce::generate();
        let other = Nonce::generate();
        let own = format!("mcpgw_connect_notes={}", n.0);
        let b = Browser::new(&c, "notes", &with_cookies(&own), None);
        assert_eq!(b.admits(&n.hash(), "alice@example.com"), Ok(()));
        // another flow's hash, a missing cookie, the cookie of another server's flow
        assert_eq!(
            b.admits(&other.hash(), "alice@example.com"),
            Err(Refusal::OtherBrowser)
        );
        let none = Browser::new(&c, "notes", &HeaderMap::new(), None);
        assert_eq!(
            none.admits(&n.hash(), "alice@example.com"),
            Err(Refusal::OtherBrowser)
        );
        let elsewhere = Browser::new(&c, "other", &with_cookies(&own), None);
        assert_eq!(
            elsewhere.admits(&n.hash(), "alice@example.com"),
            Err(Refusal::OtherBrowser)
        );
        // the hash itself sent as the cookie does not admit (the record is not the proof)
        let hash_as_value = format!("mcpgw_connect_notes={}", n.hash());
        let b = Browser::new(&c, "notes", &with_cookies(&hash_as_value), None);
        assert_eq!(
            b.admits(&n.hash(), "alice@example.com"),
            Err(Refusal::OtherBrowser)
        );
        // an empty cookie never matches, even an empty record
        let empty = Browser::new(&c, "notes", &with_cookies("mcpgw_connect_notes="), None);
        assert_eq!(empty.admits("", "a"), Err(Refusal::OtherBrowser));
        // two cookies of the name (one planted): the flow's own still admits
        let two = format!("mcpgw_connect_notes={}; {own}", other.0);
        let b = Browser::new(&c, "notes", &with_cookies(&two), None);
        assert_eq!(b.admits(&n.hash(), "alice@example.com"), Ok(()));
    }

    #[test]
    fn a_console_session_of_another_user_is_refused_even_with_the_cookie() {
        let c = config("http://127.0.0.1:8787");
        let n = Nonce::generate();
        let own = with_cookies(&format!("mcpgw_connect_notes={}", n.0));
        let alice = Browser::new(&c, "notes", &own, Some("alice@example.com".into()));
        assert_eq!(alice.admits(&n.hash(), "alice@example.com"), Ok(()));
        assert_eq!(
            alice.admits(&n.hash(), "mallory@example.com"),
            Err(Refusal::OtherConsoleUser {
                console_user: "alice@example.com".into(),
                flow_user: "mallory@example.com".into()
            })
        );
        assert!(alice.check_console("mallory@example.com").is_err());
        assert!(
            Browser::default()
                .check_console("mallory@example.com")
                .is_ok()
        );
    }

    proptest::proptest! {
        /// Only the flow's own nonce admits, whatever else the browser sends under the
        /// cookie's name or besides it (the record's hash included).
        #[test]
        fn only_the_nonce_itself_admits(
            others in proptest::collection::vec("[ -:<-~]{0,60}", 0..4),
            include_own in proptest::bool::ANY,
            position in 0usize..4,
        ) {
            let c = config("http://127.0.0.1:8787");
            let n = Nonce::generate();
            let mut values: Vec<String> = others.clone();
            values.push(n.hash());
            if include_own {
                values.insert(position.min(values.len()), n.0.clone());
            }
            let header_text = values
                .iter()
                .map(|v| format!("mcpgw_connect_notes={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let Ok(v) = header_text.parse() else {
                return Ok(());
            };
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, v);
            let b = Browser::new(&c, "notes", &h, None);
            let own_seen = include_own
                && crate::browser::cookie_values(&h, "mcpgw_connect_notes")
                    .filter(|v| !v.is_empty())
                    .take(MAX_PRESENTED)
                    .any(|v| v == n.0);
            proptest::prop_assert_eq!(b.admits(&n.hash(), "alice@example.com").is_ok(), own_seen);
        }
    }
}
