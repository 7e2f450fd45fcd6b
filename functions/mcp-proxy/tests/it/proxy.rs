//! The proxy router as a transport and a security boundary, against in-process upstreams that
//! record what they receive: credential injection, header allowlisting in both directions,
//! SSE streamed event by event, every bad form of request (none reaching an upstream), upstream
//! failures as JSON-RPC errors carrying the request's id, the GET stream, and the Origin/Host
//! checks. Protocol eras, sessions, bridging and cancellation are in `eras.rs`; the same paths
//! run against real MCP servers and clients in the `e2e` crate.

use crate::common;

use axum::body::Body;
use axum::http::{Method, Request};
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// A gateway in front of one session-era upstream registered as `up` (right secret),
/// `wrongkey` (wrong secret) and `down` (nothing listening).
async fn fixture(vars: &[(&str, &str)]) -> (Gateway, Upstream) {
    let up = Upstream::start(Speaks::Sessions).await;
    let gw = gateway(
        vars,
        &[
            ("up", &up.url, "up-key"),
            ("wrongkey", &up.url, "wrong"),
            ("down", "http://127.0.0.1:9/mcp", "up-key"),
        ],
    )
    .await;
    (gw, up)
}

// ---------------------------------------------------------------------------------------------
// Credentials and headers

#[tokio::test]
async fn forwards_with_injected_secret_and_never_the_callers_credential() {
    let (gw, up) = fixture(&[]).await;
    let hostile = [
        ("cookie", "gw=1"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-api-key", "chosen-by-the-caller"),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let init = post_with(&gw.app, "up", &gw.alice, &hostile, &init_message(1)).await;
    assert_eq!(init.status, 200, "{}", init.body);
    assert!(
        init.header("set-cookie").is_none(),
        "upstream cookies stay upstream"
    );
    assert_eq!(init.json()["result"]["protocolVersion"], "2025-06-18");
    let session = init.header("mcp-session-id").unwrap().to_owned();

    let mut headers = hostile.to_vec();
    headers.push(("mcp-session-id", &session));
    let call = post_with(&gw.app, "up", &gw.alice, &headers, &tools_call(2, "x")).await;
    assert_eq!(call.status, 200, "{}", call.body);
    for h in ["set-cookie", "www-authenticate", "mcp-session-id"] {
        assert!(
            call.header(h).is_none(),
            "upstream's {h} returned: {:?}",
            call.headers
        );
    }

    let seen = up.log.all();
    assert_eq!(up.log.methods(), ["initialize", "tools/call"]);
    assert_eq!(
        seen[0].json(),
        init_message(1),
        "the client's initialize, unchanged"
    );
    assert_eq!(seen[1].json(), tools_call(2, "x"));
    for s in &seen {
        let values: Vec<_> = s.headers.get_all("x-api-key").iter().collect();
        assert_eq!(
            values,
            [SECRET],
            "only the gateway's credential: {:?}",
            s.headers
        );
        for h in ["authorization", "cookie", "x-forwarded-for"] {
            assert!(s.headers.get(h).is_none(), "{h} forwarded: {:?}", s.headers);
        }
        assert_eq!(s.header("mcp-protocol-version"), Some("2025-06-18"));
        let all = format!("{:?}{}", s.headers, s.body);
        assert!(!all.contains(&gw.alice), "the caller's key went upstream");
        assert!(
            !all.contains(&session),
            "the gateway's session id went upstream"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming

#[tokio::test]
async fn sse_answers_stream_through_event_by_event() {
    let (gw, up) = fixture(&[]).await;
    let session = open_session(&gw.app, "up", &gw.alice).await;

    // Complete answers arrive whole.
    let call = post(
        &gw.app,
        "up",
        &gw.alice,
        Some(&session),
        &tools_call(2, "x"),
    )
    .await;
    assert_eq!(call.status, 200);
    let events = call.events();
    assert_eq!(events.len(), 2, "{}", call.body);
    assert_eq!(events[0]["method"], "notifications/progress");
    assert_eq!(events[1]["id"], 2);
    assert_eq!(events[1]["result"]["content"][0]["text"], "done");

    // The first event reaches the client while the upstream still holds the result back:
    // nothing is buffered.
    let mut body =
        post_streaming(&gw.app, "up", &gw.alice, &session, &tools_call(3, "gated")).await;
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .expect("the first event was held back")
            .expect("stream ended early")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(sse_messages(&text)[0]["method"], "notifications/progress");
    up.open_gate();
    while let Some(chunk) = tokio::time::timeout(WAIT, body.next()).await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let events = sse_messages(&text);
    assert_eq!(events.len(), 2, "{text}");
    assert_eq!(events[1]["id"], 3);
}

// ---------------------------------------------------------------------------------------------
// Bad requests

#[tokio::test]
async fn bad_requests_get_clear_json_errors_and_reach_no_upstream() {
    let (gw, up) = fixture(&[]).await;
    let key = gw.alice.as_str();
    let init = init_message(1).to_string();
    let raw = |endpoint: &str, token: Option<&str>, body: &str| {
        mcp_request(Method::POST, endpoint, token)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    // Unauthenticated: 401 with a challenge naming the resource metadata.
    let r = send(&gw.app, raw("up", None, &init)).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (401, "unauthenticated")
    );
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        "Bearer resource_metadata=\"https://gw.example.com/.well-known/oauth-protected-resource/mcp/up\""
    );
    let r = send(&gw.app, raw("up", Some("mcpgw_wrong"), &init)).await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    // Unknown endpoint, after authentication only.
    let r = send(&gw.app, raw("ghost", Some(key), &init)).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (404, "not_found")
    );
    let r = send(&gw.app, raw("ghost", None, &init)).await;
    assert_eq!(
        r.status, 401,
        "no probing of endpoint names without a credential"
    );
    // Wrong content type, wrong Accept, oversized.
    let req = Request::post("/mcp/up")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "text/plain")
        .body(Body::from(init.clone()))
        .unwrap();
    let r = send(&gw.app, req).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (415, "unsupported_media_type")
    );
    let req = Request::post("/mcp/up")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("accept", "text/html")
        .body(Body::from(init.clone()))
        .unwrap();
    let r = send(&gw.app, req).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (406, "not_acceptable")
    );
    let big = request(1, "ping", json!({"pad": "x".repeat(5000)})).to_string();
    let r = send(&gw.app, raw("up", Some(key), &big)).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (413, "payload_too_large")
    );
    // Not JSON, not JSON-RPC, batches.
    send(&gw.app, raw("up", Some(key), "{oops"))
        .await
        .rpc_error(400, Value::Null, -32700);
    for junk in [
        r#"{"id":1}"#,
        "[]",
        "42",
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{}]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}]"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":7}"#,
    ] {
        let r = send(&gw.app, raw("up", Some(key), junk)).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (400, "-32600"),
            "{junk}"
        );
    }
    // A request that is neither an initialize, nor in a session, nor in the 2026-07-28
    // envelope: 400 with its id.
    let r = post(&gw.app, "up", key, None, &tools_call(5, "x")).await;
    r.rpc_error(400, json!(5), -32600);
    assert!(
        up.log.all().is_empty(),
        "reached the upstream: {:?}",
        up.log.methods()
    );
}

#[tokio::test]
async fn odd_endpoint_names_get_json_errors() {
    let (gw, up) = fixture(&[]).await;
    let init = init_message(1).to_string();
    // Not valid UTF-8 after decoding: JSON 400, not axum's plain text.
    let req = mcp_request(Method::POST, "x", Some(&gw.alice))
        .uri("/mcp/%FF")
        .body(Body::from(init.clone()))
        .unwrap();
    let r = send(&gw.app, req).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "invalid_path")
    );
    // A name that cannot be registered: 404 for a caller with a key, and without one a 401
    // whose challenge does not echo the name (a quote would inject parameters).
    let long = "a".repeat(2000);
    for name in [long.as_str(), "x%22%2C%20error%3D%22evil"] {
        let req = mcp_request(Method::POST, name, Some(&gw.alice))
            .body(Body::from(init.clone()))
            .unwrap();
        let r = send(&gw.app, req).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (404, "not_found"),
            "{name}"
        );
        let req = mcp_request(Method::POST, name, None)
            .body(Body::from(init.clone()))
            .unwrap();
        let r = send(&gw.app, req).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{name}");
    }
    let req = Request::get("/.well-known/oauth-protected-resource/mcp/x%22y")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&gw.app, req).await.status, 404);
    assert!(up.log.all().is_empty());
}

#[tokio::test]
async fn resource_metadata_is_open() {
    let (gw, _up) = fixture(&[]).await;
    let req = Request::get("/.well-known/oauth-protected-resource/mcp/up")
        .body(Body::empty())
        .unwrap();
    let r = send(&gw.app, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["resource"], "https://gw.example.com/mcp/up");
}

// ---------------------------------------------------------------------------------------------
// Upstream failures: JSON-RPC errors that carry the request's id

/// Asserts the gateway's upstream-failure answer.
fn assert_upstream_failure(r: &Reply, status: u16, id: Value, reason: &str) {
    let error = r.rpc_error(status, id, -32010);
    assert_eq!(error["data"]["reason"], reason, "{}", r.body);
}

#[tokio::test]
async fn upstream_refusing_the_credential_or_unreachable_is_a_502() {
    let (gw, up) = fixture(&[]).await;
    let mut init = init_message(1);
    init["id"] = json!("init-1");
    let r = post(&gw.app, "wrongkey", &gw.alice, None, &init).await;
    assert_upstream_failure(&r, 502, json!("init-1"), "upstream_auth_failed");
    assert!(
        r.header("www-authenticate").is_none(),
        "the upstream's challenge is not the caller's business"
    );
    assert!(
        !r.body.contains("nope"),
        "the configured secret never appears in an error"
    );
    assert_eq!(up.log.methods(), ["initialize"]);

    let r = post(&gw.app, "down", &gw.alice, None, &init_message(7)).await;
    assert_upstream_failure(&r, 502, json!(7), "upstream_unavailable");
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504() {
    let (gw, up) = fixture(&[("MCPGW_UPSTREAM_TIMEOUT_SECONDS", "1")]).await;
    let session = open_session(&gw.app, "up", &gw.alice).await;
    let r = post(
        &gw.app,
        "up",
        &gw.alice,
        Some(&session),
        &request(9, "slow", json!({})),
    )
    .await;
    assert_upstream_failure(&r, 504, json!(9), "upstream_timeout");
    assert_eq!(up.log.only("slow").session(), Some("up-session-1"));
    // The upstream is told to stop working on the abandoned request, in its session.
    let cancel = up
        .log
        .wait_for("notifications/cancelled for 9", |s| {
            s.rpc().as_deref() == Some("notifications/cancelled")
                && s.json()["params"]["requestId"] == 9
        })
        .await;
    assert_eq!(cancel.session(), Some("up-session-1"));
}

#[tokio::test]
async fn an_upstream_redirect_is_not_followed() {
    let (gw, up) = fixture(&[]).await;
    let session = open_session(&gw.app, "up", &gw.alice).await;
    let r = post(
        &gw.app,
        "up",
        &gw.alice,
        Some(&session),
        &request(3, "redirect", json!({})),
    )
    .await;
    assert_upstream_failure(&r, 502, json!(3), "upstream_redirect");
    assert!(r.header("location").is_none());
    assert_eq!(up.log.rpc("redirect").len(), 1);
}

#[tokio::test]
async fn out_of_scope_secret_in_a_stored_record_is_never_resolved() {
    use mcpgw::domain::{McpServer, UpstreamAuth};
    use mcpgw::secrets::SecretRef;
    use mcpgw::store::{ConfigKind, to_doc};
    let up = Upstream::start(Speaks::Sessions).await;
    let (state, _guard) = mcpgw::testing::local_state(
        &[("MCPGW_SECRET_KEYRING", "gateway-internal-material")],
        &[("MCPGW_SECRET_PREFIX", "mcpgw/")],
    );
    // Written around the admin API, which would have refused it.
    let server = McpServer {
        name: "sneaky".into(),
        url: up.url.clone(),
        description: None,
        auth: UpstreamAuth::Header {
            headers: [(
                "X-Api-Key".to_string(),
                SecretRef::parse("secret://keyring").unwrap(),
            )]
            .into(),
        },
        created_at: 0,
        updated_at: 0,
        authorization_server: None,
        share_tool_list: false,
        audit: None,
    };
    state
        .store
        .create_config(ConfigKind::Server, "sneaky", &to_doc(&server))
        .await
        .unwrap();
    // admitted, so the refusal below is the secret's, not the policy's
    let group = json!({"name": "all", "servers": ["sneaky"], "members": {"everyone": true}});
    state
        .store
        .create_config(ConfigKind::ServerGroup, "all", &group)
        .await
        .unwrap();
    let issued = mcpgw::identity::issue_api_key("eve@example.com", "k", false, 0, None);
    state.store.create_api_key(&issued.record).await.unwrap();
    let app = mcp_proxy::app(state);
    let r = post(&app, "sneaky", &issued.plaintext, None, &init_message(1)).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (502, "upstream_credential_unavailable")
    );
    assert!(!r.body.contains("gateway-internal-material"));
    assert!(up.log.all().is_empty(), "nothing was sent upstream");
}

// ---------------------------------------------------------------------------------------------
// The GET stream

#[tokio::test]
async fn get_stream_is_405_where_it_cannot_be_served() {
    let (gw, up) = fixture(&[("MCPGW_ALLOW_GET_STREAM", "0")]).await;
    let session = open_session(&gw.app, "up", &gw.alice).await;
    let r = session_request(&gw.app, Method::GET, "up", &gw.alice, &session).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(r.header("allow"), Some("POST, DELETE"));
    assert_eq!(up.log.methods(), ["initialize"], "no GET went upstream");
}

#[tokio::test]
async fn get_stream_opens_the_upstream_stream_in_its_session() {
    let (gw, up) = fixture(&[("MCPGW_ALLOW_GET_STREAM", "1")]).await;
    let session = open_session(&gw.app, "up", &gw.alice).await;
    let r = session_request(&gw.app, Method::GET, "up", &gw.alice, &session).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.events()[0]["params"]["data"], "from the GET stream");
    let get = up
        .log
        .all()
        .into_iter()
        .find(|s| s.method == Method::GET)
        .unwrap();
    assert_eq!(get.session(), Some("up-session-1"));
    assert_eq!(get.header("x-api-key"), Some(SECRET));
    assert!(get.header("authorization").is_none());
}

// ---------------------------------------------------------------------------------------------
// Origin and Host

async fn init_with(gw: &Gateway, headers: &[(&str, &str)]) -> Reply {
    post_with(&gw.app, "up", &gw.alice, headers, &init_message(1)).await
}

#[tokio::test]
async fn foreign_origins_are_refused_and_configured_ones_allowed() {
    let (gw, up) = fixture(&[("MCPGW_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    for origin in [
        "https://evil.example.com",
        "null",
        "https://gw.example.com.evil.com",
        "http://gw.example.com",
        "http://localhost:3000",
        "not a url",
    ] {
        let r = init_with(&gw, &[("origin", origin)]).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (403, "forbidden"),
            "{origin}"
        );
    }
    assert!(
        up.log.all().is_empty(),
        "a refused origin reached the upstream"
    );
    for origin in [
        "https://gw.example.com",
        "https://app.example.com",
        "https://GW.example.com:443",
    ] {
        let r = init_with(&gw, &[("origin", origin)]).await;
        assert_eq!(r.status, 200, "{origin}: {}", r.body);
    }
}

#[tokio::test]
async fn a_loopback_gateway_allows_loopback_origins_and_refuses_rebound_hosts() {
    let (gw, up) = fixture(&[("MCPGW_PUBLIC_URL", "http://127.0.0.1:8787")]).await;
    for headers in [
        vec![("host", "127.0.0.1:8787")],
        vec![
            ("host", "localhost:8787"),
            ("origin", "http://localhost:5173"),
        ],
        vec![
            ("host", "127.0.0.1:8787"),
            ("origin", "http://127.0.0.1:3000"),
        ],
        vec![("host", "[::1]:8787"), ("origin", "http://[::1]:8787")],
    ] {
        let r = init_with(&gw, &headers).await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.body);
    }
    let before = up.log.len();
    for headers in [
        vec![("host", "evil.example.com")],
        vec![
            ("host", "evil.example.com:8787"),
            ("origin", "http://127.0.0.1:8787"),
        ],
        vec![("host", "localhost.evil.example.com")],
        vec![
            ("host", "127.0.0.1:8787"),
            ("origin", "https://evil.example.com"),
        ],
    ] {
        let r = init_with(&gw, &headers).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (403, "forbidden"),
            "{headers:?}"
        );
    }
    assert_eq!(
        up.log.len(),
        before,
        "a refused request reached the upstream"
    );
}

// ---------------------------------------------------------------------------------------------
// Regressions: each of these failed before its fix (found by the first version of this file).

#[tokio::test]

async fn numbers_reach_the_upstream_as_the_client_wrote_them() {
    let (gw, up) = fixture(&[]).await;
    let session = open_session(&gw.app, "up", &gw.alice).await;
    let raw = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x","arguments":{"account":123456789012345678901234567890}}}"#;
    let r = post_raw(&gw.app, "up", &gw.alice, Some(&session), raw).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = up.log.only("tools/call").body;
    assert!(
        body.contains("123456789012345678901234567890"),
        "upstream got {body}"
    );
}

#[tokio::test]

async fn an_allowed_origin_written_with_its_default_port_is_allowed() {
    let (gw, _up) = fixture(&[("MCPGW_ALLOWED_ORIGINS", "https://app.example.com:443")]).await;
    let r = init_with(&gw, &[("origin", "https://app.example.com")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}
