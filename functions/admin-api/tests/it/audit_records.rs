//! The admin API's audit records: every document change (who, what, before/after hashes of
//! the canonical JSON, never a secret or key), and disconnects (by the user) and revocations
//! (by an admin) with the credential kind and grant id.

use crate::common;

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use common::*;
use mcpgw::audit::{AuditRecord, Auditor, Event};
use serde_json::json;

/// `api` with its router's auditor recording.
fn recording(api: &mut Api) -> Arc<Mutex<Vec<AuditRecord>>> {
    let (auditor, kept) = Auditor::recording();
    api.state.audit = Arc::new(auditor);
    api.app = admin_api::app(api.state.clone());
    kept
}

fn taken(kept: &Arc<Mutex<Vec<AuditRecord>>>) -> Vec<AuditRecord> {
    std::mem::take(&mut *kept.lock().unwrap())
}

#[tokio::test]
async fn each_document_change_is_one_record_with_before_and_after_hashes() {
    let mut api = api();
    let kept = recording(&mut api);
    let server = json!({"name": "s1", "url": "http://127.0.0.1:9/mcp",
        "auth": {"type": "header", "headers": {"X-Key": "secret://upstream-key"}}});
    let (st, body) = api
        .admin("POST", "/admin/servers", Some(server.clone()))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let mut changed = server.clone();
    changed["description"] = "now described".into();
    let (st, body) = api.admin("PUT", "/admin/servers/s1", Some(changed)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // A refused change is no change.
    let (st, _) = api
        .admin("PUT", "/admin/servers/s1", Some(json!({"url": "nope"})))
        .await;
    assert!(st.is_client_error());
    let (st, _) = api.admin("DELETE", "/admin/servers/s1", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (key_id, key) = api.user_key("alice@example.com").await;

    let recs = taken(&kept);
    let details: Vec<_> = recs.iter().map(|r| r.detail.clone().unwrap()).collect();
    assert_eq!(recs.len(), 4, "{details:#?}");
    assert!(recs.iter().all(|r| r.event == Event::AdminChange));
    let who = recs[0].principal.as_ref().unwrap();
    assert_eq!(who.auth, "bootstrap");
    let actions: Vec<_> = details
        .iter()
        .map(|d| (d["kind"].as_str().unwrap(), d["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("server", "create"),
            ("server", "replace"),
            ("server", "delete"),
            ("api_key", "create")
        ]
    );
    let hash = |v: &serde_json::Value| v.as_str().map(str::len);
    assert_eq!(
        (details[0]["before"].clone(), hash(&details[0]["after"])),
        (json!(null), Some(64))
    );
    assert_eq!(
        details[1]["before"], details[0]["after"],
        "replace starts where create ended"
    );
    assert_ne!(details[1]["before"], details[1]["after"]);
    assert_eq!(details[2]["before"], details[1]["after"]);
    assert_eq!(details[2]["after"], json!(null));
    assert_eq!(details[3]["name"], key_id.as_str());
    let all = serde_json::to_string(&recs).unwrap();
    assert!(
        !all.contains(&key) && !all.contains(&key[6..20]),
        "no key in a record"
    );
    assert!(!all.contains("secret://"), "hashes, not documents");
}

#[tokio::test]
async fn a_disconnect_and_a_revocation_name_the_grant_and_who_did_it() {
    let mut api = api();
    let kept = recording(&mut api);
    let auth = json!({"type": "oauth2", "client_id": "gw-client",
        "authorization_url": "http://127.0.0.1:9/auth", "token_url": "http://127.0.0.1:9/token"});
    let (st, body) = api
        .admin(
            "POST",
            "/admin/servers",
            Some(json!({"name": "docs", "url": "http://127.0.0.1:9/mcp", "auth": auth})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let (st, _) = api
        .admin(
            "POST",
            "/admin/server-groups",
            Some(json!({"name": "g", "servers": ["docs"],
                "members": {"users": ["alice@example.com", "bob@example.com"]}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, alice) = api.user_key("alice@example.com").await;
    for user in ["alice@example.com", "bob@example.com"] {
        grant(&api, user, "docs", |_| {}).await;
    }
    taken(&kept);
    let (st, body) = api
        .as_key(&alice, "DELETE", "/me/connections/docs", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = api
        .admin(
            "DELETE",
            "/admin/users/bob@example.com/connections/docs",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let recs = taken(&kept);
    assert_eq!(recs.len(), 2, "{recs:#?}");
    let (mine, revoked) = (&recs[0], &recs[1]);
    assert_eq!(mine.event, Event::Disconnect);
    assert_eq!(mine.principal.as_ref().unwrap().user, "alice@example.com");
    let cred = mine.credential.as_ref().unwrap();
    assert_eq!(
        (cred.kind.as_str(), cred.grant.as_deref()),
        ("oauth2", Some("alice@example.com/docs"))
    );
    assert_eq!(revoked.event, Event::Revoke);
    assert_eq!(revoked.principal.as_ref().unwrap().auth, "bootstrap");
    assert_eq!(revoked.detail.as_ref().unwrap()["user"], "bob@example.com");
    let all = serde_json::to_string(&recs).unwrap();
    assert!(
        !all.contains("RT-") && !all.contains("AT-"),
        "no token in a record"
    );
    // Nothing left: no record for a disconnect that did not happen.
    let (st, _) = api
        .as_key(&alice, "DELETE", "/me/connections/docs", None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(taken(&kept).is_empty());
}

#[tokio::test]
async fn a_servers_audit_settings_are_checked_and_shown() {
    let api = api();
    let base = json!({"name": "s2", "url": "http://127.0.0.1:9/mcp", "auth": {"type": "none"}});
    for (bad, why) in [
        (
            json!({"capture_arguments": true, "max_bytes": 16385}),
            "max_bytes",
        ),
        (
            json!({"capture_arguments": true, "max_bytes": 0}),
            "max_bytes",
        ),
        (json!({"redact_keys": [""]}), "redact_keys"),
        (json!({"capture_arguments": "yes"}), "expected a boolean"),
        (json!({"capture": true}), "unknown field"),
    ] {
        let mut s = base.clone();
        s["audit"] = bad;
        let (st, body) = api.admin("POST", "/admin/servers", Some(s)).await;
        assert!(st.is_client_error(), "{body}");
        assert!(body.to_string().contains(why), "{why}: {body}");
    }
    assert_eq!(api.server_count().await, 0, "nothing half-saved");
    // BASELINE
    let mut s = base.clone();
    s["audit"] = json!({"capture_arguments": true, "redact_keys": ["password"]});
    let (st, body) = api.admin("POST", "/admin/servers", Some(s)).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["audit"],
        json!({"capture_arguments": true, "max_bytes": 4096, "redact_keys": ["password"]})
    );
}

#[tokio::test]
async fn failed_logins_at_the_api_are_sampled_and_name_nothing_of_the_key() {
    let mut api = api();
    let kept = recording(&mut api);
    let forged = format!("mcpgw_{}", "x".repeat(43));
    for _ in 0..10 {
        let (st, _) = api.as_key(&forged, "GET", "/admin/servers", None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    // No credential at all: not a failed login.
    let (st, _) = api.call("GET", "/me", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let recs = taken(&kept);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0].event, Event::AuthFailed);
    assert_eq!(recs[0].endpoint.as_deref(), Some("admin"));
    assert_eq!(
        recs[0].detail,
        Some(json!({"reason": "invalid_credential", "credential": "api_key", "count": 1}))
    );
    assert!(!serde_json::to_string(&recs).unwrap().contains("xxxxxxxx"));
}

#[tokio::test]
async fn deleting_the_key_you_call_with_is_recorded_with_you_as_the_actor() {
    let mut api = api();
    let kept = recording(&mut api);
    let (key_id, key) = api.user_key("alice@example.com").await;
    taken(&kept);
    let (st, body) = api
        .as_key(&key, "DELETE", &format!("/me/api-keys/{key_id}"), None)
        .await;
    assert!(st.is_success(), "{st} {body}");
    // The key is gone: it no longer authenticates (the change really removed it).
    let (st, _) = api.as_key(&key, "GET", "/me/api-keys", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // (The refused GET above is a failed login's record.)
    let recs: Vec<_> = taken(&kept)
        .into_iter()
        .filter(|r| r.event == Event::AdminChange)
        .collect();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    let d = recs[0].detail.clone().unwrap();
    assert_eq!(
        (d["kind"].as_str(), d["action"].as_str(), d["name"].as_str()),
        (Some("api_key"), Some("delete"), Some(key_id.as_str()))
    );
    let who = recs[0].principal.as_ref().unwrap();
    assert_eq!(
        (who.user.as_str(), who.auth.as_str(), who.key_id.as_deref()),
        ("alice@example.com", "api_key", Some(key_id.as_str()))
    );
}
