//! The decision point (`govern`): rate-limit answers in each era, and exactly one audit
//! record per counted call, for registered and virtual servers, hidden and unknown tools
//! alike. The limits are the test's own (`Limits::decided_by_test`), the records kept by a
//! recording `Auditor`.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::*;
use mcpgw::audit::{AuditRecord, Auditor, Decision, Event};
use mcpgw::limits::{CallKey, Limits, Verdict};
use mcpgw::testing::TEST_ADMIN_KEY;
use serde_json::{Value, json};

type Kept = Arc<Mutex<Vec<AuditRecord>>>;

/// `gw`'s proxy with a recording auditor and limits that give `decide`'s verdicts.
fn governed(
    gw: &Gateway,
    decide: impl Fn(&CallKey<'_>) -> Verdict + Send + Sync + 'static,
) -> (axum::Router, Kept) {
    governed_with_body(gw, gw.state.config.max_body_bytes, decide)
}

/// [`governed`], accepting bodies of up to `max_body_bytes` (big batches, huge names).
fn governed_with_body(
    gw: &Gateway,
    max_body_bytes: usize,
    decide: impl Fn(&CallKey<'_>) -> Verdict + Send + Sync + 'static,
) -> (axum::Router, Kept) {
    let mut state = gw.state.clone();
    let mut config = (*state.config).clone();
    config.max_body_bytes = max_body_bytes;
    state.config = Arc::new(config);
    let (auditor, kept) = Auditor::recording();
    state.audit = Arc::new(auditor);
    state.limits = Arc::new(Limits::decided_by_test(Arc::new(decide)));
    (mcp_proxy::app(state), kept)
}

fn pass(_: &CallKey<'_>) -> Verdict {
    Verdict::Pass { would_limit: None }
}

fn limited(rule: &str, ms: u64) -> Verdict {
    Verdict::Limited {
        rule: rule.into(),
        retry_after: Duration::from_millis(ms),
    }
}

/// The records kept so far, emptied.
fn taken(kept: &Kept) -> Vec<AuditRecord> {
    std::mem::take(&mut *kept.lock().unwrap())
}

/// The one record kept (the ticket may complete as the body ends: polled briefly).
async fn one(kept: &Kept) -> AuditRecord {
    for _ in 0..100 {
        if !kept.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut all = taken(kept);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.pop().unwrap()
}

async fn admin(gw: &Gateway, method: &str, path: &str, body: Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let r = send(&admin_api::app(gw.state.clone()), req).await;
    assert!(r.status.is_success(), "{}", r.body);
}

#[tokio::test]
async fn a_call_gets_one_record_with_who_what_where_and_how_it_ended_and_lists_get_none() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    let (app, kept) = governed(&gw, pass);
    let session = open_session(&app, "up", &gw.alice).await;
    let list = request(2, "tools/list", json!({}));
    post(&app, "up", &gw.alice, Some(&session), &list).await;
    assert!(
        taken(&kept).is_empty(),
        "initialize and lists are not recorded"
    );

    let call = request(
        7,
        "tools/call",
        json!({"name": "echo", "arguments": {"b": 1, "a": "x"}}),
    );
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
        ("traceparent", tp),
    ];
    let r = post_with(&app, "up", &gw.alice, &headers, &call).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = one(&kept).await;
    assert_eq!(
        (rec.event, rec.decision),
        (Event::ToolCall, Decision::Allow)
    );
    assert_eq!(rec.request_id.as_deref(), Some("7"));
    assert_eq!(rec.traceparent.as_deref(), Some(tp));
    let who = rec.principal.as_ref().unwrap();
    assert_eq!(
        (who.user.as_str(), who.auth.as_str()),
        ("alice@example.com", "api_key")
    );
    assert!(who.key_id.is_some());
    assert_eq!(rec.endpoint.as_deref(), Some("up"));
    assert_eq!(rec.method.as_deref(), Some("tools/call"));
    assert_eq!(rec.tool.as_deref(), Some("echo"));
    assert_eq!(rec.upstream_server.as_deref(), Some("up"));
    assert_eq!(rec.upstream_tool.as_deref(), Some("echo"));
    assert_eq!(rec.credential.as_ref().unwrap().kind, "header");
    assert_eq!(rec.outcome.as_ref().unwrap().status, "ok");
    assert!(rec.latency_ms.unwrap() >= rec.upstream_ms.unwrap());
    let hmac = rec.args_hmac.clone().expect("arguments are hashed");
    assert_eq!(hmac.len(), 64);
    assert!(rec.args.is_none(), "capture is opt-in");
    let line = serde_json::to_string(&rec).unwrap();
    assert!(!line.contains(&gw.alice), "no key in a record");

    // The same arguments in another order hash alike; other arguments differently.
    let again = request(
        8,
        "tools/call",
        json!({"name": "echo", "arguments": {"a": "x", "b": 1}}),
    );
    post(&app, "up", &gw.alice, Some(&session), &again).await;
    assert_eq!(one(&kept).await.args_hmac.as_deref(), Some(hmac.as_str()));
    let other = request(
        9,
        "tools/call",
        json!({"name": "echo", "arguments": {"a": "y", "b": 1}}),
    );
    post(&app, "up", &gw.alice, Some(&session), &other).await;
    assert_ne!(one(&kept).await.args_hmac.as_deref(), Some(hmac.as_str()));
}

#[tokio::test]
async fn hidden_and_unknown_tools_answer_alike_count_alike_and_are_recorded_alike() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    replace_everyone_group(
        &gw,
        json!({"servers": ["up"], "members": {"everyone": true},
            "tool_rules": {"up": {"allow": ["echo"]}}}),
    )
    .await;
    let counted = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = counted.clone();
    let (app, kept) = governed(&gw, move |k| {
        seen.lock().unwrap().push(k.name.to_owned());
        pass(k)
    });
    let session = open_session(&app, "up", &gw.alice).await;
    let mut answers = Vec::new();
    for name in ["hidden-tool", "never-existed"] {
        let r = post(&app, "up", &gw.alice, Some(&session), &tools_call(5, name)).await;
        let text = answer(&r).to_string().replace(name, "NAME");
        answers.push((r.status, text));
        let rec = one(&kept).await;
        assert_eq!(rec.decision, Decision::Deny, "{rec:?}");
        assert_eq!(rec.rule.as_deref(), Some("hidden_tool"));
        assert_eq!(rec.tool.as_deref(), Some(name));
        assert_eq!(
            rec.upstream_tool, None,
            "the sentinel name is never recorded"
        );
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(*counted.lock().unwrap(), ["hidden-tool", "never-existed"]);

    // Limited, they answer alike too: a limit says nothing of which names exist.
    let (app, kept) = governed(&gw, |_| limited("r", 500));
    let mut answers = Vec::new();
    for name in ["hidden-tool", "never-existed", "echo"] {
        let r = post(&app, "up", &gw.alice, Some(&session), &tools_call(5, name)).await;
        answers.push(answer(&r).to_string().replace(name, "NAME"));
        let rec = one(&kept).await;
        assert_eq!(
            (rec.decision, rec.rule.as_deref()),
            (Decision::Limited, Some("r"))
        );
        // Still marked hidden (for the metrics: no label from an invented name).
        let hidden = rec
            .detail
            .as_ref()
            .and_then(|d| d.get("hidden_tool"))
            .cloned();
        let want = (name != "echo").then_some(json!(true));
        assert_eq!(hidden, want, "{name}");
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[1], answers[2]);
}

#[tokio::test]
async fn a_limited_tool_call_is_a_tool_error_in_each_era_and_never_reaches_the_upstream() {
    let up = Upstream::start(Speaks::Stateless).await;
    let old = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(
        &[],
        &[("up", &up.url, "up-key"), ("old", &old.url, "up-key")],
    )
    .await;
    let (app, kept) = governed(&gw, |k| {
        if k.name == "echo" {
            limited("per-user", 1500)
        } else {
            pass(k)
        }
    });
    // 2026-07-28
    let (call, headers) = modern(3, "tools/call", json!({"name": "echo", "arguments": {}}));
    let r = post_with(&app, "up", &gw.alice, &headers, &call).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let a = answer(&r);
    assert_eq!(a["id"], 3);
    assert_eq!(a["result"]["isError"], true, "{a}");
    assert_eq!(a["result"]["resultType"], "complete", "{a}");
    assert_eq!(
        a["result"]["content"][0]["text"], "Rate limit reached: retry in 2 s",
        "the caller is not told the rule's name (the record is)"
    );
    assert!(up.log.rpc("tools/call").is_empty());
    let rec = one(&kept).await;
    assert_eq!(rec.decision, Decision::Limited);
    assert_eq!(rec.rule.as_deref(), Some("per-user"));
    assert_eq!(rec.outcome.as_ref().unwrap().status, "is_error");
    // session era: no 2026-07-28 fields
    let session = open_session(&app, "old", &gw.alice).await;
    let r = post(
        &app,
        "old",
        &gw.alice,
        Some(&session),
        &tools_call(4, "echo"),
    )
    .await;
    let a = answer(&r);
    assert_eq!(a["result"]["isError"], true, "{a}");
    assert!(a["result"].get("resultType").is_none(), "{a}");
    assert!(old.log.rpc("tools/call").is_empty());
    one(&kept).await;
    // BASELINE: another tool passes
    let (call, headers) = modern(5, "tools/call", json!({"name": "other", "arguments": {}}));
    let r = post_with(&app, "up", &gw.alice, &headers, &call).await;
    assert_eq!(answer(&r)["result"]["content"][0]["text"], "stateless done");
    assert_eq!(up.log.rpc("tools/call").len(), 1);
    assert_eq!(one(&kept).await.decision, Decision::Allow);
}

#[tokio::test]
async fn a_limited_read_or_prompt_is_429_with_retry_after() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    let (app, kept) = governed(&gw, |k| match k.method {
        "tools/call" => pass(k),
        _ => limited("reads", 2000),
    });
    let session = open_session(&app, "up", &gw.alice).await;
    for (method, params) in [
        ("resources/read", json!({"uri": "file:///a"})),
        ("prompts/get", json!({"name": "p"})),
    ] {
        let r = post(
            &app,
            "up",
            &gw.alice,
            Some(&session),
            &request("r1", method, params),
        )
        .await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.header("retry-after"), Some("2"));
        let a = r.json();
        assert_eq!(
            (a["id"].clone(), a["error"]["code"].clone()),
            (json!("r1"), json!(-32012))
        );
        assert_eq!(a["error"]["data"], json!({"retryAfterSeconds": 2}));
        let rec = one(&kept).await;
        assert_eq!(
            (rec.decision, rec.rule.as_deref()),
            (Decision::Limited, Some("reads"))
        );
        let outcome = rec.outcome.unwrap();
        assert_eq!(
            (outcome.status.as_str(), outcome.http_status),
            ("http_error", Some(429))
        );
        assert_eq!(rec.request_id.as_deref(), Some("r1"));
    }
    assert!(up.log.rpc("resources/read").is_empty());
}

#[tokio::test]
async fn an_audit_mode_rule_lets_the_call_through_and_says_it_would_have_limited() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    let (app, kept) = governed(&gw, |_| Verdict::Pass {
        would_limit: Some("dry-run".into()),
    });
    let session = open_session(&app, "up", &gw.alice).await;
    let r = post(
        &app,
        "up",
        &gw.alice,
        Some(&session),
        &tools_call(1, "echo"),
    )
    .await;
    assert!(answer(&r).get("result").is_some(), "{}", r.body);
    assert_eq!(up.log.rpc("tools/call").len(), 1);
    let rec = one(&kept).await;
    assert_eq!(
        (rec.decision, rec.rule.as_deref()),
        (Decision::WouldLimit, Some("dry-run"))
    );
    assert_eq!(rec.outcome.unwrap().status, "ok");
}

#[tokio::test]
async fn a_virtual_server_call_records_the_alias_the_member_and_its_own_tool_name() {
    let up = Upstream::start(Speaks::Stateless).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    admin(
        &gw,
        "POST",
        "/admin/virtual-servers",
        json!({"name": "v", "members": {"everyone": true},
            "tools": [{"server": "up", "tool": "echo", "alias": "say"}]}),
    )
    .await;
    let keys = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let seen = keys.clone();
    let (app, kept) = governed(&gw, move |k| {
        seen.lock()
            .unwrap()
            .push((k.endpoint.to_owned(), k.name.to_owned()));
        pass(k)
    });
    let (call, headers) = modern(
        9,
        "tools/call",
        json!({"name": "say", "arguments": {"q": 1}}),
    );
    let r = post_with(&app, "v", &gw.alice, &headers, &call).await;
    assert_eq!(
        answer(&r)["result"]["content"][0]["text"],
        "stateless done",
        "{}",
        r.body
    );
    let rec = one(&kept).await;
    assert_eq!(rec.endpoint.as_deref(), Some("v"));
    assert_eq!(rec.tool.as_deref(), Some("say"));
    assert_eq!(rec.upstream_server.as_deref(), Some("up"));
    assert_eq!(rec.upstream_tool.as_deref(), Some("echo"));
    assert_eq!(rec.credential.as_ref().unwrap().kind, "header");
    assert!(rec.upstream_ms.is_some() && rec.args_hmac.is_some());
    assert_eq!(rec.outcome.unwrap().status, "ok");
    assert_eq!(*keys.lock().unwrap(), [("v".to_owned(), "say".to_owned())]);
    // A hidden (unlisted) name on a virtual server: denied, recorded like a direct one.
    let (call, headers) = modern(10, "tools/call", json!({"name": "echo", "arguments": {}}));
    post_with(&app, "v", &gw.alice, &headers, &call).await;
    let rec = one(&kept).await;
    assert_eq!(
        (rec.decision, rec.rule.as_deref()),
        (Decision::Deny, Some("hidden_tool"))
    );
    assert_eq!(rec.outcome.unwrap().status, "rpc_error");
    // Limited on a virtual server: the same tool error.
    let (app, kept) = governed(&gw, |_| limited("vs", 10));
    let (call, headers) = modern(11, "tools/call", json!({"name": "say", "arguments": {}}));
    let r = post_with(&app, "v", &gw.alice, &headers, &call).await;
    let a = answer(&r);
    assert_eq!(a["result"]["isError"], true, "{a}");
    assert_eq!(
        a["result"]["content"][0]["text"],
        "Rate limit reached: retry in 1 s"
    );
    assert_eq!(one(&kept).await.decision, Decision::Limited);
}

#[tokio::test]
async fn a_call_the_client_abandons_is_recorded_once_as_no_answer() {
    let up = Upstream::start(Speaks::Stateless).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    let (app, kept) = governed(&gw, pass);
    // `long` streams progress and never answers: the client reads the head and goes away.
    let (call, headers) = modern(12, "tools/call", json!({"name": "long", "arguments": {}}));
    let mut b = mcp_request(axum::http::Method::POST, "up", Some(&gw.alice));
    for (k, v) in headers {
        b = b.header(k, v);
    }
    let req = b.body(Body::from(call.to_string())).unwrap();
    let resp = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(taken(&kept).is_empty(), "not over yet");
    drop(resp);
    let rec = one(&kept).await;
    assert_eq!(rec.outcome.unwrap().status, "no_answer");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(taken(&kept).is_empty(), "exactly one record");
}

#[tokio::test]
async fn a_batch_gets_a_record_per_counted_member_and_is_refused_whole_when_one_is_limited() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    let (app, kept) = governed(&gw, |k| match k.name {
        "slow-down" => limited("burst", 3000),
        _ => pass(k),
    });
    let old = old_session(&app, &gw.alice).await;
    let batch = |second: &str| {
        format!(
            r#"[{{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{{"name":"echo","arguments":{{}}}}}},
            {{"jsonrpc":"2.0","id":"b","method":"tools/call","params":{{"name":"{second}","arguments":{{}}}}}},
            {{"jsonrpc":"2.0","id":"c","method":"tools/list"}}]"#
        )
    };
    // BASELINE: both calls go through, each recorded with its own id and outcome.
    let r = post_raw(&app, "up", &gw.alice, Some(&old), &batch("echo")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut recs = taken(&kept);
    recs.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let ids: Vec<_> = recs.iter().map(|r| r.request_id.clone().unwrap()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(
        recs.iter()
            .all(|r| r.outcome.as_ref().unwrap().status == "ok")
    );
    let sent = up.log.all().len();

    // One member limited: the whole batch is 429, nothing goes upstream, each is recorded.
    let r = post_raw(&app, "up", &gw.alice, Some(&old), &batch("slow-down")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("3"));
    assert_eq!(r.json()["error"]["code"], -32012);
    assert_eq!(up.log.all().len(), sent);
    let mut recs = taken(&kept);
    recs.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let got: Vec<_> = recs
        .iter()
        .map(|r| (r.decision, r.outcome.as_ref().unwrap().http_status))
        .collect();
    assert_eq!(
        got,
        [(Decision::Allow, Some(429)), (Decision::Limited, Some(429))]
    );
}

/// An upstream `up` only alice may use (bob is authenticated, but not admitted).
async fn alice_only_at_up() -> (Upstream, Gateway) {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    replace_everyone_group(
        &gw,
        json!({"servers": ["up"], "members": {"users": ["alice@example.com"]}}),
    )
    .await;
    (up, gw)
}

#[tokio::test]
async fn a_flood_of_bad_credentials_or_forbidden_requests_is_sampled_and_names_no_credential() {
    let (_up, gw) = alice_only_at_up().await;
    let (app, kept) = governed(&gw, pass);
    let forged = format!("{}x", gw.alice);
    for _ in 0..50 {
        let r = post(&app, "up", &forged, None, &init_message(1)).await;
        assert_eq!(r.status, 401);
    }
    // No credential at all is a client's first step, not a failed login.
    let bare = Request::post("/mcp/up")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Body::from(init_message(1).to_string()))
        .unwrap();
    assert_eq!(send(&app, bare).await.status, 401);
    let recs = taken(&kept);
    assert_eq!(recs.len(), 1, "one record for the flood: {recs:#?}");
    let r = &recs[0];
    assert_eq!((r.event, r.decision), (Event::AuthFailed, Decision::Deny));
    assert_eq!(r.endpoint.as_deref(), Some("up"));
    assert_eq!(
        r.detail,
        Some(json!({"reason": "invalid_credential", "credential": "api_key", "count": 1}))
    );
    assert_eq!(r.outcome.as_ref().unwrap().http_status, Some(401));
    let line = serde_json::to_string(r).unwrap();
    assert!(!line.contains(&forged[6..20]), "nothing of the key: {line}");

    // bob may not use `up`: one sampled `Denied` record however often he asks.
    for _ in 0..20 {
        let r = post(&app, "up", &gw.bob, None, &init_message(1)).await;
        assert_eq!(r.status, 404);
    }
    let recs = taken(&kept);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    let r = &recs[0];
    assert_eq!(
        (r.event, r.rule.as_deref()),
        (Event::Denied, Some("endpoint_access"))
    );
    assert_eq!(r.principal.as_ref().unwrap().user, "bob@example.com");
    assert_eq!(r.detail, Some(json!({"count": 1})));
    // BASELINE: alice is admitted and nothing is recorded for an initialize.
    open_session(&app, "up", &gw.alice).await;
    assert!(taken(&kept).is_empty());
}

#[tokio::test]
async fn arguments_are_kept_only_where_the_server_opts_in_redacted_for_direct_and_virtual_calls() {
    let up = Upstream::start(Speaks::Stateless).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    admin(
        &gw,
        "POST",
        "/admin/virtual-servers",
        json!({"name": "v", "members": {"everyone": true},
            "tools": [{"server": "up", "tool": "echo", "alias": "say"}]}),
    )
    .await;
    let (app, kept) = governed(&gw, pass);
    let args = json!({"q": "find", "Password": "hunter2", "deep": [{"API_KEY": "k-123"}]});
    let call = |endpoint: &'static str, name: &'static str| {
        let (body, headers) = modern(1, "tools/call", json!({"name": name, "arguments": args}));
        let app = app.clone();
        let key = gw.alice.clone();
        async move { post_with(&app, endpoint, &key, &headers, &body).await }
    };
    // BASELINE: not opted in, only the hash.
    call("up", "echo").await;
    let rec = one(&kept).await;
    assert!(rec.args.is_none() && rec.args_hmac.is_some());

    let server = json!({"url": up.url, "auth": {"type": "header",
            "headers": {"X-Api-Key": "secret://up-key"}},
        "audit": {"capture_arguments": true, "redact_keys": ["password", "api_key"]}});
    admin(&gw, "PUT", "/admin/servers/up", server).await;
    let redacted =
        json!({"q": "find", "Password": "[redacted]", "deep": [{"API_KEY": "[redacted]"}]});
    for (endpoint, name) in [("up", "echo"), ("v", "say")] {
        call(endpoint, name).await;
        let rec = one(&kept).await;
        assert_eq!(rec.args.as_ref(), Some(&redacted), "{endpoint}");
        let line = serde_json::to_string(&rec).unwrap();
        assert!(
            !line.contains("hunter2") && !line.contains("k-123"),
            "{line}"
        );
    }
}

/// A 2025-03-26 session (the one era that takes batches) at `up`: its id.
async fn old_session(app: &axum::Router, key: &str) -> String {
    let r = post(app, "up", key, None, &init_message_at(1, "2025-03-26")).await;
    r.header("mcp-session-id").unwrap().to_owned()
}

/// `count` `tools/call` members (ids 0..count) as a JSON batch.
fn batch_of(count: usize) -> String {
    let items: Vec<Value> = (0..count)
        .map(|i| {
            json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "echo", "arguments": {}}})
        })
        .collect();
    Value::Array(items).to_string()
}

#[tokio::test]
async fn a_batch_that_is_refused_anyway_costs_no_limit_check_and_no_record() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    let checks = Arc::new(Mutex::new(0usize));
    let seen = checks.clone();
    let (app, kept) = governed_with_body(&gw, 1 << 20, move |k| {
        *seen.lock().unwrap() += 1;
        pass(k)
    });
    // ATTACK: big batches without a session (batches need a 2025-03-26 session).
    for n in [100, 1000] {
        let r = post_raw(&app, "up", &gw.alice, None, &batch_of(n)).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], -32600);
    }
    // ATTACK: more members than a batch may hold, even in a session.
    let old = old_session(&app, &gw.alice).await;
    let r = post_raw(&app, "up", &gw.alice, Some(&old), &batch_of(1000)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let a = r.json();
    assert_eq!(a["error"]["code"], -32600);
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 100"),
        "{a}"
    );
    // ATTACK: two requests with one id (the second could never be answered or recorded).
    let twice = r#"[{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"echo"}},
        {"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"echo"}}]"#;
    let r = post_raw(&app, "up", &gw.alice, Some(&old), twice).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("distinct ids"), "{}", r.body);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(*checks.lock().unwrap(), 0, "no limit was checked");
    assert!(taken(&kept).is_empty(), "no record was made");
    assert!(up.log.rpc("tools/call").is_empty());
    // BASELINE: a batch of the most members allowed, in the session, is counted and sent.
    let r = post_raw(&app, "up", &gw.alice, Some(&old), &batch_of(100)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(*checks.lock().unwrap(), 100);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(taken(&kept).len(), 100);
}

#[tokio::test]
async fn a_batch_stops_being_counted_at_its_first_limited_member() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    let checks = Arc::new(Mutex::new(0usize));
    let seen = checks.clone();
    let (app, kept) = governed_with_body(&gw, 1 << 20, move |_| {
        let mut n = seen.lock().unwrap();
        *n += 1;
        // The third check is refused.
        if *n == 3 {
            limited("burst", 1000)
        } else {
            Verdict::Pass { would_limit: None }
        }
    });
    let old = old_session(&app, &gw.alice).await;
    let r = post_raw(&app, "up", &gw.alice, Some(&old), &batch_of(50)).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        *checks.lock().unwrap(),
        3,
        "the members after the limited one are not counted"
    );
    let mut recs = taken(&kept);
    recs.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let got: Vec<_> = recs
        .iter()
        .map(|r| (r.request_id.clone().unwrap(), r.decision))
        .collect();
    assert_eq!(
        got,
        [
            ("0".to_owned(), Decision::Allow),
            ("1".to_owned(), Decision::Allow),
            ("2".to_owned(), Decision::Limited)
        ]
    );
    assert!(up.log.rpc("tools/call").is_empty());
}

#[tokio::test]
async fn a_huge_tool_name_or_id_is_recorded_cut_with_a_mark() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    let (app, kept) = governed_with_body(&gw, 1 << 20, pass);
    let session = open_session(&app, "up", &gw.alice).await;
    let name = "n".repeat(300_000);
    let id = "i".repeat(100_000);
    let call = request(
        json!(id),
        "tools/call",
        json!({"name": name, "arguments": {}}),
    );
    post(&app, "up", &gw.alice, Some(&session), &call).await;
    let rec = one(&kept).await;
    let mark = mcpgw::audit::record::TRUNCATED_MARK;
    let max = mcpgw::audit::record::MAX_TEXT_BYTES;
    for (field, full) in [
        (rec.tool.as_deref(), &name),
        (rec.upstream_tool.as_deref(), &name),
        (rec.request_id.as_deref(), &id),
    ] {
        let v = field.unwrap();
        let kept = v.strip_suffix(mark).expect("marked as cut");
        assert!(kept.len() <= max && full.starts_with(kept));
    }
    assert!(serde_json::to_string(&rec).unwrap().len() < 4096);
    // BASELINE: a short name is recorded whole, unmarked.
    post(
        &app,
        "up",
        &gw.alice,
        Some(&session),
        &tools_call(2, "echo"),
    )
    .await;
    assert_eq!(one(&kept).await.tool.as_deref(), Some("echo"));
}

#[tokio::test]
async fn a_users_view_of_a_hidden_tool_reads_like_an_unknown_tool() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    replace_everyone_group(
        &gw,
        json!({"servers": ["up"], "members": {"everyone": true},
            "tool_rules": {"up": {"deny": ["echo"]}}}),
    )
    .await;
    let (app, kept) = governed(&gw, pass);
    let session = open_session(&app, "up", &gw.alice).await;
    let mut admin_views = Vec::new();
    let mut user_views = Vec::new();
    for (id, name) in [(1, "echo"), (2, "never-existed")] {
        post(&app, "up", &gw.alice, Some(&session), &tools_call(id, name)).await;
        let rec = one(&kept).await;
        let strip = |mut v: Value| {
            for k in [
                "tool",
                "time_ms",
                "request_id",
                "traceparent",
                "latency_ms",
                "upstream_tool",
                "chain",
            ] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        };
        admin_views.push(strip(serde_json::to_value(&rec).unwrap()));
        user_views.push(strip(mcpgw::audit::view::for_user(&rec)));
    }
    // BASELINE: the admin's records tell them apart (the hidden one is denied).
    assert_eq!(admin_views[0]["rule"], "hidden_tool");
    assert_eq!(admin_views[1]["decision"], "allow");
    assert_ne!(admin_views[0], admin_views[1]);
    // The user's view does not.
    assert_eq!(user_views[0], user_views[1]);
    assert_eq!(user_views[0]["decision"], "allow");
    for k in ["upstream_server", "upstream_ms", "args_hmac", "rule"] {
        assert!(user_views[0].get(k).is_none(), "{k}: {}", user_views[0]);
    }
}

#[tokio::test]
async fn failed_logins_and_denials_on_invented_endpoint_names_are_not_sampled_apart() {
    let (_up, gw) = alice_only_at_up().await;
    let (app, kept) = governed(&gw, pass);
    let forged = format!("{}x", gw.alice);
    // ATTACK: 10,000 failed logins, each on another (valid-looking, unregistered) name.
    for i in 0..10_000 {
        let r = post(&app, &format!("n{i}"), &forged, None, &init_message(1)).await;
        assert_eq!(r.status, 401);
    }
    let recs = taken(&kept);
    assert_eq!(recs.len(), 1, "{:#?}", &recs[..recs.len().min(3)]);
    assert_eq!(recs[0].endpoint.as_deref(), Some("*"));
    // ATTACK: an authenticated caller asking for invented names: one `Denied` record.
    for i in 0..200 {
        let r = post(&app, &format!("n{i}"), &gw.bob, None, &init_message(1)).await;
        assert_eq!(r.status, 404);
    }
    let recs = taken(&kept);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(
        (recs[0].event, recs[0].endpoint.as_deref()),
        (Event::Denied, Some("*"))
    );
    // BASELINE: a registered endpoint is still named (and sampled apart).
    post(&app, "up", &forged, None, &init_message(1)).await;
    post(&app, "up", &gw.bob, None, &init_message(1)).await;
    let recs = taken(&kept);
    let named: Vec<_> = recs.iter().map(|r| (r.event, r.endpoint.clone())).collect();
    assert_eq!(
        named,
        [
            (Event::AuthFailed, Some("up".to_owned())),
            (Event::Denied, Some("up".to_owned()))
        ]
    );
}
