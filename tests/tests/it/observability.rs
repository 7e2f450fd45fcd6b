//! Metrics and traces end to end, each checked by its reference reader: a caller's W3C trace
//! reaches the Python MCP server (the echo peer's `whoami` reports what it received) under the
//! gateway's span; `/metrics` (admin-only on the gateway's port, open on
//! `MCPGW_METRICS_LISTEN`'s) parses with Prometheus' own text parser; the EMF lines validate
//! against the published EMF JSON schema; the OTLP bodies posted to a loopback collector parse
//! into the OpenTelemetry protobuf messages (`tests/clients/{parse_prometheus,check_emf,
//! check_otlp}.py`).
//!
//! Needs the peers (`MCPGW_TEST_ECHO_URL`, `MCPGW_TEST_PYTHON`): `scripts/test-all.sh`, or
//! `scripts/peers.sh start` by hand (see HELPER notes in the README's testing section).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use e2e::call_json;
use mcpgw::config::Config;
use mcpgw::secrets::env::EnvSecrets;
use mcpgw::state::AppState;
use reqwest::Method;
use serde_json::{Value, json};

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

struct Gw {
    base: String,
    state: AppState,
    admin: String,
    _dir: tempfile::TempDir,
}

/// The local router on a loopback port with EMF on and spans exported to `collector`.
async fn start(collector: &str) -> Result<Gw> {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let admin = mcpgw::crypto::random_token(24);
    let vars: HashMap<&str, String> = HashMap::from([
        ("MCPGW_LISTEN", addr.to_string()),
        ("MCPGW_DATA_DIR", dir.path().display().to_string()),
        ("MCPGW_BOOTSTRAP_ADMIN_KEY", admin.clone()),
        ("MCPGW_EMF", "1".into()),
        ("MCPGW_METRICS_NAMESPACE", "MCPGateway/e2e".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.to_owned()),
        ("OTEL_SERVICE_NAME", "mcp-gateway-e2e".into()),
    ]);
    let config = Config::from_lookup(|k| vars.get(k).cloned())?;
    let store = Arc::new(mcpgw::store::sqlite::SqliteStore::open(
        &dir.path().join("gw.sqlite3"),
    )?);
    let state = AppState::from_parts(
        config,
        store,
        Arc::new(EnvSecrets::from_map(HashMap::new())),
        Arc::new(mcpgw::clock::SystemClock),
    )?;
    let app = local::router(state.clone());
    tokio::spawn(mcpgw::runtime::serve_listener(
        listener,
        app,
        std::future::pending(),
    ));
    Ok(Gw {
        base: format!("http://{addr}"),
        state,
        admin,
        _dir: dir,
    })
}

/// A loopback OTLP collector keeping every body posted to `/v1/traces`.
async fn collector() -> Result<(String, Arc<Mutex<Vec<Value>>>)> {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                if let Ok(v) = serde_json::from_str(&body) {
                    sink.lock().unwrap().push(v);
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, got))
}

/// Runs `tests/clients/<script>` with `input` on stdin; its JSON output.
async fn python(python: &str, script: &str, input: &[u8]) -> Result<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(script);
    e2e::run_json_filter(python, &[path.display().to_string()], input)
        .await
        .with_context(|| script.to_owned())
}

/// One MCP POST with a trace context; (session id, JSON answer).
async fn mcp(
    url: &str,
    key: &str,
    session: Option<&str>,
    traceparent: &str,
    body: Value,
) -> Result<(Option<String>, Value)> {
    let mut req = reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("traceparent", traceparent)
        .header("tracestate", "vendor1=opaque-value")
        .json(&body);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let resp = req.send().await?;
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = resp.status();
    let text = resp.text().await?;
    ensure!(status.is_success(), "{status}: {text}");
    // A JSON answer, or the data lines of an SSE one (the last message is the answer).
    let value = serde_json::from_str(&text).or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .next_back()
            .context("no JSON in the answer")
    });
    Ok((sid, value.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn traces_reach_the_python_server_and_metrics_emf_and_otlp_parse_with_their_reference_readers()
-> Result<()> {
    let (Some(echo), Some(py)) = (
        mcpgw::testing::peer_url("MCPGW_TEST_ECHO_URL"),
        mcpgw::testing::peer_url("MCPGW_TEST_PYTHON"),
    ) else {
        return Ok(());
    };
    let (otlp, posted) = collector().await?;
    let gw = start(&otlp).await?;
    let admin_url = |path: &str| format!("{}{path}", gw.base);
    let admin_key = gw.admin.clone();
    let admin = |m, url: String, body| {
        let key = admin_key.clone();
        async move { call_json(m, &url, Some(&key), body).await }
    };
    let (s, b) = admin(
        Method::POST,
        admin_url("/admin/servers"),
        Some(json!({"name": "echo", "url": echo, "auth": {"type": "none"}})),
    )
    .await?;
    ensure!(s == 201, "{s} {b}");
    let (s, b) = admin(
        Method::POST,
        admin_url("/admin/server-groups"),
        Some(json!({"name": "all", "servers": ["echo"], "members": {"everyone": true}})),
    )
    .await?;
    ensure!(s == 201, "{s} {b}");
    let (s, b) = admin(
        Method::POST,
        admin_url("/admin/api-keys"),
        Some(json!({"owner": "carol@example.com", "name": "t"})),
    )
    .await?;
    ensure!(s == 201, "{s} {b}");
    let key = b["key"].as_str().context("key")?.to_owned();

    // GIVEN a caller in its own trace
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let url = format!("{}/mcp/echo", gw.base);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "1"}}});
    let (sid, _) = mcp(&url, &key, None, &tp, init).await?;
    let sid = sid.context("a session id")?;
    mcp(
        &url,
        &key,
        Some(&sid),
        &tp,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await
    .ok();
    // WHEN it calls a tool that reports the headers the server received
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}}});
    let (_, answer) = mcp(&url, &key, Some(&sid), &tp, call).await?;
    let seen: Value = answer["result"]["structuredContent"]
        .as_object()
        .map(|o| Value::Object(o.clone()))
        .or_else(|| {
            answer["result"]["content"][0]["text"]
                .as_str()
                .and_then(|t| serde_json::from_str(t).ok())
        })
        .with_context(|| format!("whoami's answer: {answer}"))?;
    let seen = seen.get("result").cloned().unwrap_or(seen);
    // THEN the server is in the caller's trace, under the gateway's span, with the state
    let up = seen["traceparent"]
        .as_str()
        .with_context(|| format!("{seen}"))?;
    let parts: Vec<&str> = up.split('-').collect();
    ensure!(
        parts.len() == 4 && parts[0] == "00" && parts[3] == "01",
        "{up}"
    );
    ensure!(parts[1] == CLIENT_TRACE, "another trace upstream: {up}");
    ensure!(
        parts[2] != CLIENT_SPAN && parts[2].len() == 16,
        "the parent is not the gateway's span: {up}"
    );
    ensure!(seen["tracestate"] == "vendor1=opaque-value", "{seen}");
    let gateway_span = parts[2].to_owned();

    // /metrics: admins only on the gateway's port ...
    let metrics_url = format!("{}/metrics", gw.base);
    let (s, _) = call_json(Method::GET, &metrics_url, None, None).await?;
    ensure!(s == 401, "anonymous scrape: {s}");
    let (s, _) = call_json(Method::GET, &metrics_url, Some(&key), None).await?;
    ensure!(s == 403, "a user's scrape: {s}");
    let resp = reqwest::Client::new()
        .get(&metrics_url)
        .bearer_auth(&gw.admin)
        .send()
        .await?;
    ensure!(resp.status() == 200);
    ensure!(
        resp.headers()["content-type"]
            .to_str()?
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        resp.headers()
    );
    let text = resp.text().await?;
    let parsed = python(&py, "parse_prometheus.py", text.as_bytes()).await?;
    let families = &parsed["families"];
    ensure!(
        families["mcpgw_requests"]["type"] == "counter",
        "{families}"
    );
    ensure!(families["mcpgw_request_duration_seconds"]["type"] == "histogram");
    let requests = families["mcpgw_requests"]["samples"]
        .as_array()
        .context("samples")?;
    let ok: f64 = requests
        .iter()
        .filter(|s| s["labels"]["endpoint"] == "echo" && s["labels"]["status_class"] == "2xx")
        .filter_map(|s| s["value"].as_f64())
        .sum();
    ensure!(
        ok >= 3.0,
        "the three MCP requests are counted: {requests:?}"
    );
    ensure!(!text.contains("carol"), "a user in the metrics");
    // ... and without a credential on the metrics listener.
    let open = local::scrape::serve_open(gw.state.clone(), "127.0.0.1:0".parse()?).await?;
    let resp = reqwest::get(format!("http://{open}/metrics")).await?;
    ensure!(resp.status() == 200);
    let open_parsed = python(&py, "parse_prometheus.py", resp.text().await?.as_bytes()).await?;
    ensure!(open_parsed["families"]["mcpgw_requests"] == families["mcpgw_requests"]);
    let resp = reqwest::get(format!("http://{open}/admin/servers")).await?;
    ensure!(
        resp.status() == 404,
        "the metrics listener serves only /metrics"
    );

    // EMF: what this run observed, as CloudWatch reads it (plus records of every kind).
    let mut record = mcpgw::audit::AuditRecord::new(
        mcpgw::audit::Event::ToolCall,
        mcpgw::audit::Decision::Allow,
    );
    record.endpoint = Some("echo".into());
    record.tool = Some("whoami".into());
    record.latency_ms = Some(3.0);
    record.upstream_ms = Some(2.0);
    gw.state.metrics.observe_record(&record);
    record.decision = mcpgw::audit::Decision::Limited;
    gw.state.metrics.observe_record(&record);
    gw.state.metrics.inc_audit_write_failures(1);
    let mut lines = Vec::new();
    gw.state.metrics.flush_emf(&mut lines)?;
    let report = python(&py, "check_emf.py", &lines).await?;
    ensure!(report["failures"] == json!([]), "{report}");
    for metric in [
        "Requests",
        "RequestLatency",
        "Calls",
        "CallLatency",
        "UpstreamLatency",
        "RateLimited",
        "AuditWriteFailures",
    ] {
        ensure!(
            report["metrics"]
                .as_array()
                .is_some_and(|m| m.contains(&json!(metric))),
            "{metric} missing: {report}"
        );
    }
    ensure!(!String::from_utf8_lossy(&lines).contains("carol"));

    // OTLP: the gateway's span in the caller's trace, parsed as the collector would.
    gw.state.spans.flush().await;
    let bodies = posted.lock().unwrap().clone();
    let spans = python(
        &py,
        "check_otlp.py",
        serde_json::to_vec(&bodies)?.as_slice(),
    )
    .await?;
    let spans = spans["spans"].as_array().context("spans")?;
    let server = spans
        .iter()
        .find(|s| s["span_id"] == gateway_span.as_str())
        .with_context(|| format!("no span {gateway_span} in {spans:?}"))?;
    ensure!(
        server["trace_id"] == CLIENT_TRACE && server["parent_span_id"] == CLIENT_SPAN,
        "{server}"
    );
    ensure!(
        server["kind"] == 2 && server["service"] == "mcp-gateway-e2e",
        "{server}"
    );
    ensure!(server["attributes"]["mcp.endpoint"] == "echo", "{server}");
    ensure!(
        spans
            .iter()
            .any(|s| s["kind"] == 3 && s["parent_span_id"] == gateway_span.as_str()),
        "no upstream span under the gateway's: {spans:?}"
    );
    ensure!(
        !serde_json::to_string(&bodies)?.contains(&key),
        "a credential in a span"
    );
    Ok(())
}
