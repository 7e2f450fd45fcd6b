//! What the proxy does with the access decision, seen from both ends: what the caller gets
//! and what the upstream receives (recorded by the in-process upstreams). The end-to-end
//! proof against real servers is `tests/tests/it/access_control.rs`; these pin the mechanics.

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use mcpgw::testing::TEST_ADMIN_KEY;
use serde_json::{Value, json};

/// Replaces the fixture's admit-everyone group with `group`.
async fn set_group(gw: &Gateway, group: Value) {
    let admin = admin_api::app(gw.state.clone());
    let req = Request::put("/admin/server-groups/everyone")
        .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(group.to_string()))
        .unwrap();
    let r = send(&admin, req).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

fn allow_echo_for_alice() -> Value {
    json!({"servers": ["up"], "members": {"users": ["alice@example.com"]},
        "tool_rules": {"up": {"allow": ["echo"]}}})
}

#[tokio::test]
async fn a_hidden_call_reaches_the_upstream_only_as_a_name_that_cannot_exist() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    set_group(&gw, allow_echo_for_alice()).await;
    let session = open_session(&gw.app, "up", &gw.alice).await;

    // WHEN alice calls a tool her rule does not allow, with arguments
    let call = request(
        7,
        "tools/call",
        json!({"name": "secret-tool", "arguments": {"token": "s3cr3t-arg"}}),
    );
    let r = post(&gw.app, "up", &gw.alice, Some(&session), &call).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // THEN the upstream saw a call of a name no server has, without her arguments
    let seen = up.log.rpc("tools/call");
    assert_eq!(seen.len(), 1);
    let params = &seen[0].json()["params"];
    let sent = params["name"].as_str().unwrap();
    assert!(sent.starts_with("mcpgw-unknown-tool-"), "{params}");
    assert_eq!(params["arguments"], json!({}));
    assert!(!seen[0].body.contains("s3cr3t-arg") && !seen[0].body.contains("secret-tool"));
    // AND alice's answer carries her own id and never the sentinel name
    assert_eq!(answer(&r)["id"], 7, "{}", r.body);
    assert!(!r.body.contains("mcpgw-unknown-tool"), "{}", r.body);

    // WHEN she calls the allowed tool THEN it goes through unchanged
    let call = request(
        8,
        "tools/call",
        json!({"name": "echo", "arguments": {"x": 1}}),
    );
    let r = post(&gw.app, "up", &gw.alice, Some(&session), &call).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.log.rpc("tools/call");
    assert_eq!(seen[1].json()["params"]["name"], "echo");
    assert_eq!(seen[1].json()["params"]["arguments"], json!({"x": 1}));
}

#[tokio::test]
async fn a_caller_no_group_admits_gets_the_unknown_endpoint_answer_and_nothing_goes_upstream() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    set_group(&gw, allow_echo_for_alice()).await;
    let before = up.log.len();
    let forbidden = post(&gw.app, "up", &gw.bob, None, &init_message(1)).await;
    let unknown = post(&gw.app, "nope", &gw.bob, None, &init_message(1)).await;
    assert_eq!(forbidden.status, 404, "{}", forbidden.body);
    assert_eq!(
        (forbidden.status, &forbidden.body),
        (unknown.status, &unknown.body)
    );
    assert_eq!(up.log.len(), before, "nothing reached the upstream");
    // the admin is not exempt either
    let admin = post(&gw.app, "up", TEST_ADMIN_KEY, None, &init_message(1)).await;
    assert_eq!(admin.status, 404, "{}", admin.body);
}

#[tokio::test]
async fn stateless_lists_are_filtered_and_private_and_hidden_calls_rename_the_routing_header() {
    let up = Upstream::start(Speaks::Stateless).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;

    // GIVEN alice may use everything, so the list passes through but is made private
    let (list, headers) = modern(1, "tools/list", json!({}));
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &list).await;
    let result = &answer(&r)["result"];
    assert_eq!(result["tools"][0]["name"], "echo", "{}", r.body);
    assert_eq!(
        result["cacheScope"], "private",
        "the upstream said public; a list the gateway filters per caller is private"
    );

    // WHEN her rule allows only a tool the upstream does not list
    set_group(
        &gw,
        json!({"servers": ["up"], "members": {"users": ["alice@example.com"]},
            "tool_rules": {"up": {"allow": ["other-*"]}}}),
    )
    .await;
    // THEN the list is empty
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &list).await;
    assert_eq!(answer(&r)["result"]["tools"], json!([]), "{}", r.body);
    // AND a call of the hidden tool reaches the upstream as the sentinel, in body and header
    let (call, headers) = modern(2, "tools/call", json!({"name": "echo", "arguments": {}}));
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &call).await;
    assert!(!r.body.contains("mcpgw-unknown-tool"), "{}", r.body);
    let seen = up.log.rpc("tools/call");
    let sent = seen.last().expect("the upstream answers the unknown name");
    let name = sent.json()["params"]["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("mcpgw-unknown-tool-"), "{name}");
    assert_eq!(sent.header("mcp-name"), Some(name.as_str()));
}
