//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, its server
//! scenarios) run against the Python conformance upstream (`tests/peers/conformance_server.py`)
//! directly and through the gateway, in one test.
//! Every scenario that passes directly must pass through the gateway: whatever the gateway
//! breaks (SSE streaming, server-to-client requests such as sampling and elicitation, progress
//! and log notifications, resumption with Last-Event-ID, DNS-rebinding checks) shows up as a
//! scenario that passes on one side only.
//!
//! The suite cannot send an `Authorization` header, so a small relay in this test stands in
//! front of the gateway: it passes every request on unchanged (method, path, query, every
//! header including `Host` and `Origin`, the body streamed) and adds the gateway key of a
//! non-admin user; answers, SSE included, stream back unbuffered. A third run, through the
//! relay straight to the upstream, proves the relay itself changes no outcome, so whatever
//! fails only through the gateway is the gateway's doing.
//!
//! Needs the peers of `scripts/test-all.sh` (`MCPGW_TEST_CONFORMANCE_URL`,
//! `MCPGW_TEST_NODE_MODULES`); skips without them unless `MCPGW_REQUIRE_PEERS=1`. By hand:
//! `d=$(mktemp -d); scripts/peers.sh start "$d" && . "$d/env";
//! cargo test -p e2e --test it conformance:: -- --nocapture; scripts/peers.sh stop "$d"`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use e2e::{StoreKind, TestGateway};
use reqwest::Method;
use serde_json::{Value, json};

/// The endpoint name the upstream is registered under.
const ENDPOINT: &str = "conformance";
/// One whole suite run takes a few seconds; this only keeps a hung run from hanging CI.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);
/// The suite 0.1.16 has 32 server scenarios and the upstream passes all of them. Fewer direct
/// passes than this means the upstream or the suite is broken, and the comparison with the
/// gateway would prove little.
const MIN_DIRECT_PASSES: usize = 30;
/// Scenarios that must pass directly whatever the suite version: together they cover what a
/// proxy can break (plain calls, notifications, server-to-client requests, SSE resumption,
/// DNS-rebinding protection).
const MUST_PASS_DIRECTLY: &[&str] = &[
    "server-initialize",
    "tools-call-simple-text",
    "tools-call-with-progress",
    "tools-call-with-logging",
    "tools-call-sampling",
    "tools-call-elicitation",
    "resources-read-text",
    "prompts-get-with-args",
    "server-sse-polling",
    "dns-rebinding-protection",
];

#[tokio::test(flavor = "multi_thread")]
async fn conformance_suite_passes_through_the_gateway() -> Result<()> {
    let (Some(upstream), Some(node_modules)) = (
        mcpgw::testing::peer_url("MCPGW_TEST_CONFORMANCE_URL"),
        mcpgw::testing::peer_url("MCPGW_TEST_NODE_MODULES"),
    ) else {
        return Ok(());
    };

    // GIVEN the conformance upstream registered on a gateway, a user's key, and a relay that
    // adds that key to every request
    let gw = TestGateway::start(StoreKind::Sqlite, &[]).await?;
    let (status, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": ENDPOINT, "url": upstream, "auth": {"type": "none"}})),
        )
        .await?;
    ensure!(status == 201, "registering the upstream: {status} {body}");
    gw.admit_everyone("everyone", &[ENDPOINT]).await?;
    let (status, body) = gw
        .admin(
            Method::POST,
            "/admin/api-keys",
            Some(json!({"owner": "conformance@example.com", "name": "conf"})),
        )
        .await?;
    ensure!(status == 201, "issuing the user's key: {status} {body}");
    let key = body["key"].as_str().context("no key in the answer")?;
    let relay = Relay::start(&gw.base, key).await?;
    // AND a relay straight to the upstream, adding a dummy credential (the upstream ignores
    // it; no real key of the gateway's is handed to an upstream)
    let upstream_url = reqwest::Url::parse(&upstream)?;
    let bare_relay = Relay::start(
        &upstream_url.origin().ascii_serialization(),
        "not-a-gateway-key",
    )
    .await?;

    // WHEN the suite runs directly against the upstream, through the bare relay, and through
    // relay and gateway
    let direct = run_suite(&upstream, &node_modules)
        .await
        .context("direct run")?;
    let relayed = run_suite(
        &format!("{}{}", bare_relay.base, upstream_url.path()),
        &node_modules,
    )
    .await
    .context("run through the bare relay")?;
    let through = run_suite(&format!("{}/mcp/{ENDPOINT}", relay.base), &node_modules)
        .await
        .context("run through the gateway")?;

    let runs = [
        ("direct", &direct),
        ("relay only", &relayed),
        ("gateway", &through),
    ];
    print_table(&runs);
    for (label, run) in &runs {
        if let Some(scenario) = &run.hung_in {
            bail!(
                "run {label:?} was killed after {SUITE_TIMEOUT:?}, stuck in scenario {scenario} \
                 (the table above has the scenarios it finished)"
            );
        }
    }
    let (direct, relayed, through) = (&direct.scenarios, &relayed.scenarios, &through.scenarios);

    // THEN the direct run is meaningful...
    let direct_passes = direct.values().filter(|s| s.ok()).count();
    ensure!(
        direct_passes >= MIN_DIRECT_PASSES,
        "only {direct_passes} scenarios pass directly (want >= {MIN_DIRECT_PASSES}): the upstream \
         or the suite is broken; see the table above"
    );
    for name in MUST_PASS_DIRECTLY {
        let s = direct
            .get(*name)
            .with_context(|| format!("the suite did not run scenario {name}"))?;
        ensure!(s.ok(), "{name} fails directly: {:?}", s.problems);
    }
    // ...AND the relay alone changes no outcome. E.g. a relay that let its HTTP client set
    // Host to the target's address would turn the suite's evil Host into a loopback one, and
    // dns-rebinding-protection would fail; one that buffered SSE would break server-sse-polling.
    let relay_breaks = regressions(direct, relayed);
    ensure!(
        relay_breaks.is_empty(),
        "the test's relay alone breaks scenarios, fix the relay first:\n  {}",
        relay_breaks.join("\n  ")
    );
    // ...AND every scenario passing directly passes through the gateway
    let gateway_breaks = regressions(direct, through);
    if !gateway_breaks.is_empty() {
        bail!(
            "{} of {direct_passes} scenarios pass directly but not through the gateway:\n  {}",
            gateway_breaks.len(),
            gateway_breaks.join("\n  ")
        );
    }
    Ok(())
}

/// Scenarios that pass in `baseline` but not in `other`, each with `other`'s problems.
fn regressions(
    baseline: &BTreeMap<String, Scenario>,
    other: &BTreeMap<String, Scenario>,
) -> Vec<String> {
    baseline
        .iter()
        .filter(|(_, b)| b.ok())
        .filter_map(|(name, _)| match other.get(name) {
            Some(o) if o.ok() => None,
            Some(o) => Some(format!("{name}: {}", o.problems.join(" | "))),
            None => Some(format!("{name}: not run")),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running the suite

/// One scenario's outcome, from its `checks.json`.
#[derive(Debug, Default)]
struct Scenario {
    passed: usize,
    failed: usize,
    warnings: usize,
    /// `STATUS check-id: message (details: ...)` of every FAILURE and WARNING check.
    problems: Vec<String>,
}

impl Scenario {
    /// Stricter than the suite's own summary, which counts only failures: a WARNING is also a
    /// miss here (server-sse-polling reports a stream that could not be resumed as a warning),
    /// and a scenario that checked nothing has not passed.
    fn ok(&self) -> bool {
        self.passed > 0 && self.failed == 0 && self.warnings == 0
    }
}

/// One run of the suite: the outcome per scenario name and, if the run had to be killed, the
/// scenario it was stuck in.
struct Run {
    scenarios: BTreeMap<String, Scenario>,
    hung_in: Option<String>,
}

/// Runs every server scenario of the suite (`--suite all`: pending ones too) against `url` in
/// a temporary folder. A run that does not finish in time is killed and reported with the
/// scenarios it completed, so one deadlock does not hide every other result.
async fn run_suite(url: &str, node_modules: &str) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let results = dir.path().join("results");
    let stdout_path = dir.path().join("stdout.txt");
    let stderr_path = dir.path().join("stderr.txt");
    let cli = Path::new(node_modules).join("@modelcontextprotocol/conformance/dist/index.js");
    // The suite imports fs.globSync, which Node 20 lacks; the shim makes it load there.
    let shim = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/node20-globsync.mjs");
    // Output goes to files, not pipes: they stay readable when the run has to be killed.
    let mut child = tokio::process::Command::new("node")
        .arg(&cli)
        .args(["server", "--suite", "all", "--url", url, "-o"])
        .arg(&results)
        .current_dir(dir.path())
        .env("NODE_OPTIONS", format!("--import \"{}\"", shim.display()))
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::fs::File::create(&stderr_path)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting node")?;
    let finished = tokio::time::timeout(SUITE_TIMEOUT, child.wait()).await;
    if finished.is_err() {
        // Killed and reaped here, before its files are read.
        let _ = child.kill().await;
    }
    let stdout = std::fs::read_to_string(&stdout_path)?;
    let scenarios = read_results(&results)?;

    let Ok(status) = finished else {
        // The suite prints `=== Running scenario: NAME ===` before each scenario.
        let hung_in = stdout
            .lines()
            .rev()
            .find_map(|l| {
                l.strip_prefix("=== Running scenario: ")?
                    .strip_suffix(" ===")
            })
            .unwrap_or("(none started)")
            .to_owned();
        return Ok(Run {
            scenarios,
            hung_in: Some(hung_in),
        });
    };
    // The exit status only says whether some check failed, which the comparison decides.
    status.context("waiting for node")?;
    let summary = parse_summary(&stdout).with_context(|| {
        format!(
            "no SUMMARY from the suite; stdout:\n{stdout}\nstderr:\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        )
    })?;
    // The summary and the checks files must agree, or this parser no longer understands the
    // suite's output.
    let from_files: BTreeMap<&String, (usize, usize)> = scenarios
        .iter()
        .map(|(name, s)| (name, (s.passed, s.failed)))
        .collect();
    let from_summary: BTreeMap<&String, (usize, usize)> =
        summary.iter().map(|(n, c)| (n, *c)).collect();
    ensure!(
        from_files == from_summary,
        "the suite's SUMMARY ({from_summary:?}) disagrees with its checks.json files ({from_files:?})"
    );
    ensure!(
        !scenarios.is_empty(),
        "the suite ran no scenario:\n{stdout}"
    );
    Ok(Run {
        scenarios,
        hung_in: None,
    })
}

/// The `=== SUMMARY ===` lines of the suite's stdout: `✓ name: N passed, M failed` (or `✗`).
fn parse_summary(stdout: &str) -> Option<BTreeMap<String, (usize, usize)>> {
    let (_, summary) = stdout.split_once("=== SUMMARY ===")?;
    let mut out = BTreeMap::new();
    for line in summary.lines() {
        let Some(rest) = line.strip_prefix("✓ ").or_else(|| line.strip_prefix("✗ ")) else {
            continue;
        };
        let (name, counts) = rest.rsplit_once(": ")?;
        let (passed, failed) = counts.split_once(" passed, ")?;
        let failed = failed.strip_suffix(" failed")?;
        out.insert(
            name.to_owned(),
            (passed.parse().ok()?, failed.parse().ok()?),
        );
    }
    Some(out)
}

/// Every scenario's `checks.json`: the suite writes one folder per scenario,
/// `results/server-{name}-{timestamp}/`, the timestamp 24 characters long
/// (`2026-01-02T03-04-05-678Z`). A scenario still running when the suite was killed has no
/// folder yet, or no complete checks.json: it is left out.
fn read_results(results: &Path) -> Result<BTreeMap<String, Scenario>> {
    let mut scenarios = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(results) else {
        return Ok(scenarios); // killed before the first scenario finished
    };
    for entry in entries {
        let folder = entry?.file_name().to_string_lossy().into_owned();
        let Some(name) = folder
            .strip_prefix("server-")
            .and_then(|rest| rest.get(..rest.len().checked_sub(25)?))
        else {
            continue;
        };
        let path = results.join(&folder).join("checks.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        // Half-written when the suite was killed: not finished either. (In a finished run, a
        // scenario missing here fails the comparison with the suite's SUMMARY.)
        let Ok(checks) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        scenarios.insert(name.to_owned(), scenario_of(&checks)?);
    }
    Ok(scenarios)
}

/// Counts a scenario's checks by status and keeps the FAILURE and WARNING ones' messages.
fn scenario_of(checks: &Value) -> Result<Scenario> {
    let mut s = Scenario::default();
    for check in checks.as_array().context("checks.json is not an array")? {
        let status = check["status"].as_str().unwrap_or_default();
        match status {
            "SUCCESS" => s.passed += 1,
            "FAILURE" => s.failed += 1,
            "WARNING" => s.warnings += 1,
            _ => continue, // INFO: the suite's trace of requests and events
        }
        if status != "SUCCESS" {
            // The suite's details (status codes, bodies seen) say why; capped, as some carry
            // whole results.
            let mut details = check["details"].to_string();
            if details.len() > 400 {
                let cut = details.floor_char_boundary(400);
                details.truncate(cut);
                details.push_str("...");
            }
            s.problems.push(format!(
                "{} {}: {} (details: {details})",
                status,
                check["id"].as_str().unwrap_or("?"),
                check["errorMessage"].as_str().unwrap_or("(no message)")
            ));
        }
    }
    Ok(s)
}

/// One row per scenario, one column per run, then every run's problems with that scenario.
fn print_table(runs: &[(&str, &Run)]) {
    let mark = |s: Option<&Scenario>| match s {
        Some(s) if s.ok() => format!("pass {}/{}", s.passed, s.passed + s.failed),
        Some(s) => format!(
            "FAIL {}/{}{}",
            s.passed,
            s.passed + s.failed,
            if s.warnings > 0 { " +warn" } else { "" }
        ),
        None => "not run".to_owned(),
    };
    let counts: Vec<String> = runs
        .iter()
        .map(|(label, run)| {
            let passes = run.scenarios.values().filter(|s| s.ok()).count();
            format!("{label} {passes}/{}", run.scenarios.len())
        })
        .collect();
    println!("conformance scenarios passing: {}", counts.join(", "));
    let mut header = format!("{:<32}", "scenario");
    for (label, _) in runs {
        header.push_str(&format!(" {label:<14}"));
    }
    println!("{header}");
    let mut names: Vec<&String> = runs
        .iter()
        .flat_map(|(_, run)| run.scenarios.keys())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let mut row = format!("{name:<32}");
        for (_, run) in runs {
            row.push_str(&format!(" {:<14}", mark(run.scenarios.get(name))));
        }
        println!("{row}");
        for (label, run) in runs {
            for problem in run
                .scenarios
                .get(name)
                .map(|s| s.problems.as_slice())
                .unwrap_or_default()
            {
                println!("    {label}: {problem}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The relay: adds the gateway key, changes nothing else

/// Serves on a loopback port until dropped, relaying every request to the gateway.
struct Relay {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct RelayState {
    client: reqwest::Client,
    /// The gateway's base URL; the request's path and query are appended as received.
    gateway: String,
    authorization: HeaderValue,
}

impl Relay {
    async fn start(gateway: &str, key: &str) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let state = RelayState {
            // No overall timeout (SSE streams stay open as long as the suite reads them), no
            // redirects followed, no proxy from the environment: the relay must be transparent.
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()?,
            gateway: gateway.trim_end_matches('/').to_owned(),
            authorization: HeaderValue::try_from(format!("Bearer {key}"))?,
        };
        let app = axum::Router::new().fallback(relay).with_state(state);
        let task = tokio::spawn(async move {
            // Ends when the test drops the relay (abort); an accept error ends it earlier and
            // the suite's requests then fail, which the comparison reports.
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { base, task })
    }
}

/// Headers that describe one hop's connection, not the message; the HTTP stacks on each side
/// set their own.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

async fn relay(State(state): State<RelayState>, req: Request) -> Response {
    match relay_one(&state, req).await {
        Ok(resp) => resp,
        // The gateway could not be reached at all; the suite sees a 502 like from any proxy.
        Err(e) => (StatusCode::BAD_GATEWAY, format!("relay: {e:#}")).into_response(),
    }
}

async fn relay_one(state: &RelayState, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", state.gateway);
    // Whether the request had a body at all: a GET must not grow a chunked empty one.
    let has_body =
        parts.headers.contains_key(CONTENT_LENGTH) || parts.headers.contains_key(TRANSFER_ENCODING);

    // Every header as received (Host and Origin included: the DNS-rebinding scenario depends
    // on the gateway seeing them; hyper keeps a Host that is already set), except hop-by-hop
    // ones and any Authorization, which is the relay's to set. Content-Length stays, so the
    // body is sent with the same framing. The one addition besides Authorization: reqwest
    // adds `Accept: */*` to a request without Accept (the suite always sends one).
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 1);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) && name != AUTHORIZATION {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(AUTHORIZATION, state.authorization.clone());

    let mut upstream = state.client.request(parts.method, url).headers(headers);
    if has_body {
        // Streamed, never collected: the relay must not change timing either way.
        upstream = upstream.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let answer = upstream.send().await.context("sending to the gateway")?;

    let mut resp = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            resp = resp.header(name, value);
        }
    }
    // Chunk by chunk as the gateway sends them, so SSE events arrive one by one.
    Ok(resp.body(Body::from_stream(answer.bytes_stream()))?)
}
