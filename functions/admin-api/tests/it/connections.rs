//! `/me/connections` and the admin review of grants: who sees which connections, what a
//! grant's status says, that tokens never show, and that disconnecting deletes first and then
//! tells the provider (refresh token first, the access token only after
//! `unsupported_token_type`). The provider here is a small in-process revocation endpoint;
//! the real one (oidc-provider) is exercised by the e2e `oauth_connect` tests.

use crate::common;

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use common::*;
use mcpgw::domain::GrantStatus;
use serde_json::{Value, json};

/// A revocation endpoint that records each form it gets and answers `answers` in turn
/// (status, JSON body), then 200.
async fn revocation_endpoint(answers: Vec<(u16, Value)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(Mutex::new(answers));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/revoke",
        axum::routing::post(move |body: String| {
            let (s, answers) = (s.clone(), answers.clone());
            async move {
                s.lock().unwrap().push(body);
                let mut a = answers.lock().unwrap();
                let (code, v) = if a.is_empty() {
                    (200, json!({}))
                } else {
                    a.remove(0)
                };
                (StatusCode::from_u16(code).unwrap(), axum::Json(v))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/revoke"), seen)
}

async fn oauth_server(api: &Api, name: &str, revocation_url: Option<&str>) {
    let mut auth = json!({"type": "oauth2", "client_id": "gw-client",
        "authorization_url": "http://127.0.0.1:9/auth", "token_url": "http://127.0.0.1:9/token"});
    if let Some(r) = revocation_url {
        auth["revocation_url"] = r.into();
    }
    let (st, body) = api
        .admin(
            "POST",
            "/admin/servers",
            Some(json!({"name": name, "url": "http://127.0.0.1:9/mcp", "auth": auth})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
}

async fn group(api: &Api, servers: &[&str], users: &[&str]) {
    let (st, body) = api
        .admin(
            "POST",
            "/admin/server-groups",
            Some(json!({"name": "g", "servers": servers, "members": {"users": users}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
}

async fn has_grant(api: &Api, user: &str, server: &str) -> bool {
    api.state
        .store
        .get_grant(user, server)
        .await
        .unwrap()
        .is_some()
}

fn by_server<'a>(list: &'a Value, server: &str) -> &'a Value {
    list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["server"] == server)
        .unwrap_or_else(|| panic!("{server} not in {list}"))
}

#[tokio::test]
async fn my_connections_list_reachable_oauth_servers_with_status_and_never_tokens() {
    let api = api();
    for s in ["docs", "mail", "wiki", "hidden"] {
        oauth_server(&api, s, None).await;
    }
    let (_, alice) = api.user_key("alice@example.com").await;
    group(&api, &["docs", "mail", "wiki"], &["alice@example.com"]).await;
    grant(&api, "alice@example.com", "docs", |g| {
        g.last_refresh_at = Some(1_700_000_100);
    })
    .await;
    grant(&api, "alice@example.com", "mail", |g| {
        g.status = GrantStatus::NeedsReconsent;
        g.refresh_at = None;
        g.last_error = Some("invalid_grant".into());
    })
    .await;
    // A grant alice holds for a server she no longer reaches: listed so she can revoke it.
    grant(&api, "alice@example.com", "hidden", |_| {}).await;
    // Someone else's grant never shows in alice's list.
    grant(&api, "bob@example.com", "wiki", |_| {}).await;

    let (st, list) = api.as_key(&alice, "GET", "/me/connections", None).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list["connections"].as_array().unwrap().len(), 4, "{list}");
    let docs = by_server(&list, "docs");
    assert_eq!(docs["status"], "connected");
    assert_eq!(docs["scopes"], json!(["read"]));
    assert_eq!(docs["last_refresh_at"], rfc3339(1_700_000_100));
    assert!(
        docs["connect_url"]
            .as_str()
            .unwrap()
            .ends_with("/oauth/connect/docs")
    );
    let mail = by_server(&list, "mail");
    assert_eq!(mail["status"], "needs_reconsent");
    assert_eq!(mail["last_error"], "invalid_grant");
    assert_eq!(by_server(&list, "wiki")["status"], "not_connected");
    assert_eq!(by_server(&list, "hidden")["reachable"], false);
    let text = list.to_string();
    assert!(!text.contains("AT-") && !text.contains("RT-"), "{text}");
    assert!(!text.contains("bob@"), "{text}");

    // Unauthenticated: 401 JSON.
    let (st, body) = api.call("GET", "/me/connections", None, None).await;
    assert_error(st, &body, 401, "unauthenticated");
}

#[tokio::test]
async fn an_expired_token_with_nothing_to_refresh_it_reads_expired() {
    let api = api();
    oauth_server(&api, "gh", None).await;
    let (_, alice) = api.user_key("alice@example.com").await;
    group(&api, &["gh"], &["alice@example.com"]).await;
    grant(&api, "alice@example.com", "gh", |g| {
        g.access_expires_at = Some(1);
        g.refresh_at = None;
    })
    .await;
    let (_, list) = api.as_key(&alice, "GET", "/me/connections", None).await;
    assert_eq!(by_server(&list, "gh")["status"], "expired", "{list}");
}

#[tokio::test]
async fn disconnect_deletes_first_then_revokes_the_refresh_token() {
    let (url, seen) = revocation_endpoint(vec![]).await;
    let api = api();
    oauth_server(&api, "docs", Some(&url)).await;
    let (_, alice) = api.user_key("alice@example.com").await;
    group(&api, &["docs"], &["alice@example.com"]).await;
    grant(&api, "alice@example.com", "docs", |_| {}).await;

    let (st, body) = api
        .as_key(&alice, "DELETE", "/me/connections/docs", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["deleted"], true);
    assert_eq!(
        body["provider_revocation"],
        json!({"status": "revoked", "token": "refresh_token"})
    );
    let forms = seen.lock().unwrap().clone();
    assert_eq!(forms.len(), 1, "{forms:?}");
    assert!(
        forms[0].contains("token=RT-alice%40example.com"),
        "{forms:?}"
    );
    assert!(
        forms[0].contains("token_type_hint=refresh_token"),
        "{forms:?}"
    );
    assert!(forms[0].contains("client_id=gw-client"), "{forms:?}");
    assert!(!has_grant(&api, "alice@example.com", "docs").await);
    // Again: nothing left to disconnect.
    let (st, body) = api
        .as_key(&alice, "DELETE", "/me/connections/docs", None)
        .await;
    assert_error(st, &body, 404, "not_found");
    let (_, list) = api.as_key(&alice, "GET", "/me/connections", None).await;
    assert_eq!(by_server(&list, "docs")["status"], "not_connected");
}

#[tokio::test]
async fn unsupported_token_type_falls_back_to_the_access_token_and_failures_are_reported() {
    let (url, seen) = revocation_endpoint(vec![
        (400, json!({"error": "unsupported_token_type"})),
        (200, json!({})),
        (503, json!({"error": "temporarily_unavailable"})),
    ])
    .await;
    let api = api();
    oauth_server(&api, "docs", Some(&url)).await;
    let (_, alice) = api.user_key("alice@example.com").await;
    let (_, bob) = api.user_key("bob@example.com").await;
    group(&api, &["docs"], &["alice@example.com", "bob@example.com"]).await;
    grant(&api, "alice@example.com", "docs", |_| {}).await;
    grant(&api, "bob@example.com", "docs", |_| {}).await;

    let (_, body) = api
        .as_key(&alice, "DELETE", "/me/connections/docs", None)
        .await;
    assert_eq!(
        body["provider_revocation"],
        json!({"status": "revoked", "token": "access_token"}),
        "{body}"
    );
    {
        let forms = seen.lock().unwrap();
        assert_eq!(forms.len(), 2);
        assert!(
            forms[1].contains("token=AT-alice%40example.com"),
            "{forms:?}"
        );
    }
    // The provider fails: the grant is gone anyway, and the answer says what happened.
    let (st, body) = api
        .as_key(&bob, "DELETE", "/me/connections/docs", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["provider_revocation"]["status"], "failed", "{body}");
    assert!(
        body["provider_revocation"]["reason"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{body}"
    );
    assert!(!has_grant(&api, "bob@example.com", "docs").await);
}

#[tokio::test]
async fn admins_list_and_revoke_anyones_grants_and_users_cannot() {
    let api = api();
    oauth_server(&api, "docs", None).await;
    oauth_server(&api, "mail", None).await;
    let (_, alice) = api.user_key("alice@example.com").await;
    grant(&api, "alice@example.com", "docs", |_| {}).await;
    grant(&api, "bob@example.com", "docs", |_| {}).await;
    grant(&api, "bob@example.com", "mail", |_| {}).await;

    let (st, all) = api.admin("GET", "/admin/connections", None).await;
    assert_eq!(st, StatusCode::OK, "{all}");
    let pairs: Vec<(String, String)> = all["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["user"].as_str().unwrap().into(),
                c["server"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("alice@example.com".into(), "docs".into()),
            ("bob@example.com".into(), "docs".into()),
            ("bob@example.com".into(), "mail".into())
        ]
    );
    assert_eq!(all["truncated"], false);
    let (_, mail) = api
        .admin("GET", "/admin/connections?server=mail", None)
        .await;
    assert_eq!(mail["connections"].as_array().unwrap().len(), 1, "{mail}");
    let (_, bobs) = api
        .admin("GET", "/admin/users/Bob@Example.com/connections", None)
        .await;
    assert_eq!(bobs["connections"].as_array().unwrap().len(), 2, "{bobs}");
    let (st, body) = api.admin("GET", "/admin/connections?nope=1", None).await;
    assert_error(st, &body, 400, "invalid_query");

    // A user is refused every admin route, and cannot reach bob's grants through /me.
    for (m, p) in [
        ("GET", "/admin/connections"),
        ("GET", "/admin/users/bob@example.com/connections"),
        ("DELETE", "/admin/users/bob@example.com/connections/docs"),
    ] {
        let (st, body) = api.as_key(&alice, m, p, None).await;
        assert_error(st, &body, 403, "forbidden");
    }
    let (st, body) = api
        .as_key(&alice, "DELETE", "/me/connections/mail", None)
        .await;
    assert_error(st, &body, 404, "not_found");
    assert!(has_grant(&api, "bob@example.com", "mail").await);

    // The admin revokes bob's docs grant; no revocation endpoint: said so.
    let (st, body) = api
        .admin(
            "DELETE",
            "/admin/users/bob@example.com/connections/docs",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["provider_revocation"]["status"], "not_supported");
    let (_, bobs) = api
        .admin("GET", "/admin/users/bob@example.com/connections", None)
        .await;
    assert_eq!(bobs["connections"].as_array().unwrap().len(), 1, "{bobs}");
    let (st, body) = api
        .admin(
            "DELETE",
            "/admin/users/bob@example.com/connections/docs",
            None,
        )
        .await;
    assert_error(st, &body, 404, "not_found");
}

#[tokio::test]
async fn a_connect_link_is_minted_only_for_a_reachable_oauth_server() {
    let api = api();
    oauth_server(&api, "docs", None).await;
    oauth_server(&api, "other", None).await;
    let (_, alice) = api.user_key("alice@example.com").await;
    group(&api, &["docs"], &["alice@example.com"]).await;
    let (st, body) = api
        .as_key(&alice, "POST", "/me/connections/docs/link", None)
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert!(
        body["url"]
            .as_str()
            .unwrap()
            .contains("/oauth/connect/docs?link="),
        "{body}"
    );
    for s in ["other", "nope", "bad%20name"] {
        let (st, body) = api
            .as_key(&alice, "POST", &format!("/me/connections/{s}/link"), None)
            .await;
        assert_error(st, &body, 404, "not_found");
    }
}
