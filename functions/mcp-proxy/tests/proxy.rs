//! The proxy router against an in-process upstream that records what it receives: credential
//! injection, header allowlisting, JSON and SSE pass-through, sessions, DELETE, and every bad
//! form of request. The same paths run against real MCP servers in the `e2e` crate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mcpgw::testing::{TEST_ADMIN_KEY, local_state};
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &str = "upstream-s3cr3t";

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, HeaderMap, String)>>>);

/// An upstream MCP server: JSON for `initialize` (with a session id), SSE in two chunks for
/// anything else, 204 for DELETE, 401 when the `X-Api-Key` is wrong.
async fn start_upstream() -> (String, Seen) {
    let seen = Seen::default();
    let rec = seen.clone();
    let handler = move |method: axum::http::Method, headers: HeaderMap, body: String| {
        let rec = rec.clone();
        async move {
            rec.0
                .lock()
                .unwrap()
                .push((method.to_string(), headers.clone(), body.clone()));
            if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(SECRET) {
                return (
                    StatusCode::UNAUTHORIZED,
                    [("www-authenticate", "Bearer realm=upstream")],
                    "no",
                )
                    .into_response();
            }
            if method == axum::http::Method::DELETE {
                return StatusCode::NO_CONTENT.into_response();
            }
            let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if msg["method"] == "redirect" {
                return (
                    StatusCode::FOUND,
                    [("location", "http://elsewhere.example/mcp")],
                    "",
                )
                    .into_response();
            }
            if msg["method"] == "slow" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            if msg["method"] == "initialize" {
                return Response::builder()
                    .header("content-type", "application/json")
                    .header("mcp-session-id", "up-session-1")
                    .header("set-cookie", "upstream=1")
                    .body(Body::from(json!({"jsonrpc":"2.0","id":msg["id"],"result":{"protocolVersion":"2025-06-18"}}).to_string()))
                    .unwrap();
            }
            let id = msg["id"].clone();
            let stream = async_stream(id);
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    };
    let app = axum::Router::new().route("/mcp", post(handler.clone()).delete(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn async_stream(id: Value) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> {
    let first = format!(
        "event: message\ndata: {}\n\n",
        json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}})
    );
    let second = format!(
        "event: message\ndata: {}\n\n",
        json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":"done"}]}})
    );
    futures_util::stream::unfold(0, move |i| {
        let (first, second) = (first.clone(), second.clone());
        async move {
            match i {
                0 => Some((Ok(first), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Some((Ok(second), 2))
                }
                _ => None,
            }
        }
    })
}

struct Fixture {
    app: axum::Router,
    user_key: String,
    seen: Seen,
    _guard: mcpgw::testing::tempfile_guard::TempDir,
}

async fn fixture(vars: &[(&str, &str)]) -> Fixture {
    let (upstream, seen) = start_upstream().await;
    let mut all = vec![
        ("MCPGW_MAX_BODY_BYTES", "4096"),
        ("MCPGW_PUBLIC_URL", "https://gw.example.com"),
    ];
    all.extend_from_slice(vars);
    let (state, guard) = local_state(
        &[
            ("MCPGW_SECRET_UP_KEY", SECRET),
            ("MCPGW_SECRET_WRONG", "nope"),
        ],
        &all,
    );
    let admin = admin_api::app(state.clone());
    let register = |name: &str, url: &str, secret: &str| {
        json!({"name": name, "url": url, "auth": {"type": "header", "headers": {"X-Api-Key": format!("secret://{secret}")}}}).to_string()
    };
    for body in [
        register("up", &upstream, "up-key"),
        register("wrongkey", &upstream, "wrong"),
        register("down", "http://127.0.0.1:9/mcp", "up-key"),
    ] {
        let req = Request::post("/admin/servers")
            .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        assert_eq!(admin.clone().oneshot(req).await.unwrap().status(), 201);
    }
    let req = Request::post("/admin/api-keys")
        .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"owner": "alice@example.com", "name": "t"}).to_string(),
        ))
        .unwrap();
    let resp = admin.oneshot(req).await.unwrap();
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap();
    Fixture {
        app: mcp_proxy::app(state),
        user_key: body["key"].as_str().unwrap().to_owned(),
        seen,
        _guard: guard,
    }
}

fn mcp_post(endpoint: &str, token: Option<&str>) -> axum::http::request::Builder {
    let mut b = Request::post(format!("/mcp/{endpoint}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const CALL: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x","arguments":{}}}"#;

#[tokio::test]
async fn forwards_with_injected_secret_and_never_the_callers_credential() {
    let f = fixture(&[]).await;
    let req = mcp_post("up", Some(&f.user_key))
        .header("cookie", "gw=1")
        .header("x-forwarded-for", "10.0.0.1")
        .header("mcp-protocol-version", "2025-06-18")
        .body(Body::from(INIT))
        .unwrap();
    let (status, headers, body) = send(&f.app, req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers["mcp-session-id"], "up-session-1",
        "session id passes through"
    );
    assert!(
        headers.get("set-cookie").is_none(),
        "upstream cookies stay upstream"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["result"]["protocolVersion"],
        "2025-06-18"
    );

    let seen = f.seen.0.lock().unwrap();
    let (_, h, b) = &seen[0];
    assert_eq!(h["x-api-key"], SECRET);
    assert!(
        h.get("authorization").is_none()
            && h.get("cookie").is_none()
            && h.get("x-forwarded-for").is_none(),
        "{h:?}"
    );
    assert_eq!(h["mcp-protocol-version"], "2025-06-18");
    assert_eq!(b, INIT, "the body is forwarded byte for byte");
    assert!(!format!("{h:?}").contains(&f.user_key));
}

#[tokio::test]
async fn sse_streams_through_and_sessions_end_with_delete() {
    let f = fixture(&[]).await;
    let req = mcp_post("up", Some(&f.user_key))
        .header("mcp-session-id", "up-session-1")
        .body(Body::from(CALL))
        .unwrap();
    let (status, headers, body) = send(&f.app, req).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    let events: Vec<&str> = body
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    assert_eq!(events.len(), 2, "{body}");
    assert!(events[1].contains("\"id\":2") && events[1].contains("done"));

    let req = Request::delete("/mcp/up")
        .header("authorization", format!("Bearer {}", f.user_key))
        .header("mcp-session-id", "up-session-1")
        .body(Body::empty())
        .unwrap();
    let (status, _, _) = send(&f.app, req).await;
    assert_eq!(status, 204);
    let seen = f.seen.0.lock().unwrap();
    let (method, h, _) = seen.last().unwrap();
    assert_eq!(
        (method.as_str(), &h["mcp-session-id"]),
        (
            "DELETE",
            &"up-session-1".parse::<axum::http::HeaderValue>().unwrap()
        )
    );
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["error"]["code"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v["error"]["code"].to_string())
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors_and_reach_no_upstream() {
    let f = fixture(&[]).await;
    let key = f.user_key.clone();
    // Unauthenticated: 401 with a challenge naming the resource metadata.
    let (s, h, b) = send(&f.app, mcp_post("up", None).body(Body::from(INIT)).unwrap()).await;
    assert_eq!(
        (s.as_u16(), error_code(&b).as_str()),
        (401, "unauthenticated")
    );
    assert_eq!(
        h["www-authenticate"],
        "Bearer resource_metadata=\"https://gw.example.com/.well-known/oauth-protected-resource/mcp/up\""
    );
    let (s, h, _) = send(
        &f.app,
        mcp_post("up", Some("mcpgw_wrong"))
            .body(Body::from(INIT))
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    // Unknown endpoint, after authentication only.
    let (s, _, b) = send(
        &f.app,
        mcp_post("ghost", Some(&key))
            .body(Body::from(INIT))
            .unwrap(),
    )
    .await;
    assert_eq!((s.as_u16(), error_code(&b).as_str()), (404, "not_found"));
    let (s, _, _) = send(
        &f.app,
        mcp_post("ghost", None).body(Body::from(INIT)).unwrap(),
    )
    .await;
    assert_eq!(s, 401, "no probing of endpoint names without a credential");
    // Wrong content type, wrong Accept, oversized, not JSON, not JSON-RPC.
    let req = Request::post("/mcp/up")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "text/plain")
        .body(Body::from(INIT))
        .unwrap();
    let (s, _, b) = send(&f.app, req).await;
    assert_eq!(
        (s.as_u16(), error_code(&b).as_str()),
        (415, "unsupported_media_type")
    );
    let req = Request::post("/mcp/up")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("accept", "text/html")
        .body(Body::from(INIT))
        .unwrap();
    let (s, _, b) = send(&f.app, req).await;
    assert_eq!(
        (s.as_u16(), error_code(&b).as_str()),
        (406, "not_acceptable")
    );
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(5000)
    );
    let (s, _, b) = send(
        &f.app,
        mcp_post("up", Some(&key))
            .body(Body::from(big.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s.as_u16(), error_code(&b).as_str()),
        (413, "payload_too_large")
    );
    let (s, _, b) = send(
        &f.app,
        mcp_post("up", Some(&key))
            .body(Body::from("{oops"))
            .unwrap(),
    )
    .await;
    assert_eq!((s.as_u16(), error_code(&b).as_str()), (400, "-32700"));
    for junk in [
        r#"{"id":1}"#,
        "[]",
        "42",
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{}]"#,
    ] {
        let (s, _, b) = send(
            &f.app,
            mcp_post("up", Some(&key)).body(Body::from(junk)).unwrap(),
        )
        .await;
        assert_eq!(
            (s.as_u16(), error_code(&b).as_str()),
            (400, "-32600"),
            "{junk}"
        );
    }
    assert!(
        f.seen.0.lock().unwrap().is_empty(),
        "no bad request reached the upstream"
    );
}

#[tokio::test]
async fn upstream_failures_are_gateway_errors_without_upstream_challenges() {
    let f = fixture(&[]).await;
    let (s, h, b) = send(
        &f.app,
        mcp_post("wrongkey", Some(&f.user_key))
            .body(Body::from(INIT))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s.as_u16(), error_code(&b).as_str()),
        (502, "upstream_auth_failed")
    );
    assert!(
        h.get("www-authenticate").is_none(),
        "the upstream's challenge is not the caller's business"
    );
    assert!(
        !b.contains("nope"),
        "the configured secret never appears in an error"
    );
    let (s, _, b) = send(
        &f.app,
        mcp_post("down", Some(&f.user_key))
            .body(Body::from(INIT))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s.as_u16(), error_code(&b).as_str()),
        (502, "upstream_unavailable")
    );
}

#[tokio::test]
async fn get_stream_is_405_where_it_cannot_be_served() {
    let f = fixture(&[("MCPGW_ALLOW_GET_STREAM", "0")]).await;
    let req = Request::get("/mcp/up")
        .header("authorization", format!("Bearer {}", f.user_key))
        .body(Body::empty())
        .unwrap();
    let (s, h, b) = send(&f.app, req).await;
    assert_eq!(
        (s.as_u16(), error_code(&b).as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(h["allow"], "POST, DELETE");
}

#[tokio::test]
async fn resource_metadata_is_open() {
    let f = fixture(&[]).await;
    let req = Request::get("/.well-known/oauth-protected-resource/mcp/up")
        .body(Body::empty())
        .unwrap();
    let (s, _, b) = send(&f.app, req).await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["resource"], "https://gw.example.com/mcp/up");
}

#[tokio::test]
async fn out_of_scope_secret_in_a_stored_record_is_never_resolved() {
    use mcpgw::domain::{McpServer, UpstreamAuth};
    use mcpgw::secrets::SecretRef;
    use mcpgw::store::{ConfigKind, to_doc};
    let (upstream, seen) = start_upstream().await;
    let (state, _guard) = local_state(
        &[("MCPGW_SECRET_KEYRING", "gateway-internal-material")],
        &[("MCPGW_SECRET_PREFIX", "mcpgw/")],
    );
    // Written around the admin API, which would have refused it.
    let server = McpServer {
        name: "sneaky".into(),
        url: upstream,
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
    };
    state
        .store
        .create_config(ConfigKind::Server, "sneaky", &to_doc(&server))
        .await
        .unwrap();
    let issued = mcpgw::identity::issue_api_key("eve@example.com", "k", false, 0, None);
    state.store.create_api_key(&issued.record).await.unwrap();
    let app = mcp_proxy::app(state);
    let req = mcp_post("sneaky", Some(&issued.plaintext))
        .body(Body::from(INIT))
        .unwrap();
    let (s, _, b) = send(&app, req).await;
    assert_eq!(
        (s.as_u16(), error_code(&b).as_str()),
        (502, "upstream_credential_unavailable")
    );
    assert!(!b.contains("gateway-internal-material"));
    assert!(
        seen.0.lock().unwrap().is_empty(),
        "nothing was sent upstream"
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504() {
    let f = fixture(&[("MCPGW_UPSTREAM_TIMEOUT_SECONDS", "1")]).await;
    let slow = r#"{"jsonrpc":"2.0","id":9,"method":"slow"}"#;
    let req = mcp_post("up", Some(&f.user_key))
        .body(Body::from(slow))
        .unwrap();
    let (s, _, b) = send(&f.app, req).await;
    assert_eq!(
        (s.as_u16(), error_code(&b).as_str()),
        (504, "upstream_timeout")
    );
}

#[tokio::test]
async fn odd_endpoint_names_and_redirects_get_json_errors() {
    let f = fixture(&[]).await;
    // Not valid UTF-8 after decoding: JSON 400, not axum's plain text.
    let req = mcp_post("%FF", Some(&f.user_key))
        .body(Body::from(INIT))
        .unwrap();
    let req = {
        let (mut parts, body) = req.into_parts();
        parts.uri = "/mcp/%FF".parse().unwrap();
        Request::from_parts(parts, body)
    };
    let (s, _, b) = send(&f.app, req).await;
    assert_eq!((s.as_u16(), error_code(&b).as_str()), (400, "invalid_path"));
    // A name that cannot be registered: 404 for a caller with a key, and without one a 401
    // whose challenge does not echo the name (a quote would inject parameters).
    let long = "a".repeat(2000);
    for name in [long.as_str(), "x%22%2C%20error%3D%22evil"] {
        let (s, _, b) = send(
            &f.app,
            mcp_post(name, Some(&f.user_key))
                .body(Body::from(INIT))
                .unwrap(),
        )
        .await;
        assert_eq!(
            (s.as_u16(), error_code(&b).as_str()),
            (404, "not_found"),
            "{name}"
        );
        let (s, h, _) = send(&f.app, mcp_post(name, None).body(Body::from(INIT)).unwrap()).await;
        assert_eq!(s, 401);
        assert_eq!(h["www-authenticate"], "Bearer", "{name}");
    }
    let req = Request::get("/.well-known/oauth-protected-resource/mcp/x%22y")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.app, req).await.0, 404);
    // An upstream redirect is not followed and not passed on without its Location.
    let redirect = r#"{"jsonrpc":"2.0","id":3,"method":"redirect"}"#;
    let (s, h, b) = send(
        &f.app,
        mcp_post("up", Some(&f.user_key))
            .body(Body::from(redirect))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s.as_u16(), error_code(&b).as_str()),
        (502, "upstream_redirect")
    );
    assert!(h.get("location").is_none());
}
