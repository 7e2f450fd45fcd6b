//! Deny rules against an upstream that looks tools up loosely: this test's upstream
//! NFKC-normalizes, lowercases and drops whitespace, control and zero-width characters from
//! the requested name before looking it up, so `Delete_Repo`, `delete_repo ` or
//! `ｄｅｌｅｔｅ_ｒｅｐｏ` would run its `delete_repo`. The gateway must refuse every such
//! spelling of a denied tool as it refuses the tool itself: the upstream runs nothing and
//! never sees the caller's arguments. Allowed tools still run, allow rules stay exact, and
//! names with control or format characters are refused and unlisted for everyone.
//!
//! The normalizer here is written independently of the gateway's folding (ICU's composing
//! NFKC, `str::to_lowercase`, its own list of invisible characters), so a test passing is
//! not the gateway agreeing with itself.

use crate::common;

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{Value, json};

/// The tools the upstream has (it also lists two hostile names, see [`Normalizing::list`]).
const TOOLS: [&str; 2] = ["delete_repo", "echo"];

/// What the normalizing upstream received and did.
#[derive(Clone, Default)]
struct Seen {
    /// Every `tools/call` body.
    calls: Arc<Mutex<Vec<Value>>>,
    /// The tools it ran (after normalizing the requested name).
    ran: Arc<Mutex<Vec<String>>>,
}

/// An upstream whose tool lookup is loose, like `name.strip().lower()` after NFKC.
struct Normalizing {
    url: String,
    seen: Seen,
}

/// The upstream's idea of a name: NFKC, lowercase, and no whitespace, control or
/// zero-width / bidi / BOM characters anywhere.
fn normalize(name: &str) -> String {
    let nfkc = icu_normalizer::ComposingNormalizerBorrowed::new_nfkc().normalize(name);
    nfkc.to_lowercase()
        .chars()
        .filter(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !matches!(*c as u32, 0xad | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0xfeff)
        })
        .collect()
}

impl Normalizing {
    async fn start() -> Self {
        let seen = Seen::default();
        let state = seen.clone();
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(move |_: HeaderMap, body: String| {
                let seen = state.clone();
                async move { Self::answer(&seen, &body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, seen }
    }

    fn list() -> Value {
        // Besides its tools, two names no client should be offered: one with a NUL, one
        // with a zero-width space (the normalizer would run them as `evil` and `echo`).
        let mut names: Vec<&str> = TOOLS.to_vec();
        names.extend(["evil\u{0}", "ec\u{200b}ho"]);
        let tools: Vec<Value> = names
            .iter()
            .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
            .collect();
        json!({ "tools": tools })
    }

    fn answer(seen: &Seen, body: &str) -> Response {
        let Ok(msg) = serde_json::from_str::<Value>(body) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let Some(id) = msg.get("id").cloned() else {
            return StatusCode::ACCEPTED.into_response();
        };
        let reply = |result: Value, session: bool| {
            let mut r =
                axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response();
            if session {
                r.headers_mut()
                    .insert("mcp-session-id", "norm-1".parse().unwrap());
            }
            r
        };
        match msg["method"].as_str().unwrap_or_default() {
            "initialize" => reply(
                json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "normalizing-upstream", "version": "1.0"}}),
                true,
            ),
            "tools/list" => reply(Self::list(), false),
            "tools/call" => {
                seen.calls.lock().unwrap().push(msg.clone());
                let asked = msg["params"]["name"].as_str().unwrap_or_default();
                let tool = normalize(asked);
                let known = TOOLS.contains(&tool.as_str()) || tool == "evil";
                if !known {
                    // The name as it looked it up: the gateway's stand-in for a hidden tool
                    // must survive this (lowercase), or it would leak into the answer.
                    let error = json!({"code": -32602, "message": format!("Unknown tool: {tool}")});
                    return axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": error}))
                        .into_response();
                }
                seen.ran.lock().unwrap().push(tool.clone());
                reply(
                    json!({"content": [{"type": "text", "text": format!("ran {tool}")}]}),
                    false,
                )
            }
            _ => reply(json!({}), false),
        }
    }
}

/// Replaces the fixture's admit-everyone group with one admitting alice to `gh` under `rule`
/// (`None`: no tool rule).
async fn rule(gw: &Gateway, rule: Option<Value>) {
    let mut group = json!({"servers": ["gh"], "members": {"users": ["alice@example.com"]}});
    if let Some(r) = rule {
        group["tool_rules"] = json!({ "gh": r });
    }
    replace_everyone_group(gw, group).await;
}

/// Spellings of `delete_repo` the upstream runs as `delete_repo`, one per class.
const VARIANTS: &[&str] = &[
    "Delete_Repo",
    "DELETE_REPO",
    "delete_repo ",
    " delete_repo",
    "delete_repo\t",
    "delete _repo",
    "delete\u{a0}_repo",
    "delete_repo\u{3000}",
    "delete\u{200b}_repo",
    "\u{feff}delete_repo",
    "delete\u{ad}_repo",
    "delete_repo\u{202e}",
    "delete_repo\u{0}",
    "delete\u{1b}_repo",
    "ｄｅｌｅｔｅ_ｒｅｐｏ",
    "ＤＥＬＥＴＥ＿ＲＥＰＯ",
    "𝐝𝐞𝐥𝐞𝐭𝐞_𝐫𝐞𝐩𝐨",
    "ⓓⓔⓛⓔⓣⓔ_ⓡⓔⓟⓞ",
];

async fn call(gw: &Gateway, session: &str, id: i64, name: &str) -> Value {
    let body = request(
        id,
        "tools/call",
        json!({"name": name, "arguments": {"repo": "prod-secrets"}}),
    );
    let r = post(&gw.app, "gh", &gw.alice, Some(session), &body).await;
    assert_eq!(r.status, 200, "{name:?}: {}", r.body);
    assert!(
        !r.body.contains("mcpgw-unknown-tool"),
        "{name:?}: the sentinel leaked: {}",
        r.body
    );
    answer(&r)
}

#[tokio::test]
async fn every_spelling_of_a_denied_tool_is_refused_before_a_normalizing_upstream() {
    let up = Normalizing::start().await;
    // The upstream really is loose: the attack would work without the gateway's check.
    for v in VARIANTS {
        assert_eq!(normalize(v), "delete_repo", "{v:?}");
    }
    let gw = gateway(&[], &[("gh", &up.url, "up-key")]).await;

    for deny in [
        json!({"deny": ["delete_repo"]}),
        json!({"deny": ["delete_*"]}),
    ] {
        rule(&gw, Some(deny.clone())).await;
        let session = open_session(&gw.app, "gh", &gw.alice).await;
        let before = up.seen.calls.lock().unwrap().len();

        // WHEN alice calls the denied tool under each spelling
        let unknown = call(&gw, &session, 1, "no_such_tool").await;
        for (i, v) in VARIANTS.iter().enumerate() {
            let got = call(&gw, &session, 10 + i as i64, v).await;
            // THEN each gets what an unknown tool gets, with her id
            assert_eq!(got["id"], 10 + i as i64, "{deny} {v:?}: {got}");
            assert_eq!(
                got["error"]["code"], unknown["error"]["code"],
                "{deny} {v:?}: {got}"
            );
            assert_eq!(
                got["error"]["message"],
                format!("Unknown tool: {v}"),
                "{deny} {v:?}"
            );
        }
        let plain = call(&gw, &session, 99, "delete_repo").await;
        assert!(plain.get("error").is_some(), "{plain}");

        // AND the upstream ran nothing, never saw a denied spelling nor the arguments
        assert!(
            up.seen.ran.lock().unwrap().is_empty(),
            "ran {:?}",
            up.seen.ran
        );
        let calls = up.seen.calls.lock().unwrap()[before..].to_vec();
        assert_eq!(calls.len(), VARIANTS.len() + 2);
        for c in &calls {
            let name = c["params"]["name"].as_str().unwrap();
            assert_ne!(normalize(name), "delete_repo", "{c}");
            assert!(
                !c.to_string().contains("prod-secrets") || name == "no_such_tool",
                "{c}"
            );
        }

        // Baseline: the allowed tool runs, its arguments delivered
        let ok = call(&gw, &session, 100, "echo").await;
        assert_eq!(ok["result"]["content"][0]["text"], "ran echo", "{ok}");
        assert_eq!(up.seen.ran.lock().unwrap().as_slice(), ["echo"]);
        up.seen.ran.lock().unwrap().clear();

        // AND the list offers neither the denied tool nor the hostile names
        let r = post(
            &gw.app,
            "gh",
            &gw.alice,
            Some(&session),
            &request(5, "tools/list", json!({})),
        )
        .await;
        let names: Vec<String> = answer(&r)["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", r.body))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["echo"], "{deny}");
    }
}

#[tokio::test]
async fn allow_rules_stay_exact_before_a_normalizing_upstream() {
    let up = Normalizing::start().await;
    let gw = gateway(&[], &[("gh", &up.url, "up-key")]).await;
    rule(&gw, Some(json!({"allow": ["echo"]}))).await;
    let session = open_session(&gw.app, "gh", &gw.alice).await;
    // `Echo` would run `echo` upstream, but the admin allowed the name `echo`, not its
    // spellings: an allow rule must not admit what it does not list.
    for v in ["Echo", "ECHO", "echo ", "ｅｃｈｏ"] {
        let got = call(&gw, &session, 1, v).await;
        assert!(got.get("error").is_some(), "{v:?}: {got}");
    }
    assert!(up.seen.ran.lock().unwrap().is_empty());
    let ok = call(&gw, &session, 2, "echo").await;
    assert_eq!(ok["result"]["content"][0]["text"], "ran echo", "{ok}");
}

#[tokio::test]
async fn names_with_control_or_format_characters_are_refused_even_without_rules() {
    let up = Normalizing::start().await;
    let gw = gateway(&[], &[("gh", &up.url, "up-key")]).await;
    // GIVEN alice may use every tool of gh (no tool rule)
    rule(&gw, None).await;
    let session = open_session(&gw.app, "gh", &gw.alice).await;

    // WHEN she lists THEN the upstream's names with a NUL or a zero-width space are gone
    let r = post(
        &gw.app,
        "gh",
        &gw.alice,
        Some(&session),
        &request(5, "tools/list", json!({})),
    )
    .await;
    let names: Vec<String> = answer(&r)["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.body))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, TOOLS, "{}", r.body);

    // AND calling them (or smuggling one into a listed name) runs nothing
    for v in ["evil\u{0}", "ec\u{200b}ho", "echo\u{7}", "echo\u{2066}"] {
        let got = call(&gw, &session, 1, v).await;
        assert!(got.get("error").is_some(), "{v:?}: {got}");
    }
    assert!(up.seen.ran.lock().unwrap().is_empty(), "{:?}", up.seen.ran);

    // Baseline: every tool runs, the one a deny rule would cover included
    for t in TOOLS {
        let got = call(&gw, &session, 2, t).await;
        assert_eq!(
            got["result"]["content"][0]["text"],
            format!("ran {t}"),
            "{got}"
        );
    }
}
