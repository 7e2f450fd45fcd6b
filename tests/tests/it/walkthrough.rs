//! The README walk-through, end to end, on both stores: register server-everything and the
//! Python echo server (with a header secret), issue an API key, and call tools through the
//! gateway with the official Python MCP client. Checks that the upstream received the
//! gateway's header secret and never the caller's key.

use e2e::{StoreKind, TestGateway, Walkthrough, call_json, walkthrough};
use reqwest::Method;
use serde_json::json;

const UPSTREAM_SECRET: &str = "Bearer upstream-secret-for-echo";

async fn walkthrough_on(store: StoreKind) {
    let (Some(everything), Some(echo)) = (
        mcpgw::testing::peer_url("MCPGW_TEST_EVERYTHING_URL"),
        mcpgw::testing::peer_url("MCPGW_TEST_ECHO_URL"),
    ) else {
        return;
    };
    let gw = TestGateway::start(store, &[("MCPGW_SECRET_ECHO_TOKEN", UPSTREAM_SECRET)])
        .await
        .unwrap();

    let api_key = walkthrough(&Walkthrough {
        base: &gw.base,
        admin_key: &gw.admin_key,
        everything_url: &everything,
        echo_url: &echo,
        secret_ref: "secret://echo-token",
        secret_value: UPSTREAM_SECRET,
    })
    .await;

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
    walkthrough_on(StoreKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn walkthrough_on_dynamodb() {
    let Some(endpoint) = mcpgw::testing::moto_endpoint() else {
        return;
    };
    walkthrough_on(StoreKind::Dynamo(endpoint)).await;
}
