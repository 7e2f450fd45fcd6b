//! Hostile upstreams (issue 22, item 8; OWASP API10, unsafe consumption of APIs). An answer
//! to a request that is neither JSON nor SSE, not JSON-RPC, or a response to another id
//! reaches the client as the gateway's own JSON-RPC error with the client's id (`-32010`,
//! `data.reason: "upstream_bad_answer"`, HTTP 502 like every upstream failure), never as the
//! upstream's text; in an event stream already under way, as the stream's last event. In
//! both eras, direct, bridged and on virtual servers. The upstream is `common/fake.rs`,
//! whose tools answer badly on purpose; `echo` and `sse_ok` are the baselines.

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::fake::{Fake, FakeEra};
use common::*;
use mcpgw::testing::TEST_ADMIN_KEY;
use serde_json::{Value, json};

/// Tools whose JSON (or non-JSON) answer is bad.
const BAD_JSON: &[&str] = &[
    "html",
    "html500",
    "text",
    "notrpc",
    "request",
    "wrongid",
    "gatewayid",
    "dupid",
    "big",
];

/// What no answer may carry: the upstream's page, text, or another request's result.
const LEAKS: &[&str] = &[
    "pwned",
    "stack trace",
    "all good",
    "hello",
    "someone else",
    "mcpgw-",
];

fn assert_bad(r: &Reply, id: &Value, what: &str) {
    let error = r.rpc_error(502, id.clone(), -32010);
    assert_eq!(
        error["data"]["reason"], "upstream_bad_answer",
        "{what}: {}",
        r.body
    );
    assert_clean(r, what);
}

fn assert_clean(r: &Reply, what: &str) {
    for leak in LEAKS {
        assert!(
            !r.body.contains(leak),
            "{what}: '{leak}' reached the client: {}",
            r.body
        );
    }
}

/// `events` ends with the gateway's bad-answer error for `id`, and nothing of the upstream's
/// bad message.
fn assert_bad_event(r: &Reply, id: &Value, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    let events = r.events();
    let last = events.last().unwrap_or_else(|| panic!("{what}: no event"));
    assert_eq!(
        (
            &last["id"],
            &last["error"]["code"],
            &last["error"]["data"]["reason"]
        ),
        (id, &json!(-32010), &json!("upstream_bad_answer")),
        "{what}: {}",
        r.body
    );
    assert_eq!(
        events[0]["method"], "notifications/progress",
        "{what}: progress passes"
    );
    assert_clean(r, what);
}

async fn fixture() -> (Gateway, Fake, Fake) {
    let sessions = Fake::start(FakeEra::Sessions).await;
    let stateless = Fake::start(FakeEra::Stateless).await;
    let gw = gateway(
        &[],
        &[
            ("old", &sessions.url, "up-key"),
            ("new", &stateless.url, "up-key"),
        ],
    )
    .await;
    (gw, sessions, stateless)
}

#[tokio::test]
async fn session_clients_get_their_own_id_and_never_the_upstreams_bad_answer() {
    let (gw, _, _) = fixture().await;
    // Session client in front of a session-era upstream (direct) and of a stateless one
    // (the gateway adapts the answers).
    for endpoint in ["old", "new"] {
        let session = open_session(&gw.app, endpoint, &gw.alice).await;
        for tool in BAD_JSON {
            let id = json!(format!("c-{tool}"));
            let r = post(
                &gw.app,
                endpoint,
                &gw.alice,
                Some(&session),
                &tools_call(id.clone(), tool),
            )
            .await;
            assert_bad(&r, &id, &format!("{endpoint}/{tool}"));
        }
        for tool in ["sse_wrongid", "sse_html"] {
            let r = post(
                &gw.app,
                endpoint,
                &gw.alice,
                Some(&session),
                &tools_call(41, tool),
            )
            .await;
            assert_bad_event(&r, &json!(41), &format!("{endpoint}/{tool}"));
        }
        // BASELINE: a good answer, JSON and SSE, reaches the client as before.
        let r = post(
            &gw.app,
            endpoint,
            &gw.alice,
            Some(&session),
            &tools_call(42, "echo"),
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), &r.json()["id"]),
            (200, &json!(42)),
            "{}",
            r.body
        );
        let text = r.json()["result"]["content"][0]["text"].clone();
        assert!(text.as_str().unwrap().starts_with("ran echo"), "{}", r.body);
        let r = post(
            &gw.app,
            endpoint,
            &gw.alice,
            Some(&session),
            &tools_call(43, "sse_ok"),
        )
        .await;
        let events = r.events();
        let methods: Vec<&Value> = events.iter().map(|e| &e["method"]).collect();
        assert_eq!(
            methods,
            [
                &json!("sampling/createMessage"),
                &json!("notifications/progress"),
                &Value::Null
            ],
            "server requests and notifications pass: {}",
            r.body
        );
        assert_eq!(events[2]["id"], 43);
        assert_eq!(events[2]["result"]["content"][0]["text"], "streamed");
        assert!(r.body.contains(": keep-alive"), "comments pass: {}", r.body);
        assert!(
            r.body.contains("id: ev-0"),
            "priming events pass: {}",
            r.body
        );
        // An error the upstream could not tie to a request is the client's, with its id.
        let r = post(
            &gw.app,
            endpoint,
            &gw.alice,
            Some(&session),
            &tools_call(44, "nullid"),
        )
        .await;
        let error = r.rpc_error(400, json!(44), -32602);
        assert_eq!(error["message"], "bad arguments");
    }
}

#[tokio::test]
async fn stateless_clients_get_their_own_id_direct_and_bridged() {
    let (gw, _, _) = fixture().await;
    // 2026-07-28 client in front of a stateless upstream (direct) and of a session-era one
    // (bridged: the upstream sees gateway-made ids, which must never reach the client).
    for endpoint in ["new", "old"] {
        for tool in BAD_JSON {
            let (body, headers) = modern(
                format!("m-{tool}"),
                "tools/call",
                json!({"name": tool, "arguments": {}}),
            );
            let r = post_with(&gw.app, endpoint, &gw.alice, &headers, &body).await;
            assert_bad(
                &r,
                &json!(format!("m-{tool}")),
                &format!("{endpoint}/{tool}"),
            );
        }
        for tool in ["sse_wrongid", "sse_html"] {
            let (body, headers) = modern(51, "tools/call", json!({"name": tool, "arguments": {}}));
            let r = post_with(&gw.app, endpoint, &gw.alice, &headers, &body).await;
            assert_bad_event(&r, &json!(51), &format!("{endpoint}/{tool}"));
        }
        // BASELINE
        let (body, headers) = modern(52, "tools/call", json!({"name": "echo", "arguments": {}}));
        let r = post_with(&gw.app, endpoint, &gw.alice, &headers, &body).await;
        assert_eq!(
            (r.status.as_u16(), &r.json()["id"]),
            (200, &json!(52)),
            "{}",
            r.body
        );
        assert!(!r.body.contains("mcpgw-"), "{}", r.body);
        let (body, headers) = modern(53, "tools/call", json!({"name": "sse_ok", "arguments": {}}));
        let r = post_with(&gw.app, endpoint, &gw.alice, &headers, &body).await;
        let last = r.events().pop().unwrap();
        if endpoint == "new" {
            assert_eq!(
                (&last["id"], &last["result"]["content"][0]["text"]),
                (&json!(53), &json!("streamed"))
            );
        } else {
            // Bridged, the upstream's sampling request (the client declared sampling) is
            // the 2026-07-28 input_required result, the client's own id (issue 24).
            assert_eq!(
                (&last["id"], &last["result"]["resultType"]),
                (&json!(53), &json!("input_required")),
                "{}",
                r.body
            );
            let asked: Vec<&Value> = last["result"]["inputRequests"]
                .as_object()
                .unwrap()
                .values()
                .collect();
            assert_eq!(asked[0]["method"], "sampling/createMessage");
        }
    }
}

#[tokio::test]
async fn an_answer_too_large_to_adapt_is_refused_before_any_header() {
    let (gw, _, _) = fixture().await;
    // The bridge must rewrite the answer (id, resultType): it cannot stream it, and 9 MiB is
    // over what it holds. Before: 200 and an empty body.
    let (body, headers) = modern(61, "tools/call", json!({"name": "big", "arguments": {}}));
    let r = post_with(&gw.app, "old", &gw.alice, &headers, &body).await;
    assert_bad(&r, &json!(61), "bridged big");
    assert!(r.body.len() < 1024, "the answer is the error alone");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large")
    );
    // Session client, stateless upstream: adapted the other way.
    let session = open_session(&gw.app, "new", &gw.alice).await;
    let r = post(
        &gw.app,
        "new",
        &gw.alice,
        Some(&session),
        &tools_call(62, "big"),
    )
    .await;
    assert_bad(&r, &json!(62), "enveloped big");
}

#[tokio::test]
async fn virtual_servers_refuse_bad_answers_of_their_members() {
    let (gw, _, _) = fixture().await;
    let admin = admin_api::app(gw.state.clone());
    let bad = [
        "html",
        "wrongid",
        "gatewayid",
        "sse_wrongid",
        "notrpc",
        "errnocode",
    ];
    let tools: Vec<Value> = std::iter::once("echo")
        .chain(bad)
        .map(|t| json!({"server": "old", "tool": t}))
        .collect();
    let vs = json!({"name": "v", "tools": tools, "members": {"everyone": true}});
    let req = Request::post("/admin/virtual-servers")
        .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(vs.to_string()))
        .unwrap();
    let r = send(&admin, req).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Exposed as `{server}__{tool}`.
    for tool in bad {
        let name = format!("old__{tool}");
        let (body, headers) = modern(71, "tools/call", json!({"name": name, "arguments": {}}));
        let r = post_with(&gw.app, "v", &gw.alice, &headers, &body).await;
        assert_bad(&r, &json!(71), &format!("v/{tool}"));
    }
    // BASELINE
    let (body, headers) = modern(
        72,
        "tools/call",
        json!({"name": "old__echo", "arguments": {}}),
    );
    let r = post_with(&gw.app, "v", &gw.alice, &headers, &body).await;
    assert_eq!(
        (r.status.as_u16(), &r.json()["id"]),
        (200, &json!(72)),
        "{}",
        r.body
    );
}
