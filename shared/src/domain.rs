//! Plain domain types: MCP servers and their outbound auth, API keys, OAuth grants and states.
//! No I/O here; validation that needs only the value itself lives beside the type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::secrets::SecretRef;

/// Names of servers (and later virtual servers, teams, groups) appear in URLs and in tool
/// prefixes (`{server}__{tool}`), so they are kept to a safe, unambiguous charset.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("name must be 1 to 64 characters".into());
    }
    let first_ok = name.as_bytes()[0].is_ascii_lowercase() || name.as_bytes()[0].is_ascii_digit();
    let all_ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !first_ok || !all_ok || name.contains("__") {
        return Err(
            "name must use lowercase letters, digits, '-' and '_', start with a letter or digit, and not contain '__'"
                .into(),
        );
    }
    Ok(())
}

/// A registered upstream MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpServer {
    pub name: String,
    /// Streamable HTTP endpoint of the upstream, `http` or `https`.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub auth: UpstreamAuth,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    /// The authorization server an `oauth2` or `oauth2_client_credentials` server uses, as
    /// the gateway resolved, validated and pinned it (at save, at first use, or on an admin's
    /// request). Written by the gateway only, never taken from an admin's request body; connect,
    /// refresh, revocation, machine tokens and client registration use only these endpoints
    /// (configured ones win), so a later change of the upstream's metadata moves nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_server: Option<PinnedAuthServer>,
    /// For an `oauth2` or `per_user_token` server: the admin says its tool list is the same
    /// for every account, so the list a connected user last got may be shown (marked, see
    /// `upstream::snapshots`) to users who have not connected yet. Off by default: a server
    /// whose tools depend on the account (user-defined actions, per-account projects) would
    /// otherwise show one user's tool names and descriptions to everyone else, and let a user
    /// who shapes their own tools put words in front of other users' models.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub share_tool_list: bool,
    /// What the audit trail keeps of calls to this server beyond the arguments' keyed hash
    /// (absent: nothing more). For a virtual server's tool, its member server's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<ServerAudit>,
}

/// A server's audit settings: whether the calls' arguments are kept whole in the records
/// (opt-in: they can hold personal data), at most `max_bytes` of their canonical JSON (a
/// longer capture is cut and marked), with the members named in `redact_keys` (at any depth,
/// any case) replaced by `"[redacted]"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerAudit {
    #[serde(default)]
    pub capture_arguments: bool,
    #[serde(default = "ServerAudit::default_max_bytes")]
    pub max_bytes: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact_keys: Vec<String>,
}

impl ServerAudit {
    /// The most a record may keep of one call's arguments.
    pub const MAX_BYTES: usize = 16 * 1024;
    const MAX_REDACT_KEYS: usize = 64;

    fn default_max_bytes() -> usize {
        4096
    }

    /// Bounds: `max_bytes` 1 to 16384, at most 64 keys to redact of 1 to 128 printable
    /// characters each.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=Self::MAX_BYTES).contains(&self.max_bytes) {
            return Err(format!(
                "audit.max_bytes must be between 1 and {}",
                Self::MAX_BYTES
            ));
        }
        if self.redact_keys.len() > Self::MAX_REDACT_KEYS {
            return Err(format!(
                "audit.redact_keys holds at most {} keys",
                Self::MAX_REDACT_KEYS
            ));
        }
        if self
            .redact_keys
            .iter()
            .any(|k| k.is_empty() || k.len() > 128 || k.chars().any(char::is_control))
        {
            return Err("audit.redact_keys: each key is 1 to 128 printable characters".into());
        }
        Ok(())
    }
}

/// How the endpoints pinned on a server were obtained (shown to admins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinSource {
    /// Every endpoint the server needs is configured: nothing was fetched.
    Configured,
    /// Discovered when an admin saved the server.
    DiscoveredAtSave,
    /// Discovered at the first connect or token request because the metadata could not be
    /// fetched when the server was saved (or the record predates pinning): trust on first use.
    DiscoveredAtFirstUse,
    /// Discovered again at an admin's explicit request (`POST /admin/servers/{name}/discover`).
    RediscoveredByAdmin,
}

/// An authorization server as pinned on a server record: the configured endpoints, and for
/// the rest what its protected-resource metadata (RFC 9728) and authorization-server metadata
/// (RFC 8414 or OIDC discovery) said, every URL validated (see `grants::endpoint_url`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinnedAuthServer {
    /// The issuer identifier; the metadata's `issuer` was identical to it (RFC 8414 section
    /// 3.3). `None` only when the endpoints are configured without an issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Absent for `oauth2_client_credentials` servers, which need no browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// RFC 7591 registration endpoint, when the authorization server offers one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
    /// `token_endpoint_auth_methods_supported`; empty when not published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// RFC 9207: the authorization server puts `iss` in every authorization response, so a
    /// callback without it is refused.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// The protected-resource metadata document read, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_metadata_url: Option<String>,
    /// The authorization-server metadata document read, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_url: Option<String>,
    /// When these endpoints were resolved.
    pub discovered_at: UnixTime,
    pub source: PinSource,
}

/// How the gateway authenticates to an upstream on the caller's behalf. The caller's own
/// gateway credential is never one of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpstreamAuth {
    /// No credential.
    None,
    /// Fixed headers whose values are secrets shared by every caller.
    Header {
        headers: BTreeMap<String, SecretRef>,
    },
    /// A token each user stores for themselves, sent in `header` formatted by `format`
    /// (`{token}` is replaced).
    PerUserToken { header: String, format: String },
    /// A per-user OAuth2 grant obtained through the gateway's authorization-code flow.
    #[serde(rename = "oauth2")]
    OAuth2 {
        /// Absent: the gateway registers its own client (RFC 7591), once per issuer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        /// Absent for a public client (PKCE only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret: Option<SecretRef>,
        #[serde(default)]
        scopes: Vec<String>,
        /// Endpoints; discovered from the upstream's protected-resource metadata (RFC 9728)
        /// and its authorization server's metadata (RFC 8414, OIDC) when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authorization_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revocation_url: Option<String>,
        /// The authorization server's issuer, checked against `iss` in callbacks (RFC 9207).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        issuer: Option<String>,
        /// Extra authorization parameters (`access_type=offline`, `prompt=consent`, ...).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        extra_params: BTreeMap<String, String>,
        /// RFC 8707 resource indicator sent on authorization, exchange and refresh; the
        /// server's URL when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
        /// Callers who have not connected yet are shown the tools the upstream lists to the
        /// gateway's own client (`client_id` and `client_secret` required), with a machine
        /// token from the client credentials grant, when no other list is at hand. Only
        /// tool definitions are read with it: calls always take the caller's own grant.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        list_tools_with_client_credentials: bool,
    },
    /// One machine token for every caller (OAuth2 client credentials grant), cached until it
    /// expires and renewed after an upstream 401. For upstreams that trust the gateway as a
    /// client rather than acting for each user.
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials {
        client_id: String,
        client_secret: SecretRef,
        #[serde(default)]
        scopes: Vec<String>,
        /// Discovered like the `oauth2` endpoints when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        issuer: Option<String>,
        /// RFC 8707 resource; the server's URL when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
    },
}

/// An identity provider whose JWTs the gateway accepts (OIDC or plain OAuth2 with JWT access
/// tokens). The token's `iss` picks the provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProvider {
    pub name: String,
    /// Exact `iss` value of its tokens; also where discovery starts.
    pub issuer: String,
    /// JWKS location; discovered from the issuer's metadata (OIDC, then RFC 8414) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Audiences accepted besides the gateway's own resource URLs (for IdPs that cannot put
    /// the resource in `aud`).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Signature algorithms accepted; never `none`, never symmetric.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Claim holding the user's email.
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    /// Claim holding the user's groups (array of strings, or one space-separated string).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Scopes every token must carry (the `scope` or `scp` claim).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Scopes MCP clients are told to ask this provider for when they log in to the gateway
    /// (`scopes_supported` of the endpoints' protected-resource metadata and `scope` of their
    /// 401 challenges), besides `required_scopes`. Empty: the identity scopes the gateway
    /// reads (`openid`, `profile`, `email`, `groups`) that the provider's discovered
    /// `scopes_supported` lists. Clients such as the MCP Inspector register with exactly the
    /// advertised scopes, and providers refuse a registration with an empty `scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Members of these groups hold the admin role.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// When set, only emails in these domains are accepted from this provider (so one
    /// provider cannot speak for users another one owns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email_domains: Vec<String>,
    /// When set, only access tokens issued to these OAuth clients are accepted: the token's
    /// `azp`, else `client_id` (RFC 9068), else `cid` (Okta), else `appid` (Entra v1) must be
    /// listed, and a token with none of them is refused. Keeps out tokens the provider issued
    /// to other applications for the same audience.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_client_ids: Vec<String>,
    /// The gateway's own OIDC client at this provider, for signing in to the web console
    /// (authorization code + PKCE). Without it the console offers API-key sign-in only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleClient>,
    #[serde(default)]
    pub created_at: UnixTime,
    #[serde(default)]
    pub updated_at: UnixTime,
}

/// The console's OIDC client at an identity provider. Its ID tokens are verified like access
/// tokens (issuer, keys, algorithms, claims), with `aud` = `client_id` and the sign-in's nonce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleClient {
    pub client_id: String,
    /// For a confidential client (`client_secret_basic`); a public client sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretRef>,
    /// Scopes asked for besides `openid`; default `email profile`, plus what the groups claim
    /// needs at providers that scope it (`groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

impl ConsoleClient {
    fn validate(&self) -> Result<(), String> {
        if self.client_id.is_empty()
            || self.client_id.len() > 256
            || self.client_id.chars().any(char::is_control)
        {
            return Err("console.client_id must be 1 to 256 characters".into());
        }
        if self.scopes.len() > 32
            || self.scopes.iter().any(|s| {
                s.is_empty()
                    || s.len() > 128
                    || s.chars().any(|c| c.is_whitespace() || c.is_control())
            })
        {
            return Err("console.scopes takes at most 32 scope names without spaces".into());
        }
        Ok(())
    }
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}

fn default_email_claim() -> String {
    "email".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

/// Asymmetric JWS algorithms an identity provider may be configured with.
pub const IDP_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// An `https` URL with a host, or an `http` one whose host is loopback (`localhost`,
/// 127.0.0.0/8, `::1`): signing keys and issuer metadata fetched over plain http from
/// anywhere else could be swapped on the way, and with them every token's signature.
fn secure_url(raw: &str) -> bool {
    let Ok(u) = url::Url::parse(raw) else {
        return false;
    };
    match (u.scheme(), u.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Domain(d))) => d.eq_ignore_ascii_case("localhost"),
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}

/// Whether `s` is an OAuth scope token (RFC 6749 section 3.3: `%x21 / %x23-5B / %x5D-7E`), of at
/// most 256 characters.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

impl IdentityProvider {
    /// Checks what the value alone can tell: name, issuer and JWKS URLs, algorithms, claims.
    pub fn validate(&self) -> Result<(), String> {
        validate_name(&self.name)?;
        if !secure_url(&self.issuer) || self.issuer.len() > 2048 {
            return Err(
                "issuer must be an https URL (http only for a loopback host: localhost, 127.0.0.0/8, ::1)"
                    .into(),
            );
        }
        if let Some(j) = &self.jwks_uri
            && (!secure_url(j) || j.len() > 2048)
        {
            return Err(
                "jwks_uri must be an https URL (http only for a loopback host: localhost, 127.0.0.0/8, ::1)"
                    .into(),
            );
        }
        if self.algorithms.is_empty()
            || self
                .algorithms
                .iter()
                .any(|a| !IDP_ALGORITHMS.contains(&a.as_str()))
        {
            return Err(format!(
                "algorithms must be a non-empty subset of {}",
                IDP_ALGORITHMS.join(", ")
            ));
        }
        for (what, v) in [
            ("email_claim", &self.email_claim),
            ("groups_claim", &self.groups_claim),
        ] {
            if v.is_empty() || v.len() > 128 {
                return Err(format!("{what} must be 1 to 128 characters"));
            }
        }
        let lists = [
            &self.audiences,
            &self.required_scopes,
            &self.admin_groups,
            &self.email_domains,
        ];
        if lists
            .iter()
            .any(|l| l.len() > 64 || l.iter().any(|s| s.is_empty() || s.len() > 512))
        {
            return Err("audiences, required_scopes and admin_groups take at most 64 non-empty entries of at most 512 characters".into());
        }
        // Client ids are compared exactly: one with spaces or control characters around it
        // would never match, and silently refuse every token.
        if self.allowed_client_ids.len() > 64
            || self.allowed_client_ids.iter().any(|c| {
                c.is_empty()
                    || c.len() > 256
                    || c.chars().any(|c| c.is_whitespace() || c.is_control())
            })
        {
            return Err("allowed_client_ids takes at most 64 client ids of 1 to 256 characters without spaces".into());
        }
        // They are written into `WWW-Authenticate` and sent to the provider as they are: only
        // RFC 6749 scope tokens (printable ASCII without space, `"` or `\\`).
        if self.scopes.len() > 64 || self.scopes.iter().any(|s| !is_scope_token(s)) {
            return Err("scopes takes at most 64 scope tokens of 1 to 256 printable characters without spaces, quotes or backslashes".into());
        }
        if let Some(dup) = self
            .allowed_client_ids
            .iter()
            .enumerate()
            .find(|(i, c)| self.allowed_client_ids[..*i].contains(c))
        {
            return Err(format!("allowed_client_ids: '{}' is listed twice", dup.1));
        }
        if let Some(c) = &self.console {
            c.validate()?;
        }
        Ok(())
    }
}

/// A gateway API key. Only the SHA-256 of the key is stored; the key itself is shown once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    /// The principal the key acts for: an email, `service:<name>` for a service account, or
    /// `bootstrap-admin`.
    pub owner: String,
    /// A label chosen by whoever created the key ("laptop").
    pub name: String,
    /// Lowercase hex SHA-256 of the full key string.
    pub key_hash: String,
    /// Holds the admin role regardless of `MCPGW_ADMIN_EMAILS` (the bootstrap key).
    #[serde(default)]
    pub admin: bool,
    pub created_at: UnixTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixTime>,
    /// When the key last authenticated a request, recorded at most about once a minute per
    /// process (see `identity::key_use`), so it may lag by that much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<UnixTime>,
}

impl ApiKey {
    pub fn is_expired(&self, now: UnixTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Whether a grant can be used as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    Active,
    /// The provider refused the refresh token: the user must connect again.
    NeedsReconsent,
}

impl GrantStatus {
    /// The stored (and serialized) name; both store adapters use it.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Active => "active",
            GrantStatus::NeedsReconsent => "needs_reconsent",
        }
    }

    /// The inverse of [`GrantStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [GrantStatus::Active, GrantStatus::NeedsReconsent]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A user's OAuth2 grant for one upstream server. Tokens are sealed with the keyring; the
/// store sees only ciphertext. Every write is conditional on `version` (optimistic locking).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub user: String,
    pub server: String,
    /// Incremented on every write; a write succeeds only if the stored version is the one read.
    pub version: u64,
    /// Keyring-sealed token set (access token, refresh token, ...). Bytes (DynamoDB `B`;
    /// in JSON an array of numbers, as serde writes any `Vec<u8>`).
    #[serde(with = "serde_bytes")]
    pub sealed_tokens: Vec<u8>,
    pub status: GrantStatus,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<UnixTime>,
    /// When the sweeper should refresh this grant; `None` when there is nothing to refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_at: Option<UnixTime>,
    pub updated_at: UnixTime,
    /// When the tokens were last refreshed (`None`: as first obtained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_at: Option<UnixTime>,
    /// Why the last refresh failed, from the fixed set `network_error`, `upstream_error`,
    /// `invalid_grant`, `refresh_failed` (`GrantError::code`); cleared by a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Until when one refresher holds the grant (see `grants::tokens`): set by the write that
    /// claims it before the refresh token is redeemed, cleared by the write of the result, so
    /// concurrent processes never redeem the same (rotating) refresh token twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_lease_until: Option<UnixTime>,
}

/// A pending OAuth authorization: single use, expires (10 minutes by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuthState {
    /// The random `state` value sent to the provider.
    pub id: String,
    pub user: String,
    pub server: String,
    /// Keyring-sealed flow data (PKCE verifier, redirect URI, the SHA-256 of the connect
    /// cookie of the browser the flow is bound to, ...). Bytes, as `Grant::sealed_tokens`.
    #[serde(with = "serde_bytes")]
    pub sealed_payload: Vec<u8>,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

impl OAuthState {
    pub fn is_expired(&self, now: UnixTime) -> bool {
        self.expires_at <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_safe_charset_only() {
        for ok in ["everything", "py-echo", "a", "s3_files", "9lives"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Everything",
            "-x",
            "a b",
            "a/b",
            "a__b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    fn provider(issuer: &str, jwks_uri: Option<&str>) -> IdentityProvider {
        serde_json::from_value(serde_json::json!({
            "name": "corp", "issuer": issuer, "jwks_uri": jwks_uri,
        }))
        .unwrap()
    }

    #[test]
    fn identity_provider_urls_are_https_except_on_loopback() {
        for ok in [
            "https://idp.example.com",
            "https://login.example.com/tenant/v2.0",
            "https://10.0.0.1:8443",
            "http://localhost:4000",
            "http://LOCALHOST/realms/x",
            "http://127.0.0.1:4000",
            "http://127.8.9.10",
            "http://[::1]:4000/oidc",
        ] {
            assert!(provider(ok, None).validate().is_ok(), "issuer {ok}");
            let jwks = format!("{ok}/jwks");
            assert!(
                provider("https://idp.example.com", Some(&jwks))
                    .validate()
                    .is_ok(),
                "jwks_uri {jwks}"
            );
        }
        for bad in [
            "http://idp.example.com",
            "http://10.0.0.1:4000",
            "http://0.0.0.0:4000",
            "http://[::]:4000",
            "http://[::ffff:8.8.8.8]",
            "http://localhost.evil.example",
            "http://evil.example/localhost",
            "http://127.0.0.1.nip.io",
            "ftp://localhost",
            "https://",
            "not a url",
        ] {
            let err = provider(bad, None).validate().unwrap_err();
            assert!(
                err.starts_with("issuer must be an https URL"),
                "{bad}: {err}"
            );
            let err = provider("https://idp.example.com", Some(bad))
                .validate()
                .unwrap_err();
            assert!(
                err.starts_with("jwks_uri must be an https URL"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn allowed_client_ids_are_checked() {
        let with = |ids: serde_json::Value| {
            let mut v = serde_json::to_value(provider("https://idp.example.com", None)).unwrap();
            v["allowed_client_ids"] = ids;
            serde_json::from_value::<IdentityProvider>(v)
                .unwrap()
                .validate()
        };
        assert!(with(serde_json::json!(["mcp-client", "0oa1b2c3"])).is_ok());
        assert!(with(serde_json::json!([])).is_ok(), "empty: not checked");
        let long = "x".repeat(257);
        let many: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
        for bad in [
            serde_json::json!([""]),
            serde_json::json!([" mcp-client"]),
            serde_json::json!(["mcp\nclient"]),
            serde_json::json!([long]),
            serde_json::json!(many),
        ] {
            let err = with(bad.clone()).unwrap_err();
            assert!(err.starts_with("allowed_client_ids"), "{bad}: {err}");
        }
        assert!(
            with(serde_json::json!(["a", "a"]))
                .unwrap_err()
                .contains("twice")
        );
        // Unset, the field is not shown (nor stored): documents written before it read alike.
        let plain = serde_json::to_value(provider("https://idp.example.com", None)).unwrap();
        assert!(plain.get("allowed_client_ids").is_none());
    }

    #[test]
    fn grant_status_names_match_serde() {
        for st in [GrantStatus::Active, GrantStatus::NeedsReconsent] {
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
            assert_eq!(GrantStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(GrantStatus::parse("revoked"), None);
    }

    #[test]
    fn upstream_auth_uses_interface_shapes() {
        let a: UpstreamAuth = serde_json::from_str(
            r#"{"type":"header","headers":{"X-Api-Key":"secret://echo-key#token"}}"#,
        )
        .unwrap();
        let UpstreamAuth::Header { headers } = &a else {
            panic!("{a:?}")
        };
        assert_eq!(headers["X-Api-Key"].name(), "echo-key");
        let o: UpstreamAuth = serde_json::from_str(
            r#"{"type":"oauth2","client_id":"c","client_secret":"secret://cs","scopes":["a"]}"#,
        )
        .unwrap();
        assert!(matches!(
            o,
            UpstreamAuth::OAuth2 {
                list_tools_with_client_credentials: false,
                ..
            }
        ));
        // Written only when set, so existing records read and write as before.
        assert!(!serde_json::to_string(&o).unwrap().contains("list_tools"));
        let listed: UpstreamAuth = serde_json::from_str(
            r#"{"type":"oauth2","client_id":"c","client_secret":"secret://cs","list_tools_with_client_credentials":true}"#,
        )
        .unwrap();
        assert!(
            serde_json::to_string(&listed)
                .unwrap()
                .contains("\"list_tools_with_client_credentials\":true")
        );
        assert!(serde_json::from_str::<UpstreamAuth>(r#"{"type":"magic"}"#).is_err());
        assert!(
            serde_json::from_str::<UpstreamAuth>(r#"{"type":"header","headers":{"A":"plain"}}"#)
                .is_err(),
            "header values must be secret references, not literals"
        );
    }
}
