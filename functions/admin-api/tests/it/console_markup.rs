//! Markup in what the console shows is text (issue 23, item 4: the pages are `maud`
//! templates, which escape by default). A server description and a user's email holding a
//! script and quotes are shown escaped on every page that shows them: the servers list, the
//! header of that user's own pages, everyone's connections (cells and hidden form values),
//! and "what would this user see" (the echoed query and the results). The baseline, a plain
//! description and a plain email, shows them as they are, so the checks can fail.

use crate::common;

use axum::body::Body;
use axum::http::{Request, header};
use common::api;
use mcpgw::domain::{Grant, GrantStatus};
use mcpgw::testing::TEST_ADMIN_KEY;
use serde_json::json;
use tower::ServiceExt;

/// An email the admin API accepts (one `@`, no whitespace) that is also markup.
const MARKED_USER: &str = "x\"'><script>alert(1)</script>@evil.example";
const MARKED_USER_SHOWN: &str = "x&quot;'&gt;&lt;script&gt;alert(1)&lt;/script&gt;@evil.example";
const MARKED_TEXT: &str = "<script>alert(\"owned\")</script> & 'more'";
const MARKED_TEXT_SHOWN: &str =
    "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt; &amp; 'more'";
const FORM: &str = "application/x-www-form-urlencoded";

struct Seen {
    status: u16,
    cookies: Vec<String>,
    body: String,
}

async fn send(app: &axum::Router, method: &str, path: &str, cookie: &str, form: &str) -> Seen {
    let mut req = Request::builder().method(method).uri(path);
    if !cookie.is_empty() {
        req = req.header(header::COOKIE, cookie);
    }
    if !form.is_empty() {
        req = req.header(header::CONTENT_TYPE, FORM);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(form.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let cookies = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|c| c.split(';').next().unwrap_or_default().to_owned())
        .collect();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Seen {
        status,
        cookies,
        // An apostrophe inside a double-quoted attribute or in text needs no escaping; the
        // checks hold whether an escaper writes it as `'` or `&#39;`.
        body: String::from_utf8_lossy(&bytes).replace("&#39;", "'"),
    }
}

/// A console session (`name=value`) signed in with `key`.
async fn console_session(app: &axum::Router, key: &str) -> String {
    let page = send(app, "GET", "/console/login", "", "").await;
    let login = page
        .cookies
        .iter()
        .find(|c| c.starts_with("mcpgw_console_login="))
        .unwrap()
        .clone();
    let token = login.split_once('=').unwrap().1;
    let key = url::form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>();
    let form = format!("login_csrf={token}&key={key}");
    let done = send(app, "POST", "/console/login", &login, &form).await;
    assert_eq!(done.status, 303, "{}", done.body);
    done.cookies
        .into_iter()
        .find(|c| c.starts_with("mcpgw_console="))
        .unwrap()
}

/// What no page may hold: the markup itself, or an attribute value closed early.
fn assert_inert(page: &Seen, what: &str) {
    assert_eq!(page.status, 200, "{what}: {}", page.body);
    assert!(!page.body.contains("<script"), "{what}: {}", page.body);
    assert!(!page.body.contains("\"'>"), "{what}: {}", page.body);
}

#[tokio::test]
async fn descriptions_and_emails_with_markup_are_shown_as_text() {
    let api = api();
    for (name, description, user) in [
        ("plain", "a plain description", "alice@example.com"),
        ("marked", MARKED_TEXT, MARKED_USER),
    ] {
        let server = json!({"name": name, "url": format!("https://{name}.example.com/mcp"),
            "description": description, "auth": {"type": "none"}});
        let (s, b) = api.admin("POST", "/admin/servers", Some(server)).await;
        assert_eq!(s, 201, "{b}");
        let group = json!({"name": name, "servers": [name], "members": {"users": [user]}});
        let (s, b) = api.admin("POST", "/admin/server-groups", Some(group)).await;
        assert_eq!(s, 201, "{b}");
        let grant = Grant {
            user: user.to_owned(),
            server: name.to_owned(),
            version: 1,
            sealed_tokens: vec![0],
            status: GrantStatus::Active,
            scopes: Vec::new(),
            access_expires_at: None,
            refresh_at: None,
            updated_at: 0,
            last_refresh_at: None,
            last_error: None,
            refresh_lease_until: None,
        };
        api.state
            .store
            .save_grant_if_version(&grant, None)
            .await
            .unwrap();
    }
    let (_, marked_key) = api.user_key(MARKED_USER).await;
    let admin = console_session(&api.app, TEST_ADMIN_KEY).await;

    // The servers list shows each description.
    let page = send(&api.app, "GET", "/console/admin/servers", &admin, "").await;
    assert_inert(&page, "servers");
    assert!(page.body.contains("a plain description"), "{}", page.body);
    assert!(page.body.contains(MARKED_TEXT_SHOWN), "{}", page.body);

    // Everyone's connections: the user in a cell, a data attribute and a hidden form value.
    let page = send(&api.app, "GET", "/console/admin/connections", &admin, "").await;
    assert_inert(&page, "connections");
    assert!(
        page.body
            .contains("name=\"user\" value=\"alice@example.com\""),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(&format!("name=\"user\" value=\"{MARKED_USER_SHOWN}\"")),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(&format!("<td>{MARKED_USER_SHOWN}</td>")),
        "{}",
        page.body
    );

    // "What would this user see": the query echoed in its field, and what the user sees.
    for (user, shown, server) in [
        ("alice@example.com", "alice@example.com", "plain"),
        (MARKED_USER, MARKED_USER_SHOWN, "marked"),
    ] {
        let q = url::form_urlencoded::byte_serialize(user.as_bytes()).collect::<String>();
        let page = send(
            &api.app,
            "GET",
            &format!("/console/admin/catalog?user={q}"),
            &admin,
            "",
        )
        .await;
        assert_inert(&page, "catalog");
        assert!(
            page.body.contains(&format!(
                "id=\"whatif-user\" name=\"user\" value=\"{shown}\""
            )),
            "{}",
            page.body
        );
        assert!(
            page.body.contains(&format!("id=\"endpoint-{server}\"")),
            "{}",
            page.body
        );
    }

    // The user's own pages name them in the header.
    let mine = console_session(&api.app, &marked_key).await;
    let page = send(&api.app, "GET", "/console", &mine, "").await;
    assert_inert(&page, "my connections");
    assert!(
        page.body
            .contains(&format!("id=\"whoami\">{MARKED_USER_SHOWN}<")),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"row-marked\""), "{}", page.body);
}
