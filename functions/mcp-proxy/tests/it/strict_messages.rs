//! Authorize exactly what is forwarded (issue 22, item 5). An upstream whose JSON parser
//! keeps the FIRST of duplicate members, or matches member names case-insensitively (the
//! fake in `common/fake.rs`), must never read a message differently from the gateway: such
//! messages are refused (400, -32600) and nothing reaches the upstream; every accepted
//! message travels as the gateway parsed it, re-serialized, on every path (session era,
//! 2026-07-28, bridged, virtual servers, batches, notifications, client responses).
//!
//! Each attack is first shown to be one: the fake reads `delete_all` (or other arguments)
//! where serde_json, the gateway's reader before this change, reads an allowed call.

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::fake::{Fake, FakeEra, lenient};
use common::*;
use mcpgw::testing::TEST_ADMIN_KEY;
use serde_json::{Value, json};

/// A gateway in front of the first-wins fake in both eras (`fake`: session era, `modern`:
/// 2026-07-28), where everyone may use `echo` only, and a virtual server `v` exposing the
/// fake's `echo` as `say`.
async fn fixture() -> (Gateway, Fake, Fake) {
    let fake = Fake::start(FakeEra::Sessions).await;
    let modern = Fake::start(FakeEra::Stateless).await;
    let gw = gateway(
        &[("MCPGW_MAX_BODY_BYTES", "65536")],
        &[
            ("fake", &fake.url, "up-key"),
            ("modern", &modern.url, "up-key"),
        ],
    )
    .await;
    let admin = admin_api::app(gw.state.clone());
    let call_admin = |method: &str, path: &str, body: Value| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let group = json!({"servers": ["fake", "modern"], "members": {"everyone": true},
        "tool_rules": {"fake": {"allow": ["echo"]}, "modern": {"allow": ["echo"]}}});
    let r = send(
        &admin,
        call_admin("PUT", "/admin/server-groups/everyone", group),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let vs = json!({"name": "v", "tools": [{"server": "fake", "tool": "echo", "alias": "say"}],
        "members": {"everyone": true}});
    let r = send(&admin, call_admin("POST", "/admin/virtual-servers", vs)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    (gw, fake, modern)
}

/// What the first-wins fake and serde_json read in `body`: (method, tool name, arguments).
fn readings(body: &str) -> ((Value, Value, Value), (Value, Value, Value)) {
    let view = |v: Value| {
        (
            v["method"].clone(),
            v["params"]["name"].clone(),
            v["params"]["arguments"].clone(),
        )
    };
    let theirs = lenient(body).expect("the fake reads it");
    let gateways: Value = serde_json::from_str(body).expect("serde_json reads it");
    (view(theirs), view(gateways))
}

/// Smuggling attempts, id 5 (the fake runs `delete_all`, serde_json sees an allowed call).
const HIDDEN_TOOL: &[(&str, &str)] = &[
    (
        "name twice",
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"delete_all","name":"echo","arguments":{}}}"#,
    ),
    (
        "method twice",
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","method":"tools/list","params":{"name":"delete_all"}}"#,
    ),
    (
        "params twice",
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"delete_all","arguments":{}},"params":{"name":"echo","arguments":{}}}"#,
    ),
    (
        "Method beside method",
        r#"{"jsonrpc":"2.0","id":5,"Method":"tools/call","method":"tools/list","params":{"name":"delete_all"}}"#,
    ),
    (
        "Params beside params",
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","Params":{"name":"delete_all"},"params":{"name":"echo"}}"#,
    ),
    (
        "Name beside name",
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"Name":"delete_all","name":"echo"}}"#,
    ),
    (
        "name twice, once escaped",
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"n\u0061me":"delete_all","name":"echo"}}"#,
    ),
];

#[tokio::test]
async fn duplicate_and_case_variant_members_are_refused_and_reach_no_upstream() {
    let (gw, fake, _) = fixture().await;
    let session = open_session(&gw.app, "fake", &gw.alice).await;
    for (what, body) in HIDDEN_TOOL {
        // GIVEN a message the fake reads as a call of the denied tool, serde_json as allowed
        let (theirs, gateways) = readings(body);
        assert_eq!(
            (&theirs.0, &theirs.1),
            (&json!("tools/call"), &json!("delete_all")),
            "{what}: the fake must read the hidden call"
        );
        assert!(
            gateways.0 == json!("tools/list") || gateways.1 == json!("echo"),
            "{what}: serde_json must read an allowed message: {gateways:?}"
        );
        // WHEN alice sends it THEN it is refused with her id, and the upstream sees nothing
        let before = fake.log.len();
        let r = post_raw(&gw.app, "fake", &gw.alice, Some(&session), body).await;
        let error = r.rpc_error(400, json!(5), -32600);
        assert!(
            !error["message"].as_str().unwrap().contains("delete_all"),
            "{what}: {error}"
        );
        assert_eq!(fake.log.len(), before, "{what}: the upstream received it");
    }
    // Arguments the fake would read otherwise, at any depth.
    let nested = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"cmd":{"run":"rm -rf /","run":"ls"}}}}"#;
    let (theirs, gateways) = readings(nested);
    assert_ne!(theirs.2, gateways.2, "the readings differ");
    let before = fake.log.len();
    let r = post_raw(&gw.app, "fake", &gw.alice, Some(&session), nested).await;
    r.rpc_error(400, json!(5), -32600);
    // Which id? Neither is carried.
    let two_ids =
        r#"{"jsonrpc":"2.0","id":5,"id":6,"method":"tools/call","params":{"name":"echo"}}"#;
    let r = post_raw(&gw.app, "fake", &gw.alice, Some(&session), two_ids).await;
    r.rpc_error(400, Value::Null, -32600);
    let id_variant =
        r#"{"jsonrpc":"2.0","id":5,"ID":6,"method":"tools/call","params":{"name":"echo"}}"#;
    let r = post_raw(&gw.app, "fake", &gw.alice, Some(&session), id_variant).await;
    r.rpc_error(400, Value::Null, -32600);
    assert_eq!(fake.log.len(), before);
    assert!(fake.ran().is_empty(), "ran {:?}", fake.ran());

    // BASELINE: the allowed call runs; the denied one by its own name never does.
    let r = post(
        &gw.app,
        "fake",
        &gw.alice,
        Some(&session),
        &tools_call(7, "echo"),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), &r.json()["id"]),
        (200, &json!(7)),
        "{}",
        r.body
    );
    let r = post(
        &gw.app,
        "fake",
        &gw.alice,
        Some(&session),
        &tools_call(8, "delete_all"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(fake.ran(), ["echo"]);
}

#[tokio::test]
async fn the_upstream_receives_the_parsed_message_re_serialized() {
    let (gw, fake, _) = fixture().await;
    let session = open_session(&gw.app, "fake", &gw.alice).await;
    // Spacing, escapes, member order and number spellings as a client may write them.
    let raw = "{ \"params\" : { \"arguments\" : { \"text\" : \"caf\\u00e9 \\/ \\u2603\", \"n\" : 1E2, \"big\": 123456789012345678901234567890 },\n\t\"name\" : \"\\u0065cho\" },\n \"method\":\"tools/call\", \"id\" : 9, \"jsonrpc\" : \"2.0\" }";
    let r = post_raw(&gw.app, "fake", &gw.alice, Some(&session), raw).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        fake.calls(),
        [
            r#"{"id":9,"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"big":123456789012345678901234567890,"n":1E2,"text":"café / ☃"},"name":"echo"}}"#
        ],
        "canonical JSON, numbers as written"
    );
    assert_eq!(fake.ran(), ["echo"]);
}

/// The 2026-07-28 request with `params`, as text: the envelope added to `params_text`
/// (which must end with `}`), and its headers.
fn modern_raw(
    id: i64,
    method: &str,
    params_text: &str,
    name: &str,
) -> (String, Vec<(String, String)>) {
    let envelope = format!(r#""_meta":{{"{META_VERSION}":"{MODERN}","{META_CAPABILITIES}":{{}}}}"#);
    let open = params_text.strip_suffix('}').expect("params end with }");
    let params = format!("{open},{envelope}}}");
    let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#);
    let headers = vec![
        ("mcp-protocol-version".to_owned(), MODERN.to_owned()),
        ("mcp-method".to_owned(), method.to_owned()),
        ("mcp-name".to_owned(), name.to_owned()),
    ];
    (body, headers)
}

async fn post_text(
    app: &axum::Router,
    endpoint: &str,
    key: &str,
    headers: &[(String, String)],
    body: &str,
) -> Reply {
    let mut b = mcp_request(axum::http::Method::POST, endpoint, Some(key));
    for (k, v) in headers {
        b = b.header(k, v);
    }
    send(app, b.body(Body::from(body.to_owned())).unwrap()).await
}

#[tokio::test]
async fn every_era_and_virtual_servers_refuse_the_same_and_forward_what_they_parsed() {
    let (gw, fake, modern) = fixture().await;
    let smuggled = r#"{"name":"delete_all","name":"echo","arguments":{}}"#;
    let cased = r#"{"Name":"delete_all","name":"echo","arguments":{}}"#;

    // 2026-07-28 client, stateless upstream (the routing header names the allowed tool).
    let before = modern.log.len();
    for params in [smuggled, cased] {
        let (body, headers) = modern_raw(5, "tools/call", params, "echo");
        let r = post_text(&gw.app, "modern", &gw.alice, &headers, &body).await;
        r.rpc_error(400, json!(5), -32600);
    }
    assert_eq!(modern.log.len(), before, "{:?}", modern.log.methods());
    // BASELINE: the allowed call, its arguments as written.
    let (body, headers) = modern_raw(
        6,
        "tools/call",
        r#"{"name":"echo","arguments":{"n":1E2}}"#,
        "echo",
    );
    let r = post_text(&gw.app, "modern", &gw.alice, &headers, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(modern.ran(), ["echo"]);
    let sent = modern.calls().pop().unwrap();
    assert!(
        sent.contains(r#""arguments":{"n":1E2}"#) && !sent.contains(" "),
        "{sent}"
    );

    // 2026-07-28 client, session-era upstream (bridged), and a virtual server.
    for endpoint in ["fake", "v"] {
        let name = if endpoint == "v" { "say" } else { "echo" };
        let params = format!(r#"{{"name":"delete_all","name":"{name}","arguments":{{}}}}"#);
        let (body, headers) = modern_raw(5, "tools/call", &params, name);
        let before = fake.log.len();
        let r = post_text(&gw.app, endpoint, &gw.alice, &headers, &body).await;
        r.rpc_error(400, json!(5), -32600);
        assert_eq!(
            fake.log.len(),
            before,
            "{endpoint}: {:?}",
            fake.log.methods()
        );
    }
    assert!(fake.ran().is_empty(), "ran {:?}", fake.ran());
    // BASELINE: the virtual alias reaches the upstream under the tool's own name, the
    // arguments as the client wrote them.
    let (body, headers) = modern_raw(
        7,
        "tools/call",
        r#"{"name":"say","arguments":{"n":1E2}}"#,
        "say",
    );
    let r = post_text(&gw.app, "v", &gw.alice, &headers, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["id"], 7, "{}", r.body);
    assert_eq!(fake.ran(), ["echo"]);
    let sent = fake.calls().pop().unwrap();
    let read = lenient(&sent).unwrap();
    assert_eq!(read["params"]["name"], "echo", "{sent}");
    assert!(sent.contains(r#""arguments":{"n":1E2}"#), "{sent}");
}

#[tokio::test]
async fn batches_notifications_and_client_responses_are_read_as_strictly() {
    let (gw, fake, _) = fixture().await;
    let old = {
        let r = post(
            &gw.app,
            "fake",
            &gw.alice,
            None,
            &init_message_at(1, "2025-03-26"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.header("mcp-session-id").unwrap().to_owned()
    };
    let before = fake.log.len();
    for (body, id) in [
        // A batch item with a smuggled name (which of the batch's ids? none).
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all","name":"echo"}}]"#,
            Value::Null,
        ),
        // A notification and responses to a server request, each with a member twice.
        (
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"requestId":2}}"#,
            Value::Null,
        ),
        (
            r#"{"jsonrpc":"2.0","id":"s1","result":{"action":"accept","action":"decline"}}"#,
            json!("s1"),
        ),
        (
            r#"{"jsonrpc":"2.0","id":"s1","Result":{},"error":{"code":1,"message":"m"}}"#,
            json!("s1"),
        ),
    ] {
        let r = post_raw(&gw.app, "fake", &gw.alice, Some(&old), body).await;
        r.rpc_error(400, id, -32600);
    }
    assert_eq!(fake.log.len(), before, "{:?}", fake.log.methods());
    // BASELINE: a clean batch and a clean client response go through, re-serialized.
    let batch = "[ {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} ]";
    let r = post_raw(&gw.app, "fake", &gw.alice, Some(&old), batch).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let answer = "{\"jsonrpc\":\"2.0\", \"id\":\"s1\", \"result\":{}}";
    let r = post_raw(&gw.app, "fake", &gw.alice, Some(&old), answer).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let bodies: Vec<String> = fake.log.all()[before..]
        .iter()
        .map(|s| s.body.clone())
        .collect();
    assert_eq!(
        bodies,
        [
            r#"[{"id":1,"jsonrpc":"2.0","method":"ping"}]"#,
            r#"{"id":"s1","jsonrpc":"2.0","result":{}}"#
        ]
    );
}
