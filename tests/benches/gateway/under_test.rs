//! The gateway under test: `local::router` on `mcpgw::runtime::serve_listener` on its own
//! runtime, over counted SQLite (local mode) or DynamoDB and Secrets Manager (Lambda mode).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use mcpgw::clock::SystemClock;
use mcpgw::config::Config;
use mcpgw::secrets::Secrets;
use mcpgw::secrets::aws::SecretsManagerSecrets;
use mcpgw::secrets::env::EnvSecrets;
use mcpgw::state::AppState;
use mcpgw::store::Store;
use serde_json::{Value, json};

use crate::client::Upstream;
use crate::counting::{Counters, CountingSecrets};

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Backend {
    /// Local mode: SQLite store, secrets from the environment.
    Sqlite,
    /// Lambda mode: DynamoDB and Secrets Manager, both in moto.
    Dynamo,
}

impl Backend {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "gateway sqlite+env",
            Backend::Dynamo => "gateway dynamodb+sm",
        }
    }
}

/// Two gateways over one store, as deployed: an admin one (the admin-api function) that
/// registers servers and keys, and the measured one (the mcp-proxy function) whose ports are
/// counted. Each has its own caches, so registering a server (which resolves its secrets)
/// does not warm the measured gateway. Both serve `local::router` on loopback ports, on the
/// runtime `start` runs on.
pub(crate) struct Gateway {
    pub(crate) backend: Backend,
    pub(crate) base: String,
    pub(crate) admin_base: String,
    pub(crate) admin_key: String,
    pub(crate) counters: Counters,
    pub(crate) servers: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

/// The secret holding `upstream`'s header credential.
pub(crate) fn secret_name(upstream: &str) -> String {
    format!("mcpgw/bench-{}-{upstream}", std::process::id())
}

/// One gateway's store and secrets adapters, and the Secrets Manager adapter when it is one.
pub(crate) type Ports = (
    Arc<dyn Store>,
    Arc<dyn Secrets>,
    Option<Arc<SecretsManagerSecrets>>,
);

/// Serves `local::router` over `store` and `secrets` on a fresh loopback port.
pub(crate) async fn serve(
    dir: &Path,
    admin_key: &str,
    store: Arc<dyn Store>,
    secrets: Arc<dyn Secrets>,
) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let vars: HashMap<&str, String> = HashMap::from([
        ("MCPGW_LISTEN", addr.to_string()),
        ("MCPGW_DATA_DIR", dir.display().to_string()),
        ("MCPGW_BOOTSTRAP_ADMIN_KEY", admin_key.to_owned()),
    ]);
    let config = Config::from_lookup(|k| vars.get(k).cloned())?;
    let state = AppState::from_parts(config, store, secrets, Arc::new(SystemClock))?;
    let app = local::router(state);
    let task = tokio::spawn(async move {
        let _ = mcpgw::runtime::serve_listener(listener, app, std::future::pending()).await;
    });
    Ok((format!("http://{addr}"), task))
}

impl Gateway {
    /// `upstream_secrets`: (secret name, value) of every upstream's credential. They exist
    /// before a state is built: the environment adapter reads its variables once.
    pub(crate) async fn start(
        backend: Backend,
        moto: Option<String>,
        upstream_secrets: Vec<(String, String)>,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let admin_key = mcpgw::crypto::random_token(24);
        let secrets_ttl = Config::from_lookup(|_| None)?.secrets_cache_ttl;
        let (ddb, sm_client) = match backend {
            Backend::Sqlite => (None, None),
            Backend::Dynamo => {
                let endpoint = moto.context("the DynamoDB gateway needs moto")?;
                let sdk = mcpgw::aws::emulator_sdk_config(&endpoint);
                let ddb = aws_sdk_dynamodb::Client::new(&sdk);
                let table = mcpgw::testing::unique_name("bench");
                mcpgw::store::dynamo::create_table(&ddb, &table).await?;
                let sm = aws_sdk_secretsmanager::Client::new(&sdk);
                for (name, value) in &upstream_secrets {
                    sm.create_secret()
                        .name(name)
                        .secret_string(value)
                        .send()
                        .await
                        .with_context(|| format!("storing secret {name} in moto"))?;
                }
                (Some((ddb, table)), Some(sm))
            }
        };
        // One gateway's own adapters over the shared store.
        let ports = || -> Result<Ports> {
            let store: Arc<dyn Store> = match &ddb {
                None => Arc::new(mcpgw::store::sqlite::SqliteStore::open(
                    &dir.path().join("gw.sqlite3"),
                )?),
                Some((client, table)) => Arc::new(mcpgw::store::dynamo::DynamoStore::new(
                    client.clone(),
                    table.clone(),
                )),
            };
            Ok(match &sm_client {
                None => {
                    let env = upstream_secrets
                        .iter()
                        .map(|(name, value)| (EnvSecrets::var_name(name), value.clone()))
                        .collect();
                    (store, Arc::new(EnvSecrets::from_map(env)), None)
                }
                Some(client) => {
                    let sm = Arc::new(SecretsManagerSecrets::new(client.clone(), secrets_ttl));
                    (store, sm.clone(), Some(sm))
                }
            })
        };

        let (store, secrets, _) = ports()?;
        let (admin_base, admin_task) = serve(dir.path(), &admin_key, store, secrets).await?;

        let (store, secrets, secrets_manager) = ports()?;
        let counters = Counters {
            counts: Arc::default(),
            secrets_manager,
        };
        // The store port, counting each call per method before it is served.
        let counts = counters.counts.clone();
        let store = Arc::new(mcpgw::testing::ObservedStore::new(store, move |call| {
            counts.hit(call.method);
            Ok(())
        }));
        let secrets = Arc::new(CountingSecrets {
            inner: secrets,
            counts: counters.counts.clone(),
        });
        let (base, task) = serve(dir.path(), &admin_key, store, secrets).await?;
        Ok(Self {
            backend,
            base,
            admin_base,
            admin_key,
            counters,
            servers: vec![admin_task, task],
            _dir: dir,
        })
    }

    pub(crate) async fn admin(&self, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}{path}", self.admin_base);
        let (status, out) = e2e::call_json(
            reqwest::Method::POST,
            &url,
            Some(&self.admin_key),
            Some(body),
        )
        .await?;
        ensure!(status == 201, "POST {path}: HTTP {status}: {out}");
        Ok(out)
    }

    /// Registers `upstream` with a header credential read from its secret.
    pub(crate) async fn register(&self, upstream: &Upstream) -> Result<()> {
        let secret = format!("secret://{}", secret_name(upstream.name));
        self.admin(
            "/admin/servers",
            json!({"name": upstream.name, "url": upstream.url,
                   "auth": {"type": "header", "headers": {"Authorization": secret}}}),
        )
        .await?;
        // access is denied by default: the bench user is admitted by a group, so every
        // measured call pays for the policy decision as a deployment's calls do
        self.admin(
            "/admin/server-groups",
            json!({"name": format!("bench-{}", upstream.name), "servers": [upstream.name],
                   "members": {"users": ["bench@example.com"]}}),
        )
        .await?;
        Ok(())
    }

    /// One rate-limit rule on every measured call (the issue's "audit and one rule on the
    /// path"; audit records are always written): enforced, per user, GCRA at one call per
    /// millisecond with the whole window as burst, so every call is counted (one
    /// conditional write) and none is refused within a run.
    pub(crate) async fn add_rate_limit(&self) -> Result<()> {
        let rule = json!({"name": "bench", "mode": "enforce", "per": "user",
                          "limits": [{"count": 3_540_000, "window": "59m"}]});
        self.admin("/admin/rate-limits", rule).await?;
        Ok(())
    }

    pub(crate) async fn issue_key(&self) -> Result<String> {
        let body = json!({"owner": "bench@example.com", "name": "bench"});
        let out = self.admin("/admin/api-keys", body).await?;
        Ok(out["key"].as_str().context("no key in answer")?.to_owned())
    }
}
