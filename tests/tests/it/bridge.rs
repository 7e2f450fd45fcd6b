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

// ---------------------------------------------------------------------------------------------
// 2. Server-to-client requests through the bridge

/// The `input_required` result of a call whose upstream asked for roots: its request key and
/// state, after checking it asks for exactly `roots/list`.
fn asked_for_roots(answer: &e2e::mcp::Answer) -> (String, String) {
    let result = answer.result().unwrap();
    assert_eq!(result["resultType"], "input_required", "{}", answer.raw);
    let requests = result["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1, "{result}");
    let (key, request) = requests.iter().next().unwrap();
    assert_eq!(request["method"], "roots/list", "{result}");
    let state = result["requestState"].as_str().unwrap().to_owned();
    (key.clone(), state)
}

fn roots_retry(key: &str, state: &str, uri: &str) -> Value {
    json!({"name": ROOTS_TOOL, "arguments": {},
        "inputResponses": {key: {"roots": [{"uri": uri, "name": "project"}]}},
        "requestState": state})
}

fn text(answer: &e2e::mcp::Answer) -> String {
    let result = answer.result().unwrap();
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn an_upstream_roots_request_becomes_input_required_and_is_answered() {
    let Some((gw, alice)) = setup().await else {
        return;
    };
    let mut client = stateless(&gw, &alice, roots_caps()).await;
    let started = Instant::now();
    // WHEN alice calls the tool whose upstream asks the client for its roots
    let first = client.call_tool(ROOTS_TOOL, json!({})).await.unwrap();
    // THEN the call is answered input_required at once, asking for roots/list
    let (key, state) = asked_for_roots(&first);
    // WHEN she retries with her roots and the state
    let done = client
        .request(
            "tools/call",
            roots_retry(&key, &state, "file:///work/alpha"),
        )
        .await
        .unwrap();
    // THEN the upstream got them: the tool's answer lists them, well within its 60 s wait
    let elapsed = started.elapsed();
    assert_eq!(
        done.result().unwrap()["resultType"],
        "complete",
        "{}",
        done.raw
    );
    assert!(text(&done).contains("file:///work/alpha"), "{}", done.raw);
    assert!(elapsed < PROMPT, "took {elapsed:?}");
}

#[tokio::test]
async fn a_request_state_is_bound_to_its_caller_and_call() {
    let Some((gw, alice)) = setup().await else {
        return;
    };
    let bob = gw.user_key("bob@example.com").await.unwrap();
    let mut alices = stateless(&gw, &alice, roots_caps()).await;
    let first = alices.call_tool(ROOTS_TOOL, json!({})).await.unwrap();
    let (key, state) = asked_for_roots(&first);
    let refused = |a: &e2e::mcp::Answer, what: &str| {
        assert_eq!(a.status, 400, "{what}: {}", a.raw);
        assert_eq!(a.error().unwrap()["code"], -32602, "{what}: {}", a.raw);
    };
    // Bob presenting alice's state (same kind of client, same call)
    let mut bobs = stateless(&gw, &bob, roots_caps()).await;
    let a = bobs
        .request("tools/call", roots_retry(&key, &state, "file:///bob"))
        .await
        .unwrap();
    refused(&a, "another user's state");
    // Alice's state from another kind of client of hers
    let mut other = stateless(&gw, &alice, json!({"roots": {}, "sampling": {}})).await;
    let a = other
        .request("tools/call", roots_retry(&key, &state, "file:///x"))
        .await
        .unwrap();
    refused(&a, "another client's state");
    // Alice's state carried into another call, tampered with, or made up
    let mut params = roots_retry(&key, &state, "file:///x");
    params["name"] = json!("echo");
    params["arguments"] = json!({"message": "hi"});
    let a = alices.request("tools/call", params).await.unwrap();
    refused(&a, "another call");
    let mut tampered = state.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [tampered.as_str(), "made-up", &"A".repeat(70_000)] {
        let a = alices
            .request("tools/call", roots_retry(&key, bad, "file:///x"))
            .await
            .unwrap();
        refused(&a, "a forged state");
    }
    // inputResponses that are not a map of results
    let mut params = roots_retry(&key, &state, "file:///x");
    params["inputResponses"] = json!(["not", "a", "map"]);
    let a = alices.request("tools/call", params).await.unwrap();
    refused(&a, "inputResponses not an object");
    // Baseline: none of that consumed the call; alice's own retry completes it with her roots.
    let done = alices
        .request(
            "tools/call",
            roots_retry(&key, &state, "file:///work/alice"),
        )
        .await
        .unwrap();
    assert!(text(&done).contains("file:///work/alice"), "{}", done.raw);
    assert!(!text(&done).contains("bob"), "{}", done.raw);
}

#[tokio::test]
async fn a_retry_on_another_instance_sends_the_call_again_with_the_answers() {
    let Some((gw, alice)) = setup().await else {
        return;
    };
    // GIVEN a call held on one instance for alice's roots
    let mut here = stateless(&gw, &alice, roots_caps()).await;
    let (key, state) = asked_for_roots(&here.call_tool(ROOTS_TOOL, json!({})).await.unwrap());
    // WHEN her retry lands on another instance (nothing held there)
    let other = gw.beside().await.unwrap();
    let mut there = stateless(&other, &alice, roots_caps()).await;
    let started = Instant::now();
    let done = there
        .request("tools/call", roots_retry(&key, &state, "file:///work/beta"))
        .await
        .unwrap();
    // THEN the call is sent again and the upstream's repeated roots/list answered from hers
    assert_eq!(
        done.result().unwrap()["resultType"],
        "complete",
        "{}",
        done.raw
    );
    assert!(text(&done).contains("file:///work/beta"), "{}", done.raw);
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// The official Python SDK, default mode

/// Runs tests/clients/bridge_roots.py: lists tools and calls `get-roots-list` when listed.
async fn python(gw: &TestGateway, key: &str, root: Option<&str>) -> Value {
    let python = mcpgw::testing::peer_url("MCPGW_TEST_PYTHON").expect("MCPGW_TEST_PYTHON");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/bridge_roots.py");
    let url = gw.mcp_url("everything");
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(python)
            .arg(script)
            .args([url.as_str(), key, "auto", root.unwrap_or("-")])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the python client timed out")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client ({root:?}) failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("bad output ({e}): {stdout}"))
}

#[tokio::test]
async fn python_sdk_default_mode_clients_with_and_without_roots() {
    let Some((gw, alice)) = setup().await else {
        return;
    };
    // GIVEN two Python SDK clients of alice in the SDK's default mode, at the same time, one
    // with a roots callback and one without
    let (with, without) = tokio::join!(
        python(&gw, &alice, Some("file:///work/python")),
        python(&gw, &alice, None)
    );
    // THEN both speak 2026-07-28 through the bridge and see their own tools
    assert_eq!(with["protocol"], STATELESS, "{with}");
    assert_eq!(without["protocol"], STATELESS, "{without}");
    let names = |v: &Value| -> Vec<String> { serde_json::from_value(v["tools"].clone()).unwrap() };
    assert!(names(&with).iter().any(|t| t == ROOTS_TOOL), "{with}");
    assert!(
        !names(&without).iter().any(|t| t == ROOTS_TOOL),
        "{without}"
    );
    assert_eq!(names(&with).len(), names(&without).len() + 1);
    // AND the roots tool, answered through an input_required round, carries the client's roots
    assert_eq!(with["is_error"], false, "{with}");
    assert!(
        with["content"][0]
            .as_str()
            .unwrap_or_default()
            .contains("file:///work/python"),
        "{with}"
    );
    assert!(
        with["call_seconds"].as_f64().unwrap() < PROMPT.as_secs_f64(),
        "{with}"
    );
}

#[tokio::test]
async fn sampling_and_elicitation_requests_are_answered_through_the_bridge() {
    let Some((gw, alice)) = setup().await else {
        return;
    };
    let caps = json!({"sampling": {}, "elicitation": {"form": {}}});
    let mut client = stateless(&gw, &alice, caps).await;
    let cases = [
        (
            "trigger-sampling-request",
            json!({"prompt": "say hi", "maxTokens": 5}),
            "sampling/createMessage",
            json!({"role": "assistant", "model": "e2e-model",
                "content": {"type": "text", "text": "hi from the client"}}),
            "hi from the client",
        ),
        (
            "trigger-elicitation-request",
            json!({}),
            "elicitation/create",
            json!({"action": "accept", "content": {"name": "Alice Example"}}),
            "Alice Example",
        ),
    ];
    for (tool, args, method, response, expected) in cases {
        let started = Instant::now();
        let first = client.call_tool(tool, args.clone()).await.unwrap();
        let result = first.result().unwrap();
        assert_eq!(
            result["resultType"], "input_required",
            "{tool}: {}",
            first.raw
        );
        let (key, request) = result["inputRequests"]
            .as_object()
            .unwrap()
            .iter()
            .next()
            .unwrap();
        assert_eq!(request["method"], method, "{tool}: {result}");
        let state = result["requestState"].as_str().unwrap();
        let done = client
            .request(
                "tools/call",
                json!({"name": tool, "arguments": args,
                    "inputResponses": {key: response}, "requestState": state}),
            )
            .await
            .unwrap();
        let texts = done.result().unwrap()["content"].to_string();
        assert!(texts.contains(expected), "{tool}: {}", done.raw);
        assert!(
            started.elapsed() < PROMPT,
            "{tool} took {:?}",
            started.elapsed()
        );
    }
}
