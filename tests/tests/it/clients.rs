//! The client matrix (issue 24): the MCP clients people use, at the versions pinned in
//! `scripts/peers.sh`, each in its connect modes, through the gateway to real upstreams:
//! server-everything, the Python echo server, and the JWT-protected Python server behind its
//! own `oidc-provider` (an `oauth2` server: each user connects their own account).
//!
//! [`MATRIX`] is the data: one [`Row`] per (client, mode, auth) with the [`Check`]s it must
//! pass. [`client_matrix`] runs the rows concurrently and every check of each; it fails naming
//! each failing cell (client, mode, auth, check) with what the client saw. Every client process has a timeout: a stuck client
//! fails its row, it never hangs the suite.
//!
//! - list and call: `tools/list` shows the echo server's tools, `echo` answers its message;
//! - roots: server-everything's `get-roots-list` asks the client for its roots, and the answer
//!   names the client's root within [`ROOTS_BOUND`] (a request lost in a bridge stalls 60 s);
//! - connect: on an `oauth2` server the user has not connected, the call answers the connect
//!   link (a URL elicitation or the tool error's text), a headless browser completes the
//!   connect, and the same call then reaches the upstream with the user's own token;
//! - OAuth from the URL alone: the client gets only the endpoint URL, finds the identity
//!   provider through the protected-resource metadata, registers, logs in (the provider
//!   approves at once; the "browser" is `tests/peers/fake-browser.sh`) and lists and calls.
//!
//! [`readme_table_matches_the_matrix_and_the_pins`] keeps the README's "Client compatibility"
//! table equal to [`MATRIX`] and each row's version equal to its pin in `scripts/peers.sh`.
//!
//! Drivers: `tests/clients/ts_sdk_client.mjs` (TypeScript SDK), `tests/clients/matrix_client.py`
//! (Python `mcp`, fastmcp); the Inspector CLI and mcp-remote are run as they are.
//! By hand: `d=$(mktemp -d); scripts/peers.sh start "$d" && . "$d/env"; cargo test -p e2e --test
//! it clients:: -- --nocapture; scripts/peers.sh stop "$d"`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::{StoreKind, TestGateway, json_strings};
use mcpgw::testing::peer_url;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

// ---------------------------------------------------------------------------------------------
// The matrix as data

/// A client of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    TsSdk,
    PythonMcp,
    InspectorCli,
    Fastmcp,
    McpRemote,
}

/// Where a client's version is pinned in `scripts/peers.sh`.
enum Pin {
    Npm(&'static str),
    PyPi(&'static str),
}

impl Client {
    /// The name in the README's table.
    fn title(self) -> &'static str {
        match self {
            Client::TsSdk => "TypeScript SDK (`@modelcontextprotocol/sdk`)",
            Client::PythonMcp => "Python SDK (`mcp`)",
            Client::InspectorCli => "MCP Inspector CLI (`@modelcontextprotocol/inspector`)",
            Client::Fastmcp => "fastmcp",
            Client::McpRemote => "mcp-remote",
        }
    }

    fn pin(self) -> Pin {
        match self {
            Client::TsSdk => Pin::Npm("@modelcontextprotocol/sdk"),
            Client::PythonMcp => Pin::PyPi("mcp"),
            Client::InspectorCli => Pin::Npm("@modelcontextprotocol/inspector"),
            Client::Fastmcp => Pin::PyPi("fastmcp"),
            Client::McpRemote => Pin::Npm("mcp-remote"),
        }
    }
}

/// How the client authenticates to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// A gateway API key in `Authorization: Bearer`.
    Bearer,
    /// Only the URL: the client's own OAuth login at the advertised identity provider.
    OAuthFromUrl,
}

/// What a row proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// `tools/list` and a `tools/call` of the echo server.
    ListCall,
    /// server-everything's `get-roots-list`, answered with the client's root within
    /// [`ROOTS_BOUND`].
    Roots,
    /// The connect journey on an unconnected `oauth2` server; `true`: the client declares URL
    /// elicitation, `false`: it does not (the link comes in the tool error's text).
    Connect { url_elicitation: bool },
}

impl Check {
    fn describe(self) -> &'static str {
        match self {
            Check::ListCall => "list, call",
            Check::Roots => "roots",
            Check::Connect {
                url_elicitation: true,
            } => "connect (URL elicitation)",
            Check::Connect {
                url_elicitation: false,
            } => "connect (link in the tool error)",
        }
    }
}

/// One row: a client at a version, in a mode, with an auth, and the checks it passes.
struct Row {
    client: Client,
    version: &'static str,
    /// The client's connect mode as it names it.
    mode: &'static str,
    auth: Auth,
    checks: &'static [Check],
}

impl Row {
    fn label(&self) -> String {
        format!("{:?} {} {:?}", self.client, self.mode, self.auth)
    }
}

const LIST_ROOTS_CONNECT: &[Check] = &[
    Check::ListCall,
    Check::Roots,
    Check::Connect {
        url_elicitation: true,
    },
    Check::Connect {
        url_elicitation: false,
    },
];
const LIST_CONNECT: &[Check] = &[
    Check::ListCall,
    Check::Connect {
        url_elicitation: false,
    },
];
const LIST_ROOTS_CONNECT_TEXT: &[Check] = &[
    Check::ListCall,
    Check::Roots,
    Check::Connect {
        url_elicitation: false,
    },
];
const LIST: &[Check] = &[Check::ListCall];

/// The matrix. Versions must equal the pins in `scripts/peers.sh`, and the README's table
/// must say the same ([`readme_table_matches_the_matrix_and_the_pins`]).
const MATRIX: &[Row] = &[
    Row {
        client: Client::TsSdk,
        version: "1.32.2",
        mode: "default",
        auth: Auth::Bearer,
        checks: LIST_ROOTS_CONNECT,
    },
    Row {
        client: Client::TsSdk,
        version: "1.32.2",
        mode: "default",
        auth: Auth::OAuthFromUrl,
        checks: LIST,
    },
    Row {
        client: Client::PythonMcp,
        version: "2.3.0",
        mode: "auto",
        auth: Auth::Bearer,
        checks: LIST_ROOTS_CONNECT,
    },
    Row {
        client: Client::PythonMcp,
        version: "2.3.0",
        mode: "legacy",
        auth: Auth::Bearer,
        checks: LIST_ROOTS_CONNECT,
    },
    Row {
        client: Client::PythonMcp,
        version: "2.3.0",
        mode: "auto",
        auth: Auth::OAuthFromUrl,
        checks: LIST,
    },
    Row {
        client: Client::PythonMcp,
        version: "2.3.0",
        mode: "legacy",
        auth: Auth::OAuthFromUrl,
        checks: LIST,
    },
    Row {
        client: Client::InspectorCli,
        version: "2.12.0",
        mode: "legacy",
        auth: Auth::Bearer,
        checks: LIST_CONNECT,
    },
    Row {
        client: Client::InspectorCli,
        version: "2.12.0",
        mode: "auto",
        auth: Auth::Bearer,
        checks: LIST_CONNECT,
    },
    Row {
        client: Client::InspectorCli,
        version: "2.12.0",
        mode: "legacy",
        auth: Auth::OAuthFromUrl,
        checks: LIST,
    },
    Row {
        client: Client::InspectorCli,
        version: "2.12.0",
        mode: "auto",
        auth: Auth::OAuthFromUrl,
        checks: LIST,
    },
    Row {
        client: Client::Fastmcp,
        version: "4.2.3",
        mode: "auto",
        auth: Auth::Bearer,
        checks: LIST_ROOTS_CONNECT,
    },
    Row {
        client: Client::Fastmcp,
        version: "4.2.3",
        mode: "auto",
        auth: Auth::OAuthFromUrl,
        checks: LIST,
    },
    Row {
        client: Client::McpRemote,
        version: "0.15.1",
        mode: "stdio proxy",
        auth: Auth::Bearer,
        checks: LIST_ROOTS_CONNECT_TEXT,
    },
    Row {
        client: Client::McpRemote,
        version: "0.15.1",
        mode: "stdio proxy",
        auth: Auth::OAuthFromUrl,
        checks: LIST,
    },
];

/// Bound on a roots round trip through the gateway: it takes well under a second; a request
/// lost on the way stalls until the upstream gives up (60 s), which this fails clearly
/// without being sensitive to a loaded machine.
const ROOTS_BOUND: Duration = Duration::from_secs(10);
/// Bound on one client process (a whole row step): clients time out their own requests at
/// 25 s, so this only catches a client that hangs regardless.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
/// The root the drivers declare (`tests/clients/*`).
const ROOT_URI: &str = "file:///tmp/mcpgw-matrix-root";

// ---------------------------------------------------------------------------------------------
// The README table

/// The README's table as the matrix says it should read: one line per client, its modes and
/// auths, and what every row of it passes.
fn expected_table() -> Vec<String> {
    let mut lines = vec![
        "| client | version | modes | result |".to_owned(),
        "|---|---|---|---|".to_owned(),
    ];
    let mut clients: Vec<Client> = Vec::new();
    for row in MATRIX {
        if !clients.contains(&row.client) {
            clients.push(row.client);
        }
    }
    for client in clients {
        let rows: Vec<&Row> = MATRIX.iter().filter(|r| r.client == client).collect();
        let mut modes: Vec<&str> = Vec::new();
        for r in &rows {
            if !modes.contains(&r.mode) {
                modes.push(r.mode);
            }
        }
        let results: Vec<String> = rows
            .iter()
            .map(|r| {
                let auth = match r.auth {
                    Auth::Bearer => "API key",
                    Auth::OAuthFromUrl => "OAuth from the URL alone",
                };
                let checks: Vec<&str> = r.checks.iter().map(|c| c.describe()).collect();
                format!("{}, {auth}: {}", r.mode, checks.join(", "))
            })
            .collect();
        lines.push(format!(
            "| {} | {} | {} | {} |",
            client.title(),
            rows[0].version,
            modes.join(", "),
            results.join("; ")
        ));
    }
    lines
}

/// The version `scripts/peers.sh` pins for `pin`.
fn pinned(peers_sh: &str, pin: &Pin) -> Option<String> {
    match pin {
        Pin::Npm(name) => {
            let key = format!("\"{name}\": \"");
            let rest = &peers_sh[peers_sh.find(&key)? + key.len()..];
            Some(rest[..rest.find('"')?].to_owned())
        }
        Pin::PyPi(name) => peers_sh.lines().find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{name}=="))
                .map(|v| v.trim().to_owned())
        }),
    }
}

#[test]
fn readme_table_matches_the_matrix_and_the_pins() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let peers_sh = std::fs::read_to_string(root.join("scripts/peers.sh")).unwrap();
    // Every row's version is the one the harness installs
    for row in MATRIX {
        assert_eq!(
            pinned(&peers_sh, &row.client.pin()).as_deref(),
            Some(row.version),
            "{:?} {}: the matrix and scripts/peers.sh disagree on the version",
            row.client,
            row.mode
        );
    }
    // AND the README's table says what the matrix runs
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("\n## Client compatibility\n")
        .nth(1)
        .expect("README.md has a '## Client compatibility' section");
    let table: Vec<String> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(str::to_owned)
        .collect();
    let expected = expected_table();
    assert_eq!(
        table,
        expected,
        "README.md's compatibility table differs from tests/tests/it/clients.rs's MATRIX; it should read:\n{}",
        expected.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The rows

/// Rows run at once: the clients mostly wait on each other and on the network, but each one
/// starts a Node or Python process (a second of CPU on this 2-core machine).
const ROWS_AT_ONCE: usize = 7;

/// The whole matrix, rows concurrently. Fails listing every failing cell (row and check);
/// `MCPGW_MATRIX_ROW=text` runs only the rows whose label contains `text` (e.g. `Fastmcp`,
/// `legacy`, `OAuthFromUrl`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_matrix() -> Result<()> {
    if peer_url("MCPGW_TEST_ECHO_URL").is_none() {
        return Ok(());
    }
    let only = std::env::var("MCPGW_MATRIX_ROW").ok();
    let started = Instant::now();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(ROWS_AT_ONCE));
    let mut rows = tokio::task::JoinSet::new();
    for row in MATRIX {
        if only.as_deref().is_some_and(|o| !row.label().contains(o)) {
            continue;
        }
        let slots = slots.clone();
        rows.spawn(async move {
            let _slot = slots.acquire_owned().await;
            (row.label(), run_row(row).await)
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = rows.join_next().await {
        let (label, outcome) = done?;
        if let Err(e) = outcome {
            failed.push(format!("{label}:\n{e:#}"));
        }
    }
    eprintln!(
        "[clients] the matrix took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    failed.sort();
    ensure!(
        failed.is_empty(),
        "{} of the matrix's rows failed:\n\n{}",
        failed.len(),
        failed.join("\n\n")
    );
    Ok(())
}

/// What a row runs against.
struct Fixture {
    gw: TestGateway,
    key: String,
    /// The `oauth2` server's own provider and upstream, when the row connects.
    _oauth: Option<e2e::oauth_peers::Peers>,
    node_modules: String,
    python: String,
}

const ECHO: &str = "echo";
const EVERYTHING: &str = "everything";
const NOTES: &str = "notes";

async fn fixture(row: &Row) -> Result<Option<Fixture>> {
    let (Some(echo), Some(everything), Some(issuer), Some(node_modules), Some(python)) = (
        peer_url("MCPGW_TEST_ECHO_URL"),
        peer_url("MCPGW_TEST_EVERYTHING_URL"),
        peer_url("MCPGW_TEST_OIDC_ISSUER"),
        peer_url("MCPGW_TEST_NODE_MODULES"),
        peer_url("MCPGW_TEST_PYTHON"),
    ) else {
        return Ok(None);
    };
    let gw = TestGateway::start(StoreKind::Sqlite, &[]).await?;
    let mut servers = vec![ECHO, EVERYTHING];
    for (name, url) in [(ECHO, &echo), (EVERYTHING, &everything)] {
        gw.add_server(name, url, json!({"type": "none"})).await?;
    }
    let connects = row
        .checks
        .iter()
        .any(|c| matches!(c, Check::Connect { .. }));
    let oauth = if connects {
        let peers = e2e::oauth_peers::start("600", &[])
            .await?
            .context("the oauth2 peers")?;
        // The admin says the list is the same for every account, so the Inspector (which
        // calls only tools it has listed) sees them before connecting.
        let (s, body) = gw
            .admin(
                reqwest::Method::POST,
                "/admin/servers",
                Some(
                    json!({"name": NOTES, "url": peers.upstream, "share_tool_list": true,
                    "auth": {"type": "oauth2", "scopes": ["mcp:read"]}}),
                ),
            )
            .await?;
        ensure!(s == 201, "registering {NOTES}: {s} {body}");
        servers.push(NOTES);
        Some(peers)
    } else {
        None
    };
    if row.auth == Auth::OAuthFromUrl {
        // The identity provider as the README registers it: issuer only.
        let (s, b) = gw
            .admin(
                Method::POST,
                "/admin/identity-providers",
                Some(json!({"name": "corp", "issuer": issuer})),
            )
            .await?;
        ensure!(s == 201, "registering the identity provider: {s} {b}");
    }
    gw.admit_everyone("everyone", &servers).await?;
    let key = gw.user_key("alice@example.com").await?;
    Ok(Some(Fixture {
        gw,
        key,
        _oauth: oauth,
        node_modules,
        python,
    }))
}

/// Runs every check of `row` (a failing one does not hide the others) and fails naming each
/// failing cell.
async fn run_row(row: &'static Row) -> Result<()> {
    let Some(fx) = fixture(row).await? else {
        return Ok(());
    };
    let label = row.label();
    let mut failed = Vec::new();
    for check in row.checks {
        let started = Instant::now();
        let outcome = run_check(&fx, row, *check).await;
        let took = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => eprintln!("[clients] {label}: {} ok in {took:.1} s", check.describe()),
            Err(e) => {
                eprintln!(
                    "[clients] {label}: {} FAILED in {took:.1} s",
                    check.describe()
                );
                failed.push(format!("{label}: {}: {e:#}", check.describe()));
            }
        }
    }
    ensure!(failed.is_empty(), "{}", failed.join("\n\n"));
    Ok(())
}

/// One call a client makes and what came back, in the drivers' common shape.
#[derive(Debug)]
struct Outcome {
    tools: Vec<String>,
    /// Each call's JSON: `is_error`, `content` (texts), `error`, `seconds`.
    calls: Vec<Value>,
    /// The URLs of URL-mode elicitations the client was asked.
    elicited: Vec<String>,
    /// Everything the client printed, for links and diagnostics.
    raw: String,
}

impl Outcome {
    fn text(&self, call: usize) -> String {
        self.calls
            .get(call)
            .map(|c| {
                c["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

async fn run_check(fx: &Fixture, row: &Row, check: Check) -> Result<()> {
    match check {
        Check::ListCall => {
            let message = format!("hello {}", mcpgw::crypto::random_token(6));
            let out = client_run(
                fx,
                row,
                ECHO,
                &Options::default(),
                &[("echo", json!({ "message": message }))],
            )
            .await?;
            ensure!(
                out.tools.iter().any(|t| t == "echo"),
                "tools/list lacks echo: {}",
                out.raw
            );
            ensure!(
                out.calls.first().is_some_and(|c| c["is_error"] == false)
                    && out.text(0).contains(&message),
                "the echo call: {}",
                out.raw
            );
        }
        Check::Roots => {
            let options = Options {
                roots: true,
                ..Options::default()
            };
            let out = client_run(
                fx,
                row,
                EVERYTHING,
                &options,
                &[("get-roots-list", json!({}))],
            )
            .await?;
            let seconds = out
                .calls
                .first()
                .and_then(|c| c["seconds"].as_f64())
                .unwrap_or(f64::MAX);
            ensure!(
                out.text(0).contains(ROOT_URI),
                "get-roots-list did not return the client's root ({seconds:.1} s): {}",
                out.raw
            );
            ensure!(
                seconds < ROOTS_BOUND.as_secs_f64(),
                "get-roots-list took {seconds:.1} s: {}",
                out.raw
            );
        }
        Check::Connect { url_elicitation } => {
            if row.client == Client::InspectorCli {
                // The Inspector calls only tools it has listed: the journey needs a list
                // before the user connects, which the gateway can give once anyone has
                // connected (the admin's cached list): a colleague did, earlier.
                colleague_connected(fx).await?;
            }
            // Each connect check starts unconnected: its own user.
            let user = if url_elicitation { "carol" } else { "dave" };
            let key = fx.gw.user_key(&format!("{user}@example.com")).await?;
            let options = Options {
                url_elicitation,
                token: Some(key),
                ..Options::default()
            };
            // GIVEN the user has not connected the oauth2 server: the call answers the link
            let before = client_run(fx, row, NOTES, &options, &[("whoami", json!({}))]).await?;
            let link = connect_link(&fx.gw, &before.raw).with_context(|| {
                format!("no connect link in the client's answer: {}", before.raw)
            })?;
            if url_elicitation {
                // An elicitation request the client answered (2026-07-28: input_required), or
                // the -32042 error that carries it (session era)
                let as_error = before
                    .calls
                    .first()
                    .is_some_and(|c| c["error"]["code"] == -32042);
                ensure!(
                    !before.elicited.is_empty() || as_error,
                    "the link did not come as a URL elicitation: {}",
                    before.raw
                );
                // A client that declined (the driver does) is not asked again and again: the
                // call ends, with the link, after one round.
                ensure!(
                    before.elicited.len() <= 1,
                    "declined, the URL elicitation was asked {} times: {}",
                    before.elicited.len(),
                    before.raw
                );
            }
            // WHEN the user opens it and logs in at the provider
            let seen = e2e::oauth_peers::browse(&link, "", user).await?;
            ensure!(seen["status"] == 200, "the connect: {seen}");
            // THEN the same call reaches the upstream with the user's own token
            let after = client_run(fx, row, NOTES, &options, &[("whoami", json!({}))]).await?;
            // (whoami answers the token's subject: the user who logged in at the provider)
            let text = after.text(0);
            ensure!(
                after.calls.first().is_some_and(|c| c["is_error"] == false)
                    && text.contains("sub")
                    && text.contains(user),
                "after connecting, whoami: {}",
                after.raw
            );
        }
    }
    Ok(())
}

/// Another user ("erin") connects the `oauth2` server and lists its tools, with the test's
/// own raw client: what a team's first user leaves behind.
async fn colleague_connected(fx: &Fixture) -> Result<()> {
    use e2e::mcp::{McpClient, SESSION};
    let key = fx.gw.user_key("erin@example.com").await?;
    let url = fx.gw.mcp_url(NOTES);
    let mut c = McpClient::connect(&url, &key, SESSION).await?;
    let first = c.call_tool("whoami", json!({})).await?;
    let link = connect_link(&fx.gw, &first.raw)
        .with_context(|| format!("no connect link for the colleague: {}", first.raw))?;
    let seen = e2e::oauth_peers::browse(&link, "", "erin").await?;
    ensure!(seen["status"] == 200, "the colleague's connect: {seen}");
    let mut c = McpClient::connect(&url, &key, SESSION).await?;
    let tools = c.tool_names().await?;
    ensure!(
        tools.iter().any(|t| t == "whoami"),
        "the colleague's list after connecting: {tools:?}"
    );
    Ok(())
}

/// The connect link (`{base}/oauth/connect/...`) anywhere in a client's output.
fn connect_link(gw: &TestGateway, raw: &str) -> Option<String> {
    let prefix = format!("{}/oauth/connect/", gw.base);
    let start = raw.find(&prefix)?;
    let link: String = raw[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\\' | ')' | '<' | '\''))
        .collect();
    Some(link)
}

#[derive(Default)]
struct Options {
    roots: bool,
    url_elicitation: bool,
    /// An API key other than the fixture's (bearer rows).
    token: Option<String>,
}

/// Runs the row's client against `endpoint`: lists the tools and makes `calls`.
async fn client_run(
    fx: &Fixture,
    row: &Row,
    endpoint: &str,
    options: &Options,
    calls: &[(&str, Value)],
) -> Result<Outcome> {
    let url = fx.gw.mcp_url(endpoint);
    let token = match row.auth {
        Auth::Bearer => options.token.clone().unwrap_or_else(|| fx.key.clone()),
        Auth::OAuthFromUrl => String::new(),
    };
    let home = tempfile::tempdir()?;
    match row.client {
        Client::TsSdk | Client::PythonMcp | Client::Fastmcp => {
            let calls: Vec<Value> = calls
                .iter()
                .map(|(n, a)| json!({"name": n, "arguments": a}))
                .collect();
            let mut spec = json!({"url": url, "token": token, "mode": row.mode,
                "roots": options.roots, "calls": calls,
                "oauth": row.auth == Auth::OAuthFromUrl});
            let mut cmd = match row.client {
                Client::TsSdk => {
                    // Declared in every connect: with URL mode, or form mode only.
                    spec["elicitation"] = json!(if options.url_elicitation {
                        "url"
                    } else {
                        "form"
                    });
                    let mut c = tokio::process::Command::new("node");
                    c.arg(driver("ts_sdk_client.mjs"));
                    c
                }
                Client::PythonMcp | Client::Fastmcp => {
                    spec["client"] = json!(if row.client == Client::Fastmcp {
                        "fastmcp"
                    } else {
                        "mcp"
                    });
                    spec["elicitation"] = json!(options.url_elicitation);
                    let mut c = tokio::process::Command::new(&fx.python);
                    c.arg(driver("matrix_client.py"));
                    c
                }
                Client::InspectorCli | Client::McpRemote => unreachable!(),
            };
            cmd.arg(spec.to_string());
            let raw = run(cmd, fx, home.path()).await?;
            let line = raw.lines().last().unwrap_or_default();
            let out: Value =
                serde_json::from_str(line).with_context(|| format!("the driver printed: {raw}"))?;
            ensure!(out.get("fatal").is_none(), "the client failed: {line}");
            Ok(Outcome {
                tools: json_strings(&out["tools"]),
                calls: out["calls"].as_array().cloned().unwrap_or_default(),
                elicited: json_strings(&out["elicited_urls"]),
                raw: line.to_owned(),
            })
        }
        Client::InspectorCli => inspector(fx, row, &url, &token, home.path(), calls).await,
        Client::McpRemote => mcp_remote(fx, &url, &token, home.path(), options, calls).await,
    }
}

fn driver(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// The headless browser OAuth clients open (`$BROWSER`).
fn fake_browser() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/fake-browser.sh")
}

/// Sets what every client process gets: its own HOME (token stores, catalogs), the headless
/// browser, no desktop, the node modules.
fn client_env(cmd: &mut tokio::process::Command, fx: &Fixture, home: &Path) {
    cmd.current_dir(home)
        .env("HOME", home)
        .env("BROWSER", fake_browser())
        // Returns at once like a real browser (some clients wait for it before they listen).
        .env("FAKE_BROWSER_DETACH", "1")
        .env("MCPGW_TEST_NODE_MODULES", &fx.node_modules)
        // The Inspector opens the browser only with a TTY, or when forced.
        .env("MCP_AUTO_OPEN_ENABLED", "true")
        .env("MCP_INSPECTOR_SECRET_STORE", "memory")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in [
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "XDG_CURRENT_DESKTOP",
        "DESKTOP_SESSION",
    ] {
        cmd.env_remove(var);
    }
}

/// Runs a client to its end within [`CLIENT_TIMEOUT`]; its stdout. A client that printed
/// nothing, or did not end, fails with the tail of its stderr.
async fn run(mut cmd: tokio::process::Command, fx: &Fixture, home: &Path) -> Result<String> {
    client_env(&mut cmd, fx, home);
    let log = home.join(format!("stderr-{}.log", mcpgw::crypto::random_token(4)));
    cmd.stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?);
    let child = cmd.spawn().context("starting the client")?;
    let stderr = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    let out = match tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out?,
        Err(_) => bail!(
            "the client did not finish in {CLIENT_TIMEOUT:?}; its stderr:\n{}",
            stderr()
        ),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        !stdout.trim().is_empty(),
        "the client exited ({}) with no result; its stderr:\n{}",
        out.status,
        stderr()
    );
    Ok(stdout)
}

// --- the Inspector CLI -------------------------------------------------------------------------

async fn inspector(
    fx: &Fixture,
    row: &Row,
    url: &str,
    token: &str,
    home: &Path,
    calls: &[(&str, Value)],
) -> Result<Outcome> {
    let launcher = Path::new(&fx.node_modules)
        .join("@modelcontextprotocol/inspector/clients/launcher/build/index.js");
    let callback = format!(
        "http://127.0.0.1:{}/oauth/callback",
        e2e::oauth_peers::free_port()?
    );
    let invoke = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(&launcher)
            .args(["--cli", url, "--transport", "http", "--format", "json"])
            .args(["--protocol-era", row.mode, "--callback-url", &callback]);
        if !token.is_empty() {
            cmd.args(["--header", &format!("Authorization: Bearer {token}")]);
        }
        cmd.args(args);
        cmd
    };
    let listed = run(
        invoke(vec!["--method".into(), "tools/list".into()]),
        fx,
        home,
    )
    .await?;
    let listed: Value = serde_json::from_str(listed.trim())
        .with_context(|| format!("inspector tools/list printed: {listed}"))?;
    let tools = listed["result"]["tools"]
        .as_array()
        .or_else(|| listed["tools"].as_array())
        .with_context(|| format!("inspector tools/list: {listed}"))?
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    let mut out = Vec::new();
    let mut raw = listed.to_string();
    for (name, args) in calls {
        let started = Instant::now();
        let called = run(
            invoke(vec![
                "--method".into(),
                "tools/call".into(),
                "--tool-name".into(),
                (*name).into(),
                "--tool-args-json".into(),
                args.to_string(),
            ]),
            fx,
            home,
        )
        .await?;
        raw.push_str(&called);
        let v: Value = serde_json::from_str(called.trim()).unwrap_or(Value::Null);
        let result = if v.get("result").is_some() {
            &v["result"]
        } else {
            &v
        };
        out.push(json!({
            "is_error": result["isError"] == true || v.get("error").is_some(),
            "content": result["content"].as_array().into_iter().flatten()
                .map(|c| c["text"].clone()).collect::<Vec<_>>(),
            "error": v.get("error"),
            "seconds": started.elapsed().as_secs_f64(),
        }));
    }
    Ok(Outcome {
        tools,
        calls: out,
        elicited: Vec::new(),
        raw,
    })
}

// --- mcp-remote over stdio ---------------------------------------------------------------------

async fn mcp_remote(
    fx: &Fixture,
    url: &str,
    token: &str,
    home: &Path,
    options: &Options,
    calls: &[(&str, Value)],
) -> Result<Outcome> {
    let proxy = Path::new(&fx.node_modules).join("mcp-remote/dist/proxy.js");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&proxy).arg(url);
    if !token.is_empty() {
        cmd.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    client_env(&mut cmd, fx, home);
    cmd.env("MCP_REMOTE_CONFIG_DIR", home.join("mcp-remote"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(home.join("mcp-remote.log"))?);
    let mut child = cmd.spawn().context("starting mcp-remote")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let roots = options.roots;
    let exchange = async {
        let mut host = StdioHost {
            stdin: &mut stdin,
            stdout: &mut stdout,
            roots,
        };
        let caps = if roots {
            json!({"roots": {"listChanged": false}})
        } else {
            json!({})
        };
        host.request(
            1,
            "initialize",
            json!({"protocolVersion": "2025-06-18",
            "capabilities": caps, "clientInfo": {"name": "mcpgw-matrix-host", "version": "1"}}),
        )
        .await?;
        host.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        let listed = host.request(2, "tools/list", json!({})).await?;
        let mut out = Vec::new();
        for (i, (name, args)) in calls.iter().enumerate() {
            let started = Instant::now();
            let r = host
                .request(
                    10 + i as i64,
                    "tools/call",
                    json!({"name": name, "arguments": args}),
                )
                .await?;
            out.push(json!({
                "is_error": r["result"]["isError"] == true || r.get("error").is_some(),
                "content": r["result"]["content"].as_array().into_iter().flatten()
                    .map(|c| c["text"].clone()).collect::<Vec<_>>(),
                "error": r.get("error"),
                "seconds": started.elapsed().as_secs_f64(),
            }));
        }
        anyhow::Ok((listed, out))
    };
    let outcome = tokio::time::timeout(CLIENT_TIMEOUT, exchange).await;
    let _ = child.kill().await;
    let log = || std::fs::read_to_string(home.join("mcp-remote.log")).unwrap_or_default();
    let (listed, calls) = match outcome {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => bail!("mcp-remote: {e:#}\n{}", log()),
        Err(_) => bail!("mcp-remote did not finish in {CLIENT_TIMEOUT:?}\n{}", log()),
    };
    let tools = listed["result"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    let raw = json!({"tools": listed, "calls": calls}).to_string();
    Ok(Outcome {
        tools,
        calls,
        elicited: Vec::new(),
        raw,
    })
}

/// The MCP host side of a stdio client: requests, and answers to the client's roots/list.
struct StdioHost<'a> {
    stdin: &'a mut tokio::process::ChildStdin,
    stdout: &'a mut BufReader<tokio::process::ChildStdout>,
    roots: bool,
}

impl StdioHost<'_> {
    async fn send(&mut self, message: &Value) -> Result<()> {
        self.stdin
            .write_all(format!("{message}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn request(&mut self, id: i64, method: &str, params: Value) -> Result<Value> {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).await? == 0 {
                bail!("the client closed its stdout before answering {method}");
            }
            let Ok(msg) = serde_json::from_str::<Value>(line.trim()) else {
                continue;
            };
            if msg["method"] == "roots/list" && msg.get("id").is_some() {
                let answer = if self.roots {
                    json!({"jsonrpc": "2.0", "id": msg["id"], "result": {"roots": [
                        {"uri": ROOT_URI, "name": "matrix-root"}]}})
                } else {
                    json!({"jsonrpc": "2.0", "id": msg["id"],
                        "error": {"code": -32601, "message": "no roots"}})
                };
                self.send(&answer).await?;
                continue;
            }
            if msg.get("method").is_some() && msg.get("id").is_some() {
                // Any other request to the host (sampling, elicitation): refused at once.
                self.send(&json!({"jsonrpc": "2.0", "id": msg["id"],
                    "error": {"code": -32601, "message": "not supported by this host"}}))
                    .await?;
                continue;
            }
            if msg["id"] == id && (msg.get("result").is_some() || msg.get("error").is_some()) {
                return Ok(msg);
            }
        }
    }
}
