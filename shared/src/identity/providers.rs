//! Identity providers at run time: their configurations (the static one from the environment
//! plus those in the store, reloaded every few seconds), discovery of each one's JWKS, and the
//! per-provider key cache. Keys are refetched when a token names an unknown `kid`, at most once
//! per [`REFETCH_INTERVAL`], so a flood of made-up key ids cannot become a flood of JWKS
//! requests; a provider that cannot be reached verifies nothing (fail closed). Only keys
//! published for signature verification are ever picked ([`verifies_signatures`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyOperations, PublicKeyUse};
use tokio::sync::{Mutex, RwLock};

use crate::domain::IdentityProvider;
use crate::oauth_metadata::fetch::{self, GetError};
use crate::oauth_metadata::{self, DiscoveryError, Kind};
use crate::store::{ConfigKind, ConfigStoreExt, Store, StoreError};

/// Least time between two JWKS fetches of one provider after a successful one.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Least time between attempts after a failed fetch (IdP down): short, so a provider that
/// comes back is usable soon, but bounded.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Bound on JWKS documents (metadata documents have [`oauth_metadata::MAX_METADATA`]).
const MAX_DOCUMENT: usize = 512 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("identity provider request failed")]
    Http(#[source] reqwest::Error),
    #[error("identity provider answered HTTP {0}")]
    Status(u16),
    #[error("identity provider document is invalid: {0}")]
    Invalid(&'static str),
    #[error("identity provider was unreachable moments ago; not retried yet")]
    Backoff,
    #[error("identity provider metadata: {0}")]
    Metadata(#[from] DiscoveryError),
}

impl From<GetError> for FetchError {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Network(e) if e.is_timeout() => FetchError::Invalid("timed out"),
            GetError::Network(e) => FetchError::Http(e.without_url()),
            GetError::Status(s) => FetchError::Status(s),
            GetError::TooLarge(_) => FetchError::Invalid("document too large"),
            GetError::NotJson => FetchError::Invalid("not JSON"),
        }
    }
}

/// The identity scopes the gateway reads from a login (subject, email, groups): what it
/// advertises for a provider without configured `scopes`, where the provider lists them.
pub const IDENTITY_SCOPES: [&str; 4] = ["openid", "profile", "email", "groups"];
/// How long a provider's discovered `scopes_supported` is used before it is read again.
const SCOPES_TTL: Duration = Duration::from_secs(3600);
/// Bound on reading them: the request that does waits at most this long for its 401.
const SCOPES_FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// The scopes advertised for `config` given the `scopes_supported` its metadata listed
/// (`None`: not known): the configured `scopes`, else the [`IDENTITY_SCOPES`] the provider
/// lists, and always the `required_scopes` (a token without them is refused anyway).
pub fn advertised(config: &IdentityProvider, discovered: Option<&[String]>) -> Vec<String> {
    let mut scopes: Vec<String> = if config.scopes.is_empty() {
        IDENTITY_SCOPES
            .iter()
            .filter(|s| discovered.is_some_and(|d| d.iter().any(|x| x == *s)))
            .map(|s| (*s).to_owned())
            .collect()
    } else {
        config.scopes.clone()
    };
    scopes.extend(config.required_scopes.iter().cloned());
    scopes.retain(|s| crate::domain::is_scope_token(s));
    scopes.sort();
    scopes.dedup();
    scopes
}

/// The provider's discovered `scopes_supported`, read without waiting for any fetch.
type ScopesRead = std::sync::RwLock<Option<(Instant, Arc<Vec<String>>)>>;
/// Fetch bookkeeping, behind the fetch lock.
#[derive(Default)]
struct Keys {
    jwks_uri: Option<String>,
    fetched_at: Option<Instant>,
    failed_at: Option<Instant>,
}

/// One provider with its key cache.
pub struct Provider {
    pub config: IdentityProvider,
    /// The current key set: read without waiting for any fetch, so tokens with known keys
    /// never queue behind a refetch someone's unknown `kid` caused.
    set: std::sync::RwLock<Option<Arc<JwkSet>>>,
    /// Single-flight for fetches (only requests that need one wait on it).
    keys: Mutex<Keys>,
    refetch_interval: Duration,
    fetches: std::sync::atomic::AtomicU64,
    /// Read only when no `scopes` are configured ([`Provider::advertised_scopes`]): the last
    /// list read, and the fetch lock holding when the last fetch failed.
    discovered_scopes: ScopesRead,
    scopes_fetch: Mutex<Option<Instant>>,
}

impl Provider {
    fn new(config: IdentityProvider) -> Self {
        Self {
            config,
            set: std::sync::RwLock::new(None),
            keys: Mutex::default(),
            refetch_interval: REFETCH_INTERVAL,
            fetches: Default::default(),
            discovered_scopes: Default::default(),
            scopes_fetch: Mutex::default(),
        }
    }

    /// The scopes MCP clients are told to ask this provider for ([`advertised`]). Without
    /// configured `scopes` they come from the provider's metadata, read once an hour. A 401
    /// must stay quick whatever the provider does: only one request fetches (bounded by
    /// [`SCOPES_FETCH_TIMEOUT`]); others answer meanwhile with what was read before (or the
    /// required scopes only), and after a failure nothing is fetched for
    /// [`RETRY_AFTER_FAILURE`].
    pub async fn advertised_scopes(&self, http: &reqwest::Client) -> Vec<String> {
        if !self.config.scopes.is_empty() {
            return advertised(&self.config, None);
        }
        let known = || {
            self.discovered_scopes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        let last = known();
        if let Some((at, scopes)) = &last
            && at.elapsed() < SCOPES_TTL
        {
            return advertised(&self.config, Some(scopes));
        }
        let Ok(mut failed_at) = self.scopes_fetch.try_lock() else {
            return advertised(&self.config, last.as_ref().map(|(_, s)| s.as_slice()));
        };
        // Another request may have fetched while this one looked.
        if let Some((at, scopes)) = known()
            && at.elapsed() < SCOPES_TTL
        {
            return advertised(&self.config, Some(&scopes));
        }
        if failed_at.is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE) {
            return advertised(&self.config, last.as_ref().map(|(_, s)| s.as_slice()));
        }
        match discover_scopes(http, &self.config.issuer).await {
            Ok(scopes) => {
                let scopes = Arc::new(scopes);
                *self
                    .discovered_scopes
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), scopes.clone()));
                *failed_at = None;
                advertised(&self.config, Some(&scopes))
            }
            Err(e) => {
                tracing::info!(issuer = %self.config.issuer, error = %crate::http::error_chain(&e),
                    "identity provider metadata unavailable; advertising the scopes read before");
                *failed_at = Some(Instant::now());
                advertised(&self.config, last.as_ref().map(|(_, s)| s.as_slice()))
            }
        }
    }

    /// JWKS requests made so far (tests and benchmarks check the refetch bound with it).
    pub fn jwks_fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key for `kid` (any key when the token names none and the set has exactly one).
    /// Fetches the set on first use and again for an unknown kid, within the bounds above.
    pub async fn key(
        &self,
        http: &reqwest::Client,
        kid: Option<&str>,
    ) -> Result<Option<Jwk>, FetchError> {
        if let Some(found) = self.cached(kid) {
            return Ok(Some(found));
        }
        let mut keys = self.keys.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(found) = self.cached(kid) {
            return Ok(Some(found));
        }
        if keys
            .failed_at
            .is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE)
        {
            return Err(FetchError::Backoff);
        }
        if keys
            .fetched_at
            .is_some_and(|t| t.elapsed() < self.refetch_interval)
        {
            return Ok(None);
        }
        match self.fetch(http, &mut keys).await {
            Ok(set) => {
                let found = pick(&set, kid);
                *self.set.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(set));
                keys.fetched_at = Some(Instant::now());
                keys.failed_at = None;
                Ok(found)
            }
            Err(e) => {
                keys.failed_at = Some(Instant::now());
                Err(e)
            }
        }
    }

    fn cached(&self, kid: Option<&str>) -> Option<Jwk> {
        let set = self.set.read().unwrap_or_else(|e| e.into_inner());
        set.as_ref().and_then(|s| pick(s, kid))
    }

    async fn fetch(&self, http: &reqwest::Client, keys: &mut Keys) -> Result<JwkSet, FetchError> {
        let jwks_uri = match (&self.config.jwks_uri, &keys.jwks_uri) {
            (Some(u), _) | (None, Some(u)) => u.clone(),
            (None, None) => {
                let u = discover_jwks_uri(http, &self.config.issuer).await?;
                keys.jwks_uri = Some(u.clone());
                u
            }
        };
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let doc = fetch::get_json(http, &jwks_uri, MAX_DOCUMENT, Some(FETCH_TIMEOUT)).await?;
        serde_json::from_value::<JwkSet>(doc).map_err(|_| FetchError::Invalid("not a JWK set"))
    }
}

/// Whether a published key may verify token signatures: `use` absent or `sig`, `key_ops`
/// absent or holding `verify` (RFC 7517 §4.2, §4.3). An encryption key sharing a `kid` with
/// the signing key, or a key the provider restricted to other operations, is never used.
pub fn verifies_signatures(jwk: &Jwk) -> bool {
    let usable = match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => true,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_)) => false,
    };
    usable
        && jwk
            .common
            .key_operations
            .as_ref()
            .is_none_or(|ops| ops.contains(&KeyOperations::Verify))
}

/// The signing key named `kid` (the only signing key when the token names none).
fn pick(set: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    let mut signing = set.keys.iter().filter(|k| verifies_signatures(k));
    match kid {
        Some(kid) => signing
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned(),
        None => match (signing.next(), signing.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        },
    }
}

/// The JWKS location from the issuer's metadata ([`Kind::TokenIssuer`]: OIDC discovery, then
/// RFC 8414). The metadata must name the same issuer, or a provider could hand out keys for
/// another.
async fn discover_jwks_uri(http: &reqwest::Client, issuer: &str) -> Result<String, FetchError> {
    let meta =
        oauth_metadata::issuer_metadata(http, Kind::TokenIssuer, issuer, Some(FETCH_TIMEOUT))
            .await?;
    meta.string("jwks_uri")?
        .map(str::to_owned)
        .ok_or(FetchError::Invalid("metadata has no jwks_uri"))
}

/// The provider's `scopes_supported` from its metadata (as for the JWKS location); absent or
/// not a list of strings reads as none.
async fn discover_scopes(http: &reqwest::Client, issuer: &str) -> Result<Vec<String>, FetchError> {
    let meta = oauth_metadata::issuer_metadata(
        http,
        Kind::TokenIssuer,
        issuer,
        Some(SCOPES_FETCH_TIMEOUT),
    )
    .await?;
    Ok(meta
        .field("scopes_supported")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(serde_json::Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default())
}

/// Every configured provider, by issuer.
pub struct Providers {
    store: Arc<dyn Store>,
    from_env: Option<IdentityProvider>,
    ttl: Duration,
    refetch_interval: Duration,
    /// Bumped by [`Providers::invalidate`]; a loaded list of an older generation is stale.
    generation: std::sync::atomic::AtomicU64,
    loaded: RwLock<Option<Loaded>>,
}

struct Loaded {
    at: Instant,
    generation: u64,
    map: Arc<HashMap<String, Arc<Provider>>>,
}

impl Providers {
    pub fn new(store: Arc<dyn Store>, from_env: Option<IdentityProvider>, ttl: Duration) -> Self {
        Self {
            store,
            from_env,
            ttl,
            refetch_interval: REFETCH_INTERVAL,
            generation: Default::default(),
            loaded: RwLock::new(None),
        }
    }

    /// Shortens the refetch bound (tests, so they need not wait a minute).
    #[cfg(test)]
    pub(crate) fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// Forget the loaded configurations (key caches of unchanged providers survive the reload).
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn fresh(&self, l: &Loaded) -> bool {
        l.at.elapsed() < self.ttl
            && l.generation == self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Providers by issuer, reloaded from the store when older than the TTL. A store outage
    /// keeps serving the last list.
    pub async fn all(&self) -> Result<Arc<HashMap<String, Arc<Provider>>>, StoreError> {
        if let Some(l) = self.loaded.read().await.as_ref()
            && self.fresh(l)
        {
            return Ok(l.map.clone());
        }
        let mut loaded = self.loaded.write().await;
        if let Some(l) = loaded.as_ref()
            && self.fresh(l)
        {
            return Ok(l.map.clone());
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let stored = match self
            .store
            .list_typed::<IdentityProvider>(ConfigKind::IdentityProvider)
            .await
        {
            Ok(s) => s,
            Err(e) => match loaded.as_ref() {
                Some(l) => {
                    tracing::warn!(error = %crate::http::error_chain(&e), "identity providers not reloaded");
                    return Ok(l.map.clone());
                }
                None => return Err(e),
            },
        };
        let previous = loaded.as_ref().map(|l| l.map.clone());
        let mut map = HashMap::new();
        for config in self.from_env.iter().cloned().chain(stored) {
            let issuer = config.issuer.clone();
            // An unchanged provider keeps its key cache; a changed one starts afresh.
            let provider = match previous.as_ref().and_then(|p| p.get(&issuer)) {
                Some(old) if old.config == config => old.clone(),
                _ => {
                    let mut p = Provider::new(config);
                    p.refetch_interval = self.refetch_interval;
                    Arc::new(p)
                }
            };
            // The first provider named for an issuer wins (the environment's, then by name).
            map.entry(issuer).or_insert(provider);
        }
        let map = Arc::new(map);
        *loaded = Some(Loaded {
            at: Instant::now(),
            generation,
            map: map.clone(),
        });
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    fn config(extra: serde_json::Value) -> IdentityProvider {
        let mut doc = json!({"name": "corp", "issuer": "https://idp.example.com"});
        doc.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(doc).unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn advertised_scopes_are_the_identity_scopes_the_provider_lists_plus_the_required_ones() {
        // GIVEN a provider listing many scopes, some of them none of the gateway's business
        let listed = strings(&[
            "openid",
            "email",
            "offline_access",
            "okta.users.manage",
            "groups",
        ]);
        // WHEN nothing is configured THEN only the identity scopes it lists are advertised
        let plain = config(json!({}));
        assert_eq!(
            advertised(&plain, Some(&listed)),
            strings(&["email", "groups", "openid"])
        );
        // AND the required scopes always are, even when the metadata is unknown
        let required = config(json!({"required_scopes": ["mcp:use"]}));
        assert_eq!(advertised(&required, None), strings(&["mcp:use"]));
        assert_eq!(
            advertised(&required, Some(&listed)),
            strings(&["email", "groups", "mcp:use", "openid"])
        );
        // AND configured scopes replace the discovered ones
        let configured = config(json!({"scopes": ["api://gw/mcp", "openid"],
            "required_scopes": ["mcp:use", "bad\"scope"]}));
        assert_eq!(
            advertised(&configured, Some(&listed)),
            strings(&["api://gw/mcp", "mcp:use", "openid"]),
            "a required scope that is no scope token never reaches a header"
        );
        // AND a provider listing none of them and requiring none gets nothing advertised
        assert!(advertised(&plain, Some(&strings(&["read"]))).is_empty());
    }

    #[test]
    fn configured_scopes_must_be_scope_tokens() {
        for bad in ["", "two words", "quo\"te", "back\\slash", "tab\t", "é"] {
            assert!(
                config(json!({"scopes": [bad]})).validate().is_err(),
                "{bad:?}"
            );
        }
        assert!(
            config(json!({"scopes": ["openid", "api://gw/.default"]}))
                .validate()
                .is_ok()
        );
        let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        assert!(config(json!({ "scopes": many })).validate().is_err());
    }

    /// A provider's metadata on loopback listing `scopes`, counting how often it is read.
    async fn idp(scopes: serde_json::Value) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let (h, iss) = (hits.clone(), issuer.clone());
        let app = axum::Router::new().route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                h.fetch_add(1, Ordering::SeqCst);
                let doc = json!({"issuer": iss.clone(), "jwks_uri": format!("{iss}/jwks"),
                    "scopes_supported": scopes.clone()});
                async move { axum::Json(doc) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (issuer, hits)
    }

    #[tokio::test]
    async fn discovered_scopes_are_read_once_and_an_unreachable_provider_advertises_quickly() {
        crate::crypto::install_tls_provider();
        let http = reqwest::Client::new();
        // GIVEN a provider whose metadata lists identity scopes and others
        let (issuer, hits) = idp(json!(["openid", "profile", "email", "mcp:read"])).await;
        let p = Provider::new(config(json!({"issuer": issuer})));
        // WHEN its scopes are asked for twice
        let first = p.advertised_scopes(&http).await;
        let second = p.advertised_scopes(&http).await;
        // THEN they are the identity scopes it lists, read from its metadata once
        assert_eq!(first, strings(&["email", "openid", "profile"]));
        assert_eq!(second, first);
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // GIVEN a provider that cannot be reached (nothing listens there)
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let p = Provider::new(config(
            json!({"issuer": issuer, "required_scopes": ["mcp:use"]}),
        ));
        // THEN only its required scopes are advertised, and the failure is not retried at once
        let started = Instant::now();
        assert_eq!(p.advertised_scopes(&http).await, strings(&["mcp:use"]));
        assert_eq!(p.advertised_scopes(&http).await, strings(&["mcp:use"]));
        assert!(started.elapsed() < SCOPES_FETCH_TIMEOUT);
        assert!(p.scopes_fetch.lock().await.is_some());
    }

    #[tokio::test]
    async fn a_provider_that_never_answers_delays_one_challenge_at_most_the_fetch_bound() {
        crate::crypto::install_tls_provider();
        let http = reqwest::Client::new();
        // GIVEN a provider that accepts connections and never answers
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", hung.local_addr().unwrap());
        let p = Arc::new(Provider::new(config(
            json!({"issuer": issuer, "required_scopes": ["mcp:use"]}),
        )));
        // WHEN two challenges need its scopes at once
        let started = Instant::now();
        let (a, b) = (p.clone(), p.clone());
        let (h1, h2) = (http.clone(), http.clone());
        let first = tokio::spawn(async move { (a.advertised_scopes(&h1).await, Instant::now()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (second, second_at) = (b.advertised_scopes(&h2).await, Instant::now());
        let (first, first_at) = first.await.unwrap();
        // THEN the one that did not fetch answered at once, the other within the bound, and
        // both with the required scopes
        assert_eq!(first, strings(&["mcp:use"]));
        assert_eq!(second, strings(&["mcp:use"]));
        assert!(second_at - started < Duration::from_millis(500));
        assert!(first_at - started < SCOPES_FETCH_TIMEOUT + Duration::from_secs(1));
        drop(hung);
    }
}
