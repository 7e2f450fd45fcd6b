//! The 2026-07-28 bridge in front of a session-era upstream (server-everything), as clients
//! see it (issue 24, items 2 and 3):
//!
//! 1. Bridged upstream sessions are per kind of client: two 2026-07-28 clients of one user,
//!    one declaring `roots` and one not, see their own tool sets at the same time, in both
//!    orders (server-everything offers `get-roots-list` only to clients with `roots`); raw
//!    HTTP and the Python SDK's default mode.
//! 2. Server-to-client requests through the bridge: the upstream's `roots/list` during a
//!    call becomes an `input_required` result; the client's retry with `inputResponses`
//!    answers it upstream and the call completes with the client's roots, at once (the old
//!    bridge stalled for the upstream's 60 s). A client that declared no such capability
//!    never stalls either.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::mcp::{McpClient, STATELESS};
use e2e::{StoreKind, TestGateway};
use reqwest::Method;
use serde_json::{Value, json};

const ROOTS_TOOL: &str = "get-roots-list";
/// Far below the upstream's 60 s wait for a lost request, far above any honest answer here.
const PROMPT: Duration = Duration::from_secs(5);

/// A gateway with server-everything registered as `everything` and alice's key, or `None`
/// (skip) when the peers are not running.
async fn setup() -> Option<(TestGateway, String)> {
    let url = mcpgw::testing::peer_url("MCPGW_TEST_EVERYTHING_URL")?;
    let gw = TestGateway::start(StoreKind::Sqlite, &[]).await.unwrap();
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "everything", "url": url, "auth": {"type": "none"}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "registering everything: {body}");
    gw.admit_everyone("everyone", &["everything"])
        .await
        .unwrap();
    let alice = gw.user_key("alice@example.com").await.unwrap();
    Some((gw, alice))
}

fn roots_caps() -> Value {
    json!({"roots": {"listChanged": true}})
}

async fn stateless(gw: &TestGateway, key: &str, caps: Value) -> McpClient {
    McpClient::connect_with(&gw.mcp_url("everything"), key, STATELESS, caps)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Bridged sessions per kind of client

#[tokio::test]
async fn two_clients_of_one_user_see_their_own_tools_in_both_orders() {
    let Some((gw, alice)) = setup().await else {
        return;
    };
    let bob = gw.user_key("bob@example.com").await.unwrap();
    for (roots_first, key) in [(true, &alice), (false, &bob)] {
        // GIVEN two 2026-07-28 clients of one user, one declaring roots and one not (another
        // user per order, so each order starts without bridged sessions)
        let mut with = stateless(&gw, key, roots_caps()).await;
        let mut without = stateless(&gw, key, json!({})).await;
        // WHEN they list tools, in either order, and again interleaved
        let (first, second) = if roots_first {
            let a = with.tool_names().await.unwrap();
            (a, without.tool_names().await.unwrap())
        } else {
            let b = without.tool_names().await.unwrap();
            (with.tool_names().await.unwrap(), b)
        };
        let (again_with, again_without) = tokio::join!(with.tool_names(), without.tool_names());
        // THEN each sees the tools the upstream offers to a client like itself
        let order = if roots_first {
            "roots first"
        } else {
            "roots last"
        };
        assert!(first.iter().any(|t| t == ROOTS_TOOL), "{order}: {first:?}");
        assert!(
            !second.iter().any(|t| t == ROOTS_TOOL),
            "{order}: {second:?}"
        );
        assert_eq!(
            first.len(),
            second.len() + 1,
            "{order}: {first:?} / {second:?}"
        );
        assert_eq!(again_with.unwrap(), first, "{order}");
        assert_eq!(again_without.unwrap(), second, "{order}");
    }
}
