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

/// `local::router` on a loopback port over a counted store and counted secrets.
struct Gateway {
    backend: Backend,
    base: String,
    admin_key: String,
    counters: Counters,
    /// Only set for the DynamoDB gateway: where upstream header secrets are stored.
    sm_client: Option<aws_sdk_secretsmanager::Client>,
    /// Secret variables of the environment adapter, for the SQLite gateway. Secrets are added
    /// before the state is built, so every upstream's secret is known up front.
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The secret name holding `upstream`'s header credential in `backend`.
fn secret_name(upstream: &str) -> String {
    format!("mcpgw/bench-{}-{upstream}", std::process::id())
}

impl Gateway {
    async fn start(
        backend: Backend,
        moto: Option<&str>,
        upstream_secrets: &[(String, String)],
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let admin_key = mcpgw::crypto::random_token(24);
        let mut vars: HashMap<&str, String> = HashMap::new();
        vars.insert("MCPGW_LISTEN", addr.to_string());
        vars.insert("MCPGW_DATA_DIR", dir.path().display().to_string());
        vars.insert("MCPGW_BOOTSTRAP_ADMIN_KEY", admin_key.clone());
        let config = Config::from_lookup(|k| vars.get(k).cloned())?;

        let (store, secrets, sm, sm_client): (
            Arc<dyn Store>,
            Arc<dyn Secrets>,
            Option<Arc<SecretsManagerSecrets>>,
            _,
        ) = match backend {
            Backend::Sqlite => {
                let store =
                    mcpgw::store::sqlite::SqliteStore::open(&dir.path().join("gw.sqlite3"))?;
                let env = upstream_secrets
                    .iter()
                    .map(|(name, value)| (EnvSecrets::var_name(name), value.clone()))
                    .collect();
                (
                    Arc::new(store),
                    Arc::new(EnvSecrets::from_map(env)),
                    None,
                    None,
                )
            }
            Backend::Dynamo => {
                let endpoint = moto.context("the DynamoDB gateway needs moto")?;
                let sdk = mcpgw::aws::emulator_sdk_config(endpoint);
                let ddb = aws_sdk_dynamodb::Client::new(&sdk);
                let table = mcpgw::testing::unique_name("bench");
                mcpgw::store::dynamo::create_table(&ddb, &table).await?;
                let sm_client = aws_sdk_secretsmanager::Client::new(&sdk);
                for (name, value) in upstream_secrets {
                    sm_client
                        .create_secret()
                        .name(name)
                        .secret_string(value)
                        .send()
                        .await
                        .with_context(|| format!("storing secret {name} in moto"))?;
                }
                // The adapter and TTL production uses (MCPGW_SECRETS_CACHE_SECONDS, 300 s).
                let sm = Arc::new(SecretsManagerSecrets::new(
                    sm_client.clone(),
                    config.secrets_cache_ttl,
                ));
                (
                    Arc::new(mcpgw::store::dynamo::DynamoStore::new(ddb, table)),
                    sm.clone() as Arc<dyn Secrets>,
                    Some(sm),
                    Some(sm_client),
                )
            }
        };
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
        let state = AppState::from_parts(config, store, secrets, Arc::new(SystemClock))?;
        let app = local::router(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            backend,
            base: format!("http://{addr}"),
            admin_key,
            counters,
            sm_client,
            server,
            _dir: dir,
        })
    }

    async fn admin(&self, path: &str, body: Value) -> Result<Value> {
        let (status, out) = e2e::call_json(
            reqwest::Method::POST,
            &format!("{}{path}", self.base),
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

#[derive(Clone, serde_derive_free::Stats)]
struct Stats;

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
