//! The observing layer of `/mcp`: W3C trace context from the client to the upstream (joined
//! when valid, replaced when not, on direct and virtual servers), request metrics by
//! endpoint, status class and error reason, and OTLP spans posted to a loopback collector.
//! The e2e crate's `observability.rs` repeats the trace check against the Python MCP server
//! and parses `/metrics`, EMF and OTLP with their reference parsers.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::response::IntoResponse;
use common::*;
use mcpgw::testing::TEST_ADMIN_KEY;
use mcpgw::trace::TraceParent;
use serde_json::{Value, json};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

async fn fixture(vars: &[(&str, &str)]) -> (Gateway, Upstream) {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(vars, &[("up", &up.url, "up-key")]).await;
    (gw, up)
}

fn parsed(seen: &Seen) -> TraceParent {
    let raw = seen
        .header("traceparent")
        .unwrap_or_else(|| panic!("no traceparent upstream: {:?}", seen.headers));
    TraceParent::parse(raw.as_bytes()).unwrap_or_else(|| panic!("invalid upstream value {raw}"))
}

#[tokio::test]
async fn a_valid_client_trace_reaches_the_upstream_with_the_gateways_span_as_parent() {
    let (gw, up) = fixture(&[]).await;
    let tp = client_traceparent();
    let headers = [
        ("traceparent", tp.as_str()),
        ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    ];
    let init = post_with(&gw.app, "up", &gw.alice, &headers, &init_message(1)).await;
    assert_eq!(init.status, 200, "{}", init.body);
    let session = init.header("mcp-session-id").unwrap().to_owned();
    let mut with_session = headers.to_vec();
    with_session.push(("mcp-session-id", &session));
    let call = post_with(
        &gw.app,
        "up",
        &gw.alice,
        &with_session,
        &tools_call(2, "echo"),
    )
    .await;
    assert_eq!(call.status, 200, "{}", call.body);

    let seen = up.log.all();
    assert_eq!(up.log.methods(), ["initialize", "tools/call"]);
    let mut gateway_spans = Vec::new();
    for s in &seen {
        let p = parsed(s);
        assert_eq!(hex(&p.trace_id), CLIENT_TRACE, "the client's trace");
        assert_ne!(
            hex(&p.span_id),
            CLIENT_SPAN,
            "the parent is the gateway's span, not the client's"
        );
        assert_eq!(p.flags, 1);
        assert_eq!(
            s.header("tracestate"),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        gateway_spans.push(p.span_id);
    }
    assert_ne!(
        gateway_spans[0], gateway_spans[1],
        "one gateway span per request"
    );
}

#[tokio::test]
async fn invalid_client_values_never_reach_the_upstream() {
    let (gw, up) = fixture(&[]).await;
    let session = open_session(&gw.app, "up", &gw.alice).await;
    let long_state = format!("a={}", "x".repeat(600));
    let cases: Vec<(String, String, &str)> = vec![
        // (traceparent, tracestate, what)
        (
            "garbage".into(),
            "congo=t61rcWkgMzE".into(),
            "not a traceparent",
        ),
        (
            format!("00-{}-{CLIENT_SPAN}-01", CLIENT_TRACE.to_uppercase()),
            "congo=x".into(),
            "uppercase hex",
        ),
        (
            format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32)),
            "congo=x".into(),
            "all-zero trace id",
        ),
        (
            format!("00-{CLIENT_TRACE}-{}-01", "0".repeat(16)),
            "congo=x".into(),
            "all-zero span id",
        ),
        (
            format!("ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
            "congo=x".into(),
            "version ff",
        ),
    ];
    for (i, (tp, ts, what)) in cases.iter().enumerate() {
        let headers = [
            ("traceparent", tp.as_str()),
            ("tracestate", ts.as_str()),
            ("mcp-session-id", session.as_str()),
        ];
        let r = post_with(
            &gw.app,
            "up",
            &gw.alice,
            &headers,
            &tools_call(10 + i as i64, "echo"),
        )
        .await;
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        let s = up.log.all().pop().unwrap();
        let p = parsed(&s);
        assert_ne!(hex(&p.trace_id), CLIENT_TRACE, "{what}: a new trace");
        assert_ne!(
            s.header("traceparent"),
            Some(tp.as_str()),
            "{what}: the client's value went upstream"
        );
        assert_eq!(
            s.header("tracestate"),
            None,
            "{what}: tracestate without a valid parent"
        );
    }
    // A valid traceparent with an oversized tracestate: the trace is joined, the state dropped.
    let tp = client_traceparent();
    let headers = [
        ("traceparent", tp.as_str()),
        ("tracestate", long_state.as_str()),
        ("mcp-session-id", session.as_str()),
    ];
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &tools_call(30, "echo")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = up.log.all().pop().unwrap();
    assert_eq!(hex(&parsed(&s).trace_id), CLIENT_TRACE);
    assert_eq!(
        s.header("tracestate"),
        None,
        "a tracestate over 512 bytes is not passed on"
    );
    // No trace context at all: the upstream still gets one.
    let r = post_with::<&str, &str>(
        &gw.app,
        "up",
        &gw.alice,
        &[("mcp-session-id", &session)],
        &tools_call(31, "echo"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    parsed(&up.log.all().pop().unwrap());
}

#[tokio::test]
async fn a_virtual_servers_routed_call_carries_the_trace_too() {
    let (gw, up) = fixture(&[]).await;
    let vs = json!({"name": "v", "tools": [{"server": "up", "tool": "echo"}],
        "members": {"everyone": true}});
    let req = Request::post("/admin/virtual-servers")
        .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(vs.to_string()))
        .unwrap();
    let r = send(&admin_api::app(gw.state.clone()), req).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (body, mut headers) = modern(
        5,
        "tools/call",
        json!({"name": "up__echo", "arguments": {}}),
    );
    let tp = client_traceparent();
    headers.push(("traceparent", tp.clone()));
    let r = post_with(&gw.app, "v", &gw.alice, &headers, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let call = up.log.only("tools/call");
    assert_eq!(hex(&parsed(&call).trace_id), CLIENT_TRACE);
}

#[tokio::test]
async fn requests_are_counted_by_endpoint_status_class_and_reason() {
    let (gw, _up) = fixture(&[]).await;
    open_session(&gw.app, "up", &gw.alice).await;
    // Unauthenticated, with an invented endpoint name: counted, the name not kept.
    let r = post(&gw.app, "made-up-name", "not-a-key", None, &init_message(1)).await;
    assert_eq!(r.status, 401);
    let text = gw.state.metrics.render_prometheus();
    for want in [
        r#"mcpgw_requests_total{endpoint="up",status_class="2xx"} 1"#,
        r#"mcpgw_requests_total{endpoint="none",status_class="4xx"} 1"#,
        r#"mcpgw_errors_total{endpoint="none",reason="unauthenticated"} 1"#,
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    assert!(!text.contains("made-up-name"));
    assert!(!text.contains("alice"), "no user in the metrics");
}

/// Endpoint labels are only names admission resolved as registered and usable: a request
/// refused before that (a foreign `Origin`, a forbidden or unknown endpoint) counts under `none` whatever its status; one refused after it (an
/// unknown session) keeps its registered endpoint.
#[tokio::test]
async fn only_admitted_requests_name_their_endpoint() {
    let (gw, _up) = fixture(&[]).await;
    let random = format!("rnd-{}", mcpgw::trace::hex(&mcpgw::trace::new_span_id()));
    for endpoint in [random.as_str(), "up"] {
        let r = post_with(
            &gw.app,
            endpoint,
            &gw.alice,
            &[("origin", "https://evil.example.net")],
            &init_message(1),
        )
        .await;
        assert_eq!(r.status, 403, "{endpoint}: {}", r.body);
    }
    let put = Request::put(format!("/mcp/{random}-put"))
        .header("authorization", format!("Bearer {}", gw.alice))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&gw.app, put).await.status, 405);
    // Baseline: admitted, then refused (a session the gateway never issued).
    let r = post(
        &gw.app,
        "up",
        &gw.alice,
        Some("not-a-session"),
        &tools_call(2, "echo"),
    )
    .await;
    assert!(r.status.is_client_error(), "{}: {}", r.status, r.body);
    let text = gw.state.metrics.render_prometheus();
    for want in [
        // (The 405 never reaches the observing layer: a route layer runs on matched methods.)
        r#"mcpgw_requests_total{endpoint="none",status_class="4xx"} 2"#,
        r#"mcpgw_errors_total{endpoint="none",reason="forbidden"} 2"#,
        r#"mcpgw_requests_total{endpoint="up",status_class="4xx"} 1"#,
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    assert!(
        !text.contains("rnd-"),
        "a caller's name became a label:\n{text}"
    );
}

/// An upstream that knows one tool, `echo`, and answers any other name as the MCP SDKs do:
/// the TypeScript SDK (and Python's FastMCP) with an `isError` result, others with JSON-RPC
/// -32602 (alternating here).
async fn one_tool_upstream() -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: String| async move {
            let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let Some(id) = msg.get("id").cloned() else {
                return (axum::http::StatusCode::ACCEPTED, "").into_response();
            };
            let answer = match msg["method"].as_str().unwrap_or_default() {
                "initialize" => json!({"result": {"protocolVersion": "2025-06-18",
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "one-tool", "version": "1"}}}),
                "tools/call" if msg["params"]["name"] == "echo" => {
                    json!({"result": {"content": [{"type": "text", "text": "hi"}]}})
                }
                "tools/call" if id.as_i64().unwrap_or(0) % 2 == 0 => {
                    let text = format!("Tool {} not found", msg["params"]["name"]);
                    json!({"result": {"content": [{"type": "text", "text": text}],
                        "isError": true}})
                }
                "tools/call" => json!({"error": {"code": -32602, "message": "Unknown tool"}}),
                _ => json!({"result": {}}),
            };
            let mut answer = answer;
            answer["jsonrpc"] = "2.0".into();
            answer["id"] = id;
            (
                [
                    ("content-type", "application/json"),
                    ("mcp-session-id", "s-1"),
                ],
                answer.to_string(),
            )
                .into_response()
        }),
    );
    format!("{}/mcp", serve(app).await)
}

/// A caller inventing tool names on an allow-all server adds one `other` series, not one per
/// name: the upstream answered every one as unknown. `echo`, which it ran, is a label.
#[tokio::test]
async fn a_thousand_invented_tool_names_are_one_other_series() {
    let url = one_tool_upstream().await;
    let gw = gateway(&[], &[("up", &url, "up-key")]).await;
    let session = open_session(&gw.app, "up", &gw.alice).await;
    let r = post(
        &gw.app,
        "up",
        &gw.alice,
        Some(&session),
        &tools_call(1, "echo"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for i in 0..1000i64 {
        let name = format!("invented-{i}");
        let r = post(
            &gw.app,
            "up",
            &gw.alice,
            Some(&session),
            &tools_call(2 + i, &name),
        )
        .await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
    let text = gw.state.metrics.render_prometheus();
    for want in [
        r#"mcpgw_calls_total{endpoint="up",method="tools/call",tool="echo",outcome="ok"} 1"#,
        r#"mcpgw_calls_total{endpoint="up",method="tools/call",tool="other",outcome="is_error"} 500"#,
        r#"mcpgw_calls_total{endpoint="up",method="tools/call",tool="other",outcome="rpc_error"} 500"#,
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    let series = text
        .lines()
        .filter(|l| l.starts_with("mcpgw_calls_total{"))
        .count();
    assert_eq!(series, 3, "{text}");
    assert!(
        !text.contains("invented-"),
        "an invented name became a label"
    );
}

/// `MCPGW_TRACESTATE_FORWARD=0`: the upstream still joins the client's trace (the
/// `traceparent` with the gateway's span), but never sees the client's `tracestate`.
#[tokio::test]
async fn tracestate_forwarding_can_be_turned_off() {
    let (gw, up) = fixture(&[("MCPGW_TRACESTATE_FORWARD", "0")]).await;
    let tp = client_traceparent();
    let headers = [
        ("traceparent", tp.as_str()),
        ("tracestate", "congo=t61rcWkgMzE"),
    ];
    let init = post_with(&gw.app, "up", &gw.alice, &headers, &init_message(1)).await;
    assert_eq!(init.status, 200, "{}", init.body);
    let seen = up.log.all().pop().unwrap();
    assert_eq!(hex(&parsed(&seen).trace_id), CLIENT_TRACE);
    assert_eq!(seen.header("tracestate"), None);
}

/// A loopback OTLP collector: every body posted to `/v1/traces`, with its content type.
async fn collector() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                sink.lock()
                    .unwrap()
                    .push((ct, serde_json::from_str(&body).unwrap_or(Value::Null)));
                "{}"
            }
        }),
    );
    (serve(app).await, got)
}

#[tokio::test]
async fn spans_are_exported_over_otlp_json_in_the_clients_trace() {
    let (base, got) = collector().await;
    let (gw, _up) = fixture(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &base),
        ("OTEL_SERVICE_NAME", "gw-under-test"),
    ])
    .await;
    let session = open_session(&gw.app, "up", &gw.alice).await;
    let tp = client_traceparent();
    let headers = [
        ("traceparent", tp.as_str()),
        ("mcp-session-id", session.as_str()),
    ];
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &tools_call(2, "echo")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    gw.state.spans.flush().await;
    let mut spans = Vec::new();
    for _ in 0..50 {
        spans = got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(ct, body)| {
                assert_eq!(ct, "application/json");
                let rs = &body["resourceSpans"][0];
                assert_eq!(
                    rs["resource"]["attributes"][0]["value"]["stringValue"],
                    "gw-under-test"
                );
                rs["scopeSpans"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect::<Vec<Value>>();
        if spans.iter().any(|s| s["traceId"] == CLIENT_TRACE) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = spans
        .iter()
        .find(|s| s["traceId"] == CLIENT_TRACE && s["kind"] == 2)
        .unwrap_or_else(|| panic!("no server span in the client's trace: {spans:?}"));
    assert_eq!(server["parentSpanId"], CLIENT_SPAN);
    assert_eq!(server["name"], "POST /mcp/{endpoint}");
    let start: u128 = server["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: u128 = server["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(
        end >= start && start > 1_600_000_000_000_000_000,
        "{start} {end}"
    );
    let attrs = server["attributes"].to_string();
    assert!(
        attrs.contains(r#""key":"mcp.endpoint","value":{"stringValue":"up"}"#),
        "{attrs}"
    );
    assert!(attrs.contains(r#""intValue":"200""#), "{attrs}");
    // The upstream call: a client span under the gateway's span.
    let client = spans
        .iter()
        .find(|s| s["traceId"] == CLIENT_TRACE && s["kind"] == 3)
        .unwrap_or_else(|| panic!("no upstream span: {spans:?}"));
    assert_eq!(client["parentSpanId"], server["spanId"]);
    // An unsampled client trace is not exported.
    let before = got.lock().unwrap().len();
    let unsampled = tp.replace("-01", "-00");
    let headers = [
        ("traceparent", unsampled.as_str()),
        ("mcp-session-id", session.as_str()),
    ];
    post_with(&gw.app, "up", &gw.alice, &headers, &tools_call(3, "echo")).await;
    gw.state.spans.flush().await;
    let all = got.lock().unwrap();
    assert!(
        all[before..]
            .iter()
            .all(|(_, b)| !b.to_string().contains("\"startTimeUnixNano\"")
                || !b.to_string().contains(CLIENT_TRACE)),
        "an unsampled trace was exported"
    );
}

pub fn hex(b: &[u8]) -> String {
    mcpgw::trace::hex(b)
}
