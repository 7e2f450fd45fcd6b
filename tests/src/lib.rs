//! Harness for the end-to-end tests: runs the gateway's routers (the same ones `local` and the
//! Lambda functions serve) on a loopback port over a real store, and drives them with real
//! peers: the Python MCP SDK client, server-everything, the Python echo server, moto.
//!
//! Peers are started by `scripts/test-all.sh`, which exports their addresses (see
//! `mcpgw::testing`). Run everything with `scripts/test-all.sh`.

pub mod browser;
pub mod clock;
pub mod http_browser;
pub mod lambda;
pub mod mcp;
pub mod oauth_peers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use mcpgw::config::Config;
use mcpgw::secrets::env::EnvSecrets;
use mcpgw::state::AppState;
use mcpgw::store::Store;
use serde_json::Value;

use crate::clock::TestClock;

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
    /// The clock of this gateway and of those [`TestGateway::beside`] it: a test moves it
    /// ahead instead of sleeping.
    pub clock: Arc<TestClock>,
    /// What another gateway needs to run on the same data ([`TestGateway::beside`]).
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

/// The data one gateway's processes share: the data folder (its keyring file, the SQLite
/// file) and the store's location.
#[derive(Clone)]
struct Shared {
    dir: Arc<tempfile::TempDir>,
    store: SharedStore,
    secrets: Vec<(String, String)>,
    clock: Arc<TestClock>,
    /// Limits the test decides (`Limits::decided_by_test`), in place of the configured ones.
    limits: Option<Arc<mcpgw::limits::Limits>>,
}

#[derive(Clone)]
enum SharedStore {
    Sqlite,
    /// `turn`: the gateways of one deployment send moto one request at a time, so moto
    /// applies each conditional write atomically, as DynamoDB does
    /// ([`mcpgw::testing::one_request_at_a_time`]).
    Dynamo {
        endpoint: String,
        table: String,
        turn: Arc<tokio::sync::Mutex<()>>,
    },
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestGateway {
    /// Starts a gateway on `store` whose local secrets are `secrets` (`MCPGW_SECRET_*` names).
    pub async fn start(store: StoreKind, secrets: &[(&str, &str)]) -> Result<Self> {
        Self::start_limited(store, secrets, None).await
    }

    /// [`TestGateway::start`] with `limits` in place of the configured rate limits.
    pub async fn start_limited(
        store: StoreKind,
        secrets: &[(&str, &str)],
        limits: Option<Arc<mcpgw::limits::Limits>>,
    ) -> Result<Self> {
        let dir = Arc::new(tempfile::tempdir()?);
        let store = match store {
            StoreKind::Sqlite => SharedStore::Sqlite,
            StoreKind::Dynamo(endpoint) => {
                let client =
                    aws_sdk_dynamodb::Client::new(&mcpgw::aws::emulator_sdk_config(&endpoint));
                let table = mcpgw::testing::unique_name("e2e");
                mcpgw::store::dynamo::create_table(&client, &table).await?;
                SharedStore::Dynamo {
                    endpoint,
                    table,
                    turn: Arc::default(),
                }
            }
        };
        let shared = Shared {
            dir,
            store,
            secrets: secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            clock: Arc::default(),
            limits,
        };
        Self::serve(shared, mcpgw::crypto::random_token(24)).await
    }

    /// Another gateway on this one's data, as a second Lambda instance or a second local
    /// process would be: the same keyring, store and clock, but its own connection to the
    /// store, caches and in-process locks.
    pub async fn beside(&self) -> Result<Self> {
        Self::serve(self.shared.clone(), self.admin_key.clone()).await
    }

    async fn serve(shared: Shared, admin_key: String) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let dir = shared.dir.path();
        let mut vars: HashMap<&str, String> = HashMap::new();
        vars.insert("MCPGW_LISTEN", addr.to_string());
        vars.insert("MCPGW_DATA_DIR", dir.display().to_string());
        vars.insert("MCPGW_BOOTSTRAP_ADMIN_KEY", admin_key.clone());
        let store: Arc<dyn Store> = match &shared.store {
            SharedStore::Sqlite => Arc::new(mcpgw::store::sqlite::SqliteStore::open(
                &dir.join("gw.sqlite3"),
            )?),
            SharedStore::Dynamo {
                endpoint,
                table,
                turn,
            } => {
                let conf = aws_sdk_dynamodb::config::Builder::from(
                    &mcpgw::aws::emulator_sdk_config(endpoint),
                )
                .http_client(mcpgw::testing::one_request_at_a_time(turn.clone()))
                .build();
                let client = aws_sdk_dynamodb::Client::from_conf(conf);
                Arc::new(mcpgw::store::dynamo::DynamoStore::new(
                    client,
                    table.clone(),
                ))
            }
        };
        let config = Config::from_lookup(|k| vars.get(k).cloned())?;
        let secrets = EnvSecrets::from_map(shared.secrets.iter().cloned().collect());
        let mut state =
            AppState::from_parts(config, store, Arc::new(secrets), shared.clock.clone())?;
        if let Some(limits) = &shared.limits {
            state.limits = limits.clone();
        }
        let app = local::router(state.clone());
        let server = tokio::spawn(async move {
            let _ = mcpgw::runtime::serve_listener(listener, app, std::future::pending()).await;
        });
        Ok(Self {
            base: format!("http://{addr}"),
            admin_key,
            state,
            clock: shared.clock.clone(),
            shared,
            server,
        })
    }

    /// The state of another process of this deployment (same store, secrets and settings)
    /// whose clock is `secs` ahead of this gateway's: what a scheduled job sees a while later.
    pub fn state_later(&self, secs: i64) -> Result<AppState> {
        Ok(AppState::from_parts(
            (*self.state.config).clone(),
            self.state.store.clone(),
            self.state.secrets.clone(),
            Arc::new(TestClock::ahead(self.clock.offset() + secs)),
        )?)
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

    /// Creates the server group `name` that admits every authenticated caller to `servers`:
    /// access is denied by default, and tests of the proxy itself are not about the policy.
    pub async fn admit_everyone(&self, name: &str, servers: &[&str]) -> Result<()> {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/admin/server-groups",
                Some(serde_json::json!({"name": name, "servers": servers,
                    "members": {"everyone": true}})),
            )
            .await?;
        ensure!(status == 201, "creating group {name}: {status} {body}");
        Ok(())
    }

    /// Registers the MCP server `name` at `url` with outbound `auth` (`{"type": "none"}`, ...).
    pub async fn add_server(&self, name: &str, url: &str, auth: Value) -> Result<()> {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/admin/servers",
                Some(serde_json::json!({"name": name, "url": url, "auth": auth})),
            )
            .await?;
        ensure!(status == 201, "registering {name}: {status} {body}");
        Ok(())
    }

    /// Issues an API key owned by `owner` (no admin role); returns the key.
    pub async fn user_key(&self, owner: &str) -> Result<String> {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/admin/api-keys",
                Some(serde_json::json!({"owner": owner, "name": "test"})),
            )
            .await?;
        ensure!(status == 201, "issuing a key for {owner}: {status} {body}");
        body["key"]
            .as_str()
            .map(str::to_owned)
            .context("the answer holds the key")
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

/// Runs `program args` with `input` on its stdin (a checker script of `tests/clients/`) and
/// reads the JSON it prints; fails on a non-zero exit (with its stderr) or after 120 s.
pub async fn run_json_filter(program: &str, args: &[String], input: &[u8]) -> Result<Value> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(input).await?;
    drop(stdin);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .context("the program hung")??;
    ensure!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
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

/// The OIDC provider peer (`tests/peers/oidc_provider.mjs`, logins approved at once) and the
/// static confidential client `scripts/peers.sh` registers at it.
#[derive(Debug, Clone)]
pub struct OidcPeer {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect: String,
    python: String,
}

impl OidcPeer {
    /// From `MCPGW_TEST_OIDC_*` (and `MCPGW_TEST_PYTHON`, which runs the login helper); `None`
    /// (after saying so) when the peer is not running and peers are optional.
    pub fn from_env() -> Option<Self> {
        let peer = mcpgw::testing::peer_url;
        let (Some(issuer), Some(client_id), Some(client_secret), Some(redirect), Some(python)) = (
            peer("MCPGW_TEST_OIDC_ISSUER"),
            peer("MCPGW_TEST_OIDC_CLIENT_ID"),
            peer("MCPGW_TEST_OIDC_CLIENT_SECRET"),
            peer("MCPGW_TEST_OIDC_REDIRECT"),
            peer("MCPGW_TEST_PYTHON"),
        ) else {
            return None;
        };
        Some(Self {
            issuer,
            client_id,
            client_secret,
            redirect,
            python,
        })
    }

    /// A real login of `user` (`tests/clients/oidc_login.py`: authorization code + PKCE, resource
    /// indicator `resource`); returns the access token, after checking it is what the IdP
    /// should issue (this issuer, `aud` exactly `resource`, the user's email), so a failure
    /// after it is the gateway's.
    pub async fn login(&self, resource: &str, user: &str) -> Result<String> {
        let answer = self.login_tokens(resource, user).await?;
        let token = answer["access_token"]
            .as_str()
            .with_context(|| format!("no access_token in {answer}"))?
            .to_owned();
        let claims = jwt_claims(&token)?;
        ensure!(
            claims["iss"] == self.issuer.as_str()
                && jwt_audiences(&claims) == [resource]
                && claims["email"] == format!("{user}@example.com").as_str(),
            "the IdP issued an unexpected token for {user}, {resource}: {claims}"
        );
        Ok(token)
    }

    /// The whole token response of a real login of `user` for `resource` (access token,
    /// refresh token, expiry), unchecked.
    pub async fn login_tokens(&self, resource: &str, user: &str) -> Result<Value> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/oidc_login.py");
        let run = tokio::process::Command::new(&self.python)
            .arg(&script)
            .args([
                &self.issuer,
                &self.client_id,
                &self.client_secret,
                &self.redirect,
                resource,
                user,
            ])
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
            .await
            .context("the login helper hung")??;
        ensure!(
            out.status.success(),
            "login of {user} for {resource} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("login output: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

/// The strings of a JSON array (others, and a non-array, give none).
pub fn json_strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// The (unverified) payload of a JWT.
pub fn jwt_claims(token: &str) -> Result<Value> {
    let payload = token.split('.').nth(1).context("not a JWT")?;
    Ok(serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?,
    )?)
}

/// `aud` as a list, whether the token has one audience or several.
pub fn jwt_audiences(claims: &Value) -> Vec<&str> {
    match &claims["aud"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Where a walk-through runs: the gateway's base URL (with the REST stage, if any), its admin
/// key, the upstreams, and the `secret://` reference whose value the echo upstream must see.
pub struct Walkthrough<'a> {
    pub base: &'a str,
    pub admin_key: &'a str,
    pub everything_url: &'a str,
    pub echo_url: &'a str,
    pub secret_ref: &'a str,
    pub secret_value: &'a str,
}

/// The README walk-through, whatever runs the gateway (in process, or Lambda behind an API
/// Gateway): register server-everything and the echo server (header auth), issue a user's key,
/// call `get-sum` and, in both protocol eras, `whoami` with the Python SDK. Asserts that the
/// upstream saw the secret and never the caller's key. Returns the user's key.
pub async fn walkthrough(w: &Walkthrough<'_>) -> String {
    let admin = |path: &str, body: Value| {
        let url = format!("{}{path}", w.base);
        async move {
            call_json(reqwest::Method::POST, &url, Some(w.admin_key), Some(body))
                .await
                .unwrap()
        }
    };
    let mcp_url = |name: &str| format!("{}/mcp/{name}", w.base);

    // GIVEN two registered servers and a user's key
    let (s, body) =
        admin("/admin/servers", serde_json::json!({"name": "everything", "url": w.everything_url, "auth": {"type": "none"}})).await;
    assert_eq!(s, 201, "{body}");
    let echo = serde_json::json!({"name": "echo", "url": w.echo_url,
        "auth": {"type": "header", "headers": {"Authorization": w.secret_ref}}});
    let (s, body) = admin("/admin/servers", echo).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        body["auth"]["headers"]["Authorization"], w.secret_ref,
        "the reference is shown, never the value"
    );
    let (s, key) = admin(
        "/admin/api-keys",
        serde_json::json!({"owner": "alice@example.com", "name": "laptop"}),
    )
    .await;
    assert_eq!(s, 201, "{key}");
    let api_key = key["key"].as_str().unwrap().to_owned();
    // AND a server group that admits her to both (access is denied by default)
    let (s, body) = admin(
        "/admin/server-groups",
        serde_json::json!({"name": "engineering", "servers": ["everything", "echo"],
            "members": {"users": ["alice@example.com"]}}),
    )
    .await;
    assert_eq!(s, 201, "{body}");

    // WHEN the Python SDK calls server-everything's get-sum through the gateway
    let out = python_mcp_call(
        &mcp_url("everything"),
        &api_key,
        "get-sum",
        serde_json::json!({"a": 2, "b": 40}),
        "auto",
    )
    .await
    .unwrap();
    // THEN the tools are listed and the sum comes back in the 2026-07-28 era, which
    // server-everything does not speak: the gateway bridges it to the upstream's session era
    assert!(
        out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "get-sum"),
        "{out}"
    );
    assert_eq!(out["is_error"], false, "{out}");
    assert!(out["content"][0].as_str().unwrap().contains("42"), "{out}");
    assert_eq!(out["protocol"], "2026-07-28", "{out}");

    // WHEN the echo server reports the Authorization header it received, in the stateless
    // 2026-07-28 era (the SDK's default) and in the initialize-handshake era
    for (mode, era) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        let out = python_mcp_call(
            &mcp_url("echo"),
            &api_key,
            "whoami",
            serde_json::json!({}),
            mode,
        )
        .await
        .unwrap();
        assert_eq!(out["protocol"], era, "{out}");
        let seen: Value = serde_json::from_str(out["content"][0].as_str().unwrap()).unwrap();
        // THEN it is the gateway's header secret, and the caller's key appears nowhere
        assert_eq!(
            seen["authorization"], w.secret_value,
            "upstream saw: {seen}"
        );
        assert!(
            !out.to_string().contains(&api_key),
            "the caller's key reached the upstream: {out}"
        );
    }
    api_key
}
