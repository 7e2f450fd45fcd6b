//! The proxy across MCP protocol eras, against in-process upstreams of each era (see
//! `common::Speaks`): gateway sessions (sealed ids bound to user and endpoint, ended by
//! DELETE on every process, re-opened upstream when the upstream loses them), 2026-07-28 clients passed
//! through to stateless upstreams and bridged to session-era ones, session-era clients bridged
//! to stateless upstreams, and cancellation (client gone, client cancels, call deadline).

use crate::common;

use axum::http::Method;
use common::*;
use serde_json::{Value, json};

/// The session-era versions the gateway serves.
const HANDSHAKE: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

/// A gateway with `upstream` registered twice, as `up` and `twin`.
async fn fixture(speaks: Speaks, vars: &[(&str, &str)]) -> (Gateway, Upstream) {
    let up = Upstream::start(speaks).await;
    let gw = gateway(
        vars,
        &[("up", &up.url, "up-key"), ("twin", &up.url, "up-key")],
    )
    .await;
    (gw, up)
}

// ---------------------------------------------------------------------------------------------
// Session-era client, session-era upstream

#[tokio::test]
async fn initialize_is_answered_with_a_sealed_session_and_the_upstream_keeps_its_own() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let init = post(&gw.app, "up", &gw.alice, None, &init_message(1)).await;
    assert_eq!(init.status, 200, "{}", init.body);
    assert!(
        init.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let result = &init.json()["result"];
    assert_eq!(result["protocolVersion"], "2025-06-18");
    assert_eq!(result["serverInfo"]["name"], "session-upstream");
    assert_eq!(result["instructions"], "session-era upstream");
    let sealed = init.header("mcp-session-id").unwrap().to_owned();
    assert_ne!(sealed, "up-session-1");
    assert!(
        !sealed.contains("up-session"),
        "the upstream's id shows through: {sealed}"
    );
    assert!(sealed.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    assert_eq!(up.log.only("initialize").session(), None);

    // The client completes the handshake; both that and later requests travel in the
    // upstream's session, at the upstream's version.
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = post(&gw.app, "up", &gw.alice, Some(&sealed), &done).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = post(&gw.app, "up", &gw.alice, Some(&sealed), &tools_call(2, "x")).await;
    assert_eq!(r.events().last().unwrap()["id"], 2);
    for method in ["notifications/initialized", "tools/call"] {
        let s = up.log.only(method);
        assert_eq!(s.session(), Some("up-session-1"), "{method}");
        assert_eq!(
            s.header("mcp-protocol-version"),
            Some("2025-06-18"),
            "{method}"
        );
    }
}

#[tokio::test]
async fn a_session_serves_only_its_user_its_endpoint_and_its_exact_id() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let sealed = open_session(&gw.app, "up", &gw.alice).await;
    let call = tools_call(2, "x");
    let mut tampered = sealed.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();

    let refused = [
        ("another user", "up", gw.bob.as_str(), sealed.as_str()),
        ("tampered", "up", gw.alice.as_str(), tampered.as_str()),
        (
            "another endpoint",
            "twin",
            gw.alice.as_str(),
            sealed.as_str(),
        ),
        ("not sealed at all", "up", gw.alice.as_str(), "up-session-1"),
    ];
    for (why, endpoint, key, session) in refused {
        let r = post(&gw.app, endpoint, key, Some(session), &call).await;
        let error = r.rpc_error(404, json!(2), -32001);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("Session not found"),
            "{why}"
        );
        let r = mcp_request(Method::DELETE, endpoint, Some(key))
            .header("mcp-session-id", session)
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(send(&gw.app, r).await.status, 404, "DELETE, {why}");
    }
    assert_eq!(
        up.log.methods(),
        ["initialize"],
        "a refused session reached the upstream"
    );
    // The owner, on its endpoint, is served.
    let r = post(&gw.app, "up", &gw.alice, Some(&sealed), &call).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn a_bad_version_header_or_a_missing_session_is_a_400() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let sealed = open_session(&gw.app, "up", &gw.alice).await;
    for version in ["2024-11-05", "2099-01-01", MODERN] {
        let headers = [
            ("mcp-session-id", sealed.as_str()),
            ("mcp-protocol-version", version),
        ];
        let r = post_with(&gw.app, "up", &gw.alice, &headers, &tools_call(2, "x")).await;
        let error = r.rpc_error(400, json!(2), -32600);
        assert_eq!(error["data"]["supported"], json!(HANDSHAKE), "{version}");
    }
    let r = post(&gw.app, "up", &gw.alice, None, &tools_call(3, "x")).await;
    r.rpc_error(400, json!(3), -32600);
    assert_eq!(up.log.methods(), ["initialize"]);
    // Every session-era version is accepted in the header.
    for (i, version) in HANDSHAKE.into_iter().enumerate() {
        let headers = [
            ("mcp-session-id", sealed.as_str()),
            ("mcp-protocol-version", version),
        ];
        let r = post_with(
            &gw.app,
            "up",
            &gw.alice,
            &headers,
            &tools_call(i as i64, "x"),
        )
        .await;
        assert_eq!(r.status, 200, "{version}: {}", r.body);
    }
}

#[tokio::test]
async fn delete_ends_the_session_here_and_upstream() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let sealed = open_session(&gw.app, "up", &gw.alice).await;
    let r = session_request(&gw.app, Method::DELETE, "up", &gw.alice, &sealed).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let delete = up
        .log
        .all()
        .into_iter()
        .find(|s| s.method == Method::DELETE)
        .unwrap();
    assert_eq!(delete.session(), Some("up-session-1"));
    assert_eq!(delete.header("x-api-key"), Some(SECRET));
    assert!(delete.header("authorization").is_none());

    let r = post(&gw.app, "up", &gw.alice, Some(&sealed), &tools_call(4, "x")).await;
    r.rpc_error(404, json!(4), -32001);
    let r = session_request(&gw.app, Method::DELETE, "up", &gw.alice, &sealed).await;
    assert_eq!(r.status, 404);
    assert_eq!(up.log.methods(), ["initialize", "DELETE"]);
}

#[tokio::test]
async fn a_session_the_upstream_lost_is_reopened_and_the_call_retried() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let sealed = open_session(&gw.app, "up", &gw.alice).await;
    up.forget("up-session-1");

    let r = post(&gw.app, "up", &gw.alice, Some(&sealed), &tools_call(2, "x")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let events = r.events();
    assert_eq!(events.last().unwrap()["id"], 2);
    assert_eq!(
        events.last().unwrap()["result"]["content"][0]["text"],
        "done"
    );

    assert_eq!(
        up.log.methods(),
        [
            "initialize",
            "tools/call",
            "initialize",
            "notifications/initialized",
            "tools/call"
        ]
    );
    let seen = up.log.all();
    assert_eq!(seen[1].session(), Some("up-session-1"));
    // The gateway's own handshake: the client's capabilities and info, the upstream's version.
    let reinit = seen[2].json();
    assert_eq!(seen[2].session(), None);
    assert_eq!(reinit["params"]["protocolVersion"], "2025-06-18");
    assert_eq!(
        reinit["params"]["capabilities"],
        init_message(1)["params"]["capabilities"]
    );
    assert_eq!(
        reinit["params"]["clientInfo"],
        init_message(1)["params"]["clientInfo"]
    );
    assert_eq!(seen[3].session(), Some("up-session-2"));
    assert_eq!(seen[4].session(), Some("up-session-2"));
    assert_eq!(seen[4].json(), tools_call(2, "x"));

    // Later calls (and the end of the session) use the new upstream session directly.
    let r = post(&gw.app, "up", &gw.alice, Some(&sealed), &tools_call(3, "x")).await;
    assert_eq!(r.status, 200);
    let r = session_request(&gw.app, Method::DELETE, "up", &gw.alice, &sealed).await;
    assert_eq!(r.status, 204);
    let seen = up.log.all();
    assert_eq!(seen.len(), 7, "{:?}", up.log.methods());
    assert_eq!(
        (seen[5].rpc().as_deref(), seen[5].session()),
        (Some("tools/call"), Some("up-session-2"))
    );
    assert_eq!(
        (&seen[6].method, seen[6].session()),
        (&Method::DELETE, Some("up-session-2"))
    );
}

#[tokio::test]
async fn a_session_the_upstream_cannot_keep_is_a_404_for_the_client() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let sealed = open_session(&gw.app, "up", &gw.alice).await;
    up.amnesia();
    let r = post(&gw.app, "up", &gw.alice, Some(&sealed), &tools_call(2, "x")).await;
    r.rpc_error(404, json!(2), -32001);
    // One attempt to re-open, no loop.
    assert_eq!(
        up.log.methods(),
        [
            "initialize",
            "tools/call",
            "initialize",
            "notifications/initialized"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Session-era client, several gateway processes (Lambda instances) sharing store and keyring

#[tokio::test]
async fn a_session_ended_on_one_instance_is_not_reopened_on_another() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let (a, b, store) = two_instances(&gw);
    let sealed = open_session(&a, "up", &gw.alice).await;
    // B serves the session as well as A: everything is in the id.
    let r = post(&b, "up", &gw.alice, Some(&sealed), &tools_call(2, "x")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = session_request(&a, Method::DELETE, "up", &gw.alice, &sealed).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        store.session_reads(),
        0,
        "the normal path read the ended-session record"
    );

    // B finds the upstream session gone, and learns why from the store: no re-initialize.
    let r = post(&b, "up", &gw.alice, Some(&sealed), &tools_call(3, "x")).await;
    let error = r.rpc_error(404, json!(3), -32001);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Session not found")
    );
    assert_eq!(
        up.log.methods(),
        ["initialize", "tools/call", "DELETE", "tools/call"],
        "the ended session was opened again upstream"
    );
    assert_eq!(store.session_reads(), 1);

    // From now on B refuses the id itself: neither the upstream nor the store is asked.
    let r = post(&b, "up", &gw.alice, Some(&sealed), &tools_call(4, "x")).await;
    r.rpc_error(404, json!(4), -32001);
    let r = session_request(&b, Method::DELETE, "up", &gw.alice, &sealed).await;
    assert_eq!(r.status, 404);
    assert_eq!(up.log.len(), 4, "{:?}", up.log.methods());
    assert_eq!(store.session_reads(), 1);
}

#[tokio::test]
async fn a_session_the_upstream_lost_is_still_reopened_on_another_instance() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let (a, b, store) = two_instances(&gw);
    let sealed = open_session(&a, "up", &gw.alice).await;
    up.forget("up-session-1");

    let r = post(&b, "up", &gw.alice, Some(&sealed), &tools_call(2, "x")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let last = r.events().last().unwrap().clone();
    assert_eq!(
        (&last["id"], &last["result"]["content"][0]["text"]),
        (&json!(2), &json!("done"))
    );
    assert_eq!(
        up.log.methods(),
        [
            "initialize",
            "tools/call",
            "initialize",
            "notifications/initialized",
            "tools/call"
        ]
    );
    assert_eq!(up.log.all()[4].session(), Some("up-session-2"));
    assert_eq!(
        store.session_reads(),
        1,
        "asked once, when the upstream lost it"
    );

    // B goes on in the new upstream session without asking the store again.
    let r = post(&b, "up", &gw.alice, Some(&sealed), &tools_call(3, "x")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(up.log.all()[5].session(), Some("up-session-2"));
    assert_eq!(store.session_reads(), 1);
}

#[tokio::test]
async fn a_delete_the_store_cannot_record_ends_nothing() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let (a, _b, store) = two_instances(&gw);
    let sealed = open_session(&a, "up", &gw.alice).await;
    store.fail_sessions(true);
    let r = session_request(&a, Method::DELETE, "up", &gw.alice, &sealed).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    assert_eq!(r.error_code(), "store_unavailable");
    assert_eq!(
        up.log.methods(),
        ["initialize"],
        "the upstream session was ended"
    );

    // The session is whole; once the store is back the DELETE goes through.
    let r = post(&a, "up", &gw.alice, Some(&sealed), &tools_call(2, "x")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    store.fail_sessions(false);
    let r = session_request(&a, Method::DELETE, "up", &gw.alice, &sealed).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(up.log.methods(), ["initialize", "tools/call", "DELETE"]);
}

#[tokio::test]
async fn a_lost_session_is_not_reopened_while_the_store_cannot_say_it_was_not_ended() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let (a, b, store) = two_instances(&gw);
    let sealed = open_session(&a, "up", &gw.alice).await;
    up.forget("up-session-1");
    store.fail_sessions(true);
    let r = post(&b, "up", &gw.alice, Some(&sealed), &tools_call(2, "x")).await;
    r.rpc_error(404, json!(2), -32001);
    assert_eq!(up.log.methods(), ["initialize", "tools/call"]);
    assert_eq!(store.session_reads(), 1);

    // Not taken for ended: with the store back, the session is re-opened after all.
    store.fail_sessions(false);
    let r = post(&b, "up", &gw.alice, Some(&sealed), &tools_call(3, "x")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        up.log.methods(),
        [
            "initialize",
            "tools/call",
            "tools/call",
            "initialize",
            "notifications/initialized",
            "tools/call"
        ]
    );
}

/// Opens a gateway session for alice at `version`; its sealed id.
async fn session_at(gw: &Gateway, endpoint: &str, version: &str) -> String {
    let r = post(
        &gw.app,
        endpoint,
        &gw.alice,
        None,
        &init_message_at(1, version),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"]["protocolVersion"], version);
    r.header("mcp-session-id").unwrap().to_owned()
}

#[tokio::test]
async fn batches_travel_as_parsed_only_in_a_2025_03_26_session() {
    let up = Upstream::start(Speaks::Sessions).await;
    let stateless = Upstream::start(Speaks::Stateless).await;
    let servers = [
        ("up", &up.url, "up-key"),
        ("modern", &stateless.url, "up-key"),
    ];
    let servers: Vec<_> = servers
        .iter()
        .map(|(n, u, k)| (*n, u.as_str(), *k))
        .collect();
    let gw = gateway(&[], &servers).await;
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},
        {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}},
        {"jsonrpc":"2.0","id":"b","method":"tools/list"}]"#;

    let old = session_at(&gw, "up", "2025-03-26").await;
    let r = post_raw(&gw.app, "up", &gw.alice, Some(&old), batch).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ids: Vec<Value> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].clone())
        .collect();
    assert_eq!(ids, [json!(1), json!("b")]);
    let seen = up
        .log
        .all()
        .into_iter()
        .find(|s| s.body.starts_with('['))
        .unwrap();
    // The batch as the gateway parsed it, re-serialized (the client's line breaks gone).
    assert_eq!(seen.json(), serde_json::from_str::<Value>(batch).unwrap());
    assert!(
        !seen.body.contains('\n'),
        "raw bytes forwarded: {}",
        seen.body
    );
    assert_eq!(seen.session(), Some("up-session-1"));
    assert_eq!(seen.header("mcp-protocol-version"), Some("2025-03-26"));
    assert_eq!(seen.header("x-api-key"), Some(SECRET));

    // Refused without a session, in a later version's session, in front of a stateless
    // upstream, and with an initialize inside.
    let newer = session_at(&gw, "up", "2025-06-18").await;
    let bridged = session_at(&gw, "modern", "2025-03-26").await;
    let with_init = format!(
        "[{},{}]",
        init_message_at(9, "2025-03-26"),
        request(10, "ping", json!({}))
    );
    let before = (up.log.len(), stateless.log.len());
    for (endpoint, session, body) in [
        ("up", None, batch),
        ("up", Some(&newer), batch),
        ("modern", Some(&bridged), batch),
        ("up", Some(&old), with_init.as_str()),
    ] {
        let r = post_raw(
            &gw.app,
            endpoint,
            &gw.alice,
            session.map(String::as_str),
            body,
        )
        .await;
        r.rpc_error(400, Value::Null, -32600);
    }
    assert_eq!(
        (up.log.len(), stateless.log.len()),
        before,
        "a refused batch went upstream"
    );
}

// ---------------------------------------------------------------------------------------------
// 2026-07-28 client

#[tokio::test]
async fn a_modern_client_passes_through_to_a_stateless_upstream() {
    let (gw, up) = fixture(Speaks::Stateless, &[]).await;
    let (discover, headers) = modern("d", "server/discover", json!({}));
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &discover).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("mcp-session-id").is_none());
    let result = &r.json()["result"];
    assert_eq!(result["supportedVersions"], json!([MODERN]));
    assert_eq!(
        result["_meta"][META_SERVER_INFO]["name"],
        "stateless-upstream"
    );
    assert_eq!(
        (&result["ttlMs"], &result["cacheScope"]),
        (&json!(60000), &json!("public")),
        "unchanged"
    );
    assert_eq!(up.log.only("server/discover").json(), discover);

    let (call, headers) = modern(5, "tools/call", json!({"name": "echo", "arguments": {}}));
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &call).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"]["resultType"], "complete");
    let seen = up.log.only("tools/call");
    assert_eq!(seen.json(), call, "the envelope travels as sent");
    for (h, v) in &headers {
        assert_eq!(seen.header(h), Some(v.as_str()), "{h}");
    }
    assert_eq!(seen.header("x-api-key"), Some(SECRET));
    assert!(seen.header("authorization").is_none() && seen.session().is_none());
    assert_eq!(
        up.log.methods(),
        ["server/discover", "tools/call"],
        "no initialize"
    );
}

#[tokio::test]
async fn a_modern_client_is_bridged_to_a_session_era_upstream() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let (caps, info) = modern_client();
    let (discover, headers) = modern("d", "server/discover", json!({}));
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &discover).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("mcp-session-id").is_none());
    let v = r.json();
    assert_eq!(v["id"], "d");
    let result = &v["result"];
    assert_eq!(result["supportedVersions"], json!([MODERN]));
    assert_eq!(result["capabilities"], json!({"tools": {}}));
    assert_eq!(
        result["_meta"][META_SERVER_INFO]["name"],
        "session-upstream"
    );
    assert_eq!(result["instructions"], "session-era upstream");
    assert_eq!(
        (
            &result["resultType"],
            &result["ttlMs"],
            &result["cacheScope"]
        ),
        (&json!("complete"), &json!(0), &json!("private"))
    );
    // The probe was refused; the gateway opened an upstream session with the client's
    // capabilities and info.
    assert_eq!(
        up.log.methods(),
        ["server/discover", "initialize", "notifications/initialized"]
    );
    let init = up.log.only("initialize").json();
    assert_eq!(init["params"]["protocolVersion"], "2025-11-25");
    assert_eq!(
        (
            &init["params"]["capabilities"],
            &init["params"]["clientInfo"]
        ),
        (&caps, &info)
    );
    assert_eq!(
        up.log.only("notifications/initialized").session(),
        Some("up-session-1")
    );

    // A cacheable result in JSON, then in SSE, gets the 2026-07-28 fields.
    let (list, headers) = modern(6, "tools/list", json!({}));
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &list).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert!(
        r.header("mcp-session-id").is_none(),
        "the upstream's session id leaked"
    );
    let result = &r.json()["result"];
    assert_eq!(result["tools"][0]["name"], "echo");
    assert_eq!(
        (
            &result["resultType"],
            &result["ttlMs"],
            &result["cacheScope"]
        ),
        (&json!("complete"), &json!(0), &json!("private"))
    );
    let (list, headers) = modern(7, "tools/list", json!({"_meta": {"progressToken": "p7"}}));
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &list).await;
    let events = r.events();
    assert_eq!(events.len(), 2, "{}", r.body);
    assert_eq!(events[0]["method"], "notifications/progress");
    assert!(events[0].get("result").is_none());
    assert_eq!(events[1]["id"], 7);
    assert_eq!(events[1]["result"]["tools"][0]["name"], "echo");
    assert_eq!(
        (
            &events[1]["result"]["resultType"],
            &events[1]["result"]["ttlMs"],
            &events[1]["result"]["cacheScope"]
        ),
        (&json!("complete"), &json!(0), &json!("private"))
    );
    // A result that is not cacheable gets resultType only.
    let (call, headers) = modern(8, "tools/call", json!({"name": "x", "arguments": {}}));
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &call).await;
    let result = r.events().last().unwrap()["result"].clone();
    assert_eq!(result["resultType"], "complete");
    assert!(
        result.get("ttlMs").is_none() && result.get("cacheScope").is_none(),
        "{result}"
    );

    // Upstream side: one session for all of it, no envelope, other _meta kept.
    assert_eq!(up.log.rpc("initialize").len(), 1, "{:?}", up.log.methods());
    let lists = up.log.rpc("tools/list");
    assert_eq!(lists.len(), 2);
    assert!(
        lists[0].json()["params"].get("_meta").is_none(),
        "{}",
        lists[0].body
    );
    assert_eq!(
        lists[1].json()["params"]["_meta"],
        json!({"progressToken": "p7"})
    );
    for s in lists.iter().chain([&up.log.only("tools/call")]) {
        assert!(
            !s.body.contains("io.modelcontextprotocol/"),
            "envelope went upstream: {}",
            s.body
        );
        assert_eq!(s.session(), Some("up-session-1"));
        assert_eq!(s.header("mcp-protocol-version"), Some(UPSTREAM_VERSION));
        assert!(s.header("mcp-method").is_none() && s.header("mcp-name").is_none());
        assert_eq!(s.header("x-api-key"), Some(SECRET));
    }
}

#[tokio::test]
async fn each_user_and_kind_of_client_gets_its_own_bridged_upstream_session() {
    // Issue 24: the upstream sees each kind of client as it is (it may offer tools only to
    // clients with roots); before, the first client's capabilities served all of a user's.
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let (list, headers) = modern(1, "tools/list", json!({}));
    for key in [&gw.alice, &gw.alice, &gw.bob] {
        let r = post_with(&gw.app, "up", key, &headers, &list).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let mut other = list.clone();
    other["params"]["_meta"][META_CAPABILITIES] = json!({"roots": {}});
    for _ in 0..2 {
        let r = post_with(&gw.app, "up", &gw.alice, &headers, &other).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let sessions: Vec<_> = up
        .log
        .rpc("tools/list")
        .iter()
        .map(|s| s.session().unwrap().to_owned())
        .collect();
    assert_eq!(
        sessions,
        [
            "up-session-1",
            "up-session-1",
            "up-session-2",
            "up-session-3",
            "up-session-3"
        ],
    );
    let inits: Vec<Value> = up
        .log
        .rpc("initialize")
        .iter()
        .map(|s| s.json()["params"]["capabilities"].clone())
        .collect();
    assert_eq!(
        inits[2],
        json!({"roots": {}}),
        "the upstream sees the client's own"
    );
}

#[tokio::test]
async fn an_upstream_request_a_bridged_client_cannot_answer_is_refused_at_once() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    // GIVEN a 2026-07-28 client that declares sampling but not roots
    let (call, headers) = modern(1, "tools/call", json!({"name": "asks-roots"}));
    let started = std::time::Instant::now();
    // WHEN the upstream asks it for roots during a call
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &call).await;
    // THEN the upstream got an error at once (its tool result echoes what it got back), the
    // call completed, and the request never reached the client
    assert_eq!(r.status, 200, "{}", r.body);
    let messages = sse_messages(&r.body);
    assert!(
        !messages.iter().any(|m| m.get("method").is_some()),
        "{}",
        r.body
    );
    let answer = messages
        .iter()
        .find(|m| m["id"] == 1)
        .expect("the call's answer");
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    let upstream_got: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("{text}"));
    assert_eq!(upstream_got["error"]["code"], -32601, "{upstream_got}");
    let why = upstream_got["error"]["message"].as_str().unwrap();
    assert!(why.contains("roots capability"), "{why}");
    assert!(started.elapsed() < WAIT, "took {:?}", started.elapsed());
    // Baseline: a client that declares roots is asked instead (input_required)
    let (mut call, headers) = modern(2, "tools/call", json!({"name": "asks-roots"}));
    call["params"]["_meta"][META_CAPABILITIES] = json!({"roots": {}});
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &call).await;
    let messages = sse_messages(&r.body);
    let answer = messages
        .iter()
        .find(|m| m["id"] == 2)
        .expect("the call's answer");
    assert_eq!(answer["result"]["resultType"], "input_required", "{answer}");
    let asked: Vec<&Value> = answer["result"]["inputRequests"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert_eq!(asked, [&json!({"method": "roots/list"})]);
    assert!(answer["result"]["requestState"].is_string());
    assert_eq!(up.log.rpc("tools/call").len(), 2);
}

#[tokio::test]
async fn a_session_client_answers_a_stateless_upstreams_input_required() {
    use futures_util::StreamExt;
    let (gw, up) = fixture(Speaks::Stateless, &[]).await;
    // GIVEN a session-era client that declares roots, in front of a stateless upstream
    let mut init = init_message_at(1, "2025-06-18");
    init["params"]["capabilities"] = json!({"roots": {}});
    let r = post(&gw.app, "up", &gw.alice, None, &init).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let session = r.header("mcp-session-id").unwrap().to_owned();
    // WHEN it calls a tool whose upstream answers input_required (roots/list)
    let call = tools_call(7, "asks-roots");
    let mut body = post_streaming(&gw.app, "up", &gw.alice, &session, &call).await;
    let mut text = String::new();
    // THEN the request reaches it on the call's stream, under a gateway-made id
    let ask = loop {
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(m) = sse_messages(&text)
            .into_iter()
            .find(|m| m["method"] == "roots/list")
        {
            break m;
        }
    };
    // An answer under that id from another session (bob's) is not taken for it
    let r = post(&gw.app, "up", &gw.bob, None, &init).await;
    let bobs = r.header("mcp-session-id").unwrap().to_owned();
    let forged = json!({"jsonrpc": "2.0", "id": ask["id"],
        "result": {"roots": [{"uri": "file:///bob"}]}});
    let r = post(&gw.app, "up", &gw.bob, Some(&bobs), &forged).await;
    assert_eq!(r.status, 202, "{}", r.body);
    // WHEN it answers in its session
    let answer = json!({"jsonrpc": "2.0", "id": ask["id"],
        "result": {"roots": [{"uri": "file:///work/session"}]}});
    let r = post(&gw.app, "up", &gw.alice, Some(&session), &answer).await;
    assert_eq!(r.status, 202, "{}", r.body);
    // THEN the upstream got the call again with the answer and its own state, and the
    // client the final result, in its era (no resultType)
    let mut rest = String::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(WAIT, body.next()).await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let done = sse_messages(&rest)
        .into_iter()
        .find(|m| m["id"] == 7)
        .expect(&rest);
    assert!(done["result"].get("resultType").is_none(), "{done}");
    let got: Value =
        serde_json::from_str(done["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        got,
        json!({"inputResponses": {"r1": {"roots": [{"uri": "file:///work/session"}]}},
            "requestState": "st-1"})
    );
    assert_eq!(up.log.rpc("tools/call").len(), 2);
}

/// A session-era session of alice's on `up` whose client declares roots.
async fn roots_session(gw: &Gateway) -> String {
    let mut init = init_message_at(1, "2025-06-18");
    init["params"]["capabilities"] = json!({"roots": {}});
    let r = post(&gw.app, "up", &gw.alice, None, &init).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.header("mcp-session-id").unwrap().to_owned()
}

/// Reads a streamed call until the gateway's request to the client arrives.
async fn read_until_asked(body: &mut axum::body::BodyDataStream) -> Value {
    use futures_util::StreamExt;
    let mut text = String::new();
    loop {
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(m) = sse_messages(&text)
            .into_iter()
            .find(|m| m["method"] == "roots/list")
        {
            return m;
        }
    }
}

/// Reads a streamed call to its end: its messages and its text.
async fn read_to_end(body: &mut axum::body::BodyDataStream) -> (Vec<Value>, String) {
    use futures_util::StreamExt;
    let mut rest = String::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(WAIT, body.next()).await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    (sse_messages(&rest), rest)
}

/// Reads a streamed call to its end and returns the answer to `id`.
async fn read_answer(body: &mut axum::body::BodyDataStream, id: i64) -> Value {
    let (messages, text) = read_to_end(body).await;
    messages.into_iter().find(|m| m["id"] == id).expect(&text)
}

/// GIVEN a call of a session-era client waiting in an input round WHEN the client cancels it
/// (`notifications/cancelled`) THEN the round ends at once (the call's stream closes with no
/// answer) and a late answer sends nothing upstream; it used to wait for the call's deadline.
/// The baseline, an answered round, is `a_session_client_answers_a_stateless_upstreams_input_required`.
#[tokio::test]
async fn a_cancelled_call_ends_its_input_round() {
    use futures_util::StreamExt;
    let (gw, up) = fixture(Speaks::Stateless, &[]).await;
    let session = roots_session(&gw).await;
    let mut body = post_streaming(
        &gw.app,
        "up",
        &gw.alice,
        &session,
        &tools_call(7, "asks-roots"),
    )
    .await;
    let ask = read_until_asked(&mut body).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 7, "reason": "user stopped it"}});
    let r = post(&gw.app, "up", &gw.alice, Some(&session), &cancel).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let ended = tokio::time::timeout(WAIT, async {
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        text
    })
    .await
    .expect("the call's stream ends once the client cancels");
    assert!(
        sse_messages(&ended).iter().all(|m| m["id"] != 7),
        "no answer after the cancellation: {ended}"
    );
    let late = json!({"jsonrpc": "2.0", "id": ask["id"],
        "result": {"roots": [{"uri": "file:///late"}]}});
    let r = post(&gw.app, "up", &gw.alice, Some(&session), &late).await;
    assert_eq!(r.status, 202, "{}", r.body);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        up.log.rpc("tools/call").len(),
        1,
        "nothing sent after cancelling"
    );
}

/// Attack: two calls of one session wait for the client's input at once. Each gateway
/// request must have its own id, so the client's answer to one call (its consent, its
/// roots) is never taken for the other's; they once both were `mcpgw-ask-1`, and the answer
/// meant for the first call was delivered to the second while the first failed.
#[tokio::test]
async fn two_calls_waiting_for_input_in_one_session_get_their_own_answers() {
    let (gw, up) = fixture(Speaks::Stateless, &[]).await;
    let session = roots_session(&gw).await;
    // GIVEN two calls of one session, each asked for roots
    let mut first = post_streaming(
        &gw.app,
        "up",
        &gw.alice,
        &session,
        &tools_call(7, "asks-roots"),
    )
    .await;
    let ask_first = read_until_asked(&mut first).await;
    let mut second = post_streaming(
        &gw.app,
        "up",
        &gw.alice,
        &session,
        &tools_call(8, "asks-roots"),
    )
    .await;
    let ask_second = read_until_asked(&mut second).await;
    assert_ne!(ask_first["id"], ask_second["id"], "one id for two requests");
    // WHEN the client answers each request under its id
    for (ask, uri) in [
        (&ask_first, "file:///first"),
        (&ask_second, "file:///second"),
    ] {
        let answer = json!({"jsonrpc": "2.0", "id": ask["id"],
            "result": {"roots": [{"uri": uri}]}});
        let r = post(&gw.app, "up", &gw.alice, Some(&session), &answer).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    // THEN each call got its own answer upstream (the baseline: one call alone, above)
    for (body, id, uri) in [
        (&mut first, 7, "file:///first"),
        (&mut second, 8, "file:///second"),
    ] {
        let done = read_answer(body, id).await;
        let text = done["result"]["content"][0]["text"]
            .as_str()
            .expect("a result");
        let got: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            got["inputResponses"]["r1"]["roots"][0]["uri"], uri,
            "{done}"
        );
    }
    assert_eq!(up.log.rpc("tools/call").len(), 4);
}

/// Attack: a stateless upstream asking for more inputs in one round than a client may answer
/// in one retry (16, `inputs::MAX_INPUTS`) gets none asked: each would be a request
/// to the client and an answer awaited in the process's memory.
#[tokio::test]
async fn an_upstream_asking_for_too_many_inputs_at_once_is_refused() {
    let (gw, up) = fixture(Speaks::Stateless, &[]).await;
    let session = roots_session(&gw).await;
    // Baseline: a round of one input is asked (a_session_client_answers_... above); GIVEN an
    // upstream asking for many at once
    let mut body = post_streaming(
        &gw.app,
        "up",
        &gw.alice,
        &session,
        &tools_call(9, "asks-many"),
    )
    .await;
    // THEN the call ends with the gateway's error, nothing asked of the client
    let (messages, text) = read_to_end(&mut body).await;
    assert!(
        !messages.iter().any(|m| m.get("method").is_some()),
        "{text}"
    );
    let done = messages.iter().find(|m| m["id"] == 9).expect(&text);
    let why = done["error"]["message"].as_str().expect("an error");
    assert!(why.contains("too many inputs"), "{why}");
    assert_eq!(up.log.rpc("tools/call").len(), 1);
}

#[tokio::test]
async fn a_bridged_session_the_upstream_lost_is_reopened() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let (list, headers) = modern(1, "tools/list", json!({}));
    assert_eq!(
        post_with(&gw.app, "up", &gw.alice, &headers, &list)
            .await
            .status,
        200
    );
    up.forget("up-session-1");
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &list).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"]["tools"][0]["name"], "echo");
    let lists = up.log.rpc("tools/list");
    assert_eq!(
        lists
            .iter()
            .map(|s| s.session().unwrap())
            .collect::<Vec<_>>(),
        ["up-session-1", "up-session-1", "up-session-2"]
    );
}

#[tokio::test]
async fn envelope_errors_are_400_and_reach_no_upstream() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let (call, good) = modern(4, "tools/call", json!({"name": "echo", "arguments": {}}));
    let with = |name: &'static str, value: &'static str| {
        let mut h: Vec<(&str, String)> = good.iter().filter(|(k, _)| *k != name).cloned().collect();
        h.push((name, value.to_owned()));
        h
    };
    for headers in [
        with("mcp-method", "tools/list"),
        with("mcp-name", "other"),
        with("mcp-protocol-version", "2025-06-18"),
        good.iter()
            .filter(|(k, _)| *k != "mcp-method")
            .cloned()
            .collect(),
    ] {
        let r = post_with(&gw.app, "up", &gw.alice, &headers, &call).await;
        r.rpc_error(400, json!(4), -32020);
    }
    let mut future = call.clone();
    future["params"]["_meta"][META_VERSION] = json!("2099-01-01");
    let r = post_with(
        &gw.app,
        "up",
        &gw.alice,
        &with("mcp-protocol-version", "2099-01-01"),
        &future,
    )
    .await;
    let error = r.rpc_error(400, json!(4), -32022);
    assert_eq!(error["data"]["supported"], json!([MODERN]));
    assert_eq!(error["data"]["requested"], "2099-01-01");
    assert!(
        up.log.all().is_empty(),
        "reached the upstream: {:?}",
        up.log.methods()
    );
}

// ---------------------------------------------------------------------------------------------
// Session-era client, stateless upstream

#[tokio::test]
async fn a_session_client_is_bridged_to_a_stateless_upstream() {
    let (gw, up) = fixture(Speaks::Stateless, &[]).await;
    let init = post(&gw.app, "up", &gw.alice, None, &init_message(1)).await;
    assert_eq!(init.status, 200, "{}", init.body);
    let sealed = init.header("mcp-session-id").unwrap().to_owned();
    let result = &init.json()["result"];
    assert_eq!(result["protocolVersion"], "2025-06-18");
    assert_eq!(
        result["serverInfo"],
        json!({"name": "stateless-upstream", "version": "2.0"})
    );
    assert_eq!(result["capabilities"], json!({"tools": {}, "logging": {}}));
    assert_eq!(result["instructions"], "stateless upstream");
    assert_eq!(up.log.methods(), ["initialize", "server/discover"]);
    let client = &init_message(1)["params"];
    let meta = &up.log.only("server/discover").json()["params"]["_meta"];
    assert_eq!(
        (
            &meta[META_VERSION],
            &meta[META_CAPABILITIES],
            &meta[META_CLIENT_INFO]
        ),
        (
            &json!(MODERN),
            &client["capabilities"],
            &client["clientInfo"]
        )
    );

    // The client's notification concerns nobody upstream.
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = post(&gw.app, "up", &gw.alice, Some(&sealed), &done).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(up.log.len(), 2);

    // Requests get the envelope from the client's initialize and the routing headers;
    // results lose the 2026-07-28 fields.
    let r = post(
        &gw.app,
        "up",
        &gw.alice,
        Some(&sealed),
        &tools_call(2, "echo"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (&v["id"], &v["result"]["content"][0]["text"]),
        (&json!(2), &json!("stateless done"))
    );
    assert!(v["result"].get("resultType").is_none(), "{v}");
    let seen = up.log.only("tools/call");
    let body = seen.json();
    assert_eq!(body["params"]["name"], "echo");
    let meta = &body["params"]["_meta"];
    assert_eq!(
        (
            &meta[META_VERSION],
            &meta[META_CAPABILITIES],
            &meta[META_CLIENT_INFO]
        ),
        (
            &json!(MODERN),
            &client["capabilities"],
            &client["clientInfo"]
        )
    );
    assert_eq!(
        (
            seen.header("mcp-protocol-version"),
            seen.header("mcp-method"),
            seen.header("mcp-name")
        ),
        (Some(MODERN), Some("tools/call"), Some("echo"))
    );
    assert!(seen.session().is_none());
    assert_eq!(seen.header("x-api-key"), Some(SECRET));

    let r = post(
        &gw.app,
        "up",
        &gw.alice,
        Some(&sealed),
        &request(3, "tools/list", json!({})),
    )
    .await;
    let result = &r.json()["result"];
    assert_eq!(result["tools"][0]["name"], "echo");
    for k in ["resultType", "ttlMs", "cacheScope"] {
        assert!(result.get(k).is_none(), "{k} in {result}");
    }

    // No server-to-client stream exists upstream; DELETE ends the gateway session only.
    let r = session_request(&gw.app, Method::GET, "up", &gw.alice, &sealed).await;
    assert_eq!(r.status, 405);
    let r = session_request(&gw.app, Method::DELETE, "up", &gw.alice, &sealed).await;
    assert_eq!(r.status, 204);
    let r = post(
        &gw.app,
        "up",
        &gw.alice,
        Some(&sealed),
        &tools_call(4, "echo"),
    )
    .await;
    r.rpc_error(404, json!(4), -32001);
    assert!(
        up.log.all().iter().all(|s| s.method == Method::POST),
        "{:?}",
        up.log.methods()
    );

    // The refusal is remembered: the next client's initialize goes straight to discovery.
    let before = up.log.len();
    open_session(&gw.app, "up", &gw.bob).await;
    let after: Vec<_> = up.log.all()[before..]
        .iter()
        .filter_map(|s| s.rpc())
        .collect();
    assert_eq!(after, ["server/discover"]);
}

// ---------------------------------------------------------------------------------------------
// Cancellation and the call deadline

#[tokio::test]
async fn a_client_that_goes_away_mid_call_cancels_the_upstream_request() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let sealed = open_session(&gw.app, "up", &gw.alice).await;
    let base = serve(gw.app.clone()).await;
    let http = reqwest::Client::new();
    let call = |body: Value| {
        http.post(format!("{base}/mcp/up"))
            .bearer_auth(&gw.alice)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &sealed)
            .json(&body)
            .send()
    };
    // A call that completes is not cancelled.
    let done = call(tools_call(6, "x")).await.unwrap();
    assert!(done.text().await.unwrap().contains("done"));

    for (id, tool) in [(json!(7), "hang"), (json!("seven"), "long")] {
        let mut resp = call(tools_call(id.clone(), tool)).await.unwrap();
        assert_eq!(resp.status(), 200);
        let first = tokio::time::timeout(WAIT, resp.chunk())
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&first.unwrap()).contains("notifications/progress"));
        drop(resp);
        let cancel = up
            .log
            .wait_for(&format!("notifications/cancelled for {id}"), |s| {
                s.rpc().as_deref() == Some("notifications/cancelled")
                    && s.json()["params"]["requestId"] == id
            })
            .await;
        assert_eq!(cancel.session(), Some("up-session-1"));
        assert_eq!(cancel.header("x-api-key"), Some(SECRET));
    }
    assert!(
        up.log.cancellations_of(&json!(6)).is_empty(),
        "a finished call was cancelled"
    );
}

#[tokio::test]
async fn the_call_deadline_ends_the_stream_with_an_error_and_cancels_upstream() {
    let (gw, up) = fixture(
        Speaks::Sessions,
        &[("MCPGW_UPSTREAM_CALL_TIMEOUT_SECONDS", "1")],
    )
    .await;
    let sealed = open_session(&gw.app, "up", &gw.alice).await;
    let r = tokio::time::timeout(
        WAIT,
        post(
            &gw.app,
            "up",
            &gw.alice,
            Some(&sealed),
            &tools_call("h-1", "hang"),
        ),
    )
    .await
    .expect("the stream outlived the call deadline");
    assert_eq!(r.status, 200);
    let events = r.events();
    assert_eq!(events[0]["method"], "notifications/progress", "{}", r.body);
    let last = events.last().unwrap();
    assert_eq!(
        (&last["id"], &last["error"]["code"]),
        (&json!("h-1"), &json!(-32010)),
        "{}",
        r.body
    );
    assert_eq!(last["error"]["data"]["reason"], "upstream_timeout");
    up.log
        .wait_for("notifications/cancelled for h-1", |s| {
            s.rpc().as_deref() == Some("notifications/cancelled")
                && s.json()["params"]["requestId"] == "h-1"
        })
        .await;
}

#[tokio::test]
async fn a_session_client_cancels_a_call_to_a_stateless_upstream() {
    use futures_util::StreamExt;
    let (gw, up) = fixture(Speaks::Stateless, &[]).await;
    let sealed = open_session(&gw.app, "up", &gw.alice).await;
    let mut body = post_streaming(&gw.app, "up", &gw.alice, &sealed, &tools_call(11, "long")).await;
    let first = tokio::time::timeout(WAIT, body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("notifications/progress"));

    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 11, "reason": "user"}});
    let r = post(&gw.app, "up", &gw.alice, Some(&sealed), &cancel).await;
    assert_eq!(r.status, 202, "{}", r.body);
    // The stream ends although the upstream would go on forever.
    tokio::time::timeout(WAIT, async { while body.next().await.is_some() {} })
        .await
        .expect("the cancelled call kept streaming");
    assert!(
        up.log.rpc("notifications/cancelled").is_empty(),
        "stateless upstreams stop on the close"
    );
}

#[tokio::test]
async fn a_bridged_modern_client_that_goes_away_cancels_the_upstream_request() {
    let (gw, up) = fixture(Speaks::Sessions, &[]).await;
    let base = serve(gw.app.clone()).await;
    let (call, headers) = modern(21, "tools/call", json!({"name": "hang", "arguments": {}}));
    let mut req = reqwest::Client::new()
        .post(format!("{base}/mcp/up"))
        .bearer_auth(&gw.alice)
        .header("accept", "application/json, text/event-stream")
        .json(&call);
    for (k, v) in &headers {
        req = req.header(*k, v);
    }
    let mut resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(WAIT, resp.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first.unwrap()).contains("notifications/progress"));
    drop(resp);
    // The upstream knows the call by the gateway's id for it (bridged ids are rewritten).
    let upstream_id = up.log.rpc("tools/call")[0].json()["id"].clone();
    assert!(
        upstream_id
            .as_str()
            .is_some_and(|i| i.starts_with("mcpgw-")),
        "{upstream_id}"
    );
    let cancel = up
        .log
        .wait_for("notifications/cancelled for the call", |s| {
            s.rpc().as_deref() == Some("notifications/cancelled")
                && s.json()["params"]["requestId"] == upstream_id
        })
        .await;
    assert_eq!(cancel.session(), Some("up-session-1"));
}

// ---------------------------------------------------------------------------------------------
// Regressions: each of these failed before its fix (found by the first version of this file).

#[tokio::test]

async fn ping_needs_no_session() {
    let (gw, _up) = fixture(Speaks::Sessions, &[]).await;
    let r = post(
        &gw.app,
        "up",
        &gw.alice,
        None,
        &request(1, "ping", json!({})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (&r.json()["id"], &r.json()["result"]),
        (&json!(1), &json!({}))
    );
}

#[tokio::test]

async fn the_gateway_never_issues_a_session_id_it_refuses() {
    let (gw, _up) = fixture(Speaks::Sessions, &[("MCPGW_MAX_BODY_BYTES", "65536")]).await;
    let mut init = init_message(1);
    init["params"]["capabilities"]["experimental"] = json!({"blob": "x".repeat(7000)});
    let r = post(&gw.app, "up", &gw.alice, None, &init).await;
    if r.status == 200 {
        let sealed = r.header("mcp-session-id").unwrap();
        let r = post(&gw.app, "up", &gw.alice, Some(sealed), &tools_call(2, "x")).await;
        assert_eq!(
            r.status, 200,
            "the issued session id is refused: {}",
            r.body
        );
    } else {
        // Refusing the handshake is fine too, as a JSON-RPC error for the request.
        assert!(r.status.is_client_error(), "{}", r.body);
        assert_eq!(r.json()["id"], 1);
    }
}

#[tokio::test]

async fn a_failed_probe_does_not_decide_the_upstreams_era() {
    let (gw, up) = fixture(Speaks::Stateless, &[]).await;
    up.unavailable_for(1);
    let (discover, headers) = modern("d", "server/discover", json!({}));
    let first = post_with(&gw.app, "up", &gw.alice, &headers, &discover).await;
    assert!(first.status.is_server_error(), "{}", first.body);
    // The upstream is back: a 2026-07-28 client reaches it.
    let r = post_with(&gw.app, "up", &gw.alice, &headers, &discover).await;
    assert_eq!(
        r.status,
        200,
        "{}; upstream got {:?}",
        r.body,
        up.log.methods()
    );
    assert_eq!(r.json()["result"]["supportedVersions"], json!([MODERN]));
}
