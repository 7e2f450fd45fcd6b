//! Rate limits end to end (issue 25, item 4), against the real server-everything, on SQLite
//! (one file shared by two gateways) and on DynamoDB (moto):
//!
//! - a per-user limit of N per minute lets exactly N of 50 concurrent calls through, half of
//!   them sent to each of two gateways on one store, and every other call answers a tool
//!   result with `isError` and a retry time within the limit's interval; another user's
//!   budget is untouched and the effective catalog shows what is left;
//! - a per-team limit is one budget for every member; a caller in no team is not limited;
//! - audit mode counts but lets every call through;
//! - a limited `prompts/get` (no result fits) is HTTP 429 with `Retry-After`;
//! - a call refused by its own (per-user) limit takes nothing from the global one;
//! - a limit on a tool also covers the spellings an upstream would fold into its name.
//!
//! The same limits under the Lambda functions are a step of `lambda_mode`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use e2e::mcp::{Answer, McpClient, SESSION};
use e2e::{StoreKind, TestGateway, call_json};
use reqwest::Method;
use serde_json::{Value, json};

/// The per-user limit: N per minute, so one call every 60/N s once the burst is spent.
const N: u64 = 5;
const INTERVAL_SECS: u64 = 60 / N;
const CALLS: usize = 50;

fn everything() -> Option<String> {
    mcpgw::testing::peer_url("MCPGW_TEST_EVERYTHING_URL")
}

fn moto() -> Option<String> {
    mcpgw::testing::peer_url("MCPGW_TEST_AWS_ENDPOINT")
}

async fn gateway(store: StoreKind, url: &str) -> Result<TestGateway> {
    let gw = TestGateway::start(store, &[]).await?;
    gw.add_server("everything", url, json!({"type": "none"}))
        .await?;
    gw.admit_everyone("all", &["everything"]).await?;
    Ok(gw)
}

async fn create(gw: &TestGateway, path: &str, doc: Value) -> Result<()> {
    let (s, body) = gw.admin(Method::POST, path, Some(doc)).await?;
    ensure!(s == 201, "POST {path}: {s} {body}");
    Ok(())
}

/// `Some(seconds)` of a limited tool result ("... retry in N s"), `None` for a normal one.
fn retry_in(answer: &Answer) -> Result<Option<u64>> {
    let r = answer.result()?;
    if r["isError"] != json!(true) {
        return Ok(None);
    }
    let text = r["content"][0]["text"]
        .as_str()
        .with_context(|| format!("limited result without text: {r}"))?;
    let secs = text
        .split("retry in ")
        .nth(1)
        .and_then(|t| t.strip_suffix(" s"))
        .with_context(|| format!("no retry time in {text:?}"))?;
    Ok(Some(secs.parse()?))
}

async fn echo(c: &mut McpClient) -> Result<Option<u64>> {
    retry_in(&c.call_tool("echo", json!({"message": "hi"})).await?)
}

/// What the effective catalog says is left of `rule` on `tool` for the key's owner.
async fn remaining(gw: &TestGateway, key: &str, tool: &str) -> Result<Value> {
    let (s, cat) = call_json(
        Method::GET,
        &format!("{}/me/catalog", gw.base),
        Some(key),
        None,
    )
    .await?;
    ensure!(s == 200, "catalog: {s} {cat}");
    let endpoint = cat["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "everything")
        .context("everything in the catalog")?;
    let t = endpoint["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == tool)
        .with_context(|| format!("{tool} in {endpoint}"))?;
    Ok(t["rate_limits"].clone())
}

async fn n_of_fifty_concurrent_calls_from_two_gateways(store: StoreKind) -> Result<()> {
    let Some(url) = everything() else {
        return Ok(());
    };
    let gw = gateway(store, &url).await?;
    let other = gw.beside().await?;
    create(
        &gw,
        "/admin/rate-limits",
        json!({"name": "echo-per-user", "mode": "enforce", "per": "user",
            "match": {"endpoints": ["everything"], "tools": ["echo"]},
            "limits": [{"count": N, "window": "1m"}]}),
    )
    .await?;
    let alice = gw.user_key("alice@example.com").await?;
    let bob = gw.user_key("bob@example.com").await?;
    // Sessions first (initialize and lists are never counted), then the calls all at once.
    let mut clients = Vec::new();
    for i in 0..CALLS {
        let g = if i % 2 == 0 { &gw } else { &other };
        let mut c = McpClient::connect(&g.mcp_url("everything"), &alice, SESSION).await?;
        c.tools().await?;
        clients.push(c);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLS));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                echo(&mut c).await
            })
        })
        .collect();
    let mut waits = Vec::new();
    let mut passed = 0;
    for t in tasks {
        match t.await?? {
            None => passed += 1,
            Some(w) => waits.push(w),
        }
    }
    ensure!(
        passed == N,
        "{passed} of {CALLS} calls passed a limit of {N} (waits {waits:?})"
    );
    // The burst is spent: the next call may pass one interval after the burst began. Each
    // wait is measured from its own call's clock reading, which may be up to the burst's
    // duration away from the readings that spent the burst (a call can read the clock
    // first and reach the store last), and is rounded up to whole seconds.
    let took = started.elapsed().as_secs() + 1;
    for w in &waits {
        ensure!(
            (INTERVAL_SECS.saturating_sub(took).max(1)..=INTERVAL_SECS + took).contains(w),
            "retry in {w} s is not within one interval ({INTERVAL_SECS} s) give or take the {took} s the calls took"
        );
    }
    // Alice's budget is hers: Bob still has his, and the catalog says so (without counting).
    let mut b = McpClient::connect(&other.mcp_url("everything"), &bob, SESSION).await?;
    ensure!(
        echo(&mut b).await?.is_none(),
        "bob is limited by alice's calls"
    );
    let left = remaining(&gw, &alice, "echo").await?;
    ensure!(
        left[0]["rule"] == "echo-per-user" && left[0]["remaining"] == 0,
        "{left}"
    );
    ensure!(left[0]["limit"] == format!("{N}/1m"), "{left}");
    let left = remaining(&other, &bob, "echo").await?;
    ensure!(left[0]["remaining"] == N - 1, "{left}");
    let left_again = remaining(&other, &bob, "echo").await?;
    ensure!(
        left_again[0]["remaining"] == N - 1,
        "reading the catalog counts nothing"
    );
    // A tool the rule does not name is not limited.
    let mut a = McpClient::connect(&gw.mcp_url("everything"), &alice, SESSION).await?;
    let sum = a.call_tool("get-sum", json!({"a": 1, "b": 2})).await?;
    ensure!(retry_in(&sum)?.is_none(), "{}", sum.raw);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn per_user_limit_across_two_gateways_on_sqlite() -> Result<()> {
    n_of_fifty_concurrent_calls_from_two_gateways(StoreKind::Sqlite).await
}

#[tokio::test(flavor = "multi_thread")]
async fn per_user_limit_across_two_gateways_on_dynamodb() -> Result<()> {
    let Some(endpoint) = moto() else {
        return Ok(());
    };
    n_of_fifty_concurrent_calls_from_two_gateways(StoreKind::Dynamo(endpoint)).await
}

async fn team_shares_one_budget(store: StoreKind) -> Result<()> {
    let Some(url) = everything() else {
        return Ok(());
    };
    let gw = gateway(store, &url).await?;
    let other = gw.beside().await?;
    create(
        &gw,
        "/admin/teams",
        json!({"name": "eng", "members": ["alice@example.com", "bob@example.com"]}),
    )
    .await?;
    create(
        &gw,
        "/admin/rate-limits",
        json!({"name": "eng-echo", "mode": "enforce", "per": "team",
            "match": {"tools": ["echo"]}, "limits": [{"count": 3, "window": "1m"}]}),
    )
    .await?;
    let mut alice = McpClient::connect(
        &gw.mcp_url("everything"),
        &gw.user_key("alice@example.com").await?,
        SESSION,
    )
    .await?;
    let mut bob = McpClient::connect(
        &other.mcp_url("everything"),
        &gw.user_key("bob@example.com").await?,
        SESSION,
    )
    .await?;
    let mut carol = McpClient::connect(
        &gw.mcp_url("everything"),
        &gw.user_key("carol@example.com").await?,
        SESSION,
    )
    .await?;
    let mut seen = Vec::new();
    for i in 0..4 {
        let c = if i % 2 == 0 { &mut alice } else { &mut bob };
        seen.push(echo(c).await?.is_none());
    }
    ensure!(
        seen == [true, true, true, false],
        "one budget of 3 for the team: {seen:?}"
    );
    ensure!(
        echo(&mut alice).await?.is_some(),
        "alice shares bob's spent budget"
    );
    for _ in 0..5 {
        ensure!(echo(&mut carol).await?.is_none(), "carol is in no team");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn per_team_limit_is_shared_by_its_members_on_sqlite() -> Result<()> {
    team_shares_one_budget(StoreKind::Sqlite).await
}

#[tokio::test(flavor = "multi_thread")]
async fn per_team_limit_is_shared_by_its_members_on_dynamodb() -> Result<()> {
    let Some(endpoint) = moto() else {
        return Ok(());
    };
    team_shares_one_budget(StoreKind::Dynamo(endpoint)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_mode_counts_without_blocking() -> Result<()> {
    let Some(url) = everything() else {
        return Ok(());
    };
    let gw = gateway(StoreKind::Sqlite, &url).await?;
    create(
        &gw,
        "/admin/rate-limits",
        json!({"name": "watch", "mode": "audit", "per": "global",
            "match": {"endpoints": ["everything"]}, "limits": [{"count": 2, "window": "1m"}]}),
    )
    .await?;
    let key = gw.user_key("alice@example.com").await?;
    let mut c = McpClient::connect(&gw.mcp_url("everything"), &key, SESSION).await?;
    for i in 0..5 {
        ensure!(
            echo(&mut c).await?.is_none(),
            "call {i} was blocked by an audit rule"
        );
    }
    // It counted all the same: nothing is left, and the limiter says it would have limited.
    let left = remaining(&gw, &key, "echo").await?;
    ensure!(
        left[0]["remaining"] == 0 && left[0]["mode"] == "audit",
        "{left}"
    );
    let p = mcpgw::identity::Principal::bootstrap();
    let verdict = gw
        .state
        .limits
        .check(&mcpgw::limits::CallKey {
            principal: &p,
            endpoint: "everything",
            method: "tools/call",
            name: "echo",
        })
        .await;
    ensure!(
        verdict
            == mcpgw::limits::Verdict::Pass {
                would_limit: Some("watch".into())
            },
        "{verdict:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limited_prompt_is_429_with_retry_after() -> Result<()> {
    let Some(url) = everything() else {
        return Ok(());
    };
    let gw = gateway(StoreKind::Sqlite, &url).await?;
    create(
        &gw,
        "/admin/rate-limits",
        json!({"name": "prompts", "mode": "enforce", "per": "api_key",
            "match": {"methods": ["prompts/get"]}, "limits": [{"count": 1, "window": "1m", "burst": 1}]}),
    )
    .await?;
    let key = gw.user_key("alice@example.com").await?;
    let mut c = McpClient::connect(&gw.mcp_url("everything"), &key, SESSION).await?;
    let first = c
        .request_raw("prompts/get", json!({"name": "simple_prompt"}))
        .await?;
    ensure!(
        first.status() != 429,
        "the first prompt is within the limit"
    );
    let second = c
        .request_raw("prompts/get", json!({"name": "simple_prompt"}))
        .await?;
    ensure!(second.status() == 429, "{}", second.status());
    let retry: u64 = second
        .headers()
        .get("retry-after")
        .context("Retry-After")?
        .to_str()?
        .parse()?;
    ensure!((58..=60).contains(&retry), "Retry-After {retry}");
    // Tool calls are not counted by a prompts-only rule.
    ensure!(echo(&mut c).await?.is_none());
    Ok(())
}

/// A gateway on SQLite in front of server-everything with `rules`; `None` without the peer.
async fn sqlite_gateway_with(rules: &[Value]) -> Result<Option<TestGateway>> {
    let Some(url) = everything() else {
        return Ok(None);
    };
    let gw = gateway(StoreKind::Sqlite, &url).await?;
    for r in rules {
        create(&gw, "/admin/rate-limits", r.clone()).await?;
    }
    Ok(Some(gw))
}

async fn session_of(gw: &TestGateway, user: &str) -> Result<McpClient> {
    McpClient::connect(
        &gw.mcp_url("everything"),
        &gw.user_key(user).await?,
        SESSION,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_over_their_own_limit_does_not_drain_the_global_one() -> Result<()> {
    let Some(gw) = sqlite_gateway_with(&[
        json!({"name": "everyone", "mode": "enforce", "per": "global",
            "limits": [{"count": 5, "window": "1m"}]}),
        json!({"name": "each", "mode": "enforce", "per": "user",
            "limits": [{"count": 1, "window": "1m"}]}),
    ])
    .await?
    else {
        return Ok(());
    };
    let mut alice = session_of(&gw, "alice@example.com").await?;
    let mut passed = 0;
    for _ in 0..10 {
        passed += usize::from(echo(&mut alice).await?.is_none());
    }
    ensure!(
        passed == 1,
        "{passed} of alice's 10 calls passed a 1/min limit"
    );
    let mut bob = session_of(&gw, "bob@example.com").await?;
    ensure!(
        echo(&mut bob).await?.is_none(),
        "alice's refused calls used up the global budget"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_on_a_tool_covers_every_spelling_of_its_name() -> Result<()> {
    let Some(gw) = sqlite_gateway_with(&[json!({"name": "one-echo", "mode": "enforce",
        "per": "user", "match": {"tools": ["echo"]}, "limits": [{"count": 1, "window": "1m"}]})])
    .await?
    else {
        return Ok(());
    };
    let mut c = session_of(&gw, "alice@example.com").await?;
    ensure!(echo(&mut c).await?.is_none(), "the first call is allowed");
    for variant in ["Echo", "echo ", "ECHO", "\u{ff45}\u{ff43}\u{ff48}\u{ff4f}"] {
        let answer = c.call_tool(variant, json!({"message": "hi"})).await?;
        ensure!(
            retry_in(&answer)?.is_some(),
            "{variant:?} escaped the limit on echo: {}",
            answer.raw
        );
    }
    // Baseline: a tool the rule does not name is still served.
    let sum = c.call_tool("get-sum", json!({"a": 1, "b": 2})).await?;
    ensure!(retry_in(&sum)?.is_none(), "{}", sum.raw);
    Ok(())
}
