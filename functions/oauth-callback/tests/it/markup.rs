//! Markup in what the connect flow's pages show is text (issue 23, item 4: the pages are
//! templates that escape by default). A gateway user whose email holds markup and quotes,
//! and a provider answer whose `error` holds a script, reach the pages escaped; the baseline
//! (a plain email, a plain error code) shows them as they are, so the checks can fail.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use mcpgw::grants::link;
use mcpgw::store::ConfigKind;
use mcpgw::testing::local_state;
use serde_json::json;
use tower::ServiceExt;

/// An email the admin API accepts (one `@`, no whitespace) that is also markup.
const MARKED_USER: &str = "x\"'><script>alert(1)</script>@evil.example";
const PLAIN_USER: &str = "alice@example.com";

async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let resp = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    // An apostrophe in text or a double-quoted attribute needs no escaping; the checks hold
    // whether an escaper writes it as `'` or `&#39;`.
    (
        status,
        String::from_utf8_lossy(&bytes).replace("&#39;", "'"),
    )
}

/// What no page may hold: the markup itself, or an attribute value closed early.
fn assert_inert(body: &str) {
    assert!(!body.contains("<script"), "{body}");
    assert!(!body.contains("\"'>"), "{body}");
}

#[tokio::test]
async fn a_users_email_and_a_providers_error_are_shown_as_text() {
    let (state, _dir) = local_state(&[], &[]);
    let server = json!({
        "name": "notes", "url": "http://127.0.0.1:9/mcp", "created_at": 0, "updated_at": 0,
        "auth": {"type": "oauth2", "client_id": "gw", "scopes": ["read"],
                 "authorization_url": "https://idp.example.com/authorize",
                 "token_url": "https://idp.example.com/token"}
    });
    state
        .store
        .create_config(ConfigKind::Server, "notes", &server)
        .await
        .unwrap();
    let app = oauth_callback::app(state.clone());
    let path_of = |url: String| {
        url.split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
            .unwrap()
    };

    // BASELINE: a plain email is shown as it is.
    let plain = path_of(
        link::make(&state.grants, PLAIN_USER, "notes")
            .await
            .unwrap(),
    );
    let (status, body) = get(&app, &plain).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("id=\"user\">{PLAIN_USER}<")),
        "{body}"
    );

    // ATTACK: the marked email is text on the page that names the user.
    let marked = path_of(
        link::make(&state.grants, MARKED_USER, "notes")
            .await
            .unwrap(),
    );
    let (status, body) = get(&app, &marked).await;
    assert_eq!(status, 200, "{body}");
    assert_inert(&body);
    assert!(
        body.contains(
            "id=\"user\">x&quot;'&gt;&lt;script&gt;alert(1)&lt;/script&gt;@evil.example<"
        ),
        "{body}"
    );
    assert!(body.contains("id=\"continue\""), "{body}");

    // BASELINE: the provider's error code is named on the page.
    let (status, body) = get(
        &app,
        "/oauth/callback/notes?state=never-issued&error=temporarily_unavailable",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("the provider answered temporarily_unavailable"),
        "{body}"
    );

    // ATTACK: a forged answer whose error is markup (the provider's text is untrusted).
    let (status, body) = get(
        &app,
        "/oauth/callback/notes?state=never-issued&error=%22%27%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_inert(&body);
    assert!(
        body.contains("the provider answered &quot;'&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
}
