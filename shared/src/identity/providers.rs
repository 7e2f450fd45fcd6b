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
}

impl Provider {
    fn new(config: IdentityProvider) -> Self {
        Self {
            config,
            set: std::sync::RwLock::new(None),
            keys: Mutex::default(),
            refetch_interval: REFETCH_INTERVAL,
            fetches: Default::default(),
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
