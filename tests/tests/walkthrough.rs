//! The README walk-through, end to end, on both stores: register server-everything and the
//! Python echo server (with a header secret), issue an API key, and call tools through the
//! gateway with the official Python MCP client. Checks that the upstream received the
//! gateway's header secret and never the caller's key.

use e2e::{StoreKind, TestGateway, call_json, python_mcp_call};
use reqwest::Method;
use serde_json::json;

const UPSTREAM_SECRET: &str = "Bearer upstream-secret-for-echo";

async fn walkthrough(store: StoreKind) {
    let (Some(everything), Some(echo)) = (
        mcpgw::testing::peer_url("MCPGW_TEST_EVERYTHING_URL"),
        mcpgw::testing::peer_url("MCPGW_TEST_ECHO_URL"),
    ) else {
        return;
    };
    let gw = TestGateway::start(store, &[("MCPGW_SECRET_ECHO_TOKEN", UPSTREAM_SECRET)])
        .await
        .unwrap();

    // GIVEN two registered servers and a user's key
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "everything", "url": everything, "auth": {"type": "none"}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{body}");
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "echo", "url": echo, "auth": {"type": "header", "headers": {"Authorization": "secret://echo-token"}}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        body["auth"]["headers"]["Authorization"], "secret://echo-token",
        "the reference is shown, never the value"
    );
    let (s, key) = gw
        .admin(
            Method::POST,
            "/admin/api-keys",
            Some(json!({"owner": "alice@example.com", "name": "laptop"})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{key}");
    let api_key = key["key"].as_str().unwrap().to_owned();

    // WHEN the Python SDK calls server-everything's get-sum through the gateway
    let out = python_mcp_call(
        &gw.mcp_url("everything"),
        &api_key,
        "get-sum",
        json!({"a": 2, "b": 40}),
        "auto",
    )
    .await
    .unwrap();
    // THEN the tools are listed and the sum comes back
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
    assert_eq!(
        out["protocol"], "2025-11-25",
        "server-everything has no 2026 era: the SDK fell back: {out}"
    );

    // WHEN the echo server reports the Authorization header it received, in the stateless
    // 2026-07-28 era (the SDK's default) and in the initialize-handshake era
    for (mode, era) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        let out = python_mcp_call(&gw.mcp_url("echo"), &api_key, "whoami", json!({}), mode)
            .await
            .unwrap();
        assert_eq!(out["protocol"], era, "{out}");
        let seen: serde_json::Value =
            serde_json::from_str(out["content"][0].as_str().unwrap()).unwrap();
        // THEN it is the gateway's header secret, and the caller's key appears nowhere
        assert_eq!(
            seen["authorization"], UPSTREAM_SECRET,
            "upstream saw: {seen}"
        );
        assert!(
            !out.to_string().contains(&api_key),
            "the caller's key reached the upstream: {out}"
        );
    }
    // AND a wrong key is refused with a challenge, an unknown endpoint is 404
    let (s, body) = call_json(
        Method::POST,
        &gw.mcp_url("everything"),
        Some("mcpgw_nope"),
        Some(json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
    )
    .await
    .unwrap();
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("unauthenticated")),
        "{body}"
    );
    let (s, _) = call_json(
        Method::POST,
        &gw.mcp_url("nope"),
        Some(&api_key),
        Some(json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
    )
    .await
    .unwrap();
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn walkthrough_on_sqlite() {
    walkthrough(StoreKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn walkthrough_on_dynamodb() {
    let Some(endpoint) = mcpgw::testing::moto_endpoint() else {
        return;
    };
    walkthrough(StoreKind::Dynamo(endpoint)).await;
}
