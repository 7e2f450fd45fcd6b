//! Proxy regressions found by a security review; each test failed before its fix: bridged
//! sessions bounded per user, gateway-unique ids in shared upstream sessions, one deadline for
//! the whole call, sessions bound to the upstream URL, held connect streams bounded per
//! caller, a settled session's upstream session ended with it, detached messages bounded per
//! server.

use crate::common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use common::*;
use mcpgw::testing::TEST_ADMIN_KEY;
use serde_json::{Value, json};

/// A 2026-07-28 request with caller-chosen client capabilities.
fn modern_with_caps(
    id: i64,
    method: &str,
    params: Value,
    caps: Value,
) -> (Value, Vec<(&'static str, String)>) {
    let (mut body, headers) = modern(id, method, params);
    body["params"]["_meta"][META_CAPABILITIES] = caps;
    (body, headers)
}

/// Bridging (stateless client, session-era upstream) keys the upstream session on the
/// client's capabilities, which the caller chooses freely on every request. One authenticated
/// caller varying a field therefore opened a new upstream session (initialize +
/// notifications/initialized, never closed) per request: caller-driven upstream state growth
/// and 3x request amplification. Issue 24 made what the client declares part of the key on
/// purpose (the upstream must see each kind of client as it is): the number of sessions per
/// user is capped instead, and a new kind past the cap is refused (429), not opened.
#[tokio::test]
async fn caller_chosen_capabilities_do_not_open_an_upstream_session_each() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    let cap = mcpgw::mcp::memory::BRIDGED_PER_USER;
    let mut refused = 0;
    for i in 0..cap + 4 {
        let (body, headers) = modern_with_caps(
            i as i64,
            "tools/list",
            json!({}),
            json!({"experimental": {"n": i}}),
        );
        let r = post_with(&gw.app, "up", &gw.alice, &headers, &body).await;
        match r.status.as_u16() {
            200 => {}
            429 => refused += 1,
            other => panic!("{other}: {}", r.body),
        }
    }
    let opened = up.log.rpc("initialize").len();
    assert!(
        opened <= cap,
        "{} requests from one caller opened {opened} upstream sessions",
        cap + 4
    );
    assert_eq!(refused, 4);
    // Another user is not refused for alice's doing.
    let (body, headers) = modern_with_caps(99, "tools/list", json!({}), json!({}));
    let r = post_with(&gw.app, "up", &gw.bob, &headers, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Two stateless clients of the same user with the same capabilities share one bridged
/// upstream session, and their JSON-RPC ids are forwarded as they are. Concurrent requests
/// with the same id (every client starts counting at 0 or 1) collide inside one upstream
/// session: the upstream may route one answer to the other stream, and a
/// `notifications/cancelled` sent for one client's abandoned request cancels the other's.
#[tokio::test]
async fn concurrent_bridged_requests_never_share_an_id_within_one_upstream_session() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[("up", &up.url, "up-key")]).await;
    // Learn the era and open the bridged session first.
    let (list, headers) = modern(0, "tools/list", json!({}));
    assert_eq!(
        post_with(&gw.app, "up", &gw.alice, &headers, &list)
            .await
            .status,
        200
    );

    let mut tasks = Vec::new();
    for _ in 0..2 {
        let app = gw.app.clone();
        let key = gw.alice.clone();
        tasks.push(tokio::spawn(async move {
            let (call, headers) =
                modern(1, "tools/call", json!({"name": "gated", "arguments": {}}));
            post_with(&app, "up", &key, &headers, &call).await
        }));
    }
    let deadline = Instant::now() + WAIT;
    while up.log.rpc("tools/call").len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls: Vec<(Option<String>, Value)> = up
        .log
        .rpc("tools/call")
        .iter()
        .map(|s| (s.session().map(str::to_owned), s.json()["id"].clone()))
        .collect();
    for t in &tasks {
        t.abort();
    }
    assert_eq!(calls.len(), 2, "both calls should be in flight upstream");
    assert_ne!(
        calls[0], calls[1],
        "two in-flight requests share (upstream session, JSON-RPC id)"
    );
}

/// A sealed gateway session names the endpoint, not the upstream behind it. After an admin
/// re-points the endpoint at another server, the old upstream's session id (a bearer
/// capability for that upstream's session) is sent to the new server.
#[tokio::test]
async fn a_session_never_carries_one_upstreams_session_id_to_another_server() {
    let a = Upstream::start(Speaks::Sessions).await;
    let b = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(
        &[("MCPGW_SERVER_CACHE_SECONDS", "0")],
        &[("docs", &a.url, "up-key")],
    )
    .await;
    // A issues up-session-1 to someone else, then up-session-2 to this client; B issues none.
    let _other = open_session(&gw.app, "docs", &gw.bob).await;
    let sealed = open_session(&gw.app, "docs", &gw.alice).await;

    let admin = admin_api::app(gw.state.clone());
    let body = json!({"url": b.url, "auth": {"type": "header",
        "headers": {"X-Api-Key": "secret://up-key"}}});
    let req = Request::put("/admin/servers/docs")
        .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let r = send(&admin, req).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let _ = post(
        &gw.app,
        "docs",
        &gw.alice,
        Some(&sealed),
        &request(5, "tools/list", json!({})),
    )
    .await;
    let leaked: Vec<String> = b
        .log
        .all()
        .iter()
        .filter_map(|s| s.session().map(str::to_owned))
        .filter(|sid| sid == "up-session-2")
        .collect();
    assert!(
        leaked.is_empty(),
        "server B received server A's upstream session id: {leaked:?} ({:?})",
        b.log.methods()
    );
}

/// `MCPGW_UPSTREAM_CALL_TIMEOUT_SECONDS` is documented as the bound on a whole proxied call,
/// but the deadline starts only once the upstream's headers are in (`stream_back`), after a
/// separate header timeout. Lambda defaults: 25 s header wait + 28 s body = 53 s, past the
/// 30 s function timeout, so the client gets API Gateway's error, not the JSON-RPC one.
#[tokio::test]
async fn the_call_timeout_bounds_the_whole_call_including_the_wait_for_headers() {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(
        &[
            ("MCPGW_UPSTREAM_TIMEOUT_SECONDS", "10"),
            ("MCPGW_UPSTREAM_CALL_TIMEOUT_SECONDS", "1"),
        ],
        &[("up", &up.url, "up-key")],
    )
    .await;
    let sealed = open_session(&gw.app, "up", &gw.alice).await;
    let started = Instant::now();
    // The upstream answers `slow` after 5 s.
    let r = post(
        &gw.app,
        "up",
        &gw.alice,
        Some(&sealed),
        &request(9, "slow", json!({})),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "a call with a 1 s call deadline took {took:?} (status {}, {})",
        r.status,
        r.body
    );
}

/// A gateway with `notes`, a `per_user_token` server (the token goes in `X-Api-Key`) open
/// to everyone, in front of a session-era upstream; nobody has stored a token yet.
async fn per_user_token_notes() -> (Upstream, Gateway) {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(&[], &[]).await;
    let admin = admin_api::app(gw.state.clone());
    for (path, body) in [
        (
            "/admin/servers",
            json!({"name": "notes", "url": up.url, "auth": {"type": "per_user_token",
                "header": "X-Api-Key", "format": "{token}"}}),
        ),
        (
            "/admin/server-groups",
            json!({"name": "everyone", "servers": ["notes"], "members": {"everyone": true}}),
        ),
    ] {
        let req = Request::post(path)
            .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let r = send(&admin, req).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    (up, gw)
}

/// Streams held for callers who have not connected a server yet (a session-era GET, a
/// 2026-07-28 `subscriptions/listen`) are bounded per process (1024), each reading the store
/// every 2 s for up to an hour. One caller opening them without end took every one (and made
/// the store reads of all): every other user's listen was refused. Now one caller holds at
/// most `connect_watch::MAX_HELD_PER_USER` (16); another user still gets theirs.
#[tokio::test]
async fn one_caller_cannot_take_every_held_connect_stream() {
    let (_up, gw) = per_user_token_notes().await;
    let listen = |key: &str, id: i64| {
        let (body, headers) = modern(
            id,
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true}}),
        );
        let mut b = mcp_request(Method::POST, "notes", Some(key));
        for (k, v) in headers {
            b = b.header(k, v);
        }
        tower::ServiceExt::oneshot(
            gw.app.clone(),
            b.body(Body::from(body.to_string())).unwrap(),
        )
    };
    // Baseline: alice's streams are held (their bodies kept open)
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..40 {
        let resp = listen(&gw.alice, i).await.unwrap();
        if resp.status() != 200 {
            refused = Some((i, resp.status()));
            break;
        }
        held.push(resp);
    }
    // WHEN she keeps opening them THEN she is refused past her share
    let (at, status) = refused.expect("one caller held 40 streams");
    assert!((1..=16).contains(&at), "refused after {at}");
    assert_eq!(status, 503);
    // AND bob, another user, is not refused for alice's doing
    let bobs = listen(&gw.bob, 1).await.unwrap();
    assert_eq!(bobs.status(), 200);
    // AND her streams, once closed, are hers again
    held.clear();
    assert_eq!(listen(&gw.alice, 99).await.unwrap().status(), 200);
}

/// A session opened before its caller connected (the connect prompt's) and settled since
/// (its next request opened an upstream session with the caller's new credential) is ended
/// by `DELETE` like any other: the upstream session goes with it. It was left open upstream,
/// one per such session, the upstream's state growing with every client that connected
/// mid-session.
#[tokio::test]
async fn a_session_settled_after_connecting_ends_its_upstream_session() {
    let (up, gw) = per_user_token_notes().await;
    let admin = admin_api::app(gw.state.clone());
    // GIVEN alice's session opened before she stored her token (the gateway's alone)
    let r = post(&gw.app, "notes", &gw.alice, None, &init_message(1)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let session = r.header("mcp-session-id").unwrap().to_owned();
    assert!(up.log.rpc("initialize").is_empty());
    // AND settled once she stored it: her next request opened the upstream session
    let store = Request::put("/me/credentials/notes")
        .header("authorization", format!("Bearer {}", gw.alice))
        .header("content-type", "application/json")
        .body(Body::from(json!({"token": SECRET}).to_string()))
        .unwrap();
    let r = send(&admin, store).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = post(
        &gw.app,
        "notes",
        &gw.alice,
        Some(&session),
        &request(2, "tools/list", json!({})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(up.log.rpc("initialize").len(), 1);
    // WHEN she ends her session
    let r = session_request(&gw.app, Method::DELETE, "notes", &gw.alice, &session).await;
    assert_eq!(r.status, 204, "{}", r.body);
    // THEN the upstream session ended too
    assert!(
        up.log.methods().iter().any(|m| m == "DELETE"),
        "{:?}",
        up.log.methods()
    );
}

/// GIVEN a session opened before its caller stored her token WHEN its first requests after
/// she did arrive at once THEN one upstream session is opened for it, not one per request
/// with all but the last orphaned upstream (the baseline, one request, is above).
#[tokio::test]
async fn concurrent_first_requests_of_a_settling_session_open_one_upstream_session() {
    let (up, gw) = per_user_token_notes().await;
    let admin = admin_api::app(gw.state.clone());
    let r = post(&gw.app, "notes", &gw.alice, None, &init_message(1)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let session = r.header("mcp-session-id").unwrap().to_owned();
    let store = Request::put("/me/credentials/notes")
        .header("authorization", format!("Bearer {}", gw.alice))
        .header("content-type", "application/json")
        .body(Body::from(json!({"token": SECRET}).to_string()))
        .unwrap();
    let r = send(&admin, store).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let lists = (0..8).map(|i| {
        let (app, alice, session) = (gw.app.clone(), gw.alice.clone(), session.clone());
        async move {
            post(
                &app,
                "notes",
                &alice,
                Some(&session),
                &request(10 + i, "tools/list", json!({})),
            )
            .await
        }
    });
    for r in futures_util::future::join_all(lists).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(up.log.rpc("initialize").len(), 1, "one upstream session");
}

/// The gateway's detached messages to upstreams (cancellations, answers to an upstream's
/// requests, session ends) share one bound per process (64). An upstream that stalls them
/// took every slot, and every other server's were dropped: a user's cancellation, or the
/// answer to an elicitation, never reached a healthy upstream. One server now takes at most
/// 16 of them.
#[tokio::test]
async fn an_upstream_stalling_detached_messages_does_not_silence_the_others() {
    let bad = Upstream::start(Speaks::Sessions).await;
    let good = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(
        &[],
        &[("bad", &bad.url, "up-key"), ("good", &good.url, "up-key")],
    )
    .await;
    bad.stall_notifications();
    // GIVEN many calls to the stalling upstream abandoned (each cancellation hangs there)
    let sealed = open_session(&gw.app, "bad", &gw.alice).await;
    for i in 0..80 {
        let call = request(100 + i, "tools/call", json!({"name": "hang"}));
        drop(post_streaming(&gw.app, "bad", &gw.alice, &sealed, &call).await);
    }
    // WHEN a call to the healthy one is abandoned
    let sealed = open_session(&gw.app, "good", &gw.alice).await;
    let call = request(7, "tools/call", json!({"name": "hang"}));
    drop(post_streaming(&gw.app, "good", &gw.alice, &sealed, &call).await);
    // THEN its cancellation reaches it (the baseline, with no stalling upstream, is
    // eras::a_client_that_goes_away_mid_call_cancels_the_upstream_request)
    let deadline = Instant::now() + Duration::from_secs(3);
    while good.log.rpc("notifications/cancelled").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = good.log.rpc("notifications/cancelled");
    assert_eq!(cancelled.len(), 1, "{:?}", good.log.methods());
    assert_eq!(cancelled[0].json()["params"]["requestId"], 7);
}
