//! Lambda mode, for real: the four function binaries run under the Lambda runtime API emulator
//! (`cargo lambda watch`) against DynamoDB and Secrets Manager in moto, and are driven the way
//! API Gateway drives them.
//!
//! - [`AwsSetup`] creates what the CloudFormation template creates: the table, the keyring and
//!   bootstrap admin key secrets (referenced by ARN, like `!Ref`), and an operator secret
//!   `mcpgw/<unique>` for an upstream header.
//! - [`Emulator`] runs one `cargo lambda watch` serving every function of the workspace on a
//!   loopback port. Functions get their environment from `--env-file` (nothing `MCPGW_*` or
//!   `AWS_*` is inherited from the test process). Invoke a function with a raw event at
//!   `POST http://127.0.0.1:PORT/2015-03-31/functions/NAME/invocations` ([`Emulator::invoke`]);
//!   `http://127.0.0.1:PORT/lambda-url/NAME/...` is the emulator's function URL (payload 2.0).
//! - [`FakeApiGateway`] is an HTTP/1.1 server on `127.0.0.1:0` that turns each request into a
//!   REST API (v1 proxy) or HTTP API (payload 2.0) event, routes it like `infra/template.yaml`,
//!   invokes the function and turns the Lambda proxy response back into HTTP. Per integration
//!   it is buffered or response-streaming, like the template's REST API (mcp-proxy streams).
//! - [`LambdaStack`] wires all of it as deployed: a buffered emulator for every function, a
//!   second emulator with `MCPGW_LAMBDA_STREAMING=1` behind the REST API's mcp-proxy routes,
//!   a REST gateway (stage `prod`) and an HTTP API gateway. [`IdpParameters`] are the
//!   template's identity-provider parameters (`MCPGW_IDP_*` on every function), e.g. the
//!   oidc-provider peer as issuer.
//!
//! Processes: the emulator starts each function lazily (on its first invocation) with
//! `cargo run --bin NAME`, in a session of its own, so killing the emulator's process group
//! would leave the functions behind. The emulator stops its functions on SIGTERM, so it runs
//! under a tiny `sh` supervisor whose stdin is a pipe from this process: when the [`Emulator`]
//! is dropped, or this process dies in any way, the pipe closes and the supervisor sends SIGTERM
//! and waits. Drop then waits for the whole process tree to be gone and SIGKILLs what is left.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The functions `cargo lambda watch` serves, by crate (= binary) name.
pub const FUNCTIONS: [&str; 4] = ["mcp-proxy", "admin-api", "oauth-callback", "token-refresh"];

/// Stage of the fake REST API, as in the template's default `StageName`.
pub const STAGE: &str = "prod";

/// Account id that moto and the fake gateway use.
const ACCOUNT_ID: &str = "123456789012";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn peers_required() -> bool {
    std::env::var("MCPGW_REQUIRE_PEERS").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The `cargo-lambda` binary: on `PATH`, else beside `MCPGW_TEST_PYTHON` (scripts/peers.sh
/// installs it into the same venv). `None` (after saying why) when it is missing and peers are
/// optional; a panic when they are required.
pub fn cargo_lambda() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("cargo-lambda"))
            .find(|c| c.is_file())
    });
    let beside_python = || {
        let python = PathBuf::from(std::env::var_os("MCPGW_TEST_PYTHON")?);
        Some(python.parent()?.join("cargo-lambda")).filter(|c| c.is_file())
    };
    if let Some(found) = on_path.or_else(beside_python) {
        return Some(found);
    }
    let why = "cargo-lambda is not on PATH nor beside MCPGW_TEST_PYTHON: install it with \
               `pip install cargo-lambda` (scripts/peers.sh setup does, into ~/.cache/mcp-gateway/venv) \
               and put that venv's bin folder on PATH";
    assert!(!peers_required(), "{why}");
    eprintln!("skipping: {why}");
    None
}

/// Builds the four function binaries (debug), the way `cargo lambda watch` will run them, so
/// the first invocation of each does not compile. Returns how long it took.
pub async fn build_functions() -> Result<Duration> {
    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // One `cargo build --bin NAME` per function, exactly what the emulator's `cargo run --bin
    // NAME` builds: building them together could unify dependency features differently and
    // leave the emulator a different artifact to compile.
    for f in FUNCTIONS {
        let out = tokio::process::Command::new(&cargo)
            .args(["build", "--manifest-path", "Cargo.toml", "--bin", f])
            .current_dir(workspace_root())
            .kill_on_drop(true)
            .output()
            .await
            .context("running cargo build")?;
        if !out.status.success() {
            bail!(
                "cargo build --bin {f} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(started.elapsed())
}

// ------------------------------------------------------------------------------------ AWS

/// The AWS resources the template creates, in moto.
#[derive(Debug, Clone)]
pub struct AwsSetup {
    pub endpoint: String,
    pub table: String,
    /// `secret://<ARN>` of the keyring document.
    pub keyring_ref: String,
    /// `secret://<ARN>` of the bootstrap admin key.
    pub admin_key_ref: String,
    /// The bootstrap admin key itself.
    pub admin_key: String,
    /// `secret://mcpgw/<unique>`: an operator secret holding an upstream header value.
    pub upstream_secret_ref: String,
    /// The keyring document itself (to seal test records as the functions do).
    pub keyring_document: String,
}

impl AwsSetup {
    /// Creates a fresh table and secrets in moto at `endpoint`; the upstream secret holds
    /// `upstream_secret`.
    pub async fn create(endpoint: &str, upstream_secret: &str) -> Result<Self> {
        mcpgw::crypto::install_tls_provider();
        let sdk = mcpgw::aws::emulator_sdk_config(endpoint);
        let table = mcpgw::testing::unique_name("mcpgw-lambda");
        mcpgw::store::dynamo::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table)
            .await
            .context("creating the DynamoDB table in moto")?;
        let sm = aws_sdk_secretsmanager::Client::new(&sdk);
        // 30 random bytes are 40 base64url characters.
        let keyring = json!({"active": "k1", "k1": mcpgw::crypto::random_token(30)}).to_string();
        let keyring_arn = create_secret(
            &sm,
            &mcpgw::testing::unique_name("mcpgw-lambda-keyring"),
            &keyring,
        )
        .await?;
        let admin_key = mcpgw::crypto::random_token(36);
        let admin_arn = create_secret(
            &sm,
            &mcpgw::testing::unique_name("mcpgw-lambda-admin"),
            &admin_key,
        )
        .await?;
        let upstream_name = format!("mcpgw/{}", mcpgw::testing::unique_name("lambda-echo"));
        create_secret(&sm, &upstream_name, upstream_secret).await?;
        Ok(Self {
            endpoint: endpoint.to_owned(),
            table,
            keyring_ref: format!("secret://{keyring_arn}"),
            admin_key_ref: format!("secret://{admin_arn}"),
            admin_key,
            upstream_secret_ref: format!("secret://{upstream_name}"),
            keyring_document: keyring,
        })
    }

    /// A new operator secret (`mcpgw/<unique>`) holding `value`; returns its reference.
    pub async fn operator_secret(&self, value: &str) -> Result<String> {
        let sm =
            aws_sdk_secretsmanager::Client::new(&mcpgw::aws::emulator_sdk_config(&self.endpoint));
        let name = format!("mcpgw/{}", mcpgw::testing::unique_name("lambda-secret"));
        create_secret(&sm, &name, value).await?;
        Ok(format!("secret://{name}"))
    }

    /// The functions' store: the moto table, through the DynamoDB adapter.
    pub fn store(&self) -> mcpgw::store::dynamo::DynamoStore {
        let client =
            aws_sdk_dynamodb::Client::new(&mcpgw::aws::emulator_sdk_config(&self.endpoint));
        mcpgw::store::dynamo::DynamoStore::new(client, self.table.clone())
    }

    /// The environment of every function, as `infra/template.yaml` sets it (plus moto's
    /// endpoint and dummy credentials instead of the execution role), with `idp` as its
    /// identity-provider parameters.
    pub fn function_env(&self, public_url: &str, idp: &IdpParameters) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("MCPGW_STORE", "dynamodb"),
            ("MCPGW_SECRETS", "aws"),
            ("MCPGW_TABLE_NAME", self.table.as_str()),
            ("MCPGW_KEYRING_SECRET", self.keyring_ref.as_str()),
            (
                "MCPGW_BOOTSTRAP_ADMIN_KEY_SECRET",
                self.admin_key_ref.as_str(),
            ),
            ("MCPGW_PUBLIC_URL", public_url),
            // The template's EgressAllow parameter, as a stack whose peers all live on
            // loopback must set it: in Lambda loopback is denied by default.
            ("MCPGW_EGRESS_DENY", ""),
            ("MCPGW_EGRESS_ALLOW", "127.0.0.0/8,::1"),
            // Not a template parameter (a deployment's OAuth endpoints are https): the peers
            // here (oidc-provider, the Python servers) speak plain http on loopback.
            ("MCPGW_EGRESS_ALLOW_HTTP", "1"),
            // REST events carry the stage in requestContext; without this lambda_http prefixes
            // every path with "/<stage>" and no route matches (see `stage_prefix` in the tests).
            ("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.extend(idp.env());
        env
    }
}

/// The template's identity-provider parameters (`IdpIssuer`, ...). The template passes every
/// one of them to every function as `MCPGW_IDP_*`, empty ones included (an empty variable is
/// unset to the functions), so [`Default`] is a stack without an identity provider: the
/// template's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpParameters {
    pub issuer: String,
    pub audiences: String,
    pub email_claim: String,
    pub groups_claim: String,
    pub admin_groups: String,
    pub required_scopes: String,
    pub allowed_client_ids: String,
}

impl Default for IdpParameters {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audiences: String::new(),
            email_claim: "email".into(),
            groups_claim: "groups".into(),
            admin_groups: String::new(),
            required_scopes: String::new(),
            allowed_client_ids: String::new(),
        }
    }
}

impl IdpParameters {
    /// (template parameter, the variable the template sets from it, value).
    pub fn parameters(&self) -> [(&'static str, &'static str, &str); 7] {
        [
            ("IdpIssuer", "MCPGW_IDP_ISSUER", &self.issuer),
            ("IdpAudiences", "MCPGW_IDP_AUDIENCES", &self.audiences),
            ("IdpEmailClaim", "MCPGW_IDP_EMAIL_CLAIM", &self.email_claim),
            (
                "IdpGroupsClaim",
                "MCPGW_IDP_GROUPS_CLAIM",
                &self.groups_claim,
            ),
            (
                "IdpAdminGroups",
                "MCPGW_IDP_ADMIN_GROUPS",
                &self.admin_groups,
            ),
            (
                "IdpRequiredScopes",
                "MCPGW_IDP_REQUIRED_SCOPES",
                &self.required_scopes,
            ),
            (
                "IdpAllowedClientIds",
                "MCPGW_IDP_ALLOWED_CLIENT_IDS",
                &self.allowed_client_ids,
            ),
        ]
    }

    /// The `MCPGW_IDP_*` variables, as the template sets them.
    pub fn env(&self) -> Vec<(String, String)> {
        self.parameters()
            .into_iter()
            .map(|(_, var, value)| (var.to_owned(), value.to_owned()))
            .collect()
    }
}

async fn create_secret(
    sm: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &str,
) -> Result<String> {
    let out = sm
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .with_context(|| format!("creating secret {name} in moto"))?;
    out.arn.context("moto returned no ARN")
}

// ------------------------------------------------------------------------------- processes

/// (pid, ppid, state) of every process, from /proc.
fn process_table() -> Vec<(u32, u32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so cut at the last ')'.
        let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
        let state = rest.next()?.chars().next()?;
        let ppid = rest.next()?.parse().ok()?;
        Some((pid, ppid, state))
    })
    .collect()
}

/// `root` and every process descending from it.
pub fn process_tree(root: u32) -> Vec<u32> {
    let table = process_table();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            table
                .iter()
                .filter(|(_, ppid, _)| *ppid == parent)
                .map(|(pid, _, _)| *pid),
        );
        i += 1;
    }
    tree
}

/// Whether `pid` runs (a zombie only waits to be reaped: it does not count).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// The command name of `pid` (at most 15 characters, as the kernel keeps it).
pub fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

fn signal(sig: &str, target: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, "--", target])
        .stderr(std::process::Stdio::null())
        .status();
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `cargo lambda watch` (arguments after `$0`) until stdin closes, then stops it with
/// SIGTERM (it stops its function processes itself) and waits for it.
const SUPERVISOR: &str = r#"
"$0" "$@" < /dev/null &
watch=$!
while read -r _; do :; done
kill -TERM "$watch" 2>/dev/null
wait "$watch"
"#;

/// One `cargo lambda watch` serving every function of the workspace on a loopback port.
pub struct Emulator {
    pub port: u16,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    pid: u32,
    log: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// Starts the emulator with `env` for the functions and waits until it answers.
    pub async fn start(cargo_lambda: &Path, env: &[(String, String)]) -> Result<Self> {
        mcpgw::crypto::install_tls_provider();
        let dir = tempfile::tempdir()?;
        let env_file = dir.path().join("functions.env");
        let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&env_file, lines)?;
        let log = dir.path().join("watch.log");
        let log_file = std::fs::File::create(&log)?;
        let port = free_port()?;
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg(cargo_lambda)
            .args([
                "lambda",
                "watch",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
            ])
            .arg(port.to_string())
            .args(["--ignore-changes", "--disable-cors", "--env-file"])
            .arg(&env_file)
            .current_dir(workspace_root())
            .stdin(std::process::Stdio::piped())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // Its own process group: a Ctrl-C in the terminal reaches the test, not the
            // emulator, and the test's cleanup stops it in order.
            .process_group(0);
        // The functions must see only what the template gives them.
        for (k, _) in std::env::vars_os() {
            if let Some(k) = k.to_str()
                && (k.starts_with("MCPGW_") || k.starts_with("AWS_"))
            {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", cargo_lambda.display()))?;
        let pid = child.id().context("emulator exited at once")?;
        let stdin = child.stdin.take();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(600))
            .build()?;
        let emulator = Self {
            port,
            child,
            stdin,
            pid,
            log,
            http,
            _dir: dir,
        };
        emulator.wait_ready().await?;
        Ok(emulator)
    }

    async fn wait_ready(&self) -> Result<()> {
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{}/", self.port);
        loop {
            // The emulator answers `/` with its own 404 ("Default function disabled"); anything
            // else on the port is someone else.
            if let Ok(resp) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && let Ok(body) = resp.json::<Value>().await
                && body["title"] == "Default function disabled"
            {
                return Ok(());
            }
            // The supervisor outlives the emulator (it waits for its stdin to close): the
            // emulator must be its child.
            let watch_gone =
                started.elapsed() > Duration::from_secs(1) && process_tree(self.pid).len() < 2;
            if watch_gone || started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "cargo lambda watch did not start on port {}; its log:\n{}",
                    self.port,
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The emulator's Invoke API URL of `function`.
    pub fn invoke_url(&self, function: &str) -> String {
        format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{function}/invocations",
            self.port
        )
    }

    /// The emulator's function URL of `function` (it builds a payload 2.0 event itself).
    pub fn function_url(&self, function: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}/lambda-url/{function}{path}", self.port)
    }

    /// Invokes `function` with a raw event. A buffered function answers with its JSON result;
    /// a streaming one with the HTTP response its metadata prelude describes, status included
    /// (the emulator decodes the prelude and marks the response
    /// `lambda-runtime-function-response-mode: streaming`).
    pub async fn invoke(&self, function: &str, event: &Value) -> Result<reqwest::Response> {
        self.http
            .post(self.invoke_url(function))
            .header("content-type", "application/json")
            .body(event.to_string())
            .send()
            .await
            .with_context(|| format!("invoking {function}"))
    }

    /// Invokes a buffered `function` and returns its JSON result.
    pub async fn invoke_json(&self, function: &str, event: &Value) -> Result<Value> {
        let resp = self.invoke(function, event).await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!(
                "invoking {function} answered {status}: {text}\nemulator log:\n{}",
                self.log_tail(40)
            );
        }
        serde_json::from_str(&text).with_context(|| format!("{function} returned non-JSON: {text}"))
    }

    /// The supervisor, the emulator and every function process it started.
    pub fn process_ids(&self) -> Vec<u32> {
        process_tree(self.pid)
    }

    /// The last `n` lines of the emulator's output (its own log and the functions').
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- cargo lambda watch on port {} (last 60 lines)\n{}",
                self.port,
                self.log_tail(60)
            );
        }
        let tree = process_tree(self.pid);
        // EOF on the supervisor's stdin: it sends SIGTERM to the emulator and waits for it.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let _ = self.child.try_wait();
            if !tree.iter().any(|p| process_alive(*p)) {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("cargo lambda watch ignored SIGTERM for 15 s: killing its processes");
                signal("-KILL", &format!("-{}", self.pid));
                for pid in tree.iter().filter(|p| process_alive(**p)) {
                    // Each function runs in a session (and group) of its own.
                    signal("-KILL", &format!("-{pid}"));
                    signal("-KILL", &pid.to_string());
                }
                std::thread::sleep(Duration::from_millis(200));
                let _ = self.child.try_wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// --------------------------------------------------------------------------- event fixtures

/// Reads `tests/events/NAME.json` and replaces each placeholder (`__ADMIN_KEY__`, ...) in every
/// string, the body included (decoded first when base64), fixing `Content-Length` to match.
pub fn load_event(name: &str, vars: &[(&str, &str)]) -> Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(format!("{name}.json"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut event: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let body = event.get("body").cloned();
    substitute(&mut event, vars);
    if let Some(Value::String(body)) = body {
        let base64 = event["isBase64Encoded"] == true;
        let raw = if base64 {
            B64.decode(&body).context("fixture body is not base64")?
        } else {
            body.into_bytes()
        };
        let raw = substitute_str(
            &String::from_utf8(raw).context("fixture body is not UTF-8")?,
            vars,
        )
        .into_bytes();
        set_body(&mut event, Some(&raw), base64);
    }
    Ok(event)
}

fn substitute_str(s: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(s.to_owned(), |s, (k, v)| s.replace(k, v))
}

fn substitute(v: &mut Value, vars: &[(&str, &str)]) {
    match v {
        Value::String(s) => *s = substitute_str(s, vars),
        Value::Array(a) => a.iter_mut().for_each(|v| substitute(v, vars)),
        Value::Object(o) => o
            .iter_mut()
            .filter(|(k, _)| *k != "body")
            .for_each(|(_, v)| substitute(v, vars)),
        _ => {}
    }
}

/// Sets an event's body (base64 or text) and its `Content-Length` header(s), in whichever
/// case the event spells them; `None` removes the body and the header.
pub fn set_body(event: &mut Value, body: Option<&[u8]>, base64: bool) {
    let (body_value, len) = match body {
        Some(b) if base64 => (Value::String(B64.encode(b)), Some(b.len())),
        Some(b) => (
            Value::String(String::from_utf8_lossy(b).into_owned()),
            Some(b.len()),
        ),
        None => (Value::Null, None),
    };
    event["body"] = body_value;
    event["isBase64Encoded"] = Value::Bool(base64 && body.is_some());
    for (field, multi) in [("headers", false), ("multiValueHeaders", true)] {
        let Some(map) = event.get_mut(field).and_then(Value::as_object_mut) else {
            continue;
        };
        let names: Vec<String> = map
            .keys()
            .filter(|k| k.eq_ignore_ascii_case("content-length"))
            .cloned()
            .collect();
        for name in names {
            match len {
                Some(n) if multi => map[&name] = json!([n.to_string()]),
                Some(n) => map[&name] = json!(n.to_string()),
                None => {
                    map.remove(&name);
                }
            }
        }
    }
}

/// The body of a Lambda proxy response (v1 or v2), decoded.
pub fn proxy_body(resp: &Value) -> Result<Vec<u8>> {
    let body = resp["body"].as_str().unwrap_or_default();
    if resp["isBase64Encoded"] == true {
        Ok(B64.decode(body)?)
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

/// The first JSON-RPC message of an MCP response body: plain JSON, or the first SSE `data:`.
pub fn mcp_message(body: &[u8]) -> Result<Value> {
    let text = std::str::from_utf8(body)?;
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|d| serde_json::from_str(d.trim()).ok())
        .with_context(|| format!("no JSON-RPC message in: {text}"))
}

// ----------------------------------------------------------------------- fake API Gateway

/// Which API Gateway flavour the fake speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKind {
    /// REST API, Lambda proxy integration (payload 1.0), URLs prefixed with the stage.
    Rest { stage: String },
    /// HTTP API, payload format 2.0, `$default` stage (no prefix). Cannot stream.
    Http,
}

/// How API Gateway invokes a function: Invoke (buffered JSON result) or
/// InvokeWithResponseStream (metadata prelude, then the body as it is produced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    Buffered,
    Stream,
}

/// Where one function's integration points.
#[derive(Debug, Clone)]
pub struct Integration {
    /// Base URL of the emulator serving the function (`http://127.0.0.1:PORT`).
    pub emulator: String,
    pub transfer: Transfer,
}

impl Integration {
    pub fn new(emulator: &Emulator, transfer: Transfer) -> Self {
        Self {
            emulator: format!("http://127.0.0.1:{}", emulator.port),
            transfer,
        }
    }
}

/// One route of `infra/template.yaml`: methods (empty = ANY), path pattern, function.
struct Route {
    methods: &'static [&'static str],
    pattern: &'static str,
    function: &'static str,
}

const ROUTES: &[Route] = &[
    Route {
        methods: &["POST", "GET", "DELETE"],
        pattern: "/mcp/{endpoint}",
        function: "mcp-proxy",
    },
    Route {
        methods: &["GET"],
        pattern: "/.well-known/oauth-protected-resource/mcp/{endpoint}",
        function: "mcp-proxy",
    },
    Route {
        methods: &["GET"],
        pattern: "/oauth/connect/{server}",
        function: "oauth-callback",
    },
    Route {
        methods: &["GET"],
        pattern: "/oauth/callback/{server}",
        function: "oauth-callback",
    },
    Route {
        methods: &[],
        pattern: "/admin/{proxy+}",
        function: "admin-api",
    },
    // `{proxy+}` needs at least one segment: the bare `/me` is a route of its own.
    Route {
        methods: &[],
        pattern: "/me",
        function: "admin-api",
    },
    Route {
        methods: &[],
        pattern: "/me/{proxy+}",
        function: "admin-api",
    },
    // The web console, like `/me`: the bare path and everything under it.
    Route {
        methods: &[],
        pattern: "/console",
        function: "admin-api",
    },
    Route {
        methods: &[],
        pattern: "/console/{proxy+}",
        function: "admin-api",
    },
    Route {
        methods: &["GET"],
        pattern: "/healthz",
        function: "admin-api",
    },
];

/// A request matched to a route.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub function: &'static str,
    /// The resource (REST) or route key path (HTTP API), e.g. `/mcp/{endpoint}`.
    pub pattern: &'static str,
    /// Whether the route accepts any method (`ANY`).
    pub any_method: bool,
    /// The request path without the stage.
    pub path: String,
    pub params: Vec<(String, String)>,
}

/// Matches `path` (stage-less) and `method` against the template's routes.
pub fn match_route(method: &str, path: &str) -> Option<RouteMatch> {
    ROUTES.iter().find_map(|r| {
        if !r.methods.is_empty() && !r.methods.contains(&method) {
            return None;
        }
        let params = match_pattern(r.pattern, path)?;
        Some(RouteMatch {
            function: r.function,
            pattern: r.pattern,
            any_method: r.methods.is_empty(),
            path: path.to_owned(),
            params,
        })
    })
}

fn match_pattern(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
    let pat: Vec<&str> = pattern.split('/').skip(1).collect();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let mut params = Vec::new();
    for (i, p) in pat.iter().enumerate() {
        if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix("+}")) {
            let rest = segs
                .get(i..)
                .filter(|r| !r.is_empty() && !r[0].is_empty())?;
            params.push((name.to_owned(), rest.join("/")));
            return Some(params);
        }
        let seg = segs.get(i)?;
        if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if seg.is_empty() {
                return None;
            }
            params.push((name.to_owned(), (*seg).to_owned()));
        } else if p != seg {
            return None;
        }
    }
    (segs.len() == pat.len()).then_some(params)
}

/// An HTTP request as the client sent it: header names keep their case.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    pub method: String,
    /// Path and query, as on the request line.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub source_ip: String,
    /// The gateway's own `host:port` (for `X-Forwarded-Port` and the domain name).
    pub local: SocketAddr,
}

impl IncomingRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn path_and_query(&self) -> (&str, &str) {
        self.target.split_once('?').unwrap_or((&self.target, ""))
    }
}

/// `%XX` decoding (API Gateway decodes query parameters; `+` stays `+`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters in order, decoded.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Groups values by name, keeping the first-seen spelling of the name and the order.
fn group<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    case_insensitive: bool,
) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in pairs {
        let found = out.iter_mut().find(|(n, _)| {
            if case_insensitive {
                n.eq_ignore_ascii_case(k)
            } else {
                n == k
            }
        });
        match found {
            Some((_, vals)) => vals.push(v.to_owned()),
            None => out.push((k.to_owned(), vec![v.to_owned()])),
        }
    }
    out
}

fn random_hex(bytes: usize) -> String {
    let raw = URL_SAFE_NO_PAD
        .decode(mcpgw::crypto::random_token(bytes))
        .expect("random_token is base64url");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn request_id() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The headers API Gateway adds to what the client sent (REST spelling).
fn with_forwarding_headers(req: &IncomingRequest) -> Vec<(String, String)> {
    let mut headers = req.headers.clone();
    let xff = match req.header("x-forwarded-for") {
        Some(prev) => format!("{prev}, {}", req.source_ip),
        None => req.source_ip.clone(),
    };
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("x-forwarded-for"));
    headers.push(("X-Forwarded-For".into(), xff));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (name, value) in [
        ("X-Forwarded-Port", req.local.port().to_string()),
        ("X-Forwarded-Proto", "http".to_owned()),
        (
            "X-Amzn-Trace-Id",
            format!("Root=1-{now:08x}-{}", random_hex(12)),
        ),
    ] {
        if req.header(name).is_none() {
            headers.push((name.to_owned(), value));
        }
    }
    headers
}

fn request_time(now: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    now.format(&fmt).unwrap_or_default()
}

fn body_fields(body: &[u8]) -> (Value, bool) {
    if body.is_empty() {
        (Value::Null, false)
    } else {
        (Value::String(B64.encode(body)), true)
    }
}

fn params_value(params: &[(String, String)]) -> Value {
    if params.is_empty() {
        Value::Null
    } else {
        Value::Object(
            params
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }
}

/// The REST API (v1) proxy event API Gateway sends for `req` on `route` in `stage`.
pub fn rest_event(
    req: &IncomingRequest,
    stage: &str,
    route: &RouteMatch,
    request_id: &str,
) -> Value {
    let headers = group(
        with_forwarding_headers(req)
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        true,
    );
    let single: Map<String, Value> = headers
        .iter()
        .map(|(k, vs)| {
            (
                k.clone(),
                Value::String(vs.last().cloned().unwrap_or_default()),
            )
        })
        .collect();
    let multi: Map<String, Value> = headers
        .iter()
        .map(|(k, vs)| (k.clone(), json!(vs)))
        .collect();
    let query = parse_query(req.path_and_query().1);
    let query = group(query.iter().map(|(k, v)| (k.as_str(), v.as_str())), false);
    let (qs, mvqs) = if query.is_empty() {
        (Value::Null, Value::Null)
    } else {
        (
            Value::Object(
                query
                    .iter()
                    .map(|(k, vs)| (k.clone(), json!(vs.last())))
                    .collect(),
            ),
            Value::Object(query.iter().map(|(k, vs)| (k.clone(), json!(vs))).collect()),
        )
    };
    let (body, is_base64) = body_fields(&req.body);
    let now = time::OffsetDateTime::now_utc();
    let host = req
        .header("host")
        .map(str::to_owned)
        .unwrap_or_else(|| req.local.to_string());
    let user_agent = req.header("user-agent");
    json!({
        "resource": route.pattern,
        "path": route.path,
        "httpMethod": req.method,
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": qs,
        "multiValueQueryStringParameters": mvqs,
        "pathParameters": params_value(&route.params),
        "stageVariables": null,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "fakeapi001",
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or_default(),
            "extendedRequestId": request_id,
            "httpMethod": req.method,
            "identity": {
                "accessKey": null, "accountId": null, "caller": null,
                "cognitoAuthenticationProvider": null, "cognitoAuthenticationType": null,
                "cognitoIdentityId": null, "cognitoIdentityPoolId": null, "principalOrgId": null,
                "sourceIp": req.source_ip, "user": null, "userAgent": user_agent, "userArn": null
            },
            "path": format!("/{stage}{}", route.path),
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": request_time(now),
            "requestTimeEpoch": (now.unix_timestamp_nanos() / 1_000_000) as i64,
            "resourceId": "fake01",
            "resourcePath": route.pattern,
            "stage": stage
        },
        "body": body,
        "isBase64Encoded": is_base64
    })
}

/// The HTTP API payload 2.0 event API Gateway sends for `req` on `route` (`$default` stage).
pub fn http_event(req: &IncomingRequest, route: &RouteMatch, request_id: &str) -> Value {
    // HTTP APIs lowercase header names, join repeated headers with commas, and move cookies
    // out of the headers into `cookies`.
    let forwarded = with_forwarding_headers(req);
    let mut cookies: Vec<String> = Vec::new();
    let mut headers = Map::new();
    let lowered: Vec<(String, &str)> = forwarded
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    for (name, values) in group(lowered.iter().map(|(k, v)| (k.as_str(), *v)), false) {
        if name == "cookie" {
            cookies.extend(
                values
                    .iter()
                    .flat_map(|v| v.split(';'))
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty()),
            );
        } else {
            headers.insert(name, Value::String(values.join(",")));
        }
    }
    let (path, raw_query) = req.path_and_query();
    let query = parse_query(raw_query);
    let query = group(query.iter().map(|(k, v)| (k.as_str(), v.as_str())), false);
    let (body, is_base64) = body_fields(&req.body);
    let now = time::OffsetDateTime::now_utc();
    let host = req
        .header("host")
        .map(str::to_owned)
        .unwrap_or_else(|| req.local.to_string());
    let route_key = format!(
        "{} {}",
        if route.any_method {
            "ANY"
        } else {
            req.method.as_str()
        },
        route.pattern
    );
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "fakeapi002",
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or_default(),
            "http": {
                "method": req.method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": req.source_ip,
                "userAgent": req.header("user-agent").unwrap_or_default()
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": request_time(now),
            "timeEpoch": (now.unix_timestamp_nanos() / 1_000_000) as i64
        },
        "isBase64Encoded": is_base64
    });
    if !body.is_null() {
        event["body"] = body;
    }
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(
            query
                .iter()
                .map(|(k, vs)| (k.clone(), Value::String(vs.join(","))))
                .collect(),
        );
    }
    if !route.params.is_empty() {
        event["pathParameters"] = params_value(&route.params);
    }
    event
}

/// An HTTP response the gateway writes back.
pub struct OutgoingResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: OutgoingBody,
}

pub enum OutgoingBody {
    Full(Bytes),
    /// A streaming integration: the body is relayed as the function produces it.
    Stream(reqwest::Response),
}

fn gateway_json(status: u16, message: &str) -> OutgoingResponse {
    OutgoingResponse {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: OutgoingBody::Full(Bytes::from(json!({"message": message}).to_string())),
    }
}

/// Headers that describe one hop's framing, not the response.
fn is_hop_header(name: &str) -> bool {
    [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "lambda-runtime-function-response-mode",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

fn json_str_headers(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Turns a buffered Lambda proxy result into HTTP, as API Gateway does; `None` when it is not a
/// valid proxy response (API Gateway answers 502 then).
pub fn proxy_response(kind: &ApiKind, result: &Value) -> Option<OutgoingResponse> {
    let status = u16::try_from(result.get("statusCode")?.as_u64()?).ok()?;
    let mut headers: Vec<(String, String)> = Vec::new();
    match kind {
        ApiKind::Rest { .. } => {
            // multiValueHeaders win; `headers` adds the names they lack.
            if let Some(m) = result.get("multiValueHeaders").and_then(Value::as_object) {
                for (k, vs) in m {
                    for v in vs.as_array()? {
                        headers.push((k.clone(), v.as_str()?.to_owned()));
                    }
                }
            }
            for (k, v) in json_str_headers(&result["headers"]) {
                if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(&k)) {
                    headers.push((k, v));
                }
            }
        }
        ApiKind::Http => {
            headers = json_str_headers(&result["headers"]);
            if let Some(cookies) = result.get("cookies").and_then(Value::as_array) {
                headers.extend(
                    cookies
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|c| ("Set-Cookie".to_owned(), c.to_owned())),
                );
            }
        }
    }
    headers.retain(|(k, _)| !is_hop_header(k));
    let body = proxy_body(result).ok()?;
    Some(OutgoingResponse {
        status,
        headers,
        body: OutgoingBody::Full(Bytes::from(body)),
    })
}

struct Gateway {
    kind: ApiKind,
    integrations: HashMap<&'static str, Integration>,
    http: reqwest::Client,
}

impl Gateway {
    async fn handle(&self, req: IncomingRequest) -> OutgoingResponse {
        let (path, _) = req.path_and_query();
        let path = match &self.kind {
            ApiKind::Rest { stage } => {
                let prefix = format!("/{stage}");
                match path.strip_prefix(&prefix) {
                    Some("") => "/".to_owned(),
                    Some(rest) if rest.starts_with('/') => rest.to_owned(),
                    // execute-api URLs without a deployed stage are refused before any route.
                    _ => return gateway_json(403, "Forbidden"),
                }
            }
            ApiKind::Http => path.to_owned(),
        };
        let Some(route) = match_route(&req.method, &path) else {
            return match self.kind {
                ApiKind::Rest { .. } => gateway_json(403, "Missing Authentication Token"),
                ApiKind::Http => gateway_json(404, "Not Found"),
            };
        };
        let Some(integration) = self.integrations.get(route.function) else {
            return gateway_json(500, "Internal server error");
        };
        let rid = request_id();
        let event = match &self.kind {
            ApiKind::Rest { stage } => rest_event(&req, stage, &route, &rid),
            ApiKind::Http => http_event(&req, &route, &rid),
        };
        let url = format!(
            "{}/2015-03-31/functions/{}/invocations",
            integration.emulator, route.function
        );
        let resp = match self.http.post(&url).body(event.to_string()).send().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("fake API Gateway: invoking {} failed: {e}", route.function);
                return gateway_json(502, "Internal server error");
            }
        };
        let mut out = self
            .convert(integration.transfer, route.function, resp)
            .await;
        out.headers.push(("x-amzn-RequestId".into(), rid));
        out
    }

    async fn convert(
        &self,
        transfer: Transfer,
        function: &str,
        resp: reqwest::Response,
    ) -> OutgoingResponse {
        let streamed = resp
            .headers()
            .get("lambda-runtime-function-response-mode")
            .is_some_and(|v| v == "streaming");
        // A streamed response carries the prelude's status (401, 404, ...); otherwise a
        // non-2xx status means the invocation itself failed.
        if !streamed && !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            eprintln!("fake API Gateway: {function} failed: {text}");
            return gateway_json(502, "Internal server error");
        }
        match (transfer, streamed) {
            (Transfer::Stream, true) => {
                // The emulator has already split the metadata prelude from the body, as API
                // Gateway does: relay its status and headers, then the body as it comes.
                let headers = resp
                    .headers()
                    .iter()
                    .filter(|(k, _)| !is_hop_header(k.as_str()))
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                OutgoingResponse {
                    status: resp.status().as_u16(),
                    headers,
                    body: OutgoingBody::Stream(resp),
                }
            }
            (Transfer::Buffered, false) => {
                let text = resp.text().await.unwrap_or_default();
                match serde_json::from_str(&text)
                    .ok()
                    .and_then(|v| proxy_response(&self.kind, &v))
                {
                    Some(out) => out,
                    None => {
                        eprintln!(
                            "fake API Gateway: malformed Lambda proxy response from {function}: {text}"
                        );
                        gateway_json(502, "Internal server error")
                    }
                }
            }
            (Transfer::Stream, false) => {
                // API Gateway waits for a JSON prelude and the 8-byte null delimiter; a
                // buffered function never sends them.
                eprintln!(
                    "fake API Gateway: {function} answered a response-streaming integration with a buffered \
                     result (is MCPGW_LAMBDA_STREAMING=1 set on it?)"
                );
                gateway_json(502, "Internal server error")
            }
            (Transfer::Buffered, true) => {
                eprintln!(
                    "fake API Gateway: {function} streamed its response to a buffered integration"
                );
                gateway_json(502, "Internal server error")
            }
        }
    }
}

/// A gateway bound to a loopback port, not serving yet (its URL is needed for
/// `MCPGW_PUBLIC_URL` before the functions start).
pub struct BoundGateway {
    listener: TcpListener,
    kind: ApiKind,
    base: String,
}

impl BoundGateway {
    pub async fn bind(kind: ApiKind) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let base = match &kind {
            ApiKind::Rest { stage } => format!("http://{addr}/{stage}"),
            ApiKind::Http => format!("http://{addr}"),
        };
        Ok(Self {
            listener,
            kind,
            base,
        })
    }

    /// The public base URL clients use (the stage included for REST).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Serves with `integrations` (function name -> integration) until dropped.
    pub fn serve(self, integrations: Vec<(&'static str, Integration)>) -> Result<FakeApiGateway> {
        mcpgw::crypto::install_tls_provider();
        let gateway = Arc::new(Gateway {
            kind: self.kind.clone(),
            integrations: integrations.into_iter().collect(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(600))
                .build()?,
        });
        let listener = self.listener;
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    let local = stream.local_addr().unwrap_or(peer);
                    let (rd, wr) = stream.into_split();
                    if let Err(e) =
                        serve_connection(gateway, BufReader::new(rd), wr, peer, local).await
                    {
                        let gone = e.downcast_ref::<std::io::Error>().is_some_and(|e| {
                            matches!(
                                e.kind(),
                                std::io::ErrorKind::BrokenPipe
                                    | std::io::ErrorKind::ConnectionReset
                            )
                        });
                        if !gone {
                            eprintln!("fake API Gateway: connection from {peer}: {e:#}");
                        }
                    }
                });
            }
        });
        Ok(FakeApiGateway {
            base: self.base,
            kind: self.kind,
            task,
        })
    }
}

/// A fake API Gateway in front of the emulated functions, serving until dropped.
pub struct FakeApiGateway {
    /// Public base URL (`http://127.0.0.1:PORT/prod` for REST).
    pub base: String,
    pub kind: ApiKind,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiGateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn mcp_url(&self, endpoint: &str) -> String {
        self.url(&format!("/mcp/{endpoint}"))
    }
}

/// Reads requests off one connection and answers them, keeping it open while the client does.
async fn serve_connection(
    gateway: Arc<Gateway>,
    mut rd: BufReader<OwnedReadHalf>,
    mut wr: OwnedWriteHalf,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<()> {
    loop {
        let Some((req, keep_alive)) = read_request(&mut rd, &mut wr, peer, local).await? else {
            return Ok(());
        };
        let resp = gateway.handle(req).await;
        write_response(&mut wr, resp, keep_alive).await?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// One request, or `None` when the client closed the connection between requests.
async fn read_request(
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Option<(IncomingRequest, bool)>> {
    let mut head = Vec::new();
    loop {
        let n = rd.read_until(b'\n', &mut head).await?;
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a request head");
        }
        if head == b"\r\n" {
            head.clear(); // a stray CRLF between requests
        } else if head.ends_with(b"\r\n\r\n") {
            break;
        } else if head.len() > 64 * 1024 {
            bail!("request head over 64 KiB");
        }
    }
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut slots);
    if parsed.parse(&head)?.is_partial() {
        bail!("incomplete request head");
    }
    let method = parsed.method.context("no method")?.to_owned();
    let target = parsed.path.context("no request target")?.to_owned();
    let http10 = parsed.version == Some(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut req = IncomingRequest {
        method,
        target,
        headers,
        body: Vec::new(),
        source_ip: peer.ip().to_string(),
        local,
    };
    let connection = req
        .header("connection")
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let keep_alive = if http10 {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        req.body = read_chunked(rd).await?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.trim().parse().context("bad Content-Length")?;
        let mut body = vec![0; len];
        rd.read_exact(&mut body).await?;
        req.body = body;
    }
    Ok(Some((req, keep_alive)))
}

async fn read_chunked(rd: &mut BufReader<OwnedReadHalf>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        rd.read_line(&mut line).await?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or_default(), 16)
            .context("bad chunk size")?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if rd.read_line(&mut line).await? == 0 || line == "\r\n" {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        rd.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        rd.read_exact(&mut crlf).await?;
    }
}

async fn write_response(
    wr: &mut OwnedWriteHalf,
    resp: OutgoingResponse,
    keep_alive: bool,
) -> Result<()> {
    let reason = reqwest::StatusCode::from_u16(resp.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", resp.status);
    for (k, v) in &resp.headers {
        if k.contains(['\r', '\n']) || v.contains(['\r', '\n']) {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    match resp.body {
        OutgoingBody::Full(body) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            wr.write_all(head.as_bytes()).await?;
            wr.write_all(&body).await?;
        }
        OutgoingBody::Stream(mut upstream) => {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            wr.write_all(head.as_bytes()).await?;
            wr.flush().await?;
            while let Some(chunk) = upstream.chunk().await? {
                if chunk.is_empty() {
                    continue;
                }
                wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                wr.write_all(&chunk).await?;
                wr.write_all(b"\r\n").await?;
                wr.flush().await?;
            }
            wr.write_all(b"0\r\n\r\n").await?;
        }
    }
    wr.flush().await?;
    Ok(())
}

// ---------------------------------------------------------------------------- the stack

/// Everything of a deployment, emulated: AWS resources in moto, the functions under two
/// emulators (buffered, and response-streaming for the REST API's mcp-proxy integrations),
/// a REST API (stage `prod`) and an HTTP API.
pub struct LambdaStack {
    pub aws: AwsSetup,
    /// Every function, buffered (`lambda_http::run`).
    pub buffered: Emulator,
    /// Every function with `MCPGW_LAMBDA_STREAMING=1`; only mcp-proxy is used, as in the
    /// template where only mcp-proxy's REST integrations stream.
    pub streaming: Emulator,
    /// REST API as in the template: mcp-proxy STREAM, the others BUFFERED. `MCPGW_PUBLIC_URL`
    /// is its base URL.
    pub rest: FakeApiGateway,
    /// HTTP API (payload 2.0), all BUFFERED.
    pub http: FakeApiGateway,
    /// The template's identity-provider parameters the functions run with.
    pub idp: IdpParameters,
}

impl LambdaStack {
    /// Deploys, with `idp` as the template's identity-provider parameters.
    pub async fn start(
        cargo_lambda: &Path,
        moto: &str,
        upstream_secret: &str,
        idp: IdpParameters,
    ) -> Result<Self> {
        let aws = AwsSetup::create(moto, upstream_secret).await?;
        let rest = BoundGateway::bind(ApiKind::Rest {
            stage: STAGE.into(),
        })
        .await?;
        let http = BoundGateway::bind(ApiKind::Http).await?;
        let env = aws.function_env(rest.base(), &idp);
        let mut streaming_env = env.clone();
        streaming_env.push(("MCPGW_LAMBDA_STREAMING".into(), "1".into()));
        let (buffered, streaming) = tokio::try_join!(
            Emulator::start(cargo_lambda, &env),
            Emulator::start(cargo_lambda, &streaming_env)
        )?;
        let rest = rest.serve(
            FUNCTIONS
                .iter()
                .map(|&f| {
                    let i = if f == "mcp-proxy" {
                        Integration::new(&streaming, Transfer::Stream)
                    } else {
                        Integration::new(&buffered, Transfer::Buffered)
                    };
                    (f, i)
                })
                .collect(),
        )?;
        let http = http.serve(
            FUNCTIONS
                .iter()
                .map(|&f| (f, Integration::new(&buffered, Transfer::Buffered)))
                .collect(),
        )?;
        Ok(Self {
            aws,
            buffered,
            streaming,
            rest,
            http,
            idp,
        })
    }

    /// Every function's environment (the buffered emulator's: no `MCPGW_LAMBDA_STREAMING`).
    pub fn function_env(&self) -> Vec<(String, String)> {
        self.aws.function_env(&self.rest.base, &self.idp)
    }

    /// Every process the stack started (supervisors, emulators, functions).
    pub fn process_ids(&self) -> Vec<u32> {
        let mut ids = self.buffered.process_ids();
        ids.extend(self.streaming.process_ids());
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> IncomingRequest {
        IncomingRequest {
            method: method.into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            source_ip: "127.0.0.1".into(),
            local: "127.0.0.1:4000".parse().unwrap(),
        }
    }

    #[test]
    fn routes_follow_the_template() {
        let m = match_route("POST", "/mcp/everything").unwrap();
        assert_eq!(
            (m.function, m.pattern, m.params.clone()),
            (
                "mcp-proxy",
                "/mcp/{endpoint}",
                vec![("endpoint".into(), "everything".into())]
            )
        );
        let m = match_route("PATCH", "/admin/servers/echo").unwrap();
        assert_eq!(
            (m.function, m.any_method, m.params[0].1.as_str()),
            ("admin-api", true, "servers/echo")
        );
        assert_eq!(
            match_route("GET", "/healthz").unwrap().function,
            "admin-api"
        );
        assert_eq!(
            match_route("GET", "/.well-known/oauth-protected-resource/mcp/x")
                .unwrap()
                .function,
            "mcp-proxy"
        );
        assert_eq!(
            match_route("GET", "/oauth/callback/x").unwrap().function,
            "oauth-callback"
        );
        // The console's pages and forms reach the admin function.
        for (method, path) in [
            ("GET", "/console"),
            ("GET", "/console/login"),
            ("POST", "/console/admin/server-groups"),
        ] {
            assert_eq!(match_route(method, path).unwrap().function, "admin-api");
        }
        // GET /me (who am I) and its sub-resources both reach the admin API.
        let m = match_route("GET", "/me").unwrap();
        assert_eq!((m.function, m.pattern), ("admin-api", "/me"));
        assert!(m.params.is_empty());
        let m = match_route("GET", "/me/api-keys").unwrap();
        assert_eq!(
            (m.function, m.pattern, m.params[0].1.as_str()),
            ("admin-api", "/me/{proxy+}", "api-keys")
        );
        for (method, path) in [
            ("PUT", "/mcp/x"),
            ("POST", "/mcp/x/y"),
            ("GET", "/mcp/"),
            ("GET", "/admin"),
            ("GET", "/admin/"),
            ("GET", "/nope"),
        ] {
            assert!(match_route(method, path).is_none(), "{method} {path}");
        }
    }

    /// The API resources of `infra/template.yaml`, read line by line (the template is
    /// regular: two-space logical ids, `Key: value` properties, `DependsOn` lists): logical id,
    /// first value of each property key, and the `DependsOn` entries.
    struct TemplateResource {
        id: String,
        props: HashMap<String, String>,
        depends_on: Vec<String>,
    }

    fn template_resources() -> Vec<TemplateResource> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
        let text = std::fs::read_to_string(&path).expect("read infra/template.yaml");
        let mut out: Vec<TemplateResource> = Vec::new();
        let mut in_resources = false;
        let mut in_depends = false;
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if !line.starts_with(' ') {
                in_resources = line == "Resources:";
                continue;
            }
            if !in_resources {
                continue;
            }
            if line.starts_with("  ") && !line.starts_with("   ") {
                let id = trimmed.strip_suffix(':').expect("a logical id");
                out.push(TemplateResource {
                    id: id.to_owned(),
                    props: HashMap::new(),
                    depends_on: Vec::new(),
                });
                in_depends = false;
                continue;
            }
            let res = out.last_mut().expect("a resource");
            if let Some(item) = trimmed.strip_prefix("- ") {
                if in_depends {
                    res.depends_on.push(item.to_owned());
                }
                continue;
            }
            in_depends = trimmed == "DependsOn:";
            if let Some((k, v)) = trimmed.split_once(": ") {
                res.props
                    .entry(k.to_owned())
                    .or_insert_with(|| v.trim_matches('"').to_owned());
            }
        }
        out
    }

    /// The function an integration URI or target names.
    fn function_named(value: &str) -> &'static str {
        [
            ("McpProxyFunction", "mcp-proxy"),
            ("OAuthCallbackFunction", "oauth-callback"),
            ("AdminApiFunction", "admin-api"),
        ]
        .into_iter()
        .find(|(id, _)| value.contains(&format!("{id}.Arn")))
        .unwrap_or_else(|| panic!("no function in {value}"))
        .1
    }

    /// `ROUTES` is the template's route table, for the REST API (resource tree + methods) and
    /// the HTTP API (route keys) alike, and each API's deployment waits for all of its routes.
    #[test]
    fn routes_are_exactly_the_template_routes() {
        use std::collections::BTreeSet;
        let resources = template_resources();
        let of_type = |ty: &str| {
            resources
                .iter()
                .filter(|r| r.props.get("Type").map(String::as_str) == Some(ty))
                .collect::<Vec<_>>()
        };
        let expected: BTreeSet<(String, String, &str)> = ROUTES
            .iter()
            .flat_map(|r| {
                let methods = if r.methods.is_empty() {
                    vec!["ANY"]
                } else {
                    r.methods.to_vec()
                };
                methods
                    .into_iter()
                    .map(|m| (m.to_owned(), r.pattern.to_owned(), r.function))
            })
            .collect();

        // REST: each method's path is its resource's PathParts from the root.
        let parents: HashMap<&str, (&str, &str)> = of_type("AWS::ApiGateway::Resource")
            .iter()
            .map(|r| {
                let parent = r.props["ParentId"].as_str();
                let parent = parent.strip_prefix("!Ref ").unwrap_or("");
                (r.id.as_str(), (parent, r.props["PathPart"].as_str()))
            })
            .collect();
        let path_of = |resource: &str| {
            let mut parts = Vec::new();
            let mut id = resource.to_owned();
            while let Some((parent, part)) = parents.get(id.as_str()) {
                parts.push(*part);
                id = (*parent).to_owned();
            }
            parts.reverse();
            format!("/{}", parts.join("/"))
        };
        let methods = of_type("AWS::ApiGateway::Method");
        let rest: BTreeSet<(String, String, &str)> = methods
            .iter()
            .map(|m| {
                let resource = m.props["ResourceId"].trim_start_matches("!Ref ");
                (
                    m.props["HttpMethod"].clone(),
                    path_of(resource),
                    function_named(&m.props["Uri"]),
                )
            })
            .collect();
        assert_eq!(rest, expected, "REST API methods");
        let deployments = of_type("AWS::ApiGateway::Deployment");
        assert_eq!(deployments.len(), 1);
        let waits: BTreeSet<&str> = deployments[0]
            .depends_on
            .iter()
            .map(String::as_str)
            .collect();
        let all: BTreeSet<&str> = methods.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(
            waits, all,
            "the REST deployment must depend on every method"
        );

        // HTTP API: route keys, targets through the integrations.
        let integrations: HashMap<&str, &str> = of_type("AWS::ApiGatewayV2::Integration")
            .iter()
            .map(|i| (i.id.as_str(), function_named(&i.props["IntegrationUri"])))
            .collect();
        let routes = of_type("AWS::ApiGatewayV2::Route");
        let http: BTreeSet<(String, String, &str)> = routes
            .iter()
            .map(|r| {
                let (method, path) = r.props["RouteKey"].split_once(' ').unwrap();
                let target = r.props["Target"]
                    .trim_start_matches("!Sub ")
                    .trim_matches('"')
                    .trim_start_matches("integrations/${")
                    .trim_end_matches('}');
                (method.to_owned(), path.to_owned(), integrations[target])
            })
            .collect();
        assert_eq!(http, expected, "HTTP API routes");
        let stages = of_type("AWS::ApiGatewayV2::Stage");
        assert_eq!(stages.len(), 1);
        let waits: BTreeSet<&str> = stages[0].depends_on.iter().map(String::as_str).collect();
        let all: BTreeSet<&str> = routes.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(waits, all, "the HTTP stage must depend on every route");
    }

    /// [`IdpParameters`] are the template's: each parameter sets its `MCPGW_IDP_*` variable on
    /// every function (Globals), with the template's default, and nothing else does.
    #[test]
    fn idp_parameters_are_the_templates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
        let text = std::fs::read_to_string(&path).expect("read infra/template.yaml");
        let lines: Vec<&str> = text.lines().collect();
        let default_of = |param: &str| -> Option<String> {
            let at = lines.iter().position(|l| *l == format!("  {param}:"))?;
            lines[at + 1..]
                .iter()
                .take_while(|l| l.starts_with("    "))
                .find_map(|l| l.trim().strip_prefix("Default: "))
                .map(|v| v.trim_matches('"').to_owned())
        };
        let defaults = IdpParameters::default();
        let set: Vec<&str> = lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| l.starts_with("MCPGW_IDP_"))
            .collect();
        let expected: Vec<String> = defaults
            .parameters()
            .iter()
            .map(|(param, var, _)| format!("{var}: !Ref {param}"))
            .collect();
        assert_eq!(set, expected);
        for (param, _, default) in defaults.parameters() {
            assert_eq!(default_of(param).as_deref(), Some(default), "{param}");
        }
    }

    /// The egress parameters reach every function (Globals) as `MCPGW_EGRESS_*`, empty by
    /// default (the policy's own defaults: loopback denied in Lambda).
    #[test]
    fn egress_parameters_are_the_templates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
        let text = std::fs::read_to_string(&path).expect("read infra/template.yaml");
        let set: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("MCPGW_EGRESS_"))
            .collect();
        assert_eq!(
            set,
            [
                "MCPGW_EGRESS_DENY: !Ref EgressDeny",
                "MCPGW_EGRESS_ALLOW: !Ref EgressAllow"
            ]
        );
        for param in ["EgressDeny", "EgressAllow"] {
            let at = text
                .find(&format!("\n  {param}:\n"))
                .unwrap_or_else(|| panic!("{param} is a parameter"));
            let block: String = text[at + 1..]
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("    "))
                .collect();
            assert!(block.contains("Default: \"\""), "{param}: {block}");
        }
    }

    #[test]
    fn rest_events_keep_case_stage_and_repeats() {
        let req = request(
            "POST",
            "/prod/mcp/echo?a=1&a=2&b=x%20y",
            &[
                ("Host", "gw.test"),
                ("Authorization", "Bearer k"),
                ("X-Dup", "1"),
                ("x-dup", "2"),
            ],
            b"{}",
        );
        let route = match_route("POST", "/mcp/echo").unwrap();
        let e = rest_event(&req, "prod", &route, "rid");
        assert_eq!(e["path"], "/mcp/echo");
        assert_eq!(e["resource"], "/mcp/{endpoint}");
        assert_eq!(e["requestContext"]["path"], "/prod/mcp/echo");
        assert_eq!(e["requestContext"]["stage"], "prod");
        assert_eq!(e["headers"]["Authorization"], "Bearer k");
        assert_eq!(e["headers"]["X-Dup"], "2");
        assert_eq!(e["multiValueHeaders"]["X-Dup"], json!(["1", "2"]));
        assert_eq!(e["queryStringParameters"], json!({"a": "2", "b": "x y"}));
        assert_eq!(e["multiValueQueryStringParameters"]["a"], json!(["1", "2"]));
        assert_eq!(e["pathParameters"], json!({"endpoint": "echo"}));
        assert_eq!(
            (e["body"].as_str(), &e["isBase64Encoded"]),
            (Some("e30="), &json!(true))
        );
        assert_eq!(e["headers"]["X-Forwarded-Port"], "4000");
    }

    #[test]
    fn http_events_lowercase_headers_and_split_cookies() {
        let req = request(
            "GET",
            "/admin/servers?x=1&x=2",
            &[("Cookie", "a=1; b=2"), ("Accept", "a"), ("accept", "b")],
            b"",
        );
        let route = match_route("GET", "/admin/servers").unwrap();
        let e = http_event(&req, &route, "rid");
        assert_eq!(e["routeKey"], "ANY /admin/{proxy+}");
        assert_eq!(e["rawPath"], "/admin/servers");
        assert_eq!(e["rawQueryString"], "x=1&x=2");
        assert_eq!(e["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(e["headers"]["accept"], "a,b");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["queryStringParameters"]["x"], "1,2");
        assert!(e.get("body").is_none());
        assert_eq!(e["requestContext"]["http"]["method"], "GET");
    }

    #[test]
    fn proxy_responses_merge_headers_like_api_gateway() {
        let v1 = json!({"statusCode": 201, "headers": {"x-a": "h", "x-b": "h"}, "multiValueHeaders": {"x-a": ["m1", "m2"], "content-length": ["9"]}, "body": "aGk=", "isBase64Encoded": true});
        let r = proxy_response(
            &ApiKind::Rest {
                stage: "prod".into(),
            },
            &v1,
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(
            r.headers,
            vec![
                ("x-a".into(), "m1".into()),
                ("x-a".into(), "m2".into()),
                ("x-b".into(), "h".into())
            ]
        );
        assert!(matches!(r.body, OutgoingBody::Full(ref b) if b.as_ref() == b"hi"));
        let v2 = json!({"statusCode": 200, "headers": {"content-type": "text/plain"}, "cookies": ["c=1"], "body": "ok"});
        let r = proxy_response(&ApiKind::Http, &v2).unwrap();
        assert_eq!(r.headers[1], ("Set-Cookie".into(), "c=1".into()));
        assert!(proxy_response(&ApiKind::Http, &json!({"body": "no status"})).is_none());
    }

    #[test]
    fn fixtures_substitute_placeholders_inside_base64_bodies() {
        let e = load_event(
            "rest-admin-create-server",
            &[
                ("__ADMIN_KEY__", "adm"),
                ("__EVERYTHING_URL__", "http://h:1/mcp"),
            ],
        )
        .unwrap();
        assert_eq!(e["headers"]["authorization"], "Bearer adm");
        let body = proxy_body(&e).unwrap();
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["url"], "http://h:1/mcp");
        assert_eq!(e["headers"]["content-length"], body.len().to_string());
        assert_eq!(
            e["multiValueHeaders"]["content-length"],
            json!([body.len().to_string()])
        );
    }

    #[test]
    fn mcp_messages_come_from_json_or_sse() {
        assert_eq!(mcp_message(br#"{"id":1}"#).unwrap()["id"], 1);
        assert_eq!(
            mcp_message(b"event: message\ndata: {\"id\":2}\n\n").unwrap()["id"],
            2
        );
        assert!(mcp_message(b"nothing").is_err());
    }
}
