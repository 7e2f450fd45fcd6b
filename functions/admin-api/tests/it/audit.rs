//! `GET /admin/audit`, `GET /me/audit`, `GET /admin/audit/verify` and the console's activity
//! pages over a real SQLite store, with records emitted through the state's own auditor:
//! who may read what (admins everything, a user only their own, whatever they ask), every
//! malformed parameter a 400 with a JSON message, pages that follow the cursor.

use crate::common;
use crate::console::{send, sign_in, value_of};

use common::{Api, api, assert_error};
use mcpgw::audit::{Actor, AuditRecord, Decision, Event, Outcome};
use serde_json::Value;

/// Emits `n` tool calls for `user` on `endpoint` and flushes them to the store.
async fn emit(api: &Api, user: &str, endpoint: &str, n: usize) {
    for i in 0..n {
        let mut r = AuditRecord::new(Event::ToolCall, Decision::Allow);
        r.principal = Some(Actor {
            user: user.into(),
            auth: "api_key".into(),
            key_id: Some("k".into()),
            provider: None,
        });
        r.endpoint = Some(endpoint.into());
        r.tool = Some(format!("tool{i}"));
        r.outcome = Some(Outcome {
            status: "ok".into(),
            code: None,
            http_status: None,
        });
        api.state.audit.emit(r);
    }
    api.state.audit.flush().await;
}

fn users(body: &Value) -> Vec<String> {
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["principal"]["user"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn admins_read_everyones_records_filtered_and_paged() {
    let api = api();
    emit(&api, "alice@example.com", "github", 3).await;
    emit(&api, "bob@example.com", "jira", 2).await;
    let (s, all) = api.admin("GET", "/admin/audit", None).await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(users(&all).len(), 5);
    assert!(all["next_cursor"].is_null());
    // Newest first: bob's were emitted last.
    assert_eq!(users(&all)[0], "bob@example.com");

    let (_, alice) = api
        .admin("GET", "/admin/audit?user=alice@example.com", None)
        .await;
    assert_eq!(users(&alice), vec!["alice@example.com"; 3]);
    let (_, jira) = api
        .admin("GET", "/admin/audit?endpoint=jira&tool=tool1", None)
        .await;
    assert_eq!(jira["records"].as_array().unwrap().len(), 1);
    let (_, none) = api
        .admin("GET", "/admin/audit?outcome=is_error", None)
        .await;
    assert!(none["records"].as_array().unwrap().is_empty());

    // Pages of two, following the cursor, see every record once.
    let mut seen = Vec::new();
    let mut path = "/admin/audit?limit=2".to_owned();
    loop {
        let (s, page) = api.admin("GET", &path, None).await;
        assert_eq!(s, 200, "{page}");
        assert!(page["records"].as_array().unwrap().len() <= 2);
        seen.extend(page["records"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/admin/audit?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, all["records"].as_array().unwrap().clone());

    // A time window: everything is after `since=0`, nothing before `until=1`.
    let (_, window) = api.admin("GET", "/admin/audit?since=0&until=1", None).await;
    assert!(window["records"].as_array().unwrap().is_empty());
    let (_, rfc) = api
        .admin("GET", "/admin/audit?since=2000-01-01T00:00:00Z", None)
        .await;
    assert_eq!(users(&rfc).len(), 5);

    // The chain of what was emitted verifies.
    let (s, report) = api.admin("GET", "/admin/audit/verify", None).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["records"], 5);
}

#[tokio::test]
async fn bad_parameters_answer_400_with_a_message() {
    let api = api();
    for q in [
        "limit=0",
        "limit=101",
        "limit=ten",
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
        "since=10&until=5",
        "cursor=not-a-cursor",
        "decision=maybe",
        "colour=red",
    ] {
        let (s, body) = api.admin("GET", &format!("/admin/audit?{q}"), None).await;
        assert_error(s, &body, 400, "invalid_query");
        let (s, body) = api.admin("GET", &format!("/me/audit?{q}"), None).await;
        assert_error(s, &body, 400, "invalid_query");
    }
    let long = "x".repeat(513);
    let (s, body) = api
        .admin("GET", &format!("/admin/audit?tool={long}"), None)
        .await;
    assert_error(s, &body, 400, "invalid_query");
    let (s, body) = api
        .admin("GET", "/admin/audit/verify?since=later", None)
        .await;
    assert_error(s, &body, 400, "invalid_query");
    // Cursors are caller input: one whose writer is not a writer id (a DynamoDB sort key
    // past its size limit, a `#` that would shift the key) or whose text is too long is a
    // 400 like any other malformed cursor, never a store error.
    let cursor = |writer: String| {
        mcpgw::store::AuditCursor {
            time_ms: 1,
            writer,
            seq: 1,
        }
        .encode()
    };
    for c in [
        cursor("x".repeat(2000)),
        cursor("w-1-a#9999".into()),
        cursor("writer".into()),
        format!("{}{}", cursor("w-1-abc".into()), "A".repeat(300)),
    ] {
        for path in ["/admin/audit", "/me/audit"] {
            let (s, body) = api.admin("GET", &format!("{path}?cursor={c}"), None).await;
            assert_error(s, &body, 400, "invalid_query");
        }
    }
    let (s, body) = api
        .admin(
            "GET",
            &format!("/admin/audit?cursor={}", cursor("w-1-abc".into())),
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    // A verify holds its range in memory: more than 31 days is refused.
    let (s, body) = api
        .admin("GET", "/admin/audit/verify?since=0&until=2678400001", None)
        .await;
    assert_error(s, &body, 400, "invalid_query");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("31 days"),
        "{body}"
    );
    let (s, body) = api
        .admin("GET", "/admin/audit/verify?since=0&until=2678400000", None)
        .await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test]
async fn users_read_only_their_own_records_and_never_the_admin_routes() {
    let api = api();
    let (_, alice) = api.user_key("alice@example.com").await;
    emit(&api, "alice@example.com", "github", 2).await;
    emit(&api, "bob@example.com", "github", 3).await;

    let (s, mine) = api.as_key(&alice, "GET", "/me/audit", None).await;
    assert_eq!(s, 200, "{mine}");
    assert_eq!(users(&mine), vec!["alice@example.com"; 2]);
    let (s, same) = api
        .as_key(&alice, "GET", "/me/audit?user=alice@example.com", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(same, mine);
    // Asking for someone else's is refused, not silently answered with bob's.
    let (s, body) = api
        .as_key(&alice, "GET", "/me/audit?user=bob@example.com", None)
        .await;
    assert_error(s, &body, 400, "invalid_query");

    for path in [
        "/admin/audit",
        "/admin/audit?user=alice@example.com",
        "/admin/audit/verify",
    ] {
        let (s, body) = api.as_key(&alice, "GET", path, None).await;
        assert_error(s, &body, 403, "forbidden");
    }
    for path in ["/admin/audit", "/me/audit", "/admin/audit/verify"] {
        let (s, _) = api.call("GET", path, None, None).await;
        assert_eq!(s, 401, "{path}");
    }
}

#[tokio::test]
async fn the_console_shows_my_activity_and_admins_everyones() {
    let api = api();
    let (_, alice) = api.user_key("alice@example.com").await;
    emit(&api, "alice@example.com", "github", 1).await;
    emit(&api, "bob@example.com", "jira", 1).await;

    let session = sign_in(&api.app, &alice)
        .await
        .set_cookie("mcpgw_console")
        .unwrap();
    let mine = send(
        &api.app,
        "GET",
        "/console/activity",
        Some(value_of(&session)),
        None,
        "",
    )
    .await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    assert_eq!(
        mine.body.matches("class=\"audit-record\"").count(),
        1,
        "{}",
        mine.body
    );
    assert!(mine.body.contains("github") && !mine.body.contains("jira"));
    // Not an admin: the admin page is refused.
    let theirs = send(
        &api.app,
        "GET",
        "/console/admin/activity",
        Some(value_of(&session)),
        None,
        "",
    )
    .await;
    assert_eq!(theirs.status, 403);
    // A bad filter shows the API's message.
    let bad = send(
        &api.app,
        "GET",
        "/console/activity?since=never",
        Some(value_of(&session)),
        None,
        "",
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("since must be RFC 3339"), "{}", bad.body);

    let admin = sign_in(&api.app, mcpgw::testing::TEST_ADMIN_KEY)
        .await
        .set_cookie("mcpgw_console")
        .unwrap();
    let all = send(
        &api.app,
        "GET",
        "/console/admin/activity",
        Some(value_of(&admin)),
        None,
        "",
    )
    .await;
    assert_eq!(all.status, 200, "{}", all.body);
    // Everyone's: both users' calls, and the admin's own changes (the key made above).
    assert!(all.body.matches("class=\"audit-record\"").count() >= 2);
    assert!(
        all.body.contains("github") && all.body.contains("jira"),
        "{}",
        all.body
    );
    assert!(all.body.contains("admin_change"), "{}", all.body);
    let jira = send(
        &api.app,
        "GET",
        "/console/admin/activity?endpoint=jira",
        Some(value_of(&admin)),
        None,
        "",
    )
    .await;
    assert_eq!(jira.body.matches("class=\"audit-record\"").count(), 1);
    assert!(jira.body.contains("bob@example.com"));
}

#[tokio::test]
async fn my_audit_shows_a_hidden_tools_call_as_an_unknown_tools_and_hides_operator_fields() {
    let api = api();
    let (_, alice) = api.user_key("alice@example.com").await;
    // As the proxy records them on a direct server with a deny-list: the unknown name went
    // upstream (allow, upstream named); the hidden one went upstream under a sentinel name
    // (deny by hidden_tool, no upstream named). Both got the upstream's unknown-tool error.
    for (name, hidden) in [("secret-tool", true), ("never-existed", false)] {
        let mut r = AuditRecord::new(Event::ToolCall, Decision::Allow);
        r.principal = Some(Actor {
            user: "alice@example.com".into(),
            auth: "api_key".into(),
            key_id: Some("k".into()),
            provider: None,
        });
        r.endpoint = Some("direct".into());
        r.method = Some("tools/call".into());
        r.tool = Some(name.into());
        r.outcome = Some(Outcome {
            status: "rpc_error".into(),
            code: Some(-32602),
            http_status: None,
        });
        r.args_hmac = Some("ab".repeat(32));
        r.upstream_ms = Some(1.25);
        if hidden {
            r.decision = Decision::Deny;
            r.rule = Some("hidden_tool".into());
        } else {
            r.upstream_server = Some("direct".into());
            r.upstream_tool = Some(name.into());
        }
        api.state.audit.emit(r);
    }
    api.state.audit.flush().await;
    // BASELINE: the admin sees the difference.
    let (_, all) = api.admin("GET", "/admin/audit?decision=deny", None).await;
    assert_eq!(all["records"].as_array().unwrap().len(), 1, "{all}");
    let (s, mine) = api.as_key(&alice, "GET", "/me/audit", None).await;
    assert_eq!(s, 200, "{mine}");
    let mut recs: Vec<Value> = mine["records"].as_array().unwrap().clone();
    assert_eq!(recs.len(), 2, "{mine}");
    for r in &mut recs {
        for k in [
            "chain",
            "upstream_server",
            "upstream_tool",
            "upstream_ms",
            "args_hmac",
            "args",
            "rule",
        ] {
            assert!(r.get(k).is_none(), "{k} shown: {r}");
        }
        for k in ["tool", "time_ms", "request_id", "traceparent"] {
            r.as_object_mut().unwrap().remove(k);
        }
    }
    assert_eq!(recs[0], recs[1]);
    assert_eq!(recs[0]["decision"], "allow");
    // Filtering by decision selects on what the user sees.
    let (_, denied) = api
        .as_key(&alice, "GET", "/me/audit?decision=deny", None)
        .await;
    assert_eq!(denied["records"], serde_json::json!([]), "{denied}");
    let (_, allowed) = api
        .as_key(&alice, "GET", "/me/audit?decision=allow", None)
        .await;
    assert_eq!(allowed["records"].as_array().unwrap().len(), 2, "{allowed}");
}
