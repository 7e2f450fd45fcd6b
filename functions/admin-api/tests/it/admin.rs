//! Admin API through its router (`tower::ServiceExt::oneshot`) over a real SQLite store:
//! the happy paths, and for every route its bad forms: unauthenticated, not admin, malformed,
//! oversized, invalid fields, duplicates, unknown names. Each failure must be JSON and must
//! leave the store unchanged.

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::{Api, api, api_recording, api_with, assert_error};
use mcpgw::testing::{TEST_ADMIN_KEY, local_state};
use serde_json::{Value, json};
use tower::ServiceExt;

fn everything() -> Value {
    json!({"name": "everything", "url": "http://127.0.0.1:3001/mcp", "auth": {"type": "none"}})
}

#[tokio::test]
async fn server_crud_happy_path() {
    let api = api();
    let (s, created) = api
        .admin("POST", "/admin/servers", Some(everything()))
        .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["name"], "everything");
    assert_eq!(created["share_tool_list"], false);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    // The opt-in is kept and shown.
    let shared = json!({"name": "mine", "url": "http://127.0.0.1:3001/mcp", "share_tool_list": true,
        "auth": {"type": "per_user_token", "header": "Authorization", "format": "Bearer {token}"}});
    let (s, b) = api.admin("POST", "/admin/servers", Some(shared)).await;
    assert_eq!(
        (s.as_u16(), &b["share_tool_list"]),
        (201, &json!(true)),
        "{b}"
    );
    let (s, _) = api.admin("DELETE", "/admin/servers/mine", None).await;
    assert_eq!(s, 204);

    let (s, one) = api.admin("GET", "/admin/servers/everything", None).await;
    assert_eq!(
        (s.as_u16(), &one["url"]),
        (200, &json!("http://127.0.0.1:3001/mcp"))
    );

    let header_auth = json!({"url": "https://mcp.example.com/mcp", "auth": {"type": "header", "headers": {"X-Api-Key": "secret://upstream-key"}}});
    let (s, replaced) = api
        .admin("PUT", "/admin/servers/everything", Some(header_auth))
        .await;
    assert_eq!(s, 200, "{replaced}");
    assert_eq!(
        replaced["auth"]["headers"]["X-Api-Key"],
        "secret://upstream-key"
    );
    assert_eq!(replaced["created_at"], created["created_at"]);
    assert!(
        !replaced.to_string().contains("s3cr3t-value"),
        "secret values are never returned"
    );

    let (s, list) = api.admin("GET", "/admin/servers", None).await;
    assert_eq!(
        (s.as_u16(), list["servers"].as_array().unwrap().len()),
        (200, 1)
    );

    let (s, _) = api.admin("DELETE", "/admin/servers/everything", None).await;
    assert_eq!(s, 204);
    let (s, body) = api.admin("GET", "/admin/servers/everything", None).await;
    assert_error(s, &body, 404, "not_found");
}

#[tokio::test]
async fn server_routes_reject_bad_input_and_change_nothing() {
    let api = api();
    assert_eq!(
        api.admin("POST", "/admin/servers", Some(everything()))
            .await
            .0,
        201
    );

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"name": "everything", "url": "http://x/mcp", "auth": {"type": "none"}}),
            409,
            "already_exists",
        ),
        (
            json!({"name": "Bad Name", "url": "http://x/mcp", "auth": {"type": "none"}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "a__b", "url": "http://x/mcp", "auth": {"type": "none"}}),
            422,
            "invalid_field",
        ),
        (
            json!({"url": "http://x/mcp", "auth": {"type": "none"}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "ftp", "url": "ftp://x/mcp", "auth": {"type": "none"}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "rel", "url": "/mcp", "auth": {"type": "none"}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "creds", "url": "https://u:p@x/mcp", "auth": {"type": "none"}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "noauth", "url": "http://x/mcp"}),
            400,
            "invalid_json",
        ),
        (
            json!({"name": "typo", "url": "http://x/mcp", "auht": {"type": "none"}}),
            400,
            "invalid_json",
        ),
        (
            json!({"name": "lit", "url": "http://x/mcp", "auth": {"type": "header", "headers": {"X-Key": "literal"}}}),
            400,
            "invalid_json",
        ),
        (
            json!({"name": "empty", "url": "http://x/mcp", "auth": {"type": "header", "headers": {}}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "host", "url": "http://x/mcp", "auth": {"type": "header", "headers": {"Host": "secret://upstream-key"}}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "hdr", "url": "http://x/mcp", "auth": {"type": "header", "headers": {"Bad Header": "secret://upstream-key"}}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "missing", "url": "http://x/mcp", "auth": {"type": "header", "headers": {"X-Key": "secret://not-there"}}}),
            422,
            "secret_unresolvable",
        ),
        (
            json!({"name": "o", "url": "http://x/mcp", "auth": {"type": "oauth2", "client_id": "c", "client_secret": "secret://not-there"}}),
            422,
            "secret_unresolvable",
        ),
        (
            json!({"name": "o", "url": "http://x/mcp", "auth": {"type": "oauth2", "client_id": "", "client_secret": "secret://upstream-key"}}),
            422,
            "invalid_field",
        ),
        (
            // a secret without a client id belongs to no client (omit both for RFC 7591)
            json!({"name": "o", "url": "http://x/mcp", "auth": {"type": "oauth2", "client_secret": "secret://upstream-key"}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "o", "url": "http://x/mcp", "auth": {"type": "oauth2", "client_id": "c", "extra_params": {"redirect_uri": "https://evil.example"}}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "o", "url": "http://x/mcp", "auth": {"type": "oauth2", "client_id": "c", "token_url": "ftp://x"}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "o", "url": "http://x/mcp", "auth": {"type": "per_user_token", "header": "Authorization", "format": "Bearer"}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "o", "url": "http://x/mcp", "auth": {"type": "per_user_token", "header": "Mcp-Session-Id", "format": "{token}"}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "o", "url": "http://x/mcp", "auth": {"type": "per_user_token", "header": "X Bad", "format": "{token}"}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "o", "url": "http://x/mcp", "auth": {"type": "per_user_token", "header": "Authorization", "format": "{token}\r\n{token}"}}),
            422,
            "invalid_field",
        ),
        // A shared tool list means something only where each user has their own credential.
        (
            json!({"name": "o", "url": "http://x/mcp", "share_tool_list": true, "auth": {"type": "none"}}),
            422,
            "invalid_field",
        ),
        // Listing with the machine token needs the gateway's own configured client.
        (
            json!({"name": "o", "url": "http://x/mcp", "auth": {"type": "oauth2", "list_tools_with_client_credentials": true}}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "o", "url": "http://x/mcp", "share_tool_list": "yes", "auth": {"type": "per_user_token", "header": "Authorization", "format": "{token}"}}),
            400,
            "invalid_json",
        ),
    ];
    for (body, status, code) in cases {
        let (s, resp) = api
            .admin("POST", "/admin/servers", Some(body.clone()))
            .await;
        assert_error(s, &resp, status, code);
        assert!(!resp.to_string().contains("s3cr3t-value"));
    }
    // Malformed JSON, wrong content type, oversized body.
    let (s, b) = api
        .call(
            "POST",
            "/admin/servers",
            Some(TEST_ADMIN_KEY),
            Some("{\"name\":"),
        )
        .await;
    assert_error(s, &b, 400, "invalid_json");
    let req = Request::post("/admin/servers")
        .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
        .header("content-type", "text/plain")
        .body(Body::from(everything().to_string()))
        .unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 415);
    let big = json!({"name": "big", "url": "http://x/mcp", "description": "x".repeat(4096), "auth": {"type": "none"}});
    let (s, b) = api.admin("POST", "/admin/servers", Some(big)).await;
    assert_error(s, &b, 413, "payload_too_large");

    // PUT: unknown name, rename attempt, invalid URL; DELETE unknown.
    let put = json!({"url": "http://y/mcp", "auth": {"type": "none"}});
    let (s, b) = api
        .admin("PUT", "/admin/servers/nope", Some(put.clone()))
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = api
        .admin(
            "PUT",
            "/admin/servers/everything",
            Some(json!({"name": "other", "url": "http://y/mcp", "auth": {"type": "none"}})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    let (s, b) = api
        .admin(
            "PUT",
            "/admin/servers/everything",
            Some(json!({"url": "nope", "auth": {"type": "none"}})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    let (s, b) = api.admin("DELETE", "/admin/servers/nope", None).await;
    assert_error(s, &b, 404, "not_found");

    // Nothing above changed the store.
    assert_eq!(api.server_count().await, 1);
    let (_, one) = api.admin("GET", "/admin/servers/everything", None).await;
    assert_eq!(one["url"], "http://127.0.0.1:3001/mcp");
}

#[tokio::test]
async fn admin_routes_require_an_admin() {
    let api = api();
    let (_, key) = api
        .admin(
            "POST",
            "/admin/api-keys",
            Some(json!({"owner": "bob@example.com", "name": "cli"})),
        )
        .await;
    let user_key = key["key"].as_str().unwrap().to_owned();
    let routes = [
        ("GET", "/admin/servers", None),
        ("POST", "/admin/servers", Some(everything().to_string())),
        ("GET", "/admin/servers/everything", None),
        (
            "PUT",
            "/admin/servers/everything",
            Some(everything().to_string()),
        ),
        ("DELETE", "/admin/servers/everything", None),
        ("GET", "/admin/api-keys", None),
        (
            "POST",
            "/admin/api-keys",
            Some(json!({"owner": "x@y.z", "name": "n"}).to_string()),
        ),
        ("GET", "/admin/api-keys/key_x", None),
        ("GET", "/admin/api-keys?owner=bob@example.com", None),
        ("DELETE", "/admin/api-keys/key_x", None),
        (
            "POST",
            "/admin/api-keys",
            Some(json!({"service_account": "bot", "name": "n"}).to_string()),
        ),
        ("GET", "/admin/identity-providers", None),
        (
            "POST",
            "/admin/identity-providers",
            Some(json!({"name": "corp", "issuer": "https://idp.example.com"}).to_string()),
        ),
        ("GET", "/admin/identity-providers/corp", None),
        (
            "PUT",
            "/admin/identity-providers/corp",
            Some(json!({"issuer": "https://idp.example.com"}).to_string()),
        ),
        ("DELETE", "/admin/identity-providers/corp", None),
    ];
    for (method, path, body) in routes {
        let (s, b) = api.call(method, path, None, body.as_deref()).await;
        assert_error(s, &b, 401, "unauthenticated");
        let (s, b) = api
            .call(method, path, Some("mcpgw_not_a_key"), body.as_deref())
            .await;
        assert_error(s, &b, 401, "unauthenticated");
        let (s, b) = api
            .call(method, path, Some(&user_key), body.as_deref())
            .await;
        assert_error(s, &b, 403, "forbidden");
    }
    assert_eq!(
        api.server_count().await,
        0,
        "no refused request wrote anything"
    );
    assert_eq!(api.stored_key_count().await, 1, "only bob's key exists");
    let (_, idps) = api.admin("GET", "/admin/identity-providers", None).await;
    assert_eq!(idps["identity_providers"], json!([]));
}

#[tokio::test]
async fn api_keys_are_shown_once_and_stored_hashed() {
    let api = api();
    let (s, created) = api
        .admin("POST", "/admin/api-keys", Some(json!({"owner": "Alice@Example.com", "name": "laptop", "expires_at": "2099-01-01T00:00:00Z"})))
        .await;
    assert_eq!(s, 201, "{created}");
    let key = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(key.starts_with("mcpgw_"));
    assert_eq!(created["owner"], "alice@example.com");
    assert_eq!(created["expires_at"], "2099-01-01T00:00:00Z");

    let (_, list) = api.admin("GET", "/admin/api-keys", None).await;
    let listed = list["api_keys"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].get("key").is_none() && listed[0].get("key_hash").is_none(),
        "{list}"
    );
    let stored = api.state.store.get_api_key(id).await.unwrap().unwrap();
    assert_eq!(stored.key_hash, mcpgw::crypto::sha256_hex(key.as_bytes()));

    // The key authenticates until deleted; then it is refused.
    let (s, _) = api.call("GET", "/admin/servers", Some(key), None).await;
    assert_eq!(
        s, 403,
        "a valid non-admin key is authenticated but not an admin"
    );
    let (s, one) = api
        .admin("GET", &format!("/admin/api-keys/{id}"), None)
        .await;
    assert_eq!((s.as_u16(), &one["name"]), (200, &json!("laptop")));
    assert_eq!(
        api.admin("DELETE", &format!("/admin/api-keys/{id}"), None)
            .await
            .0,
        204
    );
    let (s, b) = api.call("GET", "/admin/servers", Some(key), None).await;
    assert_error(s, &b, 401, "unauthenticated");
    let (s, b) = api
        .admin("DELETE", &format!("/admin/api-keys/{id}"), None)
        .await;
    assert_error(s, &b, 404, "not_found");
}

#[tokio::test]
async fn admin_flag_and_admin_emails_grant_the_role() {
    let api = api_with(&[("MCPGW_ADMIN_EMAILS", "root@example.com")]);
    for (owner, admin) in [("root@example.com", false), ("ops@example.com", true)] {
        let (_, k) = api
            .admin(
                "POST",
                "/admin/api-keys",
                Some(json!({"owner": owner, "name": "k", "admin": admin})),
            )
            .await;
        let (s, _) = api
            .call(
                "GET",
                "/admin/servers",
                Some(k["key"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(s, 200, "{owner} should be an admin");
    }
}

#[tokio::test]
async fn api_key_routes_reject_bad_input() {
    let api = api();
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"owner": "not-an-email", "name": "x"}),
            422,
            "invalid_field",
        ),
        (json!({"owner": "a@b@c", "name": "x"}), 422, "invalid_field"),
        (
            json!({"owner": "a b@c.d", "name": "x"}),
            422,
            "invalid_field",
        ),
        (json!({"owner": "a@b.c", "name": ""}), 422, "invalid_field"),
        (
            json!({"owner": "a@b.c", "name": "x", "expires_at": "tomorrow"}),
            422,
            "invalid_field",
        ),
        (
            json!({"owner": "a@b.c", "name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
            422,
            "invalid_field",
        ),
        (json!({"owner": "a@b.c"}), 400, "invalid_json"),
        (
            json!({"owner": "a@b.c", "name": "x", "role": "admin"}),
            400,
            "invalid_json",
        ),
        (json!("just a string"), 400, "invalid_json"),
    ];
    for (body, status, code) in cases {
        let (s, resp) = api
            .admin("POST", "/admin/api-keys", Some(body.clone()))
            .await;
        assert_error(s, &resp, status, code);
    }
    let (s, b) = api.admin("GET", "/admin/api-keys/key_missing", None).await;
    assert_error(s, &b, 404, "not_found");
    let (_, list) = api.admin("GET", "/admin/api-keys", None).await;
    assert_eq!(
        list["api_keys"].as_array().unwrap().len(),
        0,
        "no bad request created a key"
    );
}

#[tokio::test]
async fn header_secrets_must_be_operator_secrets_when_a_prefix_is_set() {
    let (state, _guard) = local_state(
        &[
            ("MCPGW_SECRET_MCPGW_UP", "v1"),
            ("MCPGW_SECRET_KEYRING", "gateway-internal"),
        ],
        &[("MCPGW_SECRET_PREFIX", "mcpgw/")],
    );
    let api = Api {
        app: admin_api::app(state.clone()),
        _guard,
        state,
    };
    let server = |secret: &str| json!({"name": "s", "url": "http://x/mcp", "auth": {"type": "header", "headers": {"X-Key": secret}}});
    let (s, b) = api
        .admin("POST", "/admin/servers", Some(server("secret://keyring")))
        .await;
    assert_error(s, &b, 422, "secret_out_of_scope");
    assert!(!b.to_string().contains("gateway-internal"));
    let (s, b) = api
        .admin("POST", "/admin/servers", Some(server("secret://mcpgw/up")))
        .await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test]
async fn server_documents_are_bounded_and_secret_values_must_fit_a_header() {
    let (state, _guard) = local_state(
        &[
            ("MCPGW_SECRET_NEWLINE", "Bearer x\n"),
            ("MCPGW_SECRET_OK", "v"),
        ],
        &[],
    );
    let api = Api {
        app: admin_api::app(state.clone()),
        _guard,
        state,
    };
    let long_url = format!("http://x/{}", "a".repeat(3000));
    let (s, b) = api
        .admin(
            "POST",
            "/admin/servers",
            Some(json!({"name": "l", "url": long_url, "auth": {"type": "none"}})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    let many: serde_json::Map<String, Value> = (0..17)
        .map(|i| (format!("X-H{i}"), json!("secret://ok")))
        .collect();
    let (s, b) = api
        .admin("POST", "/admin/servers", Some(json!({"name": "m", "url": "http://x/mcp", "auth": {"type": "header", "headers": many}})))
        .await;
    assert_error(s, &b, 422, "invalid_field");
    let (s, b) = api
        .admin("POST", "/admin/servers", Some(json!({"name": "n", "url": "http://x/mcp", "auth": {"type": "header", "headers": {"Authorization": "secret://newline"}}})))
        .await;
    assert_error(s, &b, 422, "secret_invalid");
    assert!(
        !b.to_string().contains("Bearer x"),
        "the value is never echoed"
    );
    let req = axum::http::Request::get("/admin/servers/%FF")
        .header("authorization", format!("Bearer {TEST_ADMIN_KEY}"))
        .body(Body::empty())
        .unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).expect("JSON body");
    assert_eq!(v["error"]["code"], "invalid_path");
    assert_eq!(api.server_count().await, 0);
}

/// Path ids and names that cannot name anything are 404 before the store sees them: on
/// DynamoDB a sort key over 1 KiB fails the request (a 503), and the id is not echoed back.
#[tokio::test]
async fn path_ids_and_names_are_checked_before_the_store() {
    let (api, store) = api_recording();
    let (alice_id, alice) = api.user_key("alice@example.com").await;
    assert_eq!(
        api.admin("POST", "/admin/servers", Some(everything()))
            .await
            .0,
        201
    );
    let long = "x".repeat(1500);
    let odd = [
        format!("key_{long}"),
        long.clone(),
        "key_".to_owned(),
        "key_a.b".to_owned(),
        "key_a%20b".to_owned(),
        "KEY_abc".to_owned(),
        format!("bootstrap{long}"),
    ];
    for id in &odd {
        for method in ["GET", "DELETE"] {
            for (caller, path) in [
                (TEST_ADMIN_KEY, format!("/admin/api-keys/{id}")),
                (alice.as_str(), format!("/me/api-keys/{id}")),
            ] {
                let (s, b) = api.as_key(caller, method, &path, None).await;
                assert_error(s, &b, 404, "not_found");
                assert!(!b.to_string().contains(&long), "{method} {path}: {b}");
            }
        }
    }
    let odd_names = [
        long.clone(),
        "Everything".to_owned(),
        "a%20b".to_owned(),
        "a__b".to_owned(),
    ];
    for name in &odd_names {
        for method in ["GET", "DELETE"] {
            for path in [
                format!("/admin/servers/{name}"),
                format!("/admin/identity-providers/{name}"),
            ] {
                let (s, b) = api.admin(method, &path, None).await;
                assert_error(s, &b, 404, "not_found");
                assert!(!b.to_string().contains(&long), "{method} {path}: {b}");
            }
        }
        // Replacing one is refused as invalid, also before the store.
        let (s, b) = api
            .admin("PUT", &format!("/admin/servers/{name}"), Some(everything()))
            .await;
        assert!(matches!(s.as_u16(), 404 | 422), "{s}: {b}");
        let (s, b) = api
            .admin(
                "PUT",
                &format!("/admin/identity-providers/{name}"),
                Some(json!({"issuer": "https://idp.example.com"})),
            )
            .await;
        assert!(matches!(s.as_u16(), 404 | 422), "{s}: {b}");
    }
    // An owner filter no key can have lists nothing, without asking either.
    let (s, b) = api
        .admin("GET", &format!("/admin/api-keys?owner={long}"), None)
        .await;
    assert_eq!((s.as_u16(), &b["api_keys"]), (200, &json!([])), "{b}");
    assert!(!store.was_asked_about(&long), "a long id reached the store");
    // The exact odd ids: a real key id (alice's, random) may itself begin with `key_a`.
    for odd in ["key_a.b", "key_a%20b", "key_a b", "KEY_abc"] {
        assert!(
            !store.was_asked_about(odd),
            "an odd id reached the store: {odd}"
        );
    }

    // Well-formed ids and names still do, and unknown ones still name themselves.
    let (s, b) = api
        .admin("GET", "/admin/api-keys/key_unknown-1_x", None)
        .await;
    assert_error(s, &b, 404, "not_found");
    assert!(b.to_string().contains("key_unknown-1_x"), "{b}");
    assert!(store.was_asked_about("key_unknown-1_x"));
    let (s, _) = api.admin("GET", "/admin/api-keys/bootstrap", None).await;
    assert_eq!(s, 404);
    assert!(store.was_asked_about("bootstrap"));
    let (s, b) = api.admin("GET", "/admin/servers/nope", None).await;
    assert_error(s, &b, 404, "not_found");
    assert!(b.to_string().contains("nope"), "{b}");
    // And nothing was deleted on the way.
    let (s, _) = api
        .as_key(&alice, "GET", &format!("/me/api-keys/{alice_id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(api.server_count().await, 1);
}
