//! `/admin/rate-limits`: the CRUD, the 422s of bad documents (nothing written), the 403 of
//! non-admins, and that a write is in force in this process at once.

use crate::common;

use common::*;
use mcpgw::limits::{CallKey, Verdict};
use mcpgw::store::ConfigKind;
use serde_json::{Value, json};

fn rule(name: &str) -> Value {
    json!({"name": name, "mode": "enforce", "per": "user",
        "match": {"tools": ["search"], "methods": ["tools/call"]},
        "limits": [{"count": 1, "window": "1m"}]})
}

async fn stored(api: &Api) -> usize {
    api.state
        .store
        .list_configs(ConfigKind::RateLimit)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn create_read_list_replace_delete() {
    let api = api();
    let (s, b) = api
        .admin("POST", "/admin/rate-limits", Some(rule("r1")))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["on_store_error"], "allow", "the default is explicit");
    assert!(b["created_at"].as_str().unwrap().ends_with('Z'));
    let (s, b) = api
        .admin("POST", "/admin/rate-limits", Some(rule("r1")))
        .await;
    assert_error(s, &b, 409, "already_exists");
    let (s, b) = api.admin("GET", "/admin/rate-limits", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["rate_limits"][0]["name"], "r1");
    let mut changed = rule("r1");
    changed["mode"] = "audit".into();
    let (s, b) = api
        .admin("PUT", "/admin/rate-limits/r1", Some(changed))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = api.admin("GET", "/admin/rate-limits/r1", None).await;
    assert_eq!((s.as_u16(), b["mode"].clone()), (200, json!("audit")));
    let (s, _) = api.admin("DELETE", "/admin/rate-limits/r1", None).await;
    assert_eq!(s, 204);
    let (s, b) = api.admin("GET", "/admin/rate-limits/r1", None).await;
    assert_error(s, &b, 404, "not_found");
}

#[tokio::test]
async fn bad_documents_are_422_and_write_nothing() {
    let api = api();
    let with = |k: &str, v: Value| {
        let mut d = rule("bad");
        d[k] = v;
        d
    };
    let cases = [
        (
            "window too short",
            with("limits", json!([{"count": 1, "window": "500ms"}])),
        ),
        (
            "window too long",
            with("limits", json!([{"count": 1, "window": "31d"}])),
        ),
        (
            "window without unit",
            with("limits", json!([{"count": 1, "window": "60"}])),
        ),
        (
            "count zero",
            with("limits", json!([{"count": 0, "window": "1m"}])),
        ),
        (
            "burst over count",
            with("limits", json!([{"count": 2, "window": "1m", "burst": 3}])),
        ),
        (
            "burst on a quota",
            with("limits", json!([{"count": 2, "window": "1d", "burst": 1}])),
        ),
        (
            "more than 1/µs",
            with("limits", json!([{"count": 2_000_000, "window": "1s"}])),
        ),
        (
            "a rate whole-µs pacing cannot hold",
            with("limits", json!([{"count": 600_000, "window": "1s"}])),
        ),
        ("no limits", with("limits", json!([]))),
        ("bad mode", with("mode", "block".into())),
        ("bad per", with("per", "tenant".into())),
        ("bad on_store_error", with("on_store_error", "maybe".into())),
        (
            "uncounted method",
            with("match", json!({"methods": ["tools/list"]})),
        ),
        (
            "bad tool pattern",
            with("match", json!({"tools": ["two words"]})),
        ),
        (
            "duplicate tool",
            with("match", json!({"tools": ["a", "a"]})),
        ),
        ("bad name", with("name", "Not OK".into())),
        ("unknown field", with("extra", true.into())),
        ("timestamps are the gateway's", with("created_at", 1.into())),
    ];
    for (what, doc) in cases {
        let (s, b) = api.admin("POST", "/admin/rate-limits", Some(doc)).await;
        assert_eq!(s, 422, "{what}: {b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let mut unknown = rule("bad");
    unknown["match"]["endpoints"] = json!(["nowhere"]);
    let (s, b) = api.admin("POST", "/admin/rate-limits", Some(unknown)).await;
    assert_error(s, &b, 422, "unknown_server");
    assert_eq!(stored(&api).await, 0, "nothing was written");
    // A replace with a bad document leaves the stored one as it was.
    api.admin("POST", "/admin/rate-limits", Some(rule("ok")))
        .await;
    let mut bad = rule("ok");
    bad["limits"] = json!([{"count": 1, "window": "1y"}]);
    let (s, _) = api.admin("PUT", "/admin/rate-limits/ok", Some(bad)).await;
    assert_eq!(s, 422);
    let (_, b) = api.admin("GET", "/admin/rate-limits/ok", None).await;
    assert_eq!(b["limits"], json!([{"count": 1, "window": "1m"}]));
}

#[tokio::test]
async fn non_admins_get_403_and_change_nothing() {
    let api = api();
    api.admin("POST", "/admin/rate-limits", Some(rule("r1")))
        .await;
    let (_, key) = api.user_key("alice@example.com").await;
    for (method, path, body) in [
        ("GET", "/admin/rate-limits", None),
        ("POST", "/admin/rate-limits", Some(rule("r2"))),
        ("GET", "/admin/rate-limits/r1", None),
        ("PUT", "/admin/rate-limits/r1", Some(rule("r1"))),
        ("DELETE", "/admin/rate-limits/r1", None),
    ] {
        let (s, b) = api.as_key(&key, method, path, body).await;
        assert_error(s, &b, 403, "forbidden");
        let (s, _) = api.call(method, path, None, None).await;
        assert_eq!(s, 401, "{method} {path} without a credential");
    }
    assert_eq!(stored(&api).await, 1);
}

#[tokio::test]
async fn a_write_is_in_force_in_this_process_at_once() {
    let api = api();
    let p = mcpgw::identity::Principal::bootstrap();
    let call = CallKey {
        principal: &p,
        endpoint: "any",
        method: "tools/call",
        name: "search",
    };
    // The rule cache has loaded (no rules) before the rule exists.
    assert!(matches!(
        api.state.limits.check(&call).await,
        Verdict::Pass { .. }
    ));
    api.admin("POST", "/admin/rate-limits", Some(rule("one")))
        .await;
    assert!(matches!(
        api.state.limits.check(&call).await,
        Verdict::Pass { .. }
    ));
    assert!(matches!(
        api.state.limits.check(&call).await,
        Verdict::Limited { ref rule, .. } if rule == "one"
    ));
    let (s, _) = api.admin("DELETE", "/admin/rate-limits/one", None).await;
    assert_eq!(s, 204);
    assert!(matches!(
        api.state.limits.check(&call).await,
        Verdict::Pass { would_limit: None }
    ));
}
