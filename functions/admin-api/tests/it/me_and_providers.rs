//! `GET /me` (who the gateway thinks the caller is) and `/admin/identity-providers` (CRUD,
//! and every bad form of it), through the router over a real SQLite store.

use crate::common;

use std::sync::Arc;

use common::{api, api_at, api_with, assert_error, rfc3339};
use mcpgw::clock::FixedClock;
use mcpgw::domain::IdentityProvider;
use mcpgw::store::{ConfigKind, ConfigStoreExt};
use serde_json::{Value, json};

#[tokio::test]
async fn me_describes_each_kind_of_caller() {
    let api = api_with(&[("MCPGW_ADMIN_EMAILS", "root@example.com")]);

    let (s, me) = api.admin("GET", "/me", None).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(
        me,
        json!({
            "user": "bootstrap-admin",
            "email": null,
            "subject": "bootstrap-admin",
            "groups": [],
            "roles": ["user", "admin"],
            "service_account": false,
            "auth": {"type": "bootstrap"},
        })
    );

    let (id, key) = api.user_key("Carol@Example.com").await;
    let (s, me) = api.as_key(&key, "GET", "/me", None).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(
        me,
        json!({
            "user": "carol@example.com",
            "email": "carol@example.com",
            "subject": "carol@example.com",
            "groups": [],
            "roles": ["user"],
            "service_account": false,
            "auth": {"type": "api_key", "key_id": id},
        })
    );

    let (_, root) = api.user_key("root@example.com").await;
    let (_, me) = api.as_key(&root, "GET", "/me", None).await;
    assert_eq!(me["roles"], json!(["user", "admin"]), "{me}");

    let (id, bot) = api
        .issue(json!({"service_account": "build-bot", "name": "ci"}))
        .await;
    let (_, me) = api.as_key(&bot, "GET", "/me", None).await;
    assert_eq!(
        me,
        json!({
            "user": "service:build-bot",
            "email": null,
            "subject": "service:build-bot",
            "groups": [],
            "roles": ["user", "service_account"],
            "service_account": true,
            "auth": {"type": "api_key", "key_id": id},
        })
    );
    assert!(
        !me.to_string().contains(&bot),
        "the credential is never echoed"
    );

    for authz in [None, Some("Bearer mcpgw_unknown"), Some("Token abc")] {
        let (s, b) = api.raw("GET", "/me", authz, None, None).await;
        assert_error(s, &b, 401, "unauthenticated");
    }
}

fn corp() -> Value {
    json!({"name": "corp", "issuer": "https://idp.example.com"})
}

#[tokio::test]
async fn identity_provider_crud_happy_path() {
    let clock = Arc::new(FixedClock::at(1_893_456_000));
    let api = api_at(clock.clone());

    let (s, created) = api
        .admin("POST", "/admin/identity-providers", Some(corp()))
        .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(
        created,
        json!({
            "name": "corp",
            "issuer": "https://idp.example.com",
            "audiences": [],
            "algorithms": ["RS256"],
            "email_claim": "email",
            "groups_claim": "groups",
            "required_scopes": [],
            "admin_groups": [],
            "created_at": rfc3339(1_893_456_000),
            "updated_at": rfc3339(1_893_456_000),
        })
    );
    // Stored as the domain type, under its kind, for the verifier to read.
    let stored: IdentityProvider = api
        .state
        .store
        .get_typed(ConfigKind::IdentityProvider, "corp")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.issuer, "https://idp.example.com");
    assert_eq!(stored.created_at, 1_893_456_000);

    let full = json!({
        "name": "okta",
        "issuer": "https://example.okta.com/oauth2/default",
        "jwks_uri": "https://example.okta.com/oauth2/default/v1/keys",
        "audiences": ["api://mcp"],
        "algorithms": ["RS256", "ES256"],
        "email_claim": "upn",
        "groups_claim": "roles",
        "required_scopes": ["mcp"],
        "admin_groups": ["platform"],
        "allowed_client_ids": ["0oa-mcp-cli", "0oa-desktop"],
    });
    let (s, okta) = api
        .admin("POST", "/admin/identity-providers", Some(full.clone()))
        .await;
    assert_eq!(s, 201, "{okta}");
    for (k, v) in full.as_object().unwrap() {
        assert_eq!(&okta[k], v, "{k}");
    }

    let (s, list) = api.admin("GET", "/admin/identity-providers", None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = list["identity_providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["corp", "okta"]);

    let (s, one) = api
        .admin("GET", "/admin/identity-providers/okta", None)
        .await;
    assert_eq!((s.as_u16(), &one), (200, &okta));

    clock.advance(60);
    let (s, replaced) = api
        .admin(
            "PUT",
            "/admin/identity-providers/corp",
            Some(json!({"issuer": "https://login.example.com", "audiences": ["gw"]})),
        )
        .await;
    assert_eq!(s, 200, "{replaced}");
    assert_eq!(replaced["issuer"], "https://login.example.com");
    assert_eq!(replaced["audiences"], json!(["gw"]));
    assert_eq!(replaced["created_at"], created["created_at"]);
    assert_eq!(replaced["updated_at"], rfc3339(1_893_456_060));
    // The body may repeat the name.
    let (s, _) = api
        .admin(
            "PUT",
            "/admin/identity-providers/corp",
            Some(json!({"name": "corp", "issuer": "https://login.example.com"})),
        )
        .await;
    assert_eq!(s, 200);
    // The old issuer is free again.
    let (s, b) = api
        .admin(
            "POST",
            "/admin/identity-providers",
            Some(json!({"name": "old", "issuer": "https://idp.example.com"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");

    let (s, _) = api
        .admin("DELETE", "/admin/identity-providers/corp", None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = api
        .admin("GET", "/admin/identity-providers/corp", None)
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = api
        .admin("DELETE", "/admin/identity-providers/corp", None)
        .await;
    assert_error(s, &b, 404, "not_found");
}

#[tokio::test]
async fn identity_provider_routes_reject_bad_input_and_change_nothing() {
    let api = api();
    assert_eq!(
        api.admin("POST", "/admin/identity-providers", Some(corp()))
            .await
            .0,
        201
    );
    let snapshot = api.admin("GET", "/admin/identity-providers", None).await.1;

    let cases: Vec<(Value, u16, &str)> = vec![
        (corp(), 409, "already_exists"),
        (
            json!({"name": "other", "issuer": "https://idp.example.com"}),
            409,
            "issuer_taken",
        ),
        (
            json!({"issuer": "https://x.example.com"}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "Bad Name", "issuer": "https://x.example.com"}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "a__b", "issuer": "https://x.example.com"}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "issuer": "not a url"}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "issuer": "ftp://x.example.com"}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "jwks_uri": "/keys"}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "algorithms": ["HS256"]}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "algorithms": ["none"]}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "algorithms": []}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "email_claim": ""}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "audiences": [""]}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": 5, "issuer": "https://x.example.com"}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "allowed_client_ids": [""]}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "allowed_client_ids": ["a b"]}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "allowed_client_ids": ["a", "a"]}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "allowed_client_ids": "cli"}),
            400,
            "invalid_json",
        ),
        (json!({"name": "x"}), 400, "invalid_json"),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "audience": "typo"}),
            400,
            "invalid_json",
        ),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "audiences": "gw"}),
            400,
            "invalid_json",
        ),
        (
            json!({"name": "x", "issuer": "https://x.example.com", "created_at": 1}),
            400,
            "invalid_json",
        ),
        (json!(["corp"]), 400, "invalid_json"),
    ];
    for (body, status, code) in cases {
        let (s, resp) = api
            .admin("POST", "/admin/identity-providers", Some(body.clone()))
            .await;
        assert_error(s, &resp, status, code);
    }
    // Malformed JSON, wrong content type, oversized body.
    let auth = format!("Bearer {}", mcpgw::testing::TEST_ADMIN_KEY);
    let (s, b) = api
        .raw(
            "POST",
            "/admin/identity-providers",
            Some(&auth),
            Some("application/json"),
            Some("{\"name\":"),
        )
        .await;
    assert_error(s, &b, 400, "invalid_json");
    let (s, b) = api
        .raw(
            "POST",
            "/admin/identity-providers",
            Some(&auth),
            Some("text/plain"),
            Some(&corp().to_string()),
        )
        .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let big =
        json!({"name": "big", "issuer": "https://x.example.com", "audiences": ["a".repeat(4096)]});
    let (s, b) = api
        .admin("POST", "/admin/identity-providers", Some(big))
        .await;
    assert_error(s, &b, 413, "payload_too_large");

    // PUT: unknown name, rename, invalid value, another provider's issuer.
    let (s, b) = api
        .admin(
            "PUT",
            "/admin/identity-providers/nope",
            Some(json!({"issuer": "https://y.example.com"})),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = api
        .admin(
            "PUT",
            "/admin/identity-providers/corp",
            Some(json!({"name": "renamed", "issuer": "https://idp.example.com"})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    let (s, b) = api
        .admin(
            "PUT",
            "/admin/identity-providers/corp",
            Some(json!({"issuer": "https://idp.example.com", "algorithms": ["HS512"]})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
    assert_eq!(
        api.admin(
            "POST",
            "/admin/identity-providers",
            Some(json!({"name": "second", "issuer": "https://second.example.com"}))
        )
        .await
        .0,
        201
    );
    let (s, b) = api
        .admin(
            "PUT",
            "/admin/identity-providers/second",
            Some(json!({"issuer": "https://idp.example.com"})),
        )
        .await;
    assert_error(s, &b, 409, "issuer_taken");
    let (s, _) = api
        .admin("DELETE", "/admin/identity-providers/second", None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = api
        .admin("GET", "/admin/identity-providers/%FF", None)
        .await;
    assert_error(s, &b, 400, "invalid_path");

    // Nothing above changed corp or added a provider.
    let (_, now) = api.admin("GET", "/admin/identity-providers", None).await;
    assert_eq!(now, snapshot);
}

#[tokio::test]
async fn identity_providers_need_the_admin_role() {
    let api = api();
    let (_, user) = api.user_key("bob@example.com").await;
    let (s, b) = api
        .as_key(&user, "POST", "/admin/identity-providers", Some(corp()))
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = api
        .call(
            "POST",
            "/admin/identity-providers",
            None,
            Some(&corp().to_string()),
        )
        .await;
    assert_error(s, &b, 401, "unauthenticated");
    let (_, list) = api.admin("GET", "/admin/identity-providers", None).await;
    assert_eq!(list, json!({"identity_providers": []}));
}

/// The provider configured by environment owns its issuer like a stored one: registering
/// another provider for it (or moving one onto it) is a 409, because the environment's
/// provider would win every token of that issuer and the stored one would never be used.
#[tokio::test]
async fn the_environment_providers_issuer_is_taken() {
    let api = api_with(&[
        ("MCPGW_IDP_ISSUER", "https://env-idp.example.com"),
        ("MCPGW_IDP_NAME", "from-env"),
    ]);
    let (s, b) = api
        .admin(
            "POST",
            "/admin/identity-providers",
            Some(json!({"name": "corp", "issuer": "https://env-idp.example.com"})),
        )
        .await;
    assert_error(s, &b, 409, "issuer_taken");
    assert!(b.to_string().contains("from-env"), "{b}");

    let (s, b) = api
        .admin("POST", "/admin/identity-providers", Some(corp()))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api
        .admin(
            "PUT",
            "/admin/identity-providers/corp",
            Some(json!({"issuer": "https://env-idp.example.com"})),
        )
        .await;
    assert_error(s, &b, 409, "issuer_taken");
    let (_, one) = api
        .admin("GET", "/admin/identity-providers/corp", None)
        .await;
    assert_eq!(one["issuer"], corp()["issuer"], "unchanged: {one}");
}

/// `issuer` and `jwks_uri` are https, or http on a loopback host only.
#[tokio::test]
async fn identity_provider_urls_must_be_https_off_loopback() {
    let api = api();
    for (body, status) in [
        (
            json!({"name": "a", "issuer": "http://idp.example.com"}),
            422,
        ),
        (
            json!({"name": "b", "issuer": "https://idp.example.com", "jwks_uri": "http://idp.example.com/jwks"}),
            422,
        ),
        (json!({"name": "c", "issuer": "http://127.0.0.1:4000"}), 201),
        (
            json!({"name": "d", "issuer": "https://d.example.com", "jwks_uri": "http://localhost:4000/jwks"}),
            201,
        ),
    ] {
        let (s, b) = api
            .admin("POST", "/admin/identity-providers", Some(body.clone()))
            .await;
        assert_eq!(s.as_u16(), status, "{body}: {b}");
        if status == 422 {
            assert_error(s, &b, 422, "invalid_field");
        }
    }
}
