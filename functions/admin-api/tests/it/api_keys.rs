//! API keys as a product, through the router over a real SQLite store: self-service keys
//! (`/me/api-keys`), admin management of anyone's keys (owner filter, service accounts),
//! and the lifecycle every key goes through: used (`last_used_at`), expired, revoked.

use crate::common;

use std::sync::Arc;

use common::{api, api_at, assert_error, rfc3339};
use mcpgw::clock::FixedClock;
use mcpgw::identity::issue_api_key;
use mcpgw::testing::TEST_ADMIN_KEY;
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
/// 2030-01-01T00:00:00Z: far enough from the epoch that no default is mistaken for it.
const T0: i64 = 1_893_456_000;

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["api_keys"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn a_user_issues_lists_reads_and_revokes_their_own_keys() {
    let api = api();
    let (first_id, alice) = api.user_key(ALICE).await;

    let (s, created) = api
        .as_key(
            &alice,
            "POST",
            "/me/api-keys",
            Some(json!({"name": "  laptop  ", "expires_in_days": 30})),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("mcpgw_"), "{created}");
    assert_eq!(created["owner"], ALICE);
    assert_eq!(created["name"], "laptop");
    assert_eq!(created["admin"], false);
    assert_eq!(created["last_used_at"], Value::Null);
    assert!(created.get("key_hash").is_none(), "{created}");
    let created_at = api.state.store.get_api_key(&id).await.unwrap().unwrap();
    assert_eq!(
        created_at.expires_at,
        Some(created_at.created_at + 30 * 86_400)
    );

    // The new key works at once and acts as its owner.
    let (s, me) = api.as_key(&key, "GET", "/me", None).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["user"], ALICE);
    assert_eq!(me["auth"], json!({"type": "api_key", "key_id": id}));

    let (s, list) = api.as_key(&key, "GET", "/me/api-keys", None).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(ids(&list), sorted(vec![first_id.clone(), id.clone()]));
    let text = list.to_string();
    assert!(
        !text.contains("key_hash") && !text.contains(&key) && !text.contains(&alice),
        "never the hash, never a key: {list}"
    );

    let (s, one) = api
        .as_key(&alice, "GET", &format!("/me/api-keys/{id}"), None)
        .await;
    assert_eq!((s.as_u16(), &one["name"]), (200, &json!("laptop")), "{one}");
    assert!(one.get("key").is_none(), "the key is shown once: {one}");

    // Revoked: refused on the very next request (keys are looked up per request).
    let (s, _) = api
        .as_key(&alice, "DELETE", &format!("/me/api-keys/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = api.as_key(&key, "GET", "/me", None).await;
    assert_error(s, &b, 401, "unauthenticated");
    let (s, b) = api
        .as_key(&alice, "GET", &format!("/me/api-keys/{id}"), None)
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = api
        .as_key(&alice, "DELETE", &format!("/me/api-keys/{id}"), None)
        .await;
    assert_error(s, &b, 404, "not_found");
    let (_, list) = api.as_key(&alice, "GET", "/me/api-keys", None).await;
    assert_eq!(ids(&list), vec![first_id.clone()]);

    // A caller may revoke the key they are using; the next request with it is refused.
    let (s, _) = api
        .as_key(&alice, "DELETE", &format!("/me/api-keys/{first_id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = api.as_key(&alice, "GET", "/me/api-keys", None).await;
    assert_error(s, &b, 401, "unauthenticated");
}

#[tokio::test]
async fn one_user_can_neither_see_nor_revoke_another_users_keys() {
    let api = api();
    let (alice_id, alice) = api.user_key(ALICE).await;
    let (bob_id, bob) = api.user_key(BOB).await;
    // An owner differing only in case is the same owner (owners are stored lowercase)...
    let (alice2_id, _) = api.user_key("ALICE@example.com").await;
    // ...while a look-alike is not.
    let (_, _) = api.user_key("alice@example.com.evil").await;

    let (_, list) = api.as_key(&bob, "GET", "/me/api-keys", None).await;
    assert_eq!(ids(&list), vec![bob_id.clone()]);
    let (_, list) = api.as_key(&alice, "GET", "/me/api-keys", None).await;
    assert_eq!(ids(&list), sorted(vec![alice_id.clone(), alice2_id]));

    // Another user's key answers exactly like an unknown one.
    for method in ["GET", "DELETE"] {
        let (s, theirs) = api
            .as_key(&bob, method, &format!("/me/api-keys/{alice_id}"), None)
            .await;
        assert_error(s, &theirs, 404, "not_found");
        let unknown = "key_doesnotexist";
        let (s, missing) = api
            .as_key(&bob, method, &format!("/me/api-keys/{unknown}"), None)
            .await;
        assert_error(s, &missing, 404, "not_found");
        assert_eq!(
            theirs.to_string().replace(&alice_id, "ID"),
            missing.to_string().replace(unknown, "ID"),
            "{method}"
        );
    }
    // Alice's key survived Bob's attempt.
    let (s, me) = api.as_key(&alice, "GET", "/me", None).await;
    assert_eq!((s.as_u16(), &me["user"]), (200, &json!(ALICE)));
    assert!(
        api.state
            .store
            .get_api_key(&alice_id)
            .await
            .unwrap()
            .is_some()
    );

    // The bootstrap admin's own list holds none of them (its /me is about itself), while the
    // admin API sees and revokes anyone's.
    let (_, list) = api.admin("GET", "/me/api-keys", None).await;
    assert_eq!(ids(&list), Vec::<String>::new());
    let (s, _) = api
        .admin("DELETE", &format!("/admin/api-keys/{alice_id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = api.as_key(&alice, "GET", "/me", None).await;
    assert_error(s, &b, 401, "unauthenticated");
}

#[tokio::test]
async fn me_api_key_routes_reject_bad_input_and_change_nothing() {
    let api = api();
    let (_, alice) = api.user_key(ALICE).await;
    let before = api.stored_key_count().await;

    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"name": ""}), 422, "invalid_field"),
        (json!({"name": "   "}), 422, "invalid_field"),
        (json!({"name": "x".repeat(129)}), 422, "invalid_field"),
        (json!({"name": "a\u{7}b"}), 422, "invalid_field"),
        (
            json!({"name": "x", "expires_at": "tomorrow"}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "expires_at": "2099-01-01T00:00:00Z", "expires_in_days": 1}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "expires_in_days": 0}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "expires_in_days": -3}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "expires_in_days": 3651}),
            422,
            "invalid_field",
        ),
        (
            json!({"name": "x", "expires_in_days": 1.5}),
            400,
            "invalid_json",
        ),
        (json!({}), 400, "invalid_json"),
        (json!({"name": "x", "owner": BOB}), 400, "invalid_json"),
        (json!({"name": "x", "admin": true}), 400, "invalid_json"),
        (json!("laptop"), 400, "invalid_json"),
        (json!(null), 400, "invalid_json"),
    ];
    for (body, status, code) in cases {
        let (s, resp) = api
            .as_key(&alice, "POST", "/me/api-keys", Some(body.clone()))
            .await;
        assert_error(s, &resp, status, code);
    }
    let auth = format!("Bearer {alice}");
    let (s, b) = api
        .raw(
            "POST",
            "/me/api-keys",
            Some(&auth),
            Some("application/json"),
            Some("{\"name\":"),
        )
        .await;
    assert_error(s, &b, 400, "invalid_json");
    let (s, b) = api
        .raw(
            "POST",
            "/me/api-keys",
            Some(&auth),
            Some("text/plain"),
            Some(r#"{"name":"x"}"#),
        )
        .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let big = json!({"name": "x".repeat(4096)});
    let (s, b) = api.as_key(&alice, "POST", "/me/api-keys", Some(big)).await;
    assert_error(s, &b, 413, "payload_too_large");
    let (s, b) = api.as_key(&alice, "GET", "/me/api-keys/%FF", None).await;
    assert_error(s, &b, 400, "invalid_path");

    // Unauthenticated: no header, an unknown key, another scheme, an empty bearer.
    let routes = [
        ("GET", "/me", None),
        ("GET", "/me/api-keys", None),
        ("POST", "/me/api-keys", Some(r#"{"name":"x"}"#)),
        ("GET", "/me/api-keys/key_x", None),
        ("DELETE", "/me/api-keys/key_x", None),
    ];
    for (method, path, body) in routes {
        let ct = body.map(|_| "application/json");
        for authz in [
            None,
            Some("Bearer mcpgw_not_a_key"),
            Some("Basic YWxpY2U6cHc="),
            Some("Bearer "),
        ] {
            let (s, b) = api.raw(method, path, authz, ct, body).await;
            assert_error(s, &b, 401, "unauthenticated");
        }
    }
    assert_eq!(api.stored_key_count().await, before, "nothing was created");
}

#[tokio::test]
async fn each_owner_holds_at_most_the_cap_of_active_keys() {
    let api = api();
    let cap = admin_api::MAX_ACTIVE_KEYS_PER_OWNER;
    let (_, alice) = api.user_key(ALICE).await;
    let now = api.state.clock.now();
    // Expired keys do not count against the cap.
    for i in 0..5 {
        let k = issue_api_key(ALICE, &format!("old-{i}"), false, now - 100, Some(now - 1));
        api.state.store.create_api_key(&k.record).await.unwrap();
    }
    // The admin-issued key above is one of the cap; fill up the rest.
    for i in 1..cap {
        let k = issue_api_key(ALICE, &format!("k-{i}"), false, now, None);
        api.state.store.create_api_key(&k.record).await.unwrap();
    }
    let before = api.stored_key_count().await;

    let (s, b) = api
        .as_key(
            &alice,
            "POST",
            "/me/api-keys",
            Some(json!({"name": "one more"})),
        )
        .await;
    assert_error(s, &b, 409, "key_limit_reached");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&cap.to_string()),
        "{b}"
    );
    // The admin API keeps the same cap for the same owner.
    let (s, b) = api
        .admin(
            "POST",
            "/admin/api-keys",
            Some(json!({"owner": ALICE, "name": "one more"})),
        )
        .await;
    assert_error(s, &b, 409, "key_limit_reached");
    assert_eq!(api.stored_key_count().await, before);

    // Others are not affected; revoking one of hers makes room again.
    let (_, bob) = api.user_key(BOB).await;
    let (s, _) = api
        .as_key(&bob, "POST", "/me/api-keys", Some(json!({"name": "b"})))
        .await;
    assert_eq!(s, 201);
    let (_, list) = api.as_key(&alice, "GET", "/me/api-keys", None).await;
    let victim = list["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "k-1")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = api
        .as_key(&alice, "DELETE", &format!("/me/api-keys/{victim}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = api
        .as_key(
            &alice,
            "POST",
            "/me/api-keys",
            Some(json!({"name": "one more"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test]
async fn expired_keys_are_refused_and_stay_listed() {
    let clock = Arc::new(FixedClock::at(T0));
    let api = api_at(clock.clone());
    let (_, alice) = api.user_key(ALICE).await;
    let (s, a_day) = api
        .as_key(
            &alice,
            "POST",
            "/me/api-keys",
            Some(json!({"name": "day", "expires_in_days": 1})),
        )
        .await;
    assert_eq!(s, 201, "{a_day}");
    assert_eq!(a_day["expires_at"], rfc3339(T0 + 86_400));
    let (s, an_hour) = api
        .as_key(
            &alice,
            "POST",
            "/me/api-keys",
            Some(json!({"name": "hour", "expires_at": rfc3339(T0 + 3_600)})),
        )
        .await;
    assert_eq!(s, 201, "{an_hour}");
    let (day, hour) = (
        a_day["key"].as_str().unwrap(),
        an_hour["key"].as_str().unwrap(),
    );

    clock.advance(3_599);
    assert_eq!(api.as_key(hour, "GET", "/me", None).await.0, 200);
    clock.advance(1);
    let (s, b) = api.as_key(hour, "GET", "/me", None).await;
    assert_error(s, &b, 401, "unauthenticated");
    assert_eq!(api.as_key(day, "GET", "/me", None).await.0, 200);
    clock.advance(86_400 - 3_600);
    let (s, b) = api.as_key(day, "GET", "/me/api-keys", None).await;
    assert_error(s, &b, 401, "unauthenticated");

    // Still listed (with their expiry) so their owner can see why and clean up.
    let (_, list) = api.as_key(&alice, "GET", "/me/api-keys", None).await;
    let expiries: Vec<&Value> = list["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["expires_at"])
        .filter(|e| !e.is_null())
        .collect();
    assert_eq!(expiries.len(), 2, "{list}");
    // The admin API refuses an expiry in the past, against the same clock.
    let (s, b) = api
        .admin(
            "POST",
            "/admin/api-keys",
            Some(json!({"owner": BOB, "name": "n", "expires_at": rfc3339(T0)})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_field");
}

#[tokio::test]
async fn last_used_at_is_recorded_off_the_request_path_about_once_a_minute() {
    let clock = Arc::new(FixedClock::at(T0));
    let api = api_at(clock.clone());
    let (id, alice) = api.user_key(ALICE).await;
    let one = format!("/me/api-keys/{id}");
    let admin_one = format!("/admin/api-keys/{id}");
    let used = |v: &Value| v["last_used_at"].clone();

    // Issued, never used: null. (Reading it as the admin uses the bootstrap key, not hers.)
    let (_, k) = api.admin("GET", &admin_one, None).await;
    assert_eq!(k["last_used_at"], Value::Null, "{k}");

    clock.advance(5);
    // This request is itself a use of the key.
    api.eventually(&alice, &one, used, json!(rfc3339(T0 + 5)))
        .await;
    let (_, k) = api.admin("GET", &admin_one, None).await;
    assert_eq!(k["last_used_at"], rfc3339(T0 + 5));
    let (_, list) = api.admin("GET", "/admin/api-keys", None).await;
    assert_eq!(list["api_keys"][0]["last_used_at"], rfc3339(T0 + 5));

    // Within the minute: further uses are not written.
    clock.advance(59);
    for _ in 0..3 {
        assert_eq!(api.as_key(&alice, "GET", "/me", None).await.0, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let stored = api.state.store.get_api_key(&id).await.unwrap().unwrap();
    assert_eq!(stored.last_used_at, Some(T0 + 5));

    // A minute after the last write, the next use is written.
    clock.advance(1);
    api.eventually(&alice, &one, used, json!(rfc3339(T0 + 65)))
        .await;

    // The bootstrap key in config is not a stored key: nothing to record, nothing breaks.
    let (s, _) = api.as_key(TEST_ADMIN_KEY, "GET", "/me", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn admins_manage_anyones_keys_by_owner_and_issue_service_account_keys() {
    let api = api();
    let (alice_id, _) = api.user_key(ALICE).await;
    let (bob_id, _) = api.user_key(BOB).await;

    let (s, ci) = api
        .admin(
            "POST",
            "/admin/api-keys",
            Some(json!({"service_account": "build-bot", "name": "ci", "expires_in_days": 90})),
        )
        .await;
    assert_eq!(s, 201, "{ci}");
    assert_eq!(ci["owner"], "service:build-bot");
    assert!(ci["expires_at"].is_string(), "{ci}");
    let ci_id = ci["id"].as_str().unwrap().to_owned();
    let ci_key = ci["key"].as_str().unwrap().to_owned();

    // The service account's key authenticates as the service account, not as an admin.
    let (s, me) = api.as_key(&ci_key, "GET", "/me", None).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["user"], "service:build-bot");
    assert_eq!(me["service_account"], true);
    assert_eq!(me["email"], Value::Null);
    let (s, b) = api.as_key(&ci_key, "GET", "/admin/api-keys", None).await;
    assert_error(s, &b, 403, "forbidden");
    // It may issue keys for itself (owned by the same service account, never admin).
    let (s, own) = api
        .as_key(
            &ci_key,
            "POST",
            "/me/api-keys",
            Some(json!({"name": "rotated"})),
        )
        .await;
    assert_eq!(s, 201, "{own}");
    assert_eq!(
        (&own["owner"], &own["admin"]),
        (&json!("service:build-bot"), &json!(false))
    );
    let own_id = own["id"].as_str().unwrap().to_owned();

    // Filtering by owner.
    let (s, list) = api.admin("GET", "/admin/api-keys", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        ids(&list),
        sorted(vec![
            alice_id.clone(),
            bob_id.clone(),
            ci_id.clone(),
            own_id.clone()
        ])
    );
    for (query, want) in [
        ("owner=alice@example.com", vec![alice_id.clone()]),
        ("owner=ALICE%40Example.com", vec![alice_id.clone()]),
        (
            "owner=service:build-bot",
            sorted(vec![ci_id.clone(), own_id.clone()]),
        ),
        (
            "owner=service%3Abuild-bot",
            sorted(vec![ci_id.clone(), own_id]),
        ),
        ("owner=nobody@example.com", vec![]),
        ("owner=", vec![]),
    ] {
        let (s, list) = api
            .admin("GET", &format!("/admin/api-keys?{query}"), None)
            .await;
        assert_eq!(s, 200, "{query}: {list}");
        assert_eq!(ids(&list), want, "{query}");
        assert!(!list.to_string().contains("key_hash"));
    }
    for query in [
        "ownr=alice@example.com",
        "owner=a@b.c&owner=d@e.f",
        "limit=5",
    ] {
        let (s, b) = api
            .admin("GET", &format!("/admin/api-keys?{query}"), None)
            .await;
        assert_error(s, &b, 400, "invalid_query");
    }

    // Admins revoke anyone's key; it is refused on its next request.
    let (s, _) = api
        .admin("DELETE", &format!("/admin/api-keys/{ci_id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = api.as_key(&ci_key, "GET", "/me", None).await;
    assert_error(s, &b, 401, "unauthenticated");
}

#[tokio::test]
async fn admin_key_creation_rejects_bad_owners_and_expiries() {
    let api = api();
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"name": "x"}), 422, "invalid_field"),
        (
            json!({"owner": ALICE, "service_account": "bot", "name": "x"}),
            422,
            "invalid_field",
        ),
        (
            json!({"service_account": "Build Bot", "name": "x"}),
            422,
            "invalid_field",
        ),
        (
            json!({"service_account": "a__b", "name": "x"}),
            422,
            "invalid_field",
        ),
        (
            json!({"service_account": "", "name": "x"}),
            422,
            "invalid_field",
        ),
        (
            json!({"service_account": "x".repeat(65), "name": "x"}),
            422,
            "invalid_field",
        ),
        (
            json!({"owner": "service:bot", "name": "x"}),
            422,
            "invalid_field",
        ),
        (
            json!({"service_account": "bot", "name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
            422,
            "invalid_field",
        ),
        (
            json!({"owner": ALICE, "name": "x", "expires_in_days": 0}),
            422,
            "invalid_field",
        ),
        (
            json!({"owner": ALICE, "name": "x", "expires_in_days": 2, "expires_at": "2099-01-01T00:00:00Z"}),
            422,
            "invalid_field",
        ),
        (
            json!({"service_account": 7, "name": "x"}),
            400,
            "invalid_json",
        ),
    ];
    for (body, status, code) in cases {
        let (s, resp) = api
            .admin("POST", "/admin/api-keys", Some(body.clone()))
            .await;
        assert_error(s, &resp, status, code);
    }
    assert_eq!(api.stored_key_count().await, 0);
}

#[tokio::test]
async fn the_bootstrap_admin_issues_admin_keys_for_itself() {
    let api = api();
    let (s, k) = api
        .admin("POST", "/me/api-keys", Some(json!({"name": "ops laptop"})))
        .await;
    assert_eq!(s, 201, "{k}");
    assert_eq!(
        (&k["owner"], &k["admin"]),
        (&json!("bootstrap-admin"), &json!(true))
    );
    let key = k["key"].as_str().unwrap();
    let (s, _) = api.as_key(key, "GET", "/admin/servers", None).await;
    assert_eq!(s, 200, "the bootstrap admin's own key is an admin key");
    let (_, me) = api.as_key(key, "GET", "/me", None).await;
    assert_eq!(me["user"], "bootstrap-admin");
    assert_eq!(me["roles"], json!(["user", "admin"]));
    let (_, list) = api.admin("GET", "/me/api-keys", None).await;
    assert_eq!(ids(&list), vec![k["id"].as_str().unwrap().to_owned()]);

    // A user who is an admin only through MCPGW_ADMIN_EMAILS gets a plain key: the role
    // follows the owner's email, not the key.
    let admins = common::api_with(&[("MCPGW_ADMIN_EMAILS", "root@example.com")]);
    let (_, root) = admins.user_key("root@example.com").await;
    let (s, k) = admins
        .as_key(&root, "POST", "/me/api-keys", Some(json!({"name": "n"})))
        .await;
    assert_eq!((s.as_u16(), &k["admin"]), (201, &json!(false)), "{k}");
    let (s, _) = admins
        .as_key(k["key"].as_str().unwrap(), "GET", "/admin/servers", None)
        .await;
    assert_eq!(s, 200, "still an admin, by email");
}
