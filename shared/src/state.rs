//! The state every router shares, built once per process (one Lambda execution environment).
//! This module only assembles parts: the ports (store, secrets, clock), the keyring, and the
//! services built on them, each once: the [`Authenticator`], the [`Grants`] service, the
//! [`Upstreams`] service, and the server and policy caches. Cloning is cheap (everything is
//! behind `Arc`).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, KeyringConfig, SecretsBackend, StoreBackend};
use crate::crypto::KeyringError;
use crate::domain::McpServer;
use crate::grants::Grants;
use crate::identity::Authenticator;
use crate::keyring::KeyringSource;
use crate::secrets::Secrets;
use crate::servers::ServerCache;
use crate::store::{Store, StoreError, StoreResult};
use crate::upstream::Upstreams;

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
    /// What this process has learned about upstreams (eras, bridged sessions).
    pub mcp: Arc<crate::mcp::memory::Memory>,
    /// Per-user OAuth2 grants, stored tokens and machine tokens (see `grants`).
    pub grants: Arc<Grants>,
    /// Calls to upstream MCP servers with the gateway's credential (see `upstream`).
    pub upstreams: Arc<Upstreams>,
    /// The audit trail's writer (see `audit`).
    pub audit: Arc<crate::audit::Auditor>,
    /// Folds floods of denials and failed logins into sampled records (`audit::sample`).
    pub audit_sampler: Arc<crate::audit::sample::Sampler>,
    /// Rate limits and quotas (see `limits`).
    pub limits: Arc<crate::limits::Limits>,
    /// Counters and latency histograms (see `metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// OpenTelemetry span export, a no-op unless configured (see `trace::otlp`).
    pub spans: Arc<crate::trace::otlp::Spans>,
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
        let servers = Arc::new(ServerCache::new(config.server_cache_ttl, store.clone()));
        // Every outbound client starts from the egress policy's builder (see `egress`).
        let http = config
            .egress
            .client_builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("mcp-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let metrics = Arc::new(crate::metrics::Metrics::new(&config.metrics));
        let audit = Arc::new(
            crate::audit::Auditor::new(store.clone(), keyring.clone(), config.audit_retention)
                .with_metrics(metrics.clone()),
        );
        if !config.in_lambda {
            audit.spawn_background_flush();
        }
        let grants = Arc::new(Grants::new(
            &config,
            store.clone(),
            secrets.clone(),
            keyring.clone(),
            clock.clone(),
            servers.clone(),
            audit.clone(),
        )?);
        let mcp = Arc::new(crate::mcp::memory::Memory::default());
        let upstreams = Arc::new(Upstreams::new(
            &config,
            http.clone(),
            grants.clone(),
            servers.clone(),
            mcp.clone(),
        ));
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
        let spans = Arc::new(crate::trace::otlp::Spans::new(
            config.otlp.clone(),
            http.clone(),
            metrics.clone(),
        ));
        let policy = Arc::new(crate::policy::cache::PolicyCache::new(policy_ttl));
        // Rate-limit rules are policy too: cached as long, re-read after admin writes.
        let limits = Arc::new(
            crate::limits::Limits::new(store.clone(), clock.clone(), policy.clone(), policy_ttl)
                .with_metrics(metrics.clone()),
        );
        Ok(Self {
            config: Arc::new(config),
            store,
            secrets,
            keyring,
            clock,
            auth,
            servers,
            policy,
            http,
            mcp,
            grants,
            upstreams,
            audit,
            audit_sampler: Arc::default(),
            limits,
            metrics,
            spans,
        })
    }

    /// What must be flushed at the end of every Lambda invocation (see `invocation`).
    pub fn invocation_hooks(&self) -> crate::invocation::InvocationHooks {
        crate::invocation::InvocationHooks::default()
            .with(self.audit.clone())
            .with(self.metrics.clone())
            .with(self.spans.clone())
    }

    /// The access-control policy, from the cache when fresh.
    pub async fn policy(&self) -> StoreResult<Arc<crate::policy::Snapshot>> {
        self.policy.get(&self.store).await
    }

    /// A server's configuration, from the cache when fresh.
    pub async fn server(&self, name: &str) -> StoreResult<Option<Arc<McpServer>>> {
        self.servers.get(name).await
    }
}
