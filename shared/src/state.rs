//! The state every router shares, built once per process (one Lambda execution environment):
//! configuration, store, secrets, keyring, authenticator, the upstream HTTP client and the
//! server cache. Cloning is cheap (everything is behind `Arc`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, KeyringConfig, SecretsBackend, StoreBackend};
use crate::crypto::{Keyring, KeyringError};
use crate::domain::McpServer;
use crate::identity::Authenticator;
use crate::secrets::{Secrets, SecretsError};
use crate::store::{ConfigStoreExt, Store, StoreError, StoreResult};

/// Why the process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data folder (`MCPGW_DATA_DIR`) could not be created: named, since the cause (a
    /// file in the way, a read-only or missing mount) is about that path.
    #[error("could not create the data folder {} (MCPGW_DATA_DIR)", path.display())]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The SQLite file in the data folder could not be opened.
    #[error("could not open the SQLite store {}", path.display())]
    Sqlite {
        path: std::path::PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("could not open the store")]
    Store(#[from] StoreError),
    #[error("could not load the keyring")]
    Keyring(#[from] KeyringError),
    #[error("this binary was built without the {0}; use MCPGW_STORE=dynamodb or the local binary")]
    NotBuiltIn(&'static str),
    #[error("could not build the HTTP client")]
    Http(#[from] reqwest::Error),
}

/// Shared state of every router.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub secrets: Arc<dyn Secrets>,
    pub keyring: Arc<KeyringSource>,
    pub clock: Arc<dyn Clock>,
    pub auth: Arc<Authenticator>,
    pub servers: Arc<ServerCache>,
    /// Teams, server groups and virtual servers, cached (see `policy::cache`).
    pub policy: Arc<crate::policy::cache::PolicyCache>,
    /// Client for upstream MCP servers, OIDC discovery and JWKS: built by the egress policy
    /// (every connection judged on its resolved address, redirects off: a redirect could
    /// carry the injected credential to another host), pooled, built once.
    pub http: reqwest::Client,
    /// Client for authorization servers (metadata, token, revocation, registration): the
    /// same egress policy, and every call bounded by `grants::endpoints::OAUTH_CALL_TIMEOUT`.
    pub oauth_http: reqwest::Client,
    /// What this process has learned about upstreams (eras, bridged sessions).
    pub mcp: Arc<crate::mcp::memory::Memory>,
    /// Opened OAuth tokens and refresh locks of this process (see `grants::tokens`).
    pub grants: Arc<crate::grants::tokens::TokenMemory>,
}

impl AppState {
    /// Builds the state for `config`: opens the store, the secrets source and (for a local
    /// key file) the keyring. Network calls that can wait (the keyring secret) wait.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let needs_aws = matches!(config.store, StoreBackend::Dynamo { .. })
            || config.secrets == SecretsBackend::Aws;
        let sdk = if needs_aws {
            Some(crate::aws::load_sdk_config().await)
        } else {
            None
        };

        if matches!(config.store, StoreBackend::Sqlite { .. })
            || matches!(config.keyring, KeyringConfig::File(_))
        {
            // The data folder holds key hashes, sealed tokens and the keyring: owner only.
            crate::crypto::create_private_dir(&config.data_dir).map_err(|source| {
                StartupError::DataDir {
                    path: config.data_dir.clone(),
                    source,
                }
            })?;
        }
        let store: Arc<dyn Store> = match (&config.store, &sdk) {
            #[cfg(feature = "sqlite")]
            (StoreBackend::Sqlite { path }, _) => Arc::new(
                crate::store::sqlite::SqliteStore::open(path).map_err(|source| {
                    StartupError::Sqlite {
                        path: path.clone(),
                        source,
                    }
                })?,
            ),
            (
                StoreBackend::Dynamo {
                    table,
                    create_if_missing,
                },
                Some(sdk),
            ) => {
                let client = aws_sdk_dynamodb::Client::new(sdk);
                if *create_if_missing {
                    crate::store::dynamo::create_table(&client, table).await?;
                }
                Arc::new(crate::store::dynamo::DynamoStore::new(
                    client,
                    table.clone(),
                ))
            }
            #[cfg(not(feature = "sqlite"))]
            (StoreBackend::Sqlite { .. }, _) => {
                return Err(StartupError::NotBuiltIn("sqlite store"));
            }
            (StoreBackend::Dynamo { .. }, None) => {
                unreachable!("sdk config is loaded for the dynamodb store")
            }
        };
        let secrets: Arc<dyn Secrets> = match (&config.secrets, &sdk) {
            (SecretsBackend::Env, _) => Arc::new(crate::secrets::env::EnvSecrets::from_env()),
            (SecretsBackend::Aws, Some(sdk)) => {
                Arc::new(crate::secrets::aws::SecretsManagerSecrets::new(
                    aws_sdk_secretsmanager::Client::new(sdk),
                    config.secrets_cache_ttl,
                ))
            }
            (SecretsBackend::Aws, None) => {
                unreachable!("sdk config is loaded for the aws secrets backend")
            }
        };
        Self::from_parts(config, store, secrets, Arc::new(SystemClock))
    }

    /// Assembles state from ready parts (tests use this with in-process adapters).
    pub fn from_parts(
        config: Config,
        store: Arc<dyn Store>,
        secrets: Arc<dyn Secrets>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        crate::crypto::install_tls_provider();
        let keyring = Arc::new(KeyringSource::new(config.keyring.clone(), secrets.clone())?);
        let servers = Arc::new(ServerCache::new(config.server_cache_ttl));
        // Every outbound client starts from the egress policy's builder (see `egress`).
        let http = config
            .egress
            .client_builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("mcp-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let oauth_http = config
            .egress
            .client_builder()
            .timeout(crate::grants::endpoints::OAUTH_CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let providers = Arc::new(crate::identity::providers::Providers::new(
            store.clone(),
            config.identity_provider.clone(),
            config.server_cache_ttl,
        ));
        let auth = Arc::new(
            Authenticator::new(
                store.clone(),
                secrets.clone(),
                clock.clone(),
                config.bootstrap_admin.clone(),
                config.admin_emails.clone(),
            )
            .with_jwt(providers, http.clone(), config.public_url.clone())
            .with_key_cache(config.key_cache_ttl),
        );
        let policy_ttl = config.policy_cache_ttl;
        Ok(Self {
            config: Arc::new(config),
            store,
            secrets,
            keyring,
            clock,
            auth,
            servers,
            policy: Arc::new(crate::policy::cache::PolicyCache::new(policy_ttl)),
            http,
            oauth_http,
            mcp: Arc::default(),
            grants: Arc::default(),
        })
    }

    /// The access-control policy, from the cache when fresh.
    pub async fn policy(&self) -> StoreResult<Arc<crate::policy::Snapshot>> {
        self.policy.get(&self.store).await
    }

    /// A server's configuration, from the cache when fresh.
    pub async fn server(&self, name: &str) -> StoreResult<Option<Arc<McpServer>>> {
        self.servers.get(name, &self.store).await
    }
}

/// The keyring, loaded eagerly from a local file or lazily (first use) from a secret.
pub enum KeyringSource {
    /// Loaded at start from the local key file.
    Loaded(Arc<Keyring>),
    /// Fetched from a secret on first use, then kept for the process; fetched again when a
    /// blob names a key this copy lacks (the secret was rotated after this process loaded
    /// it), at most once per [`KEYRING_REFRESH_INTERVAL`].
    Secret {
        reference: crate::secrets::SecretRef,
        secrets: Arc<dyn Secrets>,
        ring: RwLock<Option<Arc<Keyring>>>,
        refreshed: std::sync::Mutex<Option<Instant>>,
    },
}

/// Bound on keyring refetches: a flood of blobs with made-up key ids must not become a flood
/// of Secrets Manager calls.
pub const KEYRING_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Why the keyring could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum KeyringSourceError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

impl KeyringSource {
    fn new(config: KeyringConfig, secrets: Arc<dyn Secrets>) -> Result<Self, KeyringError> {
        Ok(match config {
            KeyringConfig::File(path) => {
                Self::Loaded(Arc::new(Keyring::load_or_create_file(&path)?))
            }
            KeyringConfig::Secret(reference) => Self::Secret {
                reference,
                secrets,
                ring: RwLock::new(None),
                refreshed: std::sync::Mutex::new(None),
            },
        })
    }

    /// The keyring, fetching it on the first call.
    pub async fn get(&self) -> Result<Arc<Keyring>, KeyringSourceError> {
        match self {
            Self::Loaded(ring) => Ok(ring.clone()),
            Self::Secret {
                reference,
                secrets,
                ring,
                ..
            } => {
                if let Some(k) = ring.read().await.as_ref() {
                    return Ok(k.clone());
                }
                let mut slot = ring.write().await;
                if let Some(k) = slot.as_ref() {
                    return Ok(k.clone());
                }
                let doc = secrets.resolve(reference).await?;
                let k = Arc::new(Keyring::from_json(doc.expose())?);
                *slot = Some(k.clone());
                Ok(k)
            }
        }
    }

    /// A newer keyring after a blob named an unknown key: `None` when there is nothing newer
    /// to fetch (a local key file) or a refetch happened within the last interval.
    pub async fn refresh(&self) -> Option<Arc<Keyring>> {
        let Self::Secret {
            reference,
            secrets,
            ring,
            refreshed,
        } = self
        else {
            return None;
        };
        {
            let mut last = refreshed.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < KEYRING_REFRESH_INTERVAL) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let doc = match secrets.resolve_fresh(reference).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %crate::http::error_chain(&e), "keyring refetch failed");
                return None;
            }
        };
        match Keyring::from_json(doc.expose()) {
            Ok(k) => {
                let k = Arc::new(k);
                *ring.write().await = Some(k.clone());
                Some(k)
            }
            Err(e) => {
                tracing::warn!(error = %e, "refetched keyring document is invalid");
                None
            }
        }
    }
}

/// Server configurations cached per process, so a warm proxied call does not read them from
/// the store. Fresh for `ttl`; after that an entry is still served while one background task
/// per name re-reads it (stale-while-revalidate), so the request path never pays the read and
/// a burst after expiry makes one read, not one per request. Past `ttl + MAX_STALE` (the store
/// kept failing) reads are synchronous again. Admin writes in the same process invalidate at
/// once; other processes (other Lambda functions) see a change within about `ttl`. Unknown
/// names are not cached.
pub struct ServerCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, CacheEntry>>,
    /// Bumped by every invalidation: a load that read the store before an invalidation must
    /// not put its (older) result back afterwards.
    generation: std::sync::atomic::AtomicU64,
}

/// How long past its TTL an entry may still be served while it is being refreshed.
const MAX_STALE: Duration = Duration::from_secs(300);

struct CacheEntry {
    fetched: Instant,
    server: Arc<McpServer>,
    refreshing: Arc<std::sync::atomic::AtomicBool>,
}

impl ServerCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
            generation: Default::default(),
        }
    }

    pub async fn get(
        self: &Arc<Self>,
        name: &str,
        store: &Arc<dyn Store>,
    ) -> StoreResult<Option<Arc<McpServer>>> {
        use std::sync::atomic::Ordering;
        if let Some(entry) = self.entries.read().await.get(name) {
            let age = entry.fetched.elapsed();
            if age < self.ttl {
                return Ok(Some(entry.server.clone()));
            }
            // A TTL of zero means no caching at all, not "always serve the previous value".
            if !self.ttl.is_zero() && age < self.ttl + MAX_STALE {
                if !entry.refreshing.swap(true, Ordering::AcqRel) {
                    let (cache, store, name, flag) = (
                        self.clone(),
                        store.clone(),
                        name.to_owned(),
                        entry.refreshing.clone(),
                    );
                    tokio::spawn(async move {
                        if let Err(e) = cache.load(&name, store.as_ref()).await {
                            tracing::warn!(server = %name, error = %crate::http::error_chain(&e), "server config refresh failed");
                        }
                        flag.store(false, Ordering::Release);
                    });
                }
                return Ok(Some(entry.server.clone()));
            }
        }
        self.load(name, store.as_ref()).await
    }

    /// Reads `name` from the store and caches (or forgets) it.
    async fn load(&self, name: &str, store: &dyn Store) -> StoreResult<Option<Arc<McpServer>>> {
        use std::sync::atomic::Ordering;
        let generation = self.generation.load(Ordering::Acquire);
        let Some(server) = store.get_server(name).await? else {
            self.entries.write().await.remove(name);
            return Ok(None);
        };
        let server = Arc::new(server);
        let mut entries = self.entries.write().await;
        if self.generation.load(Ordering::Acquire) != generation {
            // Invalidated while reading: answer this caller, cache nothing possibly stale.
            return Ok(Some(server));
        }
        let entry = CacheEntry {
            fetched: Instant::now(),
            server: server.clone(),
            refreshing: Default::default(),
        };
        entries.insert(name.to_owned(), entry);
        Ok(Some(server))
    }

    pub async fn invalidate(&self, name: &str) {
        let mut entries = self.entries.write().await;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        entries.remove(name);
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::secrets::SecretRef;
    use crate::secrets::env::EnvSecrets;

    fn secrets(vars: &[(&str, &str)]) -> Arc<dyn Secrets> {
        Arc::new(EnvSecrets::from_map(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    #[tokio::test]
    async fn keyring_from_a_secret_is_fetched_on_first_use_and_opens_its_own_blobs() {
        let doc = r#"{"active":"k1","k1":"0123456789abcdef0123456789abcdef-material"}"#;
        let source = KeyringSource::new(
            KeyringConfig::Secret(SecretRef::parse("secret://gw/keyring").unwrap()),
            secrets(&[("MCPGW_SECRET_GW_KEYRING", doc)]),
        )
        .unwrap();
        let ring = source.get().await.unwrap();
        let blob = ring.seal(b"token", b"ctx").unwrap();
        assert_eq!(
            source.get().await.unwrap().open(&blob, b"ctx").unwrap(),
            b"token"
        );
        assert!(
            Arc::ptr_eq(&ring, &source.get().await.unwrap()),
            "fetched once, then reused"
        );
    }

    #[tokio::test]
    async fn missing_or_bad_keyring_secret_is_an_error_not_a_panic() {
        let missing = KeyringSource::new(
            KeyringConfig::Secret(SecretRef::parse("secret://nope").unwrap()),
            secrets(&[]),
        )
        .unwrap();
        assert!(matches!(
            missing.get().await,
            Err(KeyringSourceError::Secrets(_))
        ));
        let bad = KeyringSource::new(
            KeyringConfig::Secret(SecretRef::parse("secret://bad").unwrap()),
            secrets(&[("MCPGW_SECRET_BAD", "not json")]),
        )
        .unwrap();
        assert!(matches!(
            bad.get().await,
            Err(KeyringSourceError::Keyring(_))
        ));
    }

    #[tokio::test]
    async fn server_cache_serves_warm_reads_without_the_store_and_forgets_on_invalidate() {
        use crate::domain::{McpServer, UpstreamAuth};
        use crate::store::{ConfigKind, to_doc};
        let store: Arc<dyn Store> =
            Arc::new(crate::store::sqlite::SqliteStore::in_memory().unwrap());
        let mut server = McpServer {
            name: "s".into(),
            url: "http://a/mcp".into(),
            description: None,
            auth: UpstreamAuth::None,
            created_at: 0,
            updated_at: 0,
            authorization_server: None,
        };
        store
            .create_config(ConfigKind::Server, "s", &to_doc(&server))
            .await
            .unwrap();
        let cache = Arc::new(ServerCache::new(Duration::from_secs(60)));
        assert_eq!(
            cache.get("s", &store).await.unwrap().unwrap().url,
            "http://a/mcp"
        );
        server.url = "http://b/mcp".into();
        store
            .replace_config(ConfigKind::Server, "s", &to_doc(&server))
            .await
            .unwrap();
        assert_eq!(
            cache.get("s", &store).await.unwrap().unwrap().url,
            "http://a/mcp",
            "served from cache"
        );
        cache.invalidate("s").await;
        assert_eq!(
            cache.get("s", &store).await.unwrap().unwrap().url,
            "http://b/mcp"
        );
        assert!(cache.get("missing", &store).await.unwrap().is_none());

        // A zero TTL caches nothing.
        let uncached = Arc::new(ServerCache::new(Duration::ZERO));
        uncached.get("s", &store).await.unwrap();
        server.url = "http://b2/mcp".into();
        store
            .replace_config(ConfigKind::Server, "s", &to_doc(&server))
            .await
            .unwrap();
        assert_eq!(
            uncached.get("s", &store).await.unwrap().unwrap().url,
            "http://b2/mcp"
        );
        server.url = "http://b/mcp".into();
        store
            .replace_config(ConfigKind::Server, "s", &to_doc(&server))
            .await
            .unwrap();

        // Past the TTL the stale entry answers at once while a refresh runs behind it.
        let expiring = Arc::new(ServerCache::new(Duration::from_millis(1)));
        expiring.get("s", &store).await.unwrap();
        server.url = "http://c/mcp".into();
        store
            .replace_config(ConfigKind::Server, "s", &to_doc(&server))
            .await
            .unwrap();
        assert_eq!(
            expiring.get("s", &store).await.unwrap().unwrap().url,
            "http://b/mcp",
            "stale, refreshing"
        );
        let mut seen = String::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            seen = expiring
                .get("s", &store)
                .await
                .unwrap()
                .unwrap()
                .url
                .clone();
            if seen == "http://c/mcp" {
                break;
            }
        }
        assert_eq!(seen, "http://c/mcp", "the background refresh landed");
        // A server deleted behind the cache disappears once a refresh has seen it gone.
        store.delete_config(ConfigKind::Server, "s").await.unwrap();
        let mut gone = false;
        for _ in 0..100 {
            if expiring.get("s", &store).await.unwrap().is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone, "deleted servers drop out of the cache");
    }
}

#[cfg(test)]
mod keyring_tests {
    use super::*;
    use crate::secrets::{SecretRef, SecretValue};
    use async_trait::async_trait;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A secret whose value the test changes, counting fresh reads.
    struct Rotating {
        doc: Mutex<String>,
        fresh_reads: AtomicUsize,
    }

    #[async_trait]
    impl Secrets for Rotating {
        async fn resolve(&self, _: &SecretRef) -> Result<SecretValue, SecretsError> {
            Ok(SecretValue::new(self.doc.lock().unwrap().clone()))
        }
        async fn resolve_fresh(&self, r: &SecretRef) -> Result<SecretValue, SecretsError> {
            self.fresh_reads.fetch_add(1, Ordering::SeqCst);
            self.resolve(r).await
        }
    }

    #[tokio::test]
    async fn a_rotated_keyring_is_refetched_at_most_once_per_interval() {
        let secrets = Arc::new(Rotating {
            doc: Mutex::new(
                r#"{"active":"k1","k1":"first material, long enough for hkdf"}"#.into(),
            ),
            fresh_reads: AtomicUsize::new(0),
        });
        let reference = SecretRef::parse("secret://gw/keyring").unwrap();
        let source = KeyringSource::new(KeyringConfig::Secret(reference), secrets.clone()).unwrap();
        let old = source.get().await.unwrap();
        assert_eq!(old.active_key_id(), "k1");

        // Another process already seals with k2.
        let doc = r#"{"active":"k2","k1":"first material, long enough for hkdf","k2":"second material, long enough for hkdf"}"#;
        *secrets.doc.lock().unwrap() = doc.into();
        let sealed = Keyring::from_json(doc).unwrap().seal(b"x", b"c").unwrap();
        assert!(matches!(
            old.open(&sealed, b"c"),
            Err(KeyringError::UnknownKey(_))
        ));

        let newer = source.refresh().await.expect("a newer keyring");
        assert_eq!(newer.open(&sealed, b"c").unwrap(), b"x");
        assert_eq!(source.get().await.unwrap().active_key_id(), "k2");
        // A second unknown key within the interval costs no Secrets Manager call.
        assert!(source.refresh().await.is_none());
        assert_eq!(secrets.fresh_reads.load(Ordering::SeqCst), 1);

        let local = KeyringSource::Loaded(newer);
        assert!(
            local.refresh().await.is_none(),
            "a key file has nothing newer"
        );
    }
}
