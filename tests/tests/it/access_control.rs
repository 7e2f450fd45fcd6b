//! Access control end to end (issue 9), against the real server-everything and the Python echo
//! server, with API keys and real IdP logins (oidc-provider):
//!
//! - several users and teams each see exactly their tools in `tools/list`, in both protocol
//!   eras, and the effective catalog says the same;
//! - a hidden tool answers exactly like an unknown one; an endpoint a caller may not use
//!   answers exactly like one that does not exist;
//! - a policy change reaches an open session (and its held GET stream) within seconds;
//! - a virtual server combining tools of server-everything and of two registrations of the
//!   Python server works through the official Python `mcp` client, each upstream receiving
//!   its own credential;
//! - the admin API refuses bad documents with clear 4xx and writes nothing;
//! - a randomized policy (seeded; `MCPGW_TEST_SEED` replays one) where `tools/list` through
//!   the gateway always equals the catalog and an independent model, and every call outside
//!   it is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use e2e::mcp::{McpClient, SESSION, STATELESS};
use e2e::{OidcPeer, StoreKind, TestGateway, call_json, python_mcp_call};
use reqwest::Method;
use serde_json::{Value, json};

const SECRET_A: &str = "Bearer upstream-secret-a";
const SECRET_B: &str = "Bearer upstream-secret-b";
const PROVIDER: &str = "corp";
/// A name no upstream has: what "unknown tool" looks like there.
const UNKNOWN: &str = "no-such-tool-anywhere";

struct Peers {
    everything: String,
    echo: String,
}

fn peers() -> Option<Peers> {
    Some(Peers {
        everything: mcpgw::testing::peer_url("MCPGW_TEST_EVERYTHING_URL")?,
        echo: mcpgw::testing::peer_url("MCPGW_TEST_ECHO_URL")?,
    })
}

/// A gateway with `everything` (no credential), `echo` and `echo-b` (the same Python server,
/// each registration with its own header secret).
async fn gateway(p: &Peers) -> Result<TestGateway> {
    let gw = TestGateway::start(
        StoreKind::Sqlite,
        &[
            ("MCPGW_SECRET_ECHO_A", SECRET_A),
            ("MCPGW_SECRET_ECHO_B", SECRET_B),
        ],
    )
    .await?;
    for (name, url, auth) in [
        ("everything", &p.everything, json!({"type": "none"})),
        (
            "echo",
            &p.echo,
            json!({"type": "header", "headers": {"Authorization": "secret://echo-a"}}),
        ),
        (
            "echo-b",
            &p.echo,
            json!({"type": "header", "headers": {"Authorization": "secret://echo-b"}}),
        ),
    ] {
        let (s, body) = gw
            .admin(
                Method::POST,
                "/admin/servers",
                Some(json!({"name": name, "url": url, "auth": auth})),
            )
            .await?;
        ensure!(s == 201, "registering {name}: {s} {body}");
    }
    Ok(gw)
}

async fn post(gw: &TestGateway, path: &str, body: Value) -> Result<Value> {
    let (s, out) = gw.admin(Method::POST, path, Some(body.clone())).await?;
    ensure!(s == 201, "POST {path} {body}: {s} {out}");
    Ok(out)
}

async fn key_for(gw: &TestGateway, owner: &str) -> Result<String> {
    let out = post(
        gw,
        "/admin/api-keys",
        json!({"owner": owner, "name": "access-control"}),
    )
    .await?;
    Ok(out["key"].as_str().context("no key")?.to_owned())
}

/// The upstream's own tool names, asked directly (no gateway).
async fn upstream_tools(url: &str) -> Result<Vec<String>> {
    McpClient::connect(url, "direct", SESSION)
        .await?
        .tool_names()
        .await
}

/// `*` any run, `?` one character: the documented pattern language, written again here so the
/// test does not trust the gateway's matcher.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    go(&p, &n)
}

/// Endpoint name -> the tool names listed there, in order.
type View = BTreeMap<String, Vec<String>>;

/// The message without its id, for comparing two answers to different requests.
fn without_id(mut message: Value) -> Value {
    if let Some(m) = message.as_object_mut() {
        m.remove("id");
    }
    message
}

/// Asserts that calling `hidden` on `client` answers exactly like calling a tool nobody has
/// (same HTTP status, same JSON-RPC message but for the name).
async fn assert_hidden_like_unknown(client: &mut McpClient, hidden: &str, what: &str) {
    let unknown = client.call_tool(UNKNOWN, json!({})).await.unwrap();
    let refused = client.call_tool(hidden, json!({})).await.unwrap();
    assert_eq!(refused.status, unknown.status, "{what}: {hidden}");
    let expected = without_id(unknown.message.clone())
        .to_string()
        .replace(UNKNOWN, hidden);
    assert_eq!(
        without_id(refused.message.clone()).to_string(),
        expected,
        "{what}: calling hidden {hidden} must answer as an unknown tool"
    );
    assert!(
        unknown.error().is_some() || unknown.message["result"]["isError"] == true,
        "{what}: an unknown tool is an error: {}",
        unknown.raw
    );
}

/// `GET /me/catalog`: endpoint name -> tool names.
async fn catalog(gw: &TestGateway, token: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let (s, body) = call_json(
        Method::GET,
        &format!("{}/me/catalog", gw.base),
        Some(token),
        None,
    )
    .await?;
    ensure!(s == 200, "catalog: {s} {body}");
    catalog_map(&body)
}

fn catalog_map(body: &Value) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for e in body["endpoints"].as_array().context("no endpoints")? {
        ensure!(e.get("error").is_none(), "catalog could not list: {e}");
        let tools = e["tools"]
            .as_array()
            .context("no tools")?
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect();
        out.insert(e["name"].as_str().context("no name")?.to_owned(), tools);
    }
    Ok(out)
}

/// What one caller sees through `/mcp` on every endpoint in `endpoints`, in `version`:
/// the listed tool names where admitted. Where not, asserts the answer is exactly the one for
/// an endpoint that does not exist.
async fn seen(
    gw: &TestGateway,
    token: &str,
    endpoints: &[&str],
    version: &'static str,
) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for &e in endpoints {
        let mut client = match McpClient::connect(&gw.mcp_url(e), token, version).await {
            Ok(c) => c,
            Err(err) => {
                // the session era fails at initialize
                let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
                let (here, nowhere) = (gw.mcp_url(e), gw.mcp_url("no-such-endpoint"));
                let forbidden =
                    call_json(Method::POST, &here, Some(token), Some(ping.clone())).await?;
                let unknown = call_json(Method::POST, &nowhere, Some(token), Some(ping)).await?;
                ensure!(forbidden.0 == 404, "{e}: {err:#}; ping says {forbidden:?}");
                ensure!(
                    forbidden == unknown,
                    "a forbidden endpoint answers like an unknown one: {forbidden:?} vs {unknown:?}"
                );
                continue;
            }
        };
        let list = client.request("tools/list", json!({})).await?;
        if list.status == 404 {
            let mut other =
                McpClient::connect(&gw.mcp_url("no-such-endpoint"), token, version).await?;
            let unknown = other.request("tools/list", json!({})).await?;
            ensure!(
                (list.status, &list.raw) == (unknown.status, &unknown.raw),
                "{e}: a forbidden endpoint answers like an unknown one: {} vs {}",
                list.raw,
                unknown.raw
            );
            continue;
        }
        if version == STATELESS {
            ensure!(
                list.result()?["cacheScope"] == "private",
                "a filtered list is per caller: {}",
                list.raw
            );
        }
        out.insert(e.to_owned(), client.tool_names().await?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 1. Users and teams, API keys and IdP tokens

#[tokio::test(flavor = "multi_thread")]
async fn each_user_and_team_sees_exactly_their_tools() -> Result<()> {
    let (Some(p), Some(oidc)) = (peers(), OidcPeer::from_env()) else {
        return Ok(());
    };
    let gw = gateway(&p).await?;
    post(
        &gw,
        "/admin/identity-providers",
        json!({"name": PROVIDER, "issuer": oidc.issuer, "audiences": []}),
    )
    .await?;
    let everything = upstream_tools(&p.everything).await?;
    let echo = upstream_tools(&p.echo).await?;

    // GIVEN teams by IdP group (eng: alice at the IdP) and by email (platform: alice, carol)
    post(
        &gw,
        "/admin/teams",
        json!({"name": "eng-team", "members": [], "idp_groups": ["eng"]}),
    )
    .await?;
    post(
        &gw,
        "/admin/teams",
        json!({"name": "platform", "members": ["carol@example.com", "alice@example.com"]}),
    )
    .await?;
    // AND groups with allow and deny rules, exact names and patterns
    post(
        &gw,
        "/admin/server-groups",
        json!({"name": "eng-tools", "servers": ["everything", "echo"],
            "members": {"teams": ["eng-team"]},
            "tool_rules": {"everything": {"allow": ["echo", "get-*"]}}}),
    )
    .await?;
    post(
        &gw,
        "/admin/server-groups",
        json!({"name": "sales-tools", "servers": ["everything"],
            "members": {"users": ["bob@example.com"]},
            "tool_rules": {"everything": {"deny": ["get-*", "t?ggle-*", "trigger-long-running-operation"]}}}),
    )
    .await?;
    post(
        &gw,
        "/admin/server-groups",
        json!({"name": "platform-tools", "servers": ["everything", "echo"],
            "members": {"teams": ["platform"]},
            "tool_rules": {"everything": {"allow": ["get-sum"]}, "echo": {"allow": ["whoami"]}}}),
    )
    .await?;

    let only = |all: &[String], keep: &dyn Fn(&str) -> bool| -> Vec<String> {
        all.iter().filter(|t| keep(t)).cloned().collect()
    };
    // alice by IdP token: eng-team (by her groups claim) and platform (by email)
    let alice_jwt_everything = only(&everything, &|t| t == "echo" || glob("get-*", t));
    let alice_key_everything = only(&everything, &|t| t == "get-sum");
    let bob_everything = only(&everything, &|t| {
        !(glob("get-*", t) || glob("t?ggle-*", t) || t == "trigger-long-running-operation")
    });
    let whoami = only(&echo, &|t| t == "whoami");
    assert!(
        alice_key_everything.len() == 1 && whoami.len() == 1 && bob_everything.len() >= 3,
        "the upstreams changed: {everything:?} {echo:?}"
    );
    let map = |pairs: &[(&str, &Vec<String>)]| -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).clone()))
            .collect()
    };

    let alice_jwt = oidc.login(&gw.base, "alice").await?;
    let bob_jwt = oidc.login(&gw.base, "bob").await?;
    let callers: Vec<(&str, String, View)> = vec![
        (
            "alice (IdP token)",
            alice_jwt,
            map(&[("everything", &alice_jwt_everything), ("echo", &echo)]),
        ),
        (
            "alice (API key)",
            key_for(&gw, "alice@example.com").await?,
            map(&[("everything", &alice_key_everything), ("echo", &whoami)]),
        ),
        (
            "bob (IdP token)",
            bob_jwt,
            map(&[("everything", &bob_everything)]),
        ),
        (
            "bob (API key)",
            key_for(&gw, "bob@example.com").await?,
            map(&[("everything", &bob_everything)]),
        ),
        (
            "carol (API key, team by email)",
            key_for(&gw, "carol@example.com").await?,
            map(&[("everything", &alice_key_everything), ("echo", &whoami)]),
        ),
        (
            "dave (nobody)",
            key_for(&gw, "dave@example.com").await?,
            map(&[]),
        ),
        // the bootstrap admin: not exempt on /mcp
        ("the admin", gw.admin_key.clone(), map(&[])),
    ];
    let endpoints = ["everything", "echo", "echo-b"];
    for (who, token, want) in &callers {
        // THEN each sees exactly their tools, in both eras, in the upstream's order
        for version in [SESSION, STATELESS] {
            let got = seen(&gw, token, &endpoints, version).await?;
            assert_eq!(&got, want, "{who} in {version}");
        }
        // AND the catalog says the same
        assert_eq!(&catalog(&gw, token).await?, want, "{who}: catalog");
        // AND every hidden tool answers like an unknown one, in both eras
        for (endpoint, all) in [("everything", &everything), ("echo", &echo)] {
            let Some(visible) = want.get(endpoint) else {
                continue;
            };
            for version in [SESSION, STATELESS] {
                let mut c = McpClient::connect(&gw.mcp_url(endpoint), token, version).await?;
                for hidden in all.iter().filter(|t| !visible.contains(t)) {
                    assert_hidden_like_unknown(&mut c, hidden, &format!("{who} {version}")).await;
                }
            }
        }
    }

    // AND an allowed tool works; the same call by someone it is hidden from does not
    let carol = &callers[4].1;
    let mut c = McpClient::connect(&gw.mcp_url("everything"), carol, STATELESS).await?;
    let sum = c.call_tool("get-sum", json!({"a": 2, "b": 40})).await?;
    assert!(sum.result()?.to_string().contains("42"), "{}", sum.raw);
    let bob_key = &callers[3].1;
    let mut c = McpClient::connect(&gw.mcp_url("everything"), bob_key, SESSION).await?;
    assert_hidden_like_unknown(&mut c, "get-sum", "bob").await;

    // AND the admin's view of a user with hypothetical groups is the user's own view
    let (s, body) = gw
        .admin(
            Method::GET,
            "/admin/users/alice@example.com/catalog?groups=eng",
            None,
        )
        .await?;
    assert_eq!(s, 200, "{body}");
    assert_eq!(&catalog_map(&body)?, &callers[0].2, "{body}");
    let (s, body) = gw
        .admin(Method::GET, "/admin/users/alice@example.com/catalog", None)
        .await?;
    assert_eq!(s, 200, "{body}");
    assert_eq!(&catalog_map(&body)?, &callers[1].2, "{body}");
    assert_eq!(body["teams"], json!(["platform"]), "{body}");
    // AND a user may not see someone else's catalog
    let (s, _) = call_json(
        Method::GET,
        &format!("{}/admin/users/alice@example.com/catalog", gw.base),
        Some(carol),
        None,
    )
    .await?;
    assert_eq!(s, 403);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Changes reach open sessions

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_change_reaches_an_open_session_within_seconds() -> Result<()> {
    let Some(p) = peers() else { return Ok(()) };
    let gw = gateway(&p).await?;
    let group = json!({"name": "g", "servers": ["everything"],
        "members": {"users": ["alice@example.com"]},
        "tool_rules": {"everything": {"allow": ["get-sum"]}}});
    post(&gw, "/admin/server-groups", group.clone()).await?;
    let alice = key_for(&gw, "alice@example.com").await?;
    let mut session = McpClient::connect(&gw.mcp_url("everything"), &alice, SESSION).await?;
    assert_eq!(session.tool_names().await?, ["get-sum"]);
    let sid = session.session().context("no session id")?.to_owned();

    // GIVEN a held GET stream of that session
    let stream = reqwest::Client::new()
        .get(gw.mcp_url("everything"))
        .bearer_auth(&alice)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", SESSION)
        .send()
        .await?;
    assert_eq!(stream.status(), 200);

    // WHEN the admin widens the rule
    let mut wider = group.clone();
    wider["tool_rules"]["everything"]["allow"] = json!(["get-sum", "echo"]);
    let (s, body) = gw
        .admin(Method::PUT, "/admin/server-groups/g", Some(wider))
        .await?;
    assert_eq!(s, 200, "{body}");

    // THEN the held stream says the list changed
    let mut stream = stream;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while !text.contains("notifications/tools/list_changed") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .context("no list_changed on the held stream")??
            .context("the stream ended")?;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // AND the same session lists the new tool, and may call it
    let mut names = session.tool_names().await?;
    names.sort();
    assert_eq!(names, ["echo", "get-sum"]);
    let echoed = session.call_tool("echo", json!({"message": "hi"})).await?;
    assert!(
        echoed.result()?.to_string().contains("hi"),
        "{}",
        echoed.raw
    );

    // WHEN the group is deleted THEN the session's endpoint is gone for her
    let (s, _) = gw
        .admin(Method::DELETE, "/admin/server-groups/g", None)
        .await?;
    assert_eq!(s, 204);
    let after = session.request("tools/list", json!({})).await?;
    assert_eq!(after.status, 404, "{}", after.raw);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Virtual servers

#[tokio::test(flavor = "multi_thread")]
async fn a_virtual_server_routes_each_tool_with_its_upstreams_own_credential() -> Result<()> {
    let Some(p) = peers() else { return Ok(()) };
    let gw = gateway(&p).await?;
    // GIVEN a virtual server of one server-everything tool and whoami from each registration
    // of the Python server (each with its own secret), for alice only
    post(
        &gw,
        "/admin/virtual-servers",
        json!({"name": "combo",
            "tools": [
                {"server": "everything", "tool": "get-sum"},
                {"server": "echo", "tool": "whoami", "alias": "whoami_a"},
                {"server": "echo-b", "tool": "whoami", "alias": "whoami_b",
                 "description": "who the second registration is"}],
            "members": {"users": ["alice@example.com"]}}),
    )
    .await?;
    let alice = key_for(&gw, "alice@example.com").await?;
    let bob = key_for(&gw, "bob@example.com").await?;
    let url = gw.mcp_url("combo");

    for mode in ["auto", "legacy"] {
        // WHEN alice calls through the official Python client
        let out = python_mcp_call(
            &url,
            &alice,
            "everything__get-sum",
            json!({"a": 2, "b": 40}),
            mode,
        )
        .await?;
        // THEN the names are deterministic, in the configured order, and the sum comes back
        assert_eq!(
            out["tools"],
            json!(["everything__get-sum", "whoami_a", "whoami_b"]),
            "{mode}: {out}"
        );
        assert_eq!(out["is_error"], false, "{mode}: {out}");
        assert!(
            out["content"][0].as_str().unwrap_or("").contains("42"),
            "{out}"
        );
        // AND each upstream received its own credential, never alice's key
        for (tool, secret) in [("whoami_a", SECRET_A), ("whoami_b", SECRET_B)] {
            let out = python_mcp_call(&url, &alice, tool, json!({}), mode).await?;
            assert_eq!(out["is_error"], false, "{mode} {tool}: {out}");
            let seen: Value = serde_json::from_str(out["content"][0].as_str().unwrap_or("null"))?;
            assert_eq!(seen["authorization"], secret, "{mode} {tool}: {seen}");
            assert!(!out.to_string().contains(&alice), "{out}");
        }
    }
    // AND the description override is listed, the upstream's schema kept
    let mut c = McpClient::connect(&url, &alice, STATELESS).await?;
    let tools = c.tools().await?;
    assert_eq!(tools[2]["description"], "who the second registration is");
    assert!(
        tools[0]["inputSchema"]["properties"]["a"].is_object(),
        "{tools:?}"
    );
    // AND an unknown name and an upstream's own name (not exposed) answer alike
    for (client_version, hidden) in [(SESSION, "get-sum"), (STATELESS, "whoami")] {
        let mut c = McpClient::connect(&url, &alice, client_version).await?;
        assert_hidden_like_unknown(&mut c, hidden, "combo").await;
    }
    // AND bob may not use it: it answers like an endpoint that does not exist
    let got = seen(&gw, &bob, &["combo"], SESSION).await?;
    assert!(got.is_empty(), "{got:?}");

    // AND a group may admit bob to one of its tools (rules on the exposed names)
    post(
        &gw,
        "/admin/server-groups",
        json!({"name": "bob-combo", "servers": ["combo"], "members": {"users": ["bob@example.com"]},
            "tool_rules": {"combo": {"allow": ["whoami_b"]}}}),
    )
    .await?;
    let mut c = McpClient::connect(&url, &bob, SESSION).await?;
    assert_eq!(c.tool_names().await?, ["whoami_b"]);
    assert_eq!(
        catalog(&gw, &bob).await?,
        BTreeMap::from([("combo".to_owned(), vec!["whoami_b".to_owned()])])
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Admin validation

#[tokio::test(flavor = "multi_thread")]
async fn bad_policy_documents_are_refused_clearly_and_write_nothing() -> Result<()> {
    let Some(p) = peers() else { return Ok(()) };
    let gw = gateway(&p).await?;
    post(
        &gw,
        "/admin/teams",
        json!({"name": "eng", "members": ["a@example.com"]}),
    )
    .await?;
    // an upstream that is down: names cannot be checked
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(
                json!({"name": "down", "url": "http://127.0.0.1:9/mcp", "auth": {"type": "none"}}),
            ),
        )
        .await?;
    assert_eq!(s, 201, "{body}");

    let group = |extra: Value| {
        let mut g = json!({"name": "g", "servers": ["everything"], "members": {"teams": ["eng"]}});
        for (k, v) in extra.as_object().unwrap() {
            g[k] = v.clone();
        }
        g
    };
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "unknown server",
            "/admin/server-groups",
            group(json!({"servers": ["nope"]})),
            422,
            "unknown_server",
        ),
        (
            "unknown team",
            "/admin/server-groups",
            group(json!({"members": {"teams": ["ghosts"]}})),
            422,
            "unknown_team",
        ),
        (
            "unknown exact tool",
            "/admin/server-groups",
            group(json!({"tool_rules": {"everything": {"allow": ["get-summ"]}}})),
            422,
            "unknown_tool",
        ),
        (
            "rule for an unlisted server",
            "/admin/server-groups",
            group(json!({"tool_rules": {"echo": {"allow": ["whoami"]}}})),
            422,
            "invalid_field",
        ),
        (
            "allow and deny",
            "/admin/server-groups",
            group(json!({"tool_rules": {"everything": {"allow": ["echo"], "deny": ["get-sum"]}}})),
            422,
            "invalid_field",
        ),
        (
            "empty pattern",
            "/admin/server-groups",
            group(json!({"tool_rules": {"everything": {"deny": [""]}}})),
            422,
            "invalid_field",
        ),
        (
            "duplicate server",
            "/admin/server-groups",
            group(json!({"servers": ["everything", "everything"]})),
            422,
            "invalid_field",
        ),
        (
            "bad name",
            "/admin/server-groups",
            group(json!({"name": "no spaces/please"})),
            422,
            "invalid_field",
        ),
        (
            "unknown field",
            "/admin/server-groups",
            group(json!({"owner": "x"})),
            422,
            "",
        ),
        // principals are lowercase emails: a rule never names a spelling no caller has
        (
            "mixed-case email",
            "/admin/teams",
            json!({"name": "t2", "members": ["Carol@Example.com"]}),
            422,
            "invalid_field",
        ),
        (
            "unknown virtual tool",
            "/admin/virtual-servers",
            json!({"name": "v", "tools": [{"server": "everything", "tool": "nope"}]}),
            422,
            "unknown_tool",
        ),
        (
            "virtual collision",
            "/admin/virtual-servers",
            json!({"name": "v", "tools": [{"server": "echo", "tool": "whoami", "alias": "w"},
                                          {"server": "echo-b", "tool": "whoami", "alias": "w"}]}),
            409,
            "tool_name_collision",
        ),
        (
            "virtual named like a server",
            "/admin/virtual-servers",
            json!({"name": "echo", "tools": [{"server": "everything", "tool": "echo"}]}),
            409,
            "already_exists",
        ),
        (
            "virtual of an unknown server",
            "/admin/virtual-servers",
            json!({"name": "v", "tools": [{"server": "nope", "tool": "echo"}]}),
            422,
            "unknown_server",
        ),
    ];
    for (what, path, body, status, code) in cases {
        let (s, out) = gw.admin(Method::POST, path, Some(body.clone())).await?;
        assert_eq!(s, status, "{what}: {out}");
        if !code.is_empty() {
            assert_eq!(out["error"]["code"], code, "{what}: {out}");
        }
        assert!(
            out["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {out}"
        );
        // AND nothing was written
        let name = body["name"].as_str().unwrap();
        let (s, _) = gw
            .admin(Method::GET, &format!("{path}/{name}"), None)
            .await?;
        assert_eq!(s, 404, "{what}: nothing is saved");
    }
    // a server registered under a virtual server's name is refused too
    post(
        &gw,
        "/admin/virtual-servers",
        json!({"name": "combo", "tools": [{"server": "everything", "tool": "echo"}]}),
    )
    .await?;
    let (s, out) = gw
        .admin(
            Method::POST,
            "/admin/servers",
            Some(json!({"name": "combo", "url": p.everything, "auth": {"type": "none"}})),
        )
        .await?;
    assert_eq!(
        (s, out["error"]["code"].as_str()),
        (409, Some("already_exists")),
        "{out}"
    );

    // WHEN the upstream is down THEN the rule is saved with a warning
    let out = post(
        &gw,
        "/admin/server-groups",
        json!({"name": "d", "servers": ["down"], "members": {"everyone": true},
            "tool_rules": {"down": {"allow": ["anything"]}}}),
    )
    .await?;
    assert!(
        out["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "{out}"
    );
    // AND a duplicate name is 409
    let (s, out) = gw
        .admin(
            Method::POST,
            "/admin/server-groups",
            Some(json!({"name": "d", "servers": ["down"], "members": {"everyone": true}})),
        )
        .await?;
    assert_eq!(
        (s, out["error"]["code"].as_str()),
        (409, Some("already_exists")),
        "{out}"
    );
    // AND what is referenced cannot be deleted
    for (path, referrer) in [
        ("/admin/servers/down", "server group 'd'"),
        ("/admin/servers/everything", "virtual server 'combo'"),
    ] {
        let (s, out) = gw.admin(Method::DELETE, path, None).await?;
        assert_eq!(
            (s, out["error"]["code"].as_str()),
            (409, Some("in_use")),
            "{out}"
        );
        assert!(out.to_string().contains(referrer), "{out}");
    }
    post(
        &gw,
        "/admin/server-groups",
        json!({"name": "t", "servers": ["everything"], "members": {"teams": ["eng"]}}),
    )
    .await?;
    let (s, out) = gw.admin(Method::DELETE, "/admin/teams/eng", None).await?;
    assert_eq!(
        (s, out["error"]["code"].as_str()),
        (409, Some("in_use")),
        "{out}"
    );
    // AND a non-admin may not write policy
    let user = key_for(&gw, "a@example.com").await?;
    let (s, _) = call_json(
        Method::POST,
        &format!("{}/admin/server-groups", gw.base),
        Some(&user),
        Some(group(json!({}))),
    )
    .await?;
    assert_eq!(s, 403);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Randomized

/// xorshift64*: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn some<T: Clone>(&mut self, items: &[T], percent: u64) -> Vec<T> {
        items
            .iter()
            .filter(|_| self.chance(percent))
            .cloned()
            .collect()
    }
}

/// The independent model of the documented semantics.
struct Model {
    /// team -> member emails
    teams: BTreeMap<String, BTreeSet<String>>,
    /// (servers, users, teams, everyone, rules: server -> (allow?, patterns))
    groups: Vec<ModelGroup>,
    /// virtual server: members (users, teams), exposed tool names
    virtuals: BTreeMap<String, ModelVirtual>,
}

/// A virtual server's member users and teams, and its exposed tool names.
type ModelVirtual = (BTreeSet<String>, BTreeSet<String>, Vec<String>);

struct ModelGroup {
    servers: Vec<String>,
    users: BTreeSet<String>,
    teams: BTreeSet<String>,
    everyone: bool,
    rules: BTreeMap<String, (bool, Vec<String>)>,
}

impl Model {
    fn visible(&self, user: &str, endpoint: &str, tools: &[String]) -> Option<Vec<String>> {
        let teams: BTreeSet<&String> = self
            .teams
            .iter()
            .filter(|(_, m)| m.contains(user))
            .map(|(t, _)| t)
            .collect();
        let mut grants: Vec<Option<&(bool, Vec<String>)>> = self
            .groups
            .iter()
            .filter(|g| g.servers.iter().any(|s| s == endpoint))
            .filter(|g| {
                g.everyone || g.users.contains(user) || g.teams.iter().any(|t| teams.contains(t))
            })
            .map(|g| g.rules.get(endpoint))
            .collect();
        if let Some((users, vteams, _)) = self.virtuals.get(endpoint)
            && (users.contains(user) || vteams.iter().any(|t| teams.contains(t)))
        {
            grants.push(None);
        }
        if grants.is_empty() {
            return None;
        }
        Some(
            tools
                .iter()
                .filter(|t| {
                    grants.iter().any(|g| match g {
                        None => true,
                        Some((allow, pats)) => *allow == pats.iter().any(|p| glob(p, t)),
                    })
                })
                .cloned()
                .collect(),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn randomized_policies_list_exactly_the_catalog_and_refuse_the_rest() -> Result<()> {
    let Some(p) = peers() else { return Ok(()) };
    let seed = std::env::var("MCPGW_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("randomized access control: MCPGW_TEST_SEED={seed}");
    let mut rng = Rng(seed);
    let gw = gateway(&p).await?;
    let upstream: BTreeMap<String, Vec<String>> = BTreeMap::from([
        (
            "everything".to_owned(),
            upstream_tools(&p.everything).await?,
        ),
        ("echo".to_owned(), upstream_tools(&p.echo).await?),
        ("echo-b".to_owned(), upstream_tools(&p.echo).await?),
    ]);
    let servers: Vec<String> = upstream.keys().cloned().collect();

    // principals, teams by email
    let users: Vec<String> = (0..8).map(|i| format!("user{i}@example.com")).collect();
    let mut keys = BTreeMap::new();
    for u in &users {
        keys.insert(u.clone(), key_for(&gw, u).await?);
    }
    let team_names = ["red", "green", "blue"];
    let mut model = Model {
        teams: BTreeMap::new(),
        groups: Vec::new(),
        virtuals: BTreeMap::new(),
    };
    for t in team_names {
        let members = rng.some(&users, 30);
        post(&gw, "/admin/teams", json!({"name": t, "members": members})).await?;
        model
            .teams
            .insert(t.to_owned(), members.into_iter().collect());
    }

    // a virtual server of random tools, with random members
    let mut vtools = Vec::new();
    let mut exposed = Vec::new();
    for s in &servers {
        for t in rng.some(&upstream[s], 40) {
            exposed.push(format!("{s}__{t}"));
            vtools.push(json!({"server": s, "tool": t}));
        }
    }
    if vtools.is_empty() {
        vtools.push(json!({"server": "echo", "tool": "add"}));
        exposed.push("echo__add".to_owned());
    }
    let (vusers, vteams) = (
        rng.some(&users, 20),
        rng.some(&team_names.map(String::from), 30),
    );
    post(
        &gw,
        "/admin/virtual-servers",
        json!({"name": "mix", "tools": vtools, "members": {"users": vusers, "teams": vteams}}),
    )
    .await?;
    model.virtuals.insert(
        "mix".to_owned(),
        (
            vusers.into_iter().collect(),
            vteams.into_iter().collect(),
            exposed.clone(),
        ),
    );
    let mut all_tools = upstream.clone();
    all_tools.insert("mix".to_owned(), exposed);
    let endpoints: Vec<String> = all_tools.keys().cloned().collect();

    // groups: random servers, members and rules (exact names and patterns)
    for g in 0..6 {
        let gservers = {
            let s = rng.some(&endpoints, 40);
            if s.is_empty() {
                vec![rng.pick(&endpoints).clone()]
            } else {
                s
            }
        };
        let mut gusers = rng.some(&users, 20);
        if g == 0 && !gusers.contains(&users[0]) {
            // someone is admitted somewhere, whatever the seed
            gusers.push(users[0].clone());
        }
        let gteams = rng.some(&team_names.map(String::from), 25);
        let everyone = rng.chance(8);
        let mut rules = BTreeMap::new();
        let mut doc_rules = serde_json::Map::new();
        for s in &gservers {
            if !rng.chance(80) {
                continue;
            }
            let tools = &all_tools[s];
            let mut pats: Vec<String> = rng.some(tools, 25);
            if rng.chance(40) {
                // a pattern: a prefix of some tool plus `*`, or a `?` in the middle
                let t = rng.pick(tools);
                let cut = t.len().min(1 + rng.below(t.len().max(1)));
                let pat = if rng.chance(50) {
                    format!("{}*", &t[..t.floor_char_boundary(cut)])
                } else {
                    let mut c: Vec<char> = t.chars().collect();
                    let i = rng.below(c.len());
                    c[i] = '?';
                    c.into_iter().collect()
                };
                if !pats.contains(&pat) {
                    pats.push(pat);
                }
            }
            if pats.is_empty() {
                continue;
            }
            let allow = rng.chance(50);
            doc_rules.insert(
                s.clone(),
                json!({ if allow { "allow" } else { "deny" }: pats }),
            );
            rules.insert(s.clone(), (allow, pats));
        }
        post(
            &gw,
            "/admin/server-groups",
            json!({"name": format!("g{g}"), "servers": gservers,
                "members": {"users": gusers, "teams": gteams, "everyone": everyone},
                "tool_rules": doc_rules}),
        )
        .await?;
        model.groups.push(ModelGroup {
            servers: gservers,
            users: gusers.into_iter().collect(),
            teams: gteams.into_iter().collect(),
            everyone,
            rules,
        });
    }

    let endpoint_refs: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let (mut listed, mut refused) = (0, 0);
    for (n, user) in users.iter().enumerate() {
        let key = &keys[user];
        let want: BTreeMap<String, Vec<String>> = endpoints
            .iter()
            .filter_map(|e| {
                model
                    .visible(user, e, &all_tools[e])
                    .map(|v| (e.clone(), v))
            })
            .collect();
        let version = if n % 2 == 0 { SESSION } else { STATELESS };
        let got = seen(&gw, key, &endpoint_refs, version).await?;
        let cat = catalog(&gw, key).await?;
        assert_eq!(got, cat, "seed {seed}: {user}: tools/list vs catalog");
        assert_eq!(got, want, "seed {seed}: {user}: tools/list vs the model");
        // every call outside the catalog is refused like an unknown tool
        for (e, visible) in &want {
            listed += visible.len();
            let mut c = McpClient::connect(&gw.mcp_url(e), key, version).await?;
            for hidden in all_tools[e].iter().filter(|t| !visible.contains(t)) {
                refused += 1;
                assert_hidden_like_unknown(&mut c, hidden, &format!("seed {seed}: {user} on {e}"))
                    .await;
            }
        }
    }
    eprintln!(
        "seed {seed}: {listed} tools listed as the model says, {refused} hidden calls refused"
    );
    assert!(
        listed > 0,
        "seed {seed}: a policy that admits nobody proves nothing"
    );
    Ok(())
}
