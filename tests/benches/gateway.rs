//! Gateway overhead benchmark: the same MCP `tools/call` sent straight to an upstream and
//! through the gateway, in one run, with the store and secrets traffic of every call counted.
//!
//!   scripts/bench.sh                       starts the peers, runs this, stops the peers
//!   cargo bench -p e2e --bench gateway     the same against peers you started yourself
//!   cargo test -p e2e --bench gateway      a quick smoke run (debug build, few calls)
//!
//! Upstreams: a minimal in-process axum server answering JSON (the gateway's own overhead,
//! nothing else), and when their variables are set the Python echo server
//! (`MCPGW_TEST_ECHO_URL`, JSON mode) and server-everything (`MCPGW_TEST_EVERYTHING_URL`, SSE).
//! Paths: direct; the gateway (`local::router`, as in `tests/src/lib.rs`) on SQLite with
//! environment secrets (local mode); and, when moto is up (`MCPGW_TEST_AWS_ENDPOINT`), the
//! gateway on DynamoDB with the Secrets Manager adapter (Lambda mode), every upstream's header
//! credential stored in moto.
//!
//! Each path gets a warm-up, then `MCPGW_BENCH_CALLS` sequential calls (default 300) and the
//! same number of calls `MCPGW_BENCH_CONCURRENCY` in flight (default 8). The table shows the
//! median and p95 latency, the throughput, and the ratio gateway/direct of each. The store and
//! the secrets port are wrapped in counting decorators, and the Secrets Manager adapter's own
//! `backend_calls()` is read, so the report states per warm call how many store reads and
//! Secrets Manager calls the gateway made. Nothing here asserts a timing: failures are only
//! wrong answers. Results also go to `$CARGO_TARGET_DIR/bench/gateway.json`.
//!
//! The gateway runs on `mcpgw::runtime::serve_listener`, the server loop of local mode.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_trait::async_trait;
use mcpgw::clock::{SystemClock, UnixTime};
use mcpgw::config::Config;
use mcpgw::domain::{ApiKey, Grant, OAuthState};
use mcpgw::secrets::aws::SecretsManagerSecrets;
use mcpgw::secrets::env::EnvSecrets;
use mcpgw::secrets::{SecretRef, SecretValue, Secrets, SecretsError};
use mcpgw::state::AppState;
use mcpgw::store::{
    ApiKeyStore, ConfigKind, ConfigStore, GrantStore, OAuthStateStore, Store, StoreResult,
};
use serde_json::{Value, json};

// ------------------------------------------------------------------------------------------
// Counting decorators around the two ports

/// Every method of the store port, so each can be counted on its own.
#[derive(Debug, Clone, Copy)]
enum Op {
    CreateConfig,
    ReplaceConfig,
    GetConfig,
    ListConfigs,
    DeleteConfig,
    CreateApiKey,
    FindApiKeyByHash,
    GetApiKey,
    ListApiKeys,
    DeleteApiKey,
    GetGrant,
    SaveGrantIfVersion,
    DeleteGrant,
    ListGrantsForUser,
    GrantsDue,
    PutState,
    ConsumeState,
}

const OPS: usize = 17;

impl Op {
    const ALL: [Op; OPS] = [
        Op::CreateConfig,
        Op::ReplaceConfig,
        Op::GetConfig,
        Op::ListConfigs,
        Op::DeleteConfig,
        Op::CreateApiKey,
        Op::FindApiKeyByHash,
        Op::GetApiKey,
        Op::ListApiKeys,
        Op::DeleteApiKey,
        Op::GetGrant,
        Op::SaveGrantIfVersion,
        Op::DeleteGrant,
        Op::ListGrantsForUser,
        Op::GrantsDue,
        Op::PutState,
        Op::ConsumeState,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::CreateConfig => "create_config",
            Op::ReplaceConfig => "replace_config",
            Op::GetConfig => "get_config",
            Op::ListConfigs => "list_configs",
            Op::DeleteConfig => "delete_config",
            Op::CreateApiKey => "create_api_key",
            Op::FindApiKeyByHash => "find_api_key_by_hash",
            Op::GetApiKey => "get_api_key",
            Op::ListApiKeys => "list_api_keys",
            Op::DeleteApiKey => "delete_api_key",
            Op::GetGrant => "get_grant",
            Op::SaveGrantIfVersion => "save_grant_if_version",
            Op::DeleteGrant => "delete_grant",
            Op::ListGrantsForUser => "list_grants_for_user",
            Op::GrantsDue => "grants_due",
            Op::PutState => "put_state",
            Op::ConsumeState => "consume_state",
        }
    }

    /// Whether the DynamoDB adapter serves it with read requests only (GetItem or Query).
    /// `consume_state` is a DeleteItem, so a write.
    fn is_read(self) -> bool {
        matches!(
            self,
            Op::GetConfig
                | Op::ListConfigs
                | Op::FindApiKeyByHash
                | Op::GetApiKey
                | Op::ListApiKeys
                | Op::GetGrant
                | Op::ListGrantsForUser
                | Op::GrantsDue
        )
    }
}

#[derive(Default)]
struct StoreCounts([AtomicU64; OPS]);

impl StoreCounts {
    fn hit(&self, op: Op) {
        self.0[op as usize].fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(&self) -> [u64; OPS] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// The store port, counting each call per method before delegating.
struct CountingStore {
    inner: Arc<dyn Store>,
    counts: Arc<StoreCounts>,
}

#[async_trait]
impl ConfigStore for CountingStore {
    async fn create_config(&self, kind: ConfigKind, name: &str, doc: &Value) -> StoreResult<()> {
        self.counts.hit(Op::CreateConfig);
        self.inner.create_config(kind, name, doc).await
    }
    async fn replace_config(&self, kind: ConfigKind, name: &str, doc: &Value) -> StoreResult<()> {
        self.counts.hit(Op::ReplaceConfig);
        self.inner.replace_config(kind, name, doc).await
    }
    async fn get_config(&self, kind: ConfigKind, name: &str) -> StoreResult<Option<Value>> {
        self.counts.hit(Op::GetConfig);
        self.inner.get_config(kind, name).await
    }
    async fn list_configs(&self, kind: ConfigKind) -> StoreResult<Vec<Value>> {
        self.counts.hit(Op::ListConfigs);
        self.inner.list_configs(kind).await
    }
    async fn delete_config(&self, kind: ConfigKind, name: &str) -> StoreResult<bool> {
        self.counts.hit(Op::DeleteConfig);
        self.inner.delete_config(kind, name).await
    }
}

#[async_trait]
impl ApiKeyStore for CountingStore {
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        self.counts.hit(Op::CreateApiKey);
        self.inner.create_api_key(key).await
    }
    async fn find_api_key_by_hash(
        &self,
        key_hash: &str,
        now: UnixTime,
    ) -> StoreResult<Option<ApiKey>> {
        self.counts.hit(Op::FindApiKeyByHash);
        self.inner.find_api_key_by_hash(key_hash, now).await
    }
    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        self.counts.hit(Op::GetApiKey);
        self.inner.get_api_key(id).await
    }
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.counts.hit(Op::ListApiKeys);
        self.inner.list_api_keys().await
    }
    async fn delete_api_key(&self, id: &str) -> StoreResult<bool> {
        self.counts.hit(Op::DeleteApiKey);
        self.inner.delete_api_key(id).await
    }
}

#[async_trait]
impl GrantStore for CountingStore {
    async fn get_grant(&self, user: &str, server: &str) -> StoreResult<Option<Grant>> {
        self.counts.hit(Op::GetGrant);
        self.inner.get_grant(user, server).await
    }
    async fn save_grant_if_version(&self, grant: &Grant, expected: Option<u64>) -> StoreResult<()> {
        self.counts.hit(Op::SaveGrantIfVersion);
        self.inner.save_grant_if_version(grant, expected).await
    }
    async fn delete_grant(&self, user: &str, server: &str) -> StoreResult<bool> {
        self.counts.hit(Op::DeleteGrant);
        self.inner.delete_grant(user, server).await
    }
    async fn list_grants_for_user(&self, user: &str) -> StoreResult<Vec<Grant>> {
        self.counts.hit(Op::ListGrantsForUser);
        self.inner.list_grants_for_user(user).await
    }
    async fn grants_due(&self, before: UnixTime, limit: usize) -> StoreResult<Vec<Grant>> {
        self.counts.hit(Op::GrantsDue);
        self.inner.grants_due(before, limit).await
    }
}

#[async_trait]
impl OAuthStateStore for CountingStore {
    async fn put_state(&self, state: &OAuthState) -> StoreResult<()> {
        self.counts.hit(Op::PutState);
        self.inner.put_state(state).await
    }
    async fn consume_state(&self, id: &str, now: UnixTime) -> StoreResult<Option<OAuthState>> {
        self.counts.hit(Op::ConsumeState);
        self.inner.consume_state(id, now).await
    }
}

/// The secrets port, counting `resolve` calls (served from cache or not).
struct CountingSecrets {
    inner: Arc<dyn Secrets>,
    resolves: Arc<AtomicU64>,
}

#[async_trait]
impl Secrets for CountingSecrets {
    async fn resolve(&self, reference: &SecretRef) -> Result<SecretValue, SecretsError> {
        self.resolves.fetch_add(1, Ordering::Relaxed);
        self.inner.resolve(reference).await
    }
}

/// The counters of one gateway: the decorators', and the Secrets Manager adapter's own.
#[derive(Clone)]
struct Counters {
    store: Arc<StoreCounts>,
    resolves: Arc<AtomicU64>,
    secrets_manager: Option<Arc<SecretsManagerSecrets>>,
}

#[derive(Clone, Copy)]
struct Snapshot {
    store: [u64; OPS],
    resolves: u64,
    /// `SecretsManagerSecrets::backend_calls()`, when the gateway uses that adapter.
    sm_calls: Option<u64>,
}

impl Counters {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            store: self.store.snapshot(),
            resolves: self.resolves.load(Ordering::Relaxed),
            sm_calls: self.secrets_manager.as_ref().map(|s| s.backend_calls()),
        }
    }
}

impl Snapshot {
    fn since(&self, before: &Snapshot) -> Snapshot {
        Snapshot {
            store: std::array::from_fn(|i| self.store[i] - before.store[i]),
            resolves: self.resolves - before.resolves,
            sm_calls: self.sm_calls.zip(before.sm_calls).map(|(a, b)| a - b),
        }
    }
    fn reads(&self) -> u64 {
        Op::ALL
            .iter()
            .filter(|o| o.is_read())
            .map(|&o| self.store[o as usize])
            .sum()
    }
    fn writes(&self) -> u64 {
        Op::ALL
            .iter()
            .filter(|o| !o.is_read())
            .map(|&o| self.store[o as usize])
            .sum()
    }
    fn by_method(&self) -> BTreeMap<&'static str, u64> {
        Op::ALL
            .iter()
            .filter(|&&o| self.store[o as usize] > 0)
            .map(|&o| (o.name(), self.store[o as usize]))
            .collect()
    }
}

// ------------------------------------------------------------------------------------------
// The gateway under test

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    /// Local mode: SQLite store, secrets from the environment.
    Sqlite,
    /// Lambda mode: DynamoDB and Secrets Manager, both in moto.
    Dynamo,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "gw sqlite+env",
            Backend::Dynamo => "gw dynamodb+sm",
        }
    }
}

/// Two gateways over one store, as deployed: an admin one (the admin-api function) that
/// registers servers and keys, and the measured one (the mcp-proxy function) whose store and
/// secrets are counted. Each has its own caches, so the measured one starts cold: the admin
/// API resolving a server's secrets while registering it does not warm the proxy's cache.
/// Both serve `local::router` on loopback ports, as `tests/src/lib.rs` does.
struct Gateway {
    backend: Backend,
    /// The measured gateway.
    base: String,
    /// The admin gateway, with its bootstrap admin key.
    admin_base: String,
    admin_key: String,
    counters: Counters,
    servers: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

/// The secret name holding `upstream`'s header credential in `backend`.
fn secret_name(upstream: &str) -> String {
    format!("mcpgw/bench-{}-{upstream}", std::process::id())
}

/// Where one gateway's store lives; each gateway opens its own adapters on it.
enum StoreAt {
    Sqlite(PathBuf),
    Dynamo(aws_sdk_dynamodb::Client, String),
}

/// One gateway's store and secrets adapters, plus the Secrets Manager adapter when it is one.
type Ports = (
    Arc<dyn Store>,
    Arc<dyn Secrets>,
    Option<Arc<SecretsManagerSecrets>>,
);

/// Serves `local::router` over `store` and `secrets` on a fresh loopback port.
async fn serve(
    dir: &std::path::Path,
    admin_key: &str,
    store: Arc<dyn Store>,
    secrets: Arc<dyn Secrets>,
    settings: &[(&'static str, String)],
) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut vars: HashMap<&str, String> = settings.iter().cloned().collect();
    vars.insert("MCPGW_LISTEN", addr.to_string());
    vars.insert("MCPGW_DATA_DIR", dir.display().to_string());
    vars.insert("MCPGW_BOOTSTRAP_ADMIN_KEY", admin_key.to_owned());
    let config = Config::from_lookup(|k| vars.get(k).cloned())?;
    let state = AppState::from_parts(config, store, secrets, Arc::new(SystemClock))?;
    let app = local::router(state);
    // The server loop local mode runs (TCP_NODELAY on accepted connections).
    let task = tokio::spawn(async move {
        let _ = mcpgw::runtime::serve_listener(listener, app, std::future::pending()).await;
    });
    Ok((format!("http://{addr}"), task))
}

impl Gateway {
    async fn start(
        backend: Backend,
        moto: Option<&str>,
        upstream_secrets: &[(String, String)],
        settings: &[(&'static str, String)],
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let admin_key = mcpgw::crypto::random_token(24);
        // The secrets cache TTL production uses (MCPGW_SECRETS_CACHE_SECONDS, default 300 s).
        let secrets_ttl = Config::from_lookup(|_| None)?.secrets_cache_ttl;
        // Every upstream's secret exists before a state is built: the environment adapter
        // snapshots its variables once, and the proxy must find the secrets in moto.
        let (at, sm_client) = match backend {
            Backend::Sqlite => (StoreAt::Sqlite(dir.path().join("gw.sqlite3")), None),
            Backend::Dynamo => {
                let endpoint = moto.context("the DynamoDB gateway needs moto")?;
                let sdk = mcpgw::aws::emulator_sdk_config(endpoint);
                let ddb = aws_sdk_dynamodb::Client::new(&sdk);
                let table = mcpgw::testing::unique_name("bench");
                mcpgw::store::dynamo::create_table(&ddb, &table).await?;
                let sm_client = aws_sdk_secretsmanager::Client::new(&sdk);
                for (name, value) in upstream_secrets {
                    let stored = sm_client
                        .create_secret()
                        .name(name)
                        .secret_string(value)
                        .send()
                        .await;
                    // A second gateway of this process (the expiry probe) reuses the secrets.
                    if let Err(e) = stored
                        && !e
                            .as_service_error()
                            .is_some_and(|e| e.is_resource_exists_exception())
                    {
                        return Err(e).with_context(|| format!("storing secret {name} in moto"));
                    }
                }
                (StoreAt::Dynamo(ddb, table), Some(sm_client))
            }
        };
        let ports = || -> Result<Ports> {
            let store: Arc<dyn Store> = match &at {
                StoreAt::Sqlite(path) => Arc::new(mcpgw::store::sqlite::SqliteStore::open(path)?),
                StoreAt::Dynamo(client, table) => Arc::new(mcpgw::store::dynamo::DynamoStore::new(
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
        let (admin_base, admin_task) =
            serve(dir.path(), &admin_key, store, secrets, settings).await?;

        let (store, secrets, sm) = ports()?;
        let counters = Counters {
            store: Arc::default(),
            resolves: Arc::default(),
            secrets_manager: sm,
        };
        let store = Arc::new(CountingStore {
            inner: store,
            counts: counters.store.clone(),
        });
        let secrets = Arc::new(CountingSecrets {
            inner: secrets,
            resolves: counters.resolves.clone(),
        });
        let (base, task) = serve(dir.path(), &admin_key, store, secrets, settings).await?;
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

    async fn admin(&self, path: &str, body: Value) -> Result<Value> {
        let (status, out) = e2e::call_json(
            reqwest::Method::POST,
            &format!("{}{path}", self.admin_base),
            Some(&self.admin_key),
            Some(body),
        )
        .await?;
        ensure!(status == 201, "POST {path}: HTTP {status}: {out}");
        Ok(out)
    }

    /// Registers `upstream` with a header credential read from its secret.
    async fn register(&self, upstream: &Upstream) -> Result<()> {
        self.admin(
            "/admin/servers",
            json!({
                "name": upstream.name,
                "url": upstream.url,
                "auth": {"type": "header", "headers": {
                    "Authorization": format!("secret://{}", secret_name(upstream.name)),
                }},
            }),
        )
        .await?;
        Ok(())
    }

    async fn issue_key(&self) -> Result<String> {
        let out = self
            .admin(
                "/admin/api-keys",
                json!({"owner": "bench@example.com", "name": "bench"}),
            )
            .await?;
        Ok(out["key"].as_str().context("no key in answer")?.to_owned())
    }
}

// ------------------------------------------------------------------------------------------
// Upstreams

struct Upstream {
    name: &'static str,
    url: String,
    tool: &'static str,
    /// Whether it needs an `initialize` handshake and a session header.
    session: bool,
}

/// Arguments of every call: each upstream's tool adds them and answers a text with 42.
fn tool_args() -> Value {
    json!({"a": 2, "b": 40})
}

/// A minimal MCP server: answers every POSTed request with a JSON `tools/call` result and
/// every notification with 202, no session, no SSE. What remains of a proxied call's time
/// once this is the upstream is the gateway's own.
async fn start_minimal_upstream() -> Result<(String, tokio::task::JoinHandle<()>)> {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    async fn handle(axum::Json(msg): axum::Json<Value>) -> axum::response::Response {
        let Some(id) = msg.get("id").cloned() else {
            return StatusCode::ACCEPTED.into_response();
        };
        let args = &msg["params"]["arguments"];
        let sum = args["a"].as_i64().unwrap_or(0) + args["b"].as_i64().unwrap_or(0);
        axum::Json(json!({
            "jsonrpc": "2.0",
            "id": id,
            "result": {"content": [{"type": "text", "text": sum.to_string()}], "isError": false},
        }))
        .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/mcp", axum::routing::post(handle));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/mcp"), task))
}

// ------------------------------------------------------------------------------------------
// One MCP client path (direct or through a gateway)

const PROTOCOL: &str = "2025-11-25";

#[derive(Clone)]
struct Target {
    url: String,
    /// The whole `Authorization` value: the upstream's credential when direct, the caller's
    /// gateway key when proxied.
    authorization: String,
    session: Option<String>,
    tool: &'static str,
}

fn request(client: &reqwest::Client, target: &Target, body: &Value) -> reqwest::RequestBuilder {
    let mut req = client
        .post(&target.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", &target.authorization)
        .body(body.to_string());
    if let Some(s) = &target.session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", PROTOCOL);
    }
    req
}

/// The JSON-RPC answer with `id` in a JSON body or an SSE stream.
fn jsonrpc_answer(body: &str, id: u64) -> Option<Value> {
    let trimmed = body.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).ok();
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v["id"] == json!(id))
}

/// Opens an MCP session (initialize + initialized) when the upstream keeps sessions.
async fn open_session(client: &reqwest::Client, target: &mut Target) -> Result<()> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "mcpgw-bench", "version": "1.0"}}});
    let resp = request(client, target, &init).send().await?;
    let status = resp.status();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.text().await?;
    ensure!(status.is_success(), "initialize: HTTP {status}: {body}");
    target.session = Some(session.context("initialize answered without a session id")?);
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let resp = request(client, target, &note).send().await?;
    ensure!(
        resp.status().is_success(),
        "initialized: HTTP {}",
        resp.status()
    );
    Ok(())
}

/// One `tools/call`; returns its latency (request sent until the whole body is read) after
/// checking the answer is the tool's result.
async fn call_tool(client: &reqwest::Client, target: &Target, id: u64) -> Result<Duration> {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": target.tool, "arguments": tool_args()}});
    let req = request(client, target, &body);
    let started = Instant::now();
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    let elapsed = started.elapsed();
    ensure!(status.is_success(), "{}: HTTP {status}: {text}", target.url);
    let answer = jsonrpc_answer(&text, id).with_context(|| format!("no answer in {text}"))?;
    let result = &answer["result"];
    let content = result["content"][0]["text"].as_str().unwrap_or_default();
    if result["isError"] == json!(true) || !content.contains("42") {
        bail!("{}: unexpected answer {answer}", target.url);
    }
    Ok(elapsed)
}

// ------------------------------------------------------------------------------------------
// Measurement

/// Summary of one measured run.
#[derive(Clone)]
struct Run {
    calls: usize,
    median_ms: f64,
    p95_ms: f64,
    mean_ms: f64,
    max_ms: f64,
    throughput: f64,
}

fn summarize(mut lat: Vec<Duration>, wall: Duration) -> Run {
    lat.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // Nearest-rank percentiles.
    let pct = |p: f64| ms(lat[((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1]);
    Run {
        calls: lat.len(),
        median_ms: pct(0.50),
        p95_ms: pct(0.95),
        mean_ms: lat.iter().map(|&d| ms(d)).sum::<f64>() / lat.len() as f64,
        max_ms: ms(*lat.last().expect("at least one call")),
        throughput: lat.len() as f64 / wall.as_secs_f64(),
    }
}

fn run_json(r: &Run) -> Value {
    json!({"calls": r.calls, "median_ms": r.median_ms, "p95_ms": r.p95_ms, "mean_ms": r.mean_ms,
           "max_ms": r.max_ms, "throughput_rps": r.throughput})
}

struct Settings {
    calls: usize,
    concurrency: usize,
    warmup: usize,
    bench: bool,
}

/// Store and secrets traffic of a phase, per call.
fn accounting_json(delta: &Snapshot, calls: usize) -> Value {
    let per = |n: u64| n as f64 / calls as f64;
    json!({
        "calls": calls,
        "store_reads": delta.reads(),
        "store_reads_per_call": per(delta.reads()),
        "store_writes": delta.writes(),
        "store_calls_by_method": delta.by_method(),
        "secret_resolves": delta.resolves,
        "secret_resolves_per_call": per(delta.resolves),
        "secrets_manager_calls": delta.sm_calls,
        "secrets_manager_calls_per_call": delta.sm_calls.map(per),
    })
}

/// Sequential calls; with `counters`, also the store reads of every single call (the calls
/// are one at a time, so a snapshot between two calls is exact).
async fn sequential(
    client: &reqwest::Client,
    target: &Target,
    n: usize,
    counters: Option<&Counters>,
) -> Result<(Run, Vec<u64>)> {
    let mut lat = Vec::with_capacity(n);
    let mut reads = Vec::new();
    let started = Instant::now();
    for i in 0..n {
        let before = counters.map(Counters::snapshot);
        lat.push(call_tool(client, target, i as u64 + 1).await?);
        if let (Some(c), Some(b)) = (counters, before) {
            reads.push(c.snapshot().since(&b).reads());
        }
    }
    Ok((summarize(lat, started.elapsed()), reads))
}

/// `n` calls, `concurrency` in flight at any time.
async fn concurrent(
    client: &reqwest::Client,
    target: &Target,
    n: usize,
    concurrency: usize,
) -> Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, target, next) = (client.clone(), target.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(lat);
                    }
                    lat.push(call_tool(&client, &target, 100_000 + i as u64).await?);
                }
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(n);
    for w in workers {
        lat.extend(w.await??);
    }
    Ok(summarize(lat, started.elapsed()))
}

// ------------------------------------------------------------------------------------------
// The run

fn env_num(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// `$CARGO_TARGET_DIR/bench`, or the target folder this binary was built in
/// (`<target>/<profile>/deps/gateway-<hash>`).
fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            exe.ancestors().nth(3).map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("bench")
}

fn main() -> Result<()> {
    // `cargo bench` passes --bench; `cargo test --bench gateway` does not: a smoke run then.
    let bench = std::env::args().any(|a| a == "--bench");
    let settings = Settings {
        calls: env_num("MCPGW_BENCH_CALLS", if bench { 300 } else { 16 }),
        concurrency: env_num("MCPGW_BENCH_CONCURRENCY", 8),
        warmup: env_num("MCPGW_BENCH_WARMUP", if bench { 50 } else { 3 }),
        bench,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(settings))
}

/// One row of the latency table.
struct Row {
    upstream: &'static str,
    path: &'static str,
    mode: String,
    run: Run,
    /// Same upstream and mode, direct.
    direct: Option<Run>,
    accounting: Option<Value>,
}

impl Row {
    fn json(&self) -> Value {
        let ratio = self.direct.as_ref().map(|d| {
            json!({
                "median": self.run.median_ms / d.median_ms,
                "p95": self.run.p95_ms / d.p95_ms,
                "throughput": self.run.throughput / d.throughput,
                "median_overhead_ms": self.run.median_ms - d.median_ms,
            })
        });
        json!({
            "upstream": self.upstream, "path": self.path, "mode": self.mode,
            "stats": run_json(&self.run), "gateway_over_direct": ratio,
            "accounting": self.accounting,
        })
    }
}

async fn run(s: Settings) -> Result<()> {
    mcpgw::crypto::install_tls_provider();
    let t0 = Instant::now();
    let (minimal_url, _minimal) = start_minimal_upstream().await?;
    let mut upstreams = vec![Upstream {
        name: "minimal",
        url: minimal_url,
        tool: "add",
        session: false,
    }];
    if let Some(url) = mcpgw::testing::peer_url("MCPGW_TEST_ECHO_URL") {
        upstreams.push(Upstream {
            name: "echo-py",
            url,
            tool: "add",
            session: true,
        });
    }
    if let Some(url) = mcpgw::testing::peer_url("MCPGW_TEST_EVERYTHING_URL") {
        upstreams.push(Upstream {
            name: "everything",
            url,
            tool: "get-sum",
            session: true,
        });
    }
    let moto = mcpgw::testing::moto_endpoint();

    // Each upstream's credential, as the gateway injects it and as a direct call sends it.
    let credential = |u: &Upstream| format!("Bearer bench-credential-for-{}", u.name);
    let secrets: Vec<(String, String)> = upstreams
        .iter()
        .map(|u| (secret_name(u.name), credential(u)))
        .collect();
    let mut gateways = vec![Gateway::start(Backend::Sqlite, None, &secrets, &[]).await?];
    if moto.is_some() {
        gateways.push(Gateway::start(Backend::Dynamo, moto.as_deref(), &secrets, &[]).await?);
    }
    let mut keys = Vec::new();
    for gw in &gateways {
        for u in &upstreams {
            gw.register(u).await?;
        }
        keys.push(gw.issue_key().await?);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;

    println!(
        "gateway bench: {} sequential calls and {} calls {} in flight per path, {} warm-up calls, \
         {} cores, {} build",
        s.calls,
        s.calls,
        s.concurrency,
        s.warmup,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if s.bench {
            "bench (release)"
        } else {
            "test (debug, smoke)"
        },
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut first_calls: Vec<Value> = Vec::new();
    let mut per_call_reads: Vec<Value> = Vec::new();
    for u in &upstreams {
        // Targets: direct, then one per gateway.
        let mut direct = Target {
            url: u.url.clone(),
            authorization: credential(u),
            session: None,
            tool: u.tool,
        };
        if u.session {
            open_session(&client, &mut direct).await?;
        }
        let mut proxied = Vec::new();
        for (gw, key) in gateways.iter().zip(&keys) {
            let mut t = Target {
                url: format!("{}/mcp/{}", gw.base, u.name),
                authorization: format!("Bearer {key}"),
                session: None,
                tool: u.tool,
            };
            // The first requests to the endpoint: nothing of it is cached yet.
            let before = gw.counters.snapshot();
            let requests = if u.session {
                open_session(&client, &mut t).await?;
                3
            } else {
                1
            };
            call_tool(&client, &t, 1).await?;
            let delta = gw.counters.snapshot().since(&before);
            let mut acc = accounting_json(&delta, requests);
            acc["upstream"] = json!(u.name);
            acc["path"] = json!(gw.backend.label());
            acc["what"] = json!(if u.session {
                "initialize+initialized+tools/call"
            } else {
                "first tools/call"
            });
            first_calls.push(acc);
            proxied.push((gw, t));
        }

        // Warm-up, not measured.
        for i in 0..s.warmup {
            call_tool(&client, &direct, i as u64).await?;
            for (_, t) in &proxied {
                call_tool(&client, t, i as u64).await?;
            }
        }

        // Sequential.
        let (d, _) = sequential(&client, &direct, s.calls, None).await?;
        rows.push(Row {
            upstream: u.name,
            path: "direct",
            mode: "seq".into(),
            run: d.clone(),
            direct: None,
            accounting: None,
        });
        for (gw, t) in &proxied {
            let before = gw.counters.snapshot();
            let (r, reads) = sequential(&client, t, s.calls, Some(&gw.counters)).await?;
            let delta = gw.counters.snapshot().since(&before);
            let mut histogram: BTreeMap<u64, usize> = BTreeMap::new();
            for n in &reads {
                *histogram.entry(*n).or_default() += 1;
            }
            per_call_reads.push(json!({
                "upstream": u.name, "path": gw.backend.label(),
                "calls_by_store_reads": histogram.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
                "max_store_reads_in_one_call": reads.iter().max(),
            }));
            rows.push(Row {
                upstream: u.name,
                path: gw.backend.label(),
                mode: "seq".into(),
                run: r,
                direct: Some(d.clone()),
                accounting: Some(accounting_json(&delta, s.calls)),
            });
        }

        // Concurrent.
        let mode = format!("{} in flight", s.concurrency);
        let d = concurrent(&client, &direct, s.calls, s.concurrency).await?;
        rows.push(Row {
            upstream: u.name,
            path: "direct",
            mode: mode.clone(),
            run: d.clone(),
            direct: None,
            accounting: None,
        });
        for (gw, t) in &proxied {
            let before = gw.counters.snapshot();
            let r = concurrent(&client, t, s.calls, s.concurrency).await?;
            let delta = gw.counters.snapshot().since(&before);
            rows.push(Row {
                upstream: u.name,
                path: gw.backend.label(),
                mode: mode.clone(),
                run: r,
                direct: Some(d.clone()),
                accounting: Some(accounting_json(&delta, s.calls)),
            });
        }
    }

    // The server cache's expiry, made deterministic: a 1-second TTL, then one call after it
    // expired, then `concurrency` calls at once after it expired again.
    let mut expiry = Vec::new();
    for backend in gateways.iter().map(|g| g.backend) {
        let u = &upstreams[0];
        expiry.push(
            expiry_probe(
                backend,
                moto.as_deref(),
                &secrets,
                u,
                &client,
                s.concurrency,
            )
            .await?,
        );
    }

    print_report(&rows, &first_calls, &per_call_reads);
    print_expiry(&expiry);
    let defaults = Config::from_lookup(|_| None)?;
    let goals = goals(&rows, &per_call_reads, &expiry);

    let report = json!({
        "bench": "gateway",
        "build": if s.bench { "bench" } else { "test" },
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "git_rev": std::env::var("MCPGW_BENCH_GIT_REV").ok(),
        "settings": {"calls": s.calls, "concurrency": s.concurrency, "warmup": s.warmup},
        "upstreams": upstreams.iter().map(|u| json!({"name": u.name, "url": u.url, "tool": u.tool, "session": u.session})).collect::<Vec<_>>(),
        "server_cache_ttl_s": defaults.server_cache_ttl.as_secs(),
        "secrets_cache_ttl_s": defaults.secrets_cache_ttl.as_secs(),
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "first_calls": first_calls,
        "per_call_store_reads": per_call_reads,
        "server_cache_expiry_probe": expiry,
        "goals": goals,
        "elapsed_s": t0.elapsed().as_secs_f64(),
    });
    let dir = out_dir();
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(if s.bench {
        "gateway.json"
    } else {
        "gateway-smoke.json"
    });
    std::fs::write(&file, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwritten: {}", file.display());
    Ok(())
}

fn fmt_per_call(v: &Value, key: &str) -> String {
    v[key]
        .as_f64()
        .map_or_else(|| "-".to_owned(), |x| format!("{x:.3}"))
}

fn print_report(rows: &[Row], first_calls: &[Value], per_call_reads: &[Value]) {
    println!(
        "\n{:<11} {:<15} {:<12} {:>5} {:>10} {:>10} {:>9} | {:>8} {:>8} {:>8} {:>9}",
        "upstream",
        "path",
        "mode",
        "calls",
        "median ms",
        "p95 ms",
        "req/s",
        "x median",
        "x p95",
        "x req/s",
        "+median"
    );
    for r in rows {
        let ratio = r.direct.as_ref().map_or_else(String::new, |d| {
            format!(
                "{:>8.2} {:>8.2} {:>8.2} {:>7.3}ms",
                r.run.median_ms / d.median_ms,
                r.run.p95_ms / d.p95_ms,
                r.run.throughput / d.throughput,
                r.run.median_ms - d.median_ms
            )
        });
        println!(
            "{:<11} {:<15} {:<12} {:>5} {:>10.3} {:>10.3} {:>9.0} | {}",
            r.upstream,
            r.path,
            r.mode,
            r.run.calls,
            r.run.median_ms,
            r.run.p95_ms,
            r.run.throughput,
            ratio
        );
    }

    println!(
        "\nstore and secrets traffic of the measured gateway (reads: store methods served by \
         GetItem/Query; resolves: Secrets port calls, cached or not; SM: GetSecretValue calls \
         made by the Secrets Manager adapter, its backend_calls())"
    );
    println!("cold, the first requests to each endpoint of a fresh gateway (totals):");
    println!(
        "  {:<11} {:<15} {:<34} {:>5} {:>8} {:>5}  store calls by method",
        "upstream", "path", "requests", "reads", "resolves", "SM"
    );
    for a in first_calls {
        println!(
            "  {:<11} {:<15} {:<34} {:>5} {:>8} {:>5}  {}",
            a["upstream"].as_str().unwrap_or_default(),
            a["path"].as_str().unwrap_or_default(),
            a["what"].as_str().unwrap_or_default(),
            a["store_reads"],
            a["secret_resolves"],
            if a["secrets_manager_calls"].is_null() {
                "-".to_owned()
            } else {
                a["secrets_manager_calls"].to_string()
            },
            a["store_calls_by_method"]
        );
    }
    println!("warm tools/call (per call):");
    println!(
        "  {:<11} {:<15} {:<12} {:>5} {:>10} {:>12} {:>8}  store calls by method (totals)",
        "upstream", "path", "mode", "calls", "reads/call", "resolves/call", "SM/call"
    );
    for r in rows {
        if let Some(a) = &r.accounting {
            println!(
                "  {:<11} {:<15} {:<12} {:>5} {:>10} {:>12} {:>8}  {}",
                r.upstream,
                r.path,
                r.mode,
                a["calls"],
                fmt_per_call(a, "store_reads_per_call"),
                fmt_per_call(a, "secret_resolves_per_call"),
                fmt_per_call(a, "secrets_manager_calls_per_call"),
                a["store_calls_by_method"]
            );
        }
    }
    println!("\nstore reads per single warm sequential call (calls with that many reads):");
    for p in per_call_reads {
        println!(
            "  {:<11} {:<15} {}  max {}",
            p["upstream"].as_str().unwrap_or_default(),
            p["path"].as_str().unwrap_or_default(),
            p["calls_by_store_reads"],
            p["max_store_reads_in_one_call"]
        );
    }
}

/// Store reads when the server cache entry has just expired: one sequential call, then
/// `concurrency` calls sent together (a 1-second TTL, so the probe takes ~3 s).
async fn expiry_probe(
    backend: Backend,
    moto: Option<&str>,
    secrets: &[(String, String)],
    upstream: &Upstream,
    client: &reqwest::Client,
    concurrency: usize,
) -> Result<Value> {
    let gw = Gateway::start(
        backend,
        moto,
        secrets,
        &[("MCPGW_SERVER_CACHE_SECONDS", "1".into())],
    )
    .await?;
    gw.register(upstream).await?;
    let key = gw.issue_key().await?;
    let target = Target {
        url: format!("{}/mcp/{}", gw.base, upstream.name),
        authorization: format!("Bearer {key}"),
        session: None,
        tool: upstream.tool,
    };
    call_tool(client, &target, 1).await?;
    let wait = Duration::from_millis(1100);
    tokio::time::sleep(wait).await;
    let before = gw.counters.snapshot();
    call_tool(client, &target, 2).await?;
    let one = gw.counters.snapshot().since(&before);
    tokio::time::sleep(wait).await;
    let before = gw.counters.snapshot();
    let calls: Vec<_> = (0..concurrency)
        .map(|i| {
            let (client, target) = (client.clone(), target.clone());
            tokio::spawn(async move { call_tool(&client, &target, 10 + i as u64).await })
        })
        .collect();
    for c in calls {
        c.await??;
    }
    let burst = gw.counters.snapshot().since(&before);
    Ok(json!({
        "path": backend.label(), "upstream": upstream.name, "server_cache_ttl_s": 1,
        "one_call_after_expiry": accounting_json(&one, 1),
        "concurrent_calls_after_expiry": accounting_json(&burst, concurrency),
    }))
}

fn print_expiry(probes: &[Value]) {
    println!("\nserver cache expiry (TTL 1 s in this probe, 15 s by default):");
    for p in probes {
        let one = &p["one_call_after_expiry"];
        let burst = &p["concurrent_calls_after_expiry"];
        println!(
            "  {:<15} 1 call after expiry: {} reads {}; {} calls at once after expiry: {} reads {}",
            p["path"].as_str().unwrap_or_default(),
            one["store_reads"],
            one["store_calls_by_method"],
            burst["calls"],
            burst["store_reads"],
            burst["store_calls_by_method"],
        );
    }
}

/// The two goals, checked on the DynamoDB gateway's warm calls: exactly one store read on the
/// request path (the API-key lookup) and no Secrets Manager call per proxied tool call.
/// Reported, not asserted.
///
/// Once a server cache entry is older than the TTL, `ServerCache` serves it and re-reads the
/// server (`get_config`) in one background task per server (stale-while-revalidate,
/// single-flight). The counting decorator sees that read wherever it runs, so the verdict
/// is strict about the measured warm phases: any read in them other than one key lookup per
/// call counts against the goal (with the default 15 s TTL the phases normally end before an
/// entry expires). The expiry probe makes entries expire on purpose: there its `get_config`
/// reads are reported apart, as config refreshes, which must be at most 1 per server per
/// expiry; every other read of the probe counts as a request-path read.
fn goals(rows: &[Row], per_call_reads: &[Value], expiry: &[Value]) -> Value {
    let dynamo = Backend::Dynamo.label();
    let warm: Vec<&Value> = rows
        .iter()
        .filter(|r| r.path == dynamo)
        .filter_map(|r| r.accounting.as_ref())
        .collect();
    if warm.is_empty() {
        println!("\ngoals: not checked (no DynamoDB gateway: moto not running)");
        return Value::Null;
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let max_in_run = per_call_reads
        .iter()
        .filter(|p| p["path"] == json!(dynamo))
        .filter_map(|p| p["max_store_reads_in_one_call"].as_u64())
        .max()
        .unwrap_or(0);
    // Warm phases whose reads were not exactly one key lookup per call.
    let off_phases = warm
        .iter()
        .filter(|a| {
            let calls = n(&a["calls"]);
            n(&a["store_reads"]) != calls
                || n(&a["store_calls_by_method"]["find_api_key_by_hash"]) != calls
        })
        .count();
    let warm_config_reads: u64 = warm
        .iter()
        .map(|a| n(&a["store_calls_by_method"]["get_config"]))
        .sum();
    let mean_reads = warm
        .iter()
        .filter_map(|a| a["store_reads_per_call"].as_f64())
        .fold(0.0_f64, f64::max);
    // Expiry probe: (calls, request-path reads = every read but get_config, get_config reads).
    let probe = expiry.iter().find(|p| p["path"] == json!(dynamo));
    let split = |phase: &str| {
        probe.map_or((0, 0, 0), |p| {
            let a = &p[phase];
            let refresh = n(&a["store_calls_by_method"]["get_config"]);
            (
                n(&a["calls"]),
                n(&a["store_reads"]).saturating_sub(refresh),
                refresh,
            )
        })
    };
    let (one_calls, one_path, one_refresh) = split("one_call_after_expiry");
    let (burst_calls, burst_path, burst_refresh) = split("concurrent_calls_after_expiry");
    let sm_calls: u64 = warm
        .iter()
        .filter_map(|a| a["secrets_manager_calls"].as_u64())
        .sum();
    let reads_ok =
        max_in_run <= 1 && off_phases == 0 && one_path == one_calls && burst_path == burst_calls;
    let refresh_ok = one_refresh <= 1 && burst_refresh <= 1;
    let sm_ok = sm_calls == 0;
    println!(
        "\ngoals (DynamoDB gateway, warm proxied tools/call, request path):\n  \
         exactly 1 store read per call, the API-key lookup (find_api_key_by_hash, a GSI \
         Query): {}: the most in one sequential warm call was {}, the highest mean {:.4}/call; \
         {} of {} warm phases read anything but one key lookup per call ({} get_config reads \
         in them); the expiry probe's calls made {} request-path reads for {} call and {} for \
         {} calls at once\n  \
         server config refreshes after the TTL (get_config, ServerCache's background task, \
         off the request path): {}: {} after 1 call, {} after {} calls at once (expected at \
         most 1 per server per expiry)\n  \
         0 Secrets Manager calls: {} ({} GetSecretValue calls in all warm phases)",
        if reads_ok { "MET" } else { "MISSED" },
        max_in_run,
        mean_reads,
        off_phases,
        warm.len(),
        warm_config_reads,
        one_path,
        one_calls,
        burst_path,
        burst_calls,
        if refresh_ok { "OK" } else { "EXCEEDED" },
        one_refresh,
        burst_refresh,
        burst_calls,
        if sm_ok { "MET" } else { "MISSED" },
        sm_calls
    );
    json!({
        "max_store_reads_in_one_warm_call": max_in_run,
        "highest_mean_store_reads_per_warm_call": mean_reads,
        "warm_phases": warm.len(),
        "warm_phases_not_one_key_lookup_per_call": off_phases,
        "get_config_reads_in_warm_phases": warm_config_reads,
        "expiry_probe_request_path_reads": {
            "one_call": one_path,
            "concurrent_calls": burst_calls,
            "concurrent": burst_path,
        },
        "expiry_probe_config_refresh_reads": {
            "one_call": one_refresh,
            "concurrent": burst_refresh,
        },
        "one_read_per_warm_call_met": reads_ok,
        "at_most_one_config_refresh_per_expiry": refresh_ok,
        "secrets_manager_calls_in_warm_phases": sm_calls,
        "zero_secrets_manager_calls_met": sm_ok,
    })
}
