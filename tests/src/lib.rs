//! Harness for the end-to-end tests: runs the gateway's routers (the same ones `local` and the
//! Lambda functions serve) on a loopback port over a real store, and drives them with real
//! peers: the Python MCP SDK client, server-everything, the Python echo server, moto.
//!
//! Peers are started by `scripts/test-all.sh`, which exports their addresses (see
//! `mcpgw::testing`). Run everything with `scripts/test-all.sh`.

pub mod lambda;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mcpgw::clock::SystemClock;
use mcpgw::config::Config;
use mcpgw::secrets::env::EnvSecrets;
use mcpgw::state::AppState;
use mcpgw::store::Store;
use serde_json::Value;

/// Which store the gateway under test runs on.
pub enum StoreKind {
    Sqlite,
    /// DynamoDB through moto at this endpoint.
    Dynamo(String),
}

/// A gateway serving on a loopback port until dropped.
pub struct TestGateway {
    pub base: String,
    pub admin_key: String,
    pub state: AppState,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestGateway {
    /// Starts a gateway on `store` whose local secrets are `secrets` (`MCPGW_SECRET_*` names).
    pub async fn start(store: StoreKind, secrets: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let admin_key = mcpgw::crypto::random_token(24);
        let mut vars: HashMap<&str, String> = HashMap::new();
        vars.insert("MCPGW_LISTEN", addr.to_string());
        vars.insert("MCPGW_DATA_DIR", dir.path().display().to_string());
        vars.insert("MCPGW_BOOTSTRAP_ADMIN_KEY", admin_key.clone());
        let store: Arc<dyn Store> = match store {
            StoreKind::Sqlite => Arc::new(mcpgw::store::sqlite::SqliteStore::open(
                &dir.path().join("gw.sqlite3"),
            )?),
            StoreKind::Dynamo(endpoint) => {
                let client =
                    aws_sdk_dynamodb::Client::new(&mcpgw::aws::emulator_sdk_config(&endpoint));
                let table = mcpgw::testing::unique_name("e2e");
                mcpgw::store::dynamo::create_table(&client, &table).await?;
                Arc::new(mcpgw::store::dynamo::DynamoStore::new(client, table))
            }
        };
        let config = Config::from_lookup(|k| vars.get(k).cloned())?;
        let secrets = EnvSecrets::from_map(
            secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let state = AppState::from_parts(config, store, Arc::new(secrets), Arc::new(SystemClock))?;
        let app = local::router(state.clone());
        let server = tokio::spawn(async move {
            let _ = mcpgw::runtime::serve_listener(listener, app, std::future::pending()).await;
        });
        Ok(Self {
            base: format!("http://{addr}"),
            admin_key,
            state,
            server,
            _dir: dir,
        })
    }

    /// Calls the admin API with the bootstrap admin key; returns (status, JSON body).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        call_json(
            method,
            &format!("{}{path}", self.base),
            Some(&self.admin_key),
            body,
        )
        .await
    }

    pub fn mcp_url(&self, endpoint: &str) -> String {
        format!("{}/mcp/{endpoint}", self.base)
    }
}

/// One HTTP call with an optional bearer token and JSON body; returns (status, JSON or Null).
pub async fn call_json(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    mcpgw::crypto::install_tls_provider();
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Runs the official Python MCP client against `url`: lists tools and calls `tool`.
pub async fn python_mcp_call(
    url: &str,
    token: &str,
    tool: &str,
    args: Value,
    mode: &str,
) -> Result<Value> {
    let python =
        mcpgw::testing::peer_url("MCPGW_TEST_PYTHON").context("MCPGW_TEST_PYTHON not set")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/mcp_call.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .args([url, token, tool, &args.to_string()])
        .env("MCP_MODE", mode)
        .kill_on_drop(true)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "python client failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .context("python client printed nothing")?;
    Ok(serde_json::from_str(line)?)
}
