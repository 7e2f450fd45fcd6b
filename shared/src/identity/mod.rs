//! Who is calling: turns the `Authorization: Bearer ...` header into a [`Principal`].
//!
//! A credential is a JWT from a configured identity provider (verified against its JWKS, see
//! [`jwt`]; no store read), a gateway API key (looked up by SHA-256, one store read), or the
//! bootstrap admin key (compared in constant time, from config or a secret fetched only when
//! a presented key is not in the store, so Secrets Manager stays off the hot path).

pub mod jwt;
pub mod key_cache;
pub mod key_use;
pub mod providers;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::clock::Clock;
use crate::config::BootstrapAdmin;
use crate::crypto::{constant_time_eq, random_token, sha256_hex};
use crate::domain::ApiKey;
use crate::http::ApiError;
use crate::http::ErrorCode;
use crate::secrets::Secrets;
use crate::store::{ApiKeyStore, Store, StoreError};

/// Prefix of every key the gateway issues, so leaked keys are recognizable by scanners.
pub const API_KEY_PREFIX: &str = "mcpgw_";
/// Id under which local mode stores its generated bootstrap admin key.
pub const BOOTSTRAP_KEY_ID: &str = "bootstrap";

/// How a caller proved who it is.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthMethod {
    /// A gateway API key (its id; never the key).
    ApiKey { key_id: String },
    /// The bootstrap admin key.
    Bootstrap,
    /// A JWT from a configured identity provider.
    Jwt { issuer: String, provider: String },
}

/// An authenticated caller: every request resolves to exactly one, and authorization
/// decisions read only this.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The stable name everything is keyed by (sessions, key ownership, grants): the
    /// lowercase email of a person, `service:<name>` for a service account, or
    /// `bootstrap-admin`.
    pub user: String,
    /// The email, for people.
    pub email: Option<String>,
    /// The identity provider's subject (`sub`) for JWTs; else the same as `user`.
    pub subject: String,
    /// Groups from the identity provider's groups claim (empty for API keys).
    pub groups: Vec<String>,
    pub is_admin: bool,
    /// A non-human principal (service account key).
    pub service_account: bool,
    pub method: AuthMethod,
    /// Id of the API key used, if any.
    pub api_key_id: Option<String>,
}

/// Prefix of service-account principals (`service:<name>`).
pub const SERVICE_PREFIX: &str = "service:";

impl Principal {
    /// The principal of an API key.
    pub fn from_api_key(key: &ApiKey, admin_emails: &[String]) -> Self {
        let service_account = key.owner.starts_with(SERVICE_PREFIX);
        let email = (!service_account && key.owner.contains('@')).then(|| key.owner.clone());
        Self {
            user: key.owner.clone(),
            is_admin: key.admin || email.as_ref().is_some_and(|e| admin_emails.contains(e)),
            email,
            subject: key.owner.clone(),
            groups: Vec::new(),
            service_account,
            method: AuthMethod::ApiKey {
                key_id: key.id.clone(),
            },
            api_key_id: Some(key.id.clone()),
        }
    }

    /// The bootstrap admin.
    pub fn bootstrap() -> Self {
        Self {
            user: "bootstrap-admin".into(),
            email: None,
            subject: "bootstrap-admin".into(),
            groups: Vec::new(),
            is_admin: true,
            service_account: false,
            method: AuthMethod::Bootstrap,
            api_key_id: None,
        }
    }

    /// Role names, for display and later policy.
    pub fn roles(&self) -> Vec<&'static str> {
        let mut roles = vec!["user"];
        if self.is_admin {
            roles.push("admin");
        }
        if self.service_account {
            roles.push("service_account");
        }
        roles
    }
}

/// Why the `Authorization` header cannot be read as one bearer credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthHeaderError {
    /// Two or more `Authorization` headers, or one whose value joins several with commas (as
    /// proxies combine repeated fields): which one counts would depend on who reads it.
    #[error("more than one Authorization header")]
    Repeated,
    /// Not `Bearer <b64token>`.
    #[error("malformed Authorization header: expected 'Bearer <credential>'")]
    Malformed,
}

/// Why a caller could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer credential")]
    Missing,
    #[error("malformed Authorization header: expected 'Bearer <credential>'")]
    Malformed,
    /// More than one credential ([`AuthHeaderError::Repeated`]): RFC 6750 §3.1
    /// `invalid_request`, so 400.
    #[error("more than one Authorization header: send exactly one")]
    RepeatedHeader,
    /// Unknown, expired or deleted: one answer so a caller learns nothing about which.
    #[error("invalid or expired credential")]
    Invalid,
    #[error("credential lookup failed")]
    Store(#[from] StoreError),
    /// A valid token without the scopes the identity provider's configuration requires.
    #[error("the token lacks required scopes")]
    InsufficientScope { required: Vec<String> },
}

impl AuthError {
    /// The HTTP answer; 401s carry a `WWW-Authenticate` challenge pointing at the resource
    /// metadata when one is given (MCP authorization spec), else a bare `Bearer`.
    pub fn into_api_error(self, resource_metadata: Option<&str>) -> ApiError {
        self.into_challenge(resource_metadata, &[])
    }

    /// As [`AuthError::into_api_error`], naming in the challenge the scopes a token needs
    /// (RFC 6750 `scope`), so a client can ask its identity provider for them.
    pub fn into_challenge(self, resource_metadata: Option<&str>, scopes: &[String]) -> ApiError {
        // Scope tokens are configured by an admin; anything that could break out of the
        // quoted string is left out rather than escaped.
        let scope: Vec<&str> = scopes
            .iter()
            .map(String::as_str)
            .filter(|s| crate::domain::is_scope_token(s))
            .collect();
        let challenge = |code: Option<&str>| {
            let mut parts = Vec::new();
            if let Some(url) = resource_metadata {
                parts.push(format!("resource_metadata=\"{url}\""));
            }
            if !scope.is_empty() {
                parts.push(format!("scope=\"{}\"", scope.join(" ")));
            }
            if let Some(code) = code {
                parts.push(format!("error=\"{code}\""));
            }
            let v = if parts.is_empty() {
                "Bearer".to_owned()
            } else {
                format!("Bearer {}", parts.join(", "))
            };
            HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
        };
        match self {
            AuthError::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                self.to_string(),
            )
            .with_header(header::WWW_AUTHENTICATE, challenge(None)),
            AuthError::InsufficientScope { .. } => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::InsufficientScope,
                self.to_string(),
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                challenge(Some("insufficient_scope")),
            ),
            AuthError::Malformed => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                self.to_string(),
            )
            .with_header(header::WWW_AUTHENTICATE, challenge(Some("invalid_request"))),
            AuthError::RepeatedHeader => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                self.to_string(),
            )
            .with_header(header::WWW_AUTHENTICATE, challenge(Some("invalid_request"))),
            AuthError::Invalid => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                self.to_string(),
            )
            .with_header(header::WWW_AUTHENTICATE, challenge(Some("invalid_token"))),
            AuthError::Store(e) => ApiError::from(e),
        }
    }
}

/// The answer to a refused credential outside an MCP endpoint: no resource metadata to
/// point at (see [`AuthError::into_challenge`] for the endpoints' own challenge).
impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        e.into_api_error(None)
    }
}

impl From<AuthHeaderError> for AuthError {
    fn from(e: AuthHeaderError) -> Self {
        match e {
            AuthHeaderError::Repeated => AuthError::RepeatedHeader,
            AuthHeaderError::Malformed => AuthError::Malformed,
        }
    }
}

/// Longest credential read from a header (JWTs with many groups run to a few KB).
pub const MAX_CREDENTIAL: usize = 8192;

/// Whether `t` is an RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" /
/// "/" ) *"="`. Every credential the gateway accepts (API keys, JWTs, the bootstrap key)
/// is one; anything else (spaces, commas, quotes, control characters) is refused before it
/// is looked up or parsed.
pub fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The bearer credential of a request: `Ok(None)` without an `Authorization` header, the
/// token for exactly one header `Bearer <b64token>` (scheme in any case, one or more spaces,
/// optional whitespace around the value), and an error for anything else, a second header
/// included. Every route that reads a caller's credential goes through here (via
/// [`Authenticator::authenticate_for`]).
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AuthHeaderError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthHeaderError::Repeated);
    }
    let value = value
        .to_str()
        .map_err(|_| AuthHeaderError::Malformed)?
        .trim_matches([' ', '\t']);
    // A comma is no credential character: it is how intermediaries join repeated fields.
    if value.contains(',') {
        return Err(AuthHeaderError::Repeated);
    }
    let (scheme, token) = value.split_once(' ').ok_or(AuthHeaderError::Malformed)?;
    let token = token.trim_start_matches(' ');
    if !scheme.eq_ignore_ascii_case("bearer") || token.len() > MAX_CREDENTIAL || !is_b64token(token)
    {
        return Err(AuthHeaderError::Malformed);
    }
    Ok(Some(token))
}

/// A freshly issued key: the plaintext (shown once) and what is stored.
pub struct IssuedKey {
    pub plaintext: String,
    pub record: ApiKey,
}

/// Mints a new API key for `owner`. Only its hash goes into the returned record.
pub fn issue_api_key(
    owner: &str,
    name: &str,
    admin: bool,
    now: i64,
    expires_at: Option<i64>,
) -> IssuedKey {
    let plaintext = format!("{API_KEY_PREFIX}{}", random_token(32));
    let record = ApiKey {
        id: format!("key_{}", random_token(9)),
        owner: owner.to_lowercase(),
        name: name.to_owned(),
        key_hash: sha256_hex(plaintext.as_bytes()),
        admin,
        created_at: now,
        expires_at,
        last_used_at: None,
    };
    IssuedKey { plaintext, record }
}

/// Authenticates callers against the store and the bootstrap key.
pub struct Authenticator {
    store: Arc<dyn Store>,
    secrets: Arc<dyn Secrets>,
    clock: Arc<dyn Clock>,
    bootstrap: BootstrapAdmin,
    admin_emails: Vec<String>,
    /// Recently authenticated keys ([`Authenticator::with_key_cache`]; off by default).
    keys: key_cache::KeyCache,
    /// JWT verification, once identity providers are wired in ([`Authenticator::with_jwt`]).
    jwt: Option<JwtVerifier>,
    /// Records API key uses (`last_used_at`) off the request path.
    key_use: key_use::KeyUseRecorder,
    /// When reading the bootstrap secret last failed: for [`BOOTSTRAP_RETRY`] after that,
    /// unknown keys are refused without asking Secrets Manager again, so junk credentials
    /// cannot be turned into a stream of GetSecretValue calls during an outage.
    bootstrap_failed_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// What JWT verification needs.
struct JwtVerifier {
    providers: Arc<providers::Providers>,
    http: reqwest::Client,
    public_url: String,
}

/// How long a failed read of the bootstrap admin secret is remembered.
const BOOTSTRAP_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

impl Authenticator {
    pub fn new(
        store: Arc<dyn Store>,
        secrets: Arc<dyn Secrets>,
        clock: Arc<dyn Clock>,
        bootstrap: BootstrapAdmin,
        admin_emails: Vec<String>,
    ) -> Self {
        let key_use = key_use::KeyUseRecorder::new(store.clone(), clock.clone());
        Self {
            store,
            secrets,
            clock,
            bootstrap,
            admin_emails,
            key_use,
            jwt: None,
            keys: key_cache::KeyCache::new(std::time::Duration::ZERO),
            bootstrap_failed_at: Default::default(),
        }
    }

    /// Serves authenticated keys from memory for `ttl` (revocation then takes up to `ttl`
    /// in other processes; deletes here apply at once through [`Authenticator::key_deleted`]).
    pub fn with_key_cache(mut self, ttl: std::time::Duration) -> Self {
        self.keys = key_cache::KeyCache::new(ttl);
        self
    }

    /// A key was deleted in this process: stop accepting it now.
    pub fn key_deleted(&self, key_id: &str) {
        self.keys.forget(key_id);
    }

    /// Accepts JWTs from `providers`; `public_url` is the gateway's base URL, an audience
    /// every token for this gateway may carry.
    pub fn with_jwt(
        mut self,
        providers: Arc<providers::Providers>,
        http: reqwest::Client,
        public_url: String,
    ) -> Self {
        self.jwt = Some(JwtVerifier {
            providers,
            http,
            public_url,
        });
        self
    }

    /// The identity providers (for resource metadata and challenges).
    pub async fn providers(&self) -> Result<Vec<crate::domain::IdentityProvider>, StoreError> {
        let Some(jwt) = &self.jwt else {
            return Ok(Vec::new());
        };
        let mut list: Vec<_> = jwt
            .providers
            .all()
            .await?
            .values()
            .map(|p| p.config.clone())
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    /// The scopes MCP clients are told to ask for when they log in to the gateway: the
    /// protected-resource metadata's `scopes_supported` and the 401 challenges' `scope` (MCP
    /// authorization spec, scope selection). The union over the providers of
    /// [`providers::Provider::advertised_scopes`], sorted; empty when none can be told (a
    /// challenge must not fail: a store or provider outage only leaves scopes out).
    pub async fn advertised_scopes(&self) -> Vec<String> {
        let Some(jwt) = &self.jwt else {
            return Vec::new();
        };
        let Ok(all) = jwt.providers.all().await else {
            return Vec::new();
        };
        let mut scopes = Vec::new();
        for provider in all.values() {
            scopes.extend(provider.advertised_scopes(&jwt.http).await);
        }
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// Authenticates a request to an MCP endpoint whose canonical URL is `resource`: a JWT
    /// must name this resource (or the gateway, or a provider alias) as its audience.
    pub async fn authenticate_for(
        &self,
        headers: &HeaderMap,
        resource: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let token = bearer_token(headers)?.ok_or(AuthError::Missing)?;
        if jwt::looks_like_jwt(token)
            && let Some(verifier) = &self.jwt
        {
            let mut audiences = vec![verifier.public_url.clone()];
            audiences.extend(resource.map(str::to_owned));
            return match jwt::verify(
                &verifier.providers,
                &verifier.http,
                token,
                &audiences,
                &self.admin_emails,
            )
            .await
            {
                Ok(p) => Ok(p),
                Err(jwt::JwtError::InsufficientScope { required }) => {
                    Err(AuthError::InsufficientScope { required })
                }
                Err(jwt::JwtError::Store(e)) => Err(AuthError::Store(e)),
                Err(e) => {
                    // The reason is for operators; the caller gets one answer for all.
                    tracing::info!(reason = %crate::http::error_chain(&e), "JWT refused");
                    Err(AuthError::Invalid)
                }
            };
        }
        self.authenticate_key(token).await
    }

    /// Verifies the ID token of a console sign-in at `issuer` by its console client
    /// `client_id` with the sign-in's `nonce` ([`jwt::Expect::IdToken`]): the principal it
    /// names, mapped exactly as that provider's access tokens are.
    pub async fn verify_id_token(
        &self,
        token: &str,
        issuer: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Principal, AuthError> {
        let Some(verifier) = &self.jwt else {
            return Err(AuthError::Invalid);
        };
        let expect = jwt::Expect::IdToken {
            issuer,
            client_id,
            nonce,
        };
        match jwt::verify_as(
            &verifier.providers,
            &verifier.http,
            token,
            expect,
            &self.admin_emails,
        )
        .await
        {
            Ok(p) => Ok(p),
            Err(jwt::JwtError::Store(e)) => Err(AuthError::Store(e)),
            Err(e) => {
                tracing::info!(reason = %crate::http::error_chain(&e), "ID token refused");
                Err(AuthError::Invalid)
            }
        }
    }

    /// Identity provider configurations changed in this process (admin API write): forget
    /// cached ones so the change applies at once here (other processes within their TTL).
    pub fn providers_changed(&self) {
        if let Some(jwt) = &self.jwt {
            jwt.providers.invalidate();
        }
    }

    /// Authenticates the request's bearer credential (routes that are not an MCP endpoint).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        self.authenticate_for(headers, None).await
    }

    async fn authenticate_key(&self, token: &str) -> Result<Principal, AuthError> {
        let hash = sha256_hex(token.as_bytes());
        let now = self.clock.now();
        if let Some(key) = self.keys.get(&hash, now) {
            self.key_use.record(&key);
            return Ok(Principal::from_api_key(&key, &self.admin_emails));
        }
        if let Some(key) = self.store.find_api_key_by_hash(&hash, now).await? {
            self.keys.put(&key);
            self.key_use.record(&key);
            return Ok(Principal::from_api_key(&key, &self.admin_emails));
        }
        if self.is_bootstrap_key(token).await? {
            return Ok(Principal::bootstrap());
        }
        Err(AuthError::Invalid)
    }

    async fn is_bootstrap_key(&self, token: &str) -> Result<bool, AuthError> {
        let expected = match &self.bootstrap {
            BootstrapAdmin::Value(v) => v.clone(),
            // The secrets adapter caches, so repeated misses do not call Secrets Manager. If the
            // secret cannot be read, the presented credential is simply not the bootstrap key:
            // an unknown key must get the same 401 whatever state the secret is in.
            BootstrapAdmin::Secret(r) => {
                let recently_failed = self
                    .bootstrap_failed_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some_and(|t| t.elapsed() < BOOTSTRAP_RETRY);
                if recently_failed {
                    return Ok(false);
                }
                match self.secrets.resolve(r).await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %crate::http::error_chain(&e), "bootstrap admin key secret unavailable");
                        *self
                            .bootstrap_failed_at
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
                        return Ok(false);
                    }
                }
            }
            BootstrapAdmin::GenerateIfAbsent | BootstrapAdmin::Disabled => return Ok(false),
        };
        Ok(constant_time_eq(
            sha256_hex(expected.expose().as_bytes()).as_bytes(),
            sha256_hex(token.as_bytes()).as_bytes(),
        ))
    }
}

/// Local mode without `MCPGW_BOOTSTRAP_ADMIN_KEY`: on first start, store a generated admin
/// key and return its plaintext (to print once); on later starts, `None`.
pub async fn ensure_generated_bootstrap_key(
    store: &dyn ApiKeyStore,
    now: i64,
) -> Result<Option<String>, StoreError> {
    if store.get_api_key(BOOTSTRAP_KEY_ID).await?.is_some() {
        return Ok(None);
    }
    let mut issued = issue_api_key("bootstrap-admin", "bootstrap admin key", true, now, None);
    issued.record.id = BOOTSTRAP_KEY_ID.into();
    match store.create_api_key(&issued.record).await {
        Ok(()) => Ok(Some(issued.plaintext)),
        // Another process won the race; its key stands.
        Err(StoreError::AlreadyExists { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    /// [`bearer_token`] of one `Authorization: v`, owned.
    fn parse(v: &str) -> Result<Option<String>, AuthHeaderError> {
        bearer_token(&headers(v)).map(|t| t.map(str::to_owned))
    }

    #[test]
    fn bearer_parsing() {
        let token = parse;
        let ok = |t: &str| Ok(Some(t.to_owned()));
        assert_eq!(token("Bearer abc"), ok("abc"));
        assert_eq!(token("bearer abc"), ok("abc"));
        assert_eq!(token("BEARER  abc "), ok("abc"));
        assert_eq!(token("Bearer eyJh.eyJi.c2ln"), ok("eyJh.eyJi.c2ln"));
        assert_eq!(token("Bearer a-b_c~d+e/f=="), ok("a-b_c~d+e/f=="));
        assert_eq!(bearer_token(&HeaderMap::new()), Ok(None));
        for bad in [
            "Basic abc",
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "abc",
            "Bearer\tabc",
            "Bearer =",
            "Bearer a=b",
            "Bearer \"abc\"",
            "Bearer a;b",
            "Bearer a\\b",
            "Bearerabc",
            "Bear abc",
            "Bearer a\tb",
        ] {
            assert_eq!(token(bad), Err(AuthHeaderError::Malformed), "{bad:?}");
        }
        let long = format!("Bearer {}", "a".repeat(MAX_CREDENTIAL + 1));
        assert_eq!(token(&long), Err(AuthHeaderError::Malformed));
        let mut non_ascii = HeaderMap::new();
        non_ascii.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer abc\xc3\xa9").unwrap(),
        );
        assert_eq!(bearer_token(&non_ascii), Err(AuthHeaderError::Malformed));
    }

    #[test]
    fn a_second_authorization_header_is_refused_not_ignored() {
        // GIVEN one valid and one other credential, in either order
        for (first, second) in [("Bearer good", "Bearer evil"), ("Bearer good", "Basic x")] {
            let mut h = headers(first);
            h.append(
                header::AUTHORIZATION,
                HeaderValue::from_str(second).unwrap(),
            );
            assert_eq!(bearer_token(&h), Err(AuthHeaderError::Repeated));
        }
        // AND as a proxy or API Gateway joins them into one field
        assert_eq!(
            parse("Bearer good, Bearer evil"),
            Err(AuthHeaderError::Repeated)
        );
        assert_eq!(parse("Bearer good,evil"), Err(AuthHeaderError::Repeated));
        // THEN the answer is 400 invalid_request with the challenge, in JSON
        let e = AuthError::from(AuthHeaderError::Repeated).into_api_error(Some("https://gw/md"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.headers[0].1.to_str().unwrap(),
            "Bearer resource_metadata=\"https://gw/md\", error=\"invalid_request\""
        );
    }

    proptest::proptest! {
        #[test]
        fn the_header_parser_never_panics(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(v) = HeaderValue::from_bytes(&raw) {
                let mut h = HeaderMap::new();
                h.insert(header::AUTHORIZATION, v);
                if let Ok(Some(t)) = bearer_token(&h) {
                    // Whatever is accepted is a b64token the value ends with.
                    proptest::prop_assert!(is_b64token(t));
                    proptest::prop_assert!(std::str::from_utf8(&raw).unwrap().trim_end().ends_with(t));
                }
            }
        }

        #[test]
        fn bearer_and_a_b64token_is_accepted_exactly(
            scheme in "[bB][eE][aA][rR][eE][rR]",
            spaces in " {1,3}",
            token in "[A-Za-z0-9._~+/-]{1,40}={0,2}",
            junk in r#"[ ,;"\\\t=]{1,2}[A-Za-z0-9]{0,3}"#,
        ) {
            let good = format!("{scheme}{spaces}{token}");
            proptest::prop_assert_eq!(parse(&good), Ok(Some(token.clone())));
            // Anything after the token other than trailing whitespace makes it no b64token.
            let bad = format!("{good}{junk}");
            if bad.trim_end() != good && !is_b64token(format!("{token}{junk}").trim_end()) {
                proptest::prop_assert!(parse(&bad).is_err(), "{:?}", bad);
            }
        }
    }

    #[test]
    fn issued_keys_store_only_the_hash() {
        let k = issue_api_key("Alice@Example.com", "laptop", false, 10, None);
        assert!(k.plaintext.starts_with(API_KEY_PREFIX));
        assert_eq!(k.record.key_hash, sha256_hex(k.plaintext.as_bytes()));
        assert!(
            !serde_json::to_string(&k.record)
                .unwrap()
                .contains(&k.plaintext)
        );
        assert_eq!(k.record.owner, "alice@example.com");
    }

    #[test]
    fn challenges_name_required_scopes_and_drop_unsafe_ones() {
        let md = "https://gw/.well-known/oauth-protected-resource/mcp/x";
        let scopes = vec!["mcp:read".to_owned(), "bad\"scope".to_owned()];
        let e = AuthError::Missing.into_challenge(Some(md), &scopes);
        assert_eq!(
            e.headers[0].1.to_str().unwrap(),
            format!("Bearer resource_metadata=\"{md}\", scope=\"mcp:read\"")
        );
        let e = AuthError::InsufficientScope {
            required: vec!["mcp:read".into()],
        }
        .into_challenge(None, &scopes[..1]);
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(
            e.headers[0].1.to_str().unwrap(),
            "Bearer scope=\"mcp:read\", error=\"insufficient_scope\""
        );
    }

    #[test]
    fn challenges_point_at_resource_metadata() {
        let e = AuthError::Invalid.into_api_error(Some(
            "https://gw/.well-known/oauth-protected-resource/mcp/x",
        ));
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let (_, v) = &e.headers[0];
        assert_eq!(
            v.to_str().unwrap(),
            "Bearer resource_metadata=\"https://gw/.well-known/oauth-protected-resource/mcp/x\", error=\"invalid_token\""
        );
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod authenticator_tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::secrets::SecretRef;
    use crate::secrets::env::EnvSecrets;
    use crate::store::sqlite::SqliteStore;

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {v}")).unwrap(),
        );
        h
    }

    fn auth(
        store: Arc<SqliteStore>,
        bootstrap: BootstrapAdmin,
        clock: Arc<FixedClock>,
    ) -> Authenticator {
        let secrets = EnvSecrets::from_map(
            [(
                "MCPGW_SECRET_ADMIN_KEY".to_string(),
                "admin-from-secret-0123".to_string(),
            )]
            .into(),
        );
        Authenticator::new(
            store,
            Arc::new(secrets),
            clock,
            bootstrap,
            vec!["root@example.com".into()],
        )
    }

    #[tokio::test]
    async fn keys_authenticate_until_they_expire() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let clock = Arc::new(FixedClock::at(1_000));
        let k = issue_api_key("bob@example.com", "t", false, 1_000, Some(1_100));
        store.create_api_key(&k.record).await.unwrap();
        let a = auth(store, BootstrapAdmin::Disabled, clock.clone());
        let p = a.authenticate(&bearer(&k.plaintext)).await.unwrap();
        assert_eq!((p.user.as_str(), p.is_admin), ("bob@example.com", false));
        clock.advance(100);
        assert!(matches!(
            a.authenticate(&bearer(&k.plaintext)).await,
            Err(AuthError::Invalid)
        ));
    }

    #[tokio::test]
    async fn admin_role_from_flag_email_or_bootstrap_secret() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let clock = Arc::new(FixedClock::at(0));
        let root = issue_api_key("root@example.com", "t", false, 0, None);
        store.create_api_key(&root.record).await.unwrap();
        let a = auth(
            store,
            BootstrapAdmin::Secret(SecretRef::parse("secret://admin-key").unwrap()),
            clock,
        );
        assert!(
            a.authenticate(&bearer(&root.plaintext))
                .await
                .unwrap()
                .is_admin
        );
        let boot = a
            .authenticate(&bearer("admin-from-secret-0123"))
            .await
            .unwrap();
        assert!(boot.is_admin && boot.api_key_id.is_none());
        assert!(matches!(
            a.authenticate(&bearer("admin-from-secret-0124")).await,
            Err(AuthError::Invalid)
        ));
    }

    #[tokio::test]
    async fn generated_bootstrap_key_is_created_once() {
        let store = SqliteStore::in_memory().unwrap();
        let first = ensure_generated_bootstrap_key(&store, 0)
            .await
            .unwrap()
            .expect("first start makes a key");
        assert!(
            ensure_generated_bootstrap_key(&store, 0)
                .await
                .unwrap()
                .is_none()
        );
        let stored = store.get_api_key(BOOTSTRAP_KEY_ID).await.unwrap().unwrap();
        assert!(stored.admin);
        assert_eq!(stored.key_hash, sha256_hex(first.as_bytes()));
    }
}
