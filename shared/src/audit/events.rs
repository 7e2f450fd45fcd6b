//! The records of events outside the request path's decision point: connections made and
//! removed, refreshes that failed, and admin changes. One constructor each, so every place
//! that emits one fills the same fields the same way.

use serde_json::{Value, json};

use axum::http::HeaderMap;

use super::Auditor;
use super::record::capped;
use super::sample::{SampleKey, Sampler};
use super::{Actor, AuditRecord, CredentialUse, Decision, Event, Outcome, canonical_hash};
use crate::identity::AuthError;

/// The actor of an event no authenticated request made: `auth` says what stood in (`browser`:
/// the browser that started a connect flow, bound to it; `system`: the gateway itself, e.g.
/// a scheduled refresh).
pub fn actor_without_request(user: &str, auth: &str) -> Actor {
    Actor {
        user: user.to_owned(),
        auth: auth.to_owned(),
        key_id: None,
        provider: None,
    }
}

/// The credential `owner` holds at `server`, of `kind` (`oauth2`, `per_user_token`): the
/// grant's id is `owner/server`, never its value.
pub fn grant_of(owner: &str, server: &str, kind: &str) -> CredentialUse {
    CredentialUse {
        kind: kind.to_owned(),
        grant: Some(format!("{owner}/{server}")),
    }
}

/// `Connect`, `Disconnect` or `Revoke` of `owner`'s credential of `kind` at `server`, done
/// by `actor` (the owner, or an admin for a revocation).
pub fn connection(
    event: Event,
    actor: Actor,
    owner: &str,
    server: &str,
    kind: &str,
    detail: Option<Value>,
) -> AuditRecord {
    let mut r = AuditRecord::new(event, Decision::Allow);
    let mut d = detail.unwrap_or_else(|| json!({}));
    if let Some(m) = d.as_object_mut() {
        m.insert("user".into(), owner.into());
    }
    r.principal = Some(actor);
    r.endpoint = Some(server.to_owned());
    r.upstream_server = Some(server.to_owned());
    r.credential = Some(grant_of(owner, server, kind));
    r.detail = Some(d);
    r
}

/// A refresh of `owner`'s OAuth grant at `server` that failed: `reason` is the error's code;
/// `needs_reconsent`: the provider refused the refresh token, the user must connect again.
pub fn refresh_failed(
    owner: &str,
    server: &str,
    reason: &str,
    needs_reconsent: bool,
) -> AuditRecord {
    let mut r = AuditRecord::new(Event::RefreshFailed, Decision::Deny);
    r.principal = Some(actor_without_request(owner, "system"));
    r.endpoint = Some(server.to_owned());
    r.upstream_server = Some(server.to_owned());
    r.credential = Some(grant_of(owner, server, "oauth2"));
    r.rule = Some(reason.to_owned());
    r.detail = Some(json!({"reason": reason, "needs_reconsent": needs_reconsent}));
    r
}

/// Records a failed authentication on `endpoint`, sampled (`audit::sample`): the reason and
/// the kind of credential presented (`api_key`, `jwt`, `other`), never any of it. A request
/// without a credential is no failed login (every MCP client's first request is one, to
/// learn where to sign in), nor is a store outage: neither is recorded here. (Given the
/// auditor and sampler, not the state: the grants, which the state assembles, use this module.)
/// `endpoint` is the caller's to name only if registered: callers pass `*` for any other.
pub fn auth_failed(
    (audit, sampler): (&Auditor, &Sampler),
    headers: &HeaderMap,
    endpoint: &str,
    e: &AuthError,
) {
    // The statuses `AuthError::into_challenge` answers with.
    let (reason, status) = match e {
        AuthError::Missing | AuthError::Store(_) => return,
        AuthError::Malformed => ("malformed", 401),
        AuthError::RepeatedHeader => ("repeated_header", 400),
        AuthError::Invalid => ("invalid_credential", 401),
        AuthError::InsufficientScope { .. } => ("insufficient_scope", 403),
    };
    let presented = match crate::identity::bearer_token(headers) {
        Ok(Some(t)) if crate::identity::jwt::looks_like_jwt(t) => "jwt",
        Ok(Some(t)) if t.starts_with(crate::identity::API_KEY_PREFIX) => "api_key",
        _ => "other",
    };
    let key = SampleKey {
        event: Event::AuthFailed,
        endpoint: capped(endpoint),
        who: format!("{reason}/{presented}"),
    };
    let endpoint = key.endpoint.clone();
    sampler.emit(audit, key, || {
        let mut r = AuditRecord::new(Event::AuthFailed, Decision::Deny);
        r.traceparent = traceparent(headers);
        r.endpoint = Some(endpoint);
        r.rule = Some("authentication".into());
        r.outcome = Some(Outcome {
            status: "http_error".into(),
            code: None,
            http_status: Some(status),
        });
        r.detail = Some(json!({"reason": reason, "credential": presented}));
        r
    });
}

/// The request's `traceparent` when it has the W3C form
/// (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero); anything else is not recorded.
pub fn traceparent(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0');
    ok.then(|| v.to_owned())
}

/// What an admin change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Replace,
    Delete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Replace => "replace",
            Self::Delete => "delete",
        }
    }
}

/// An admin's (or console user's) change to the document `name` of `kind` (`server`,
/// `api_key`, `identity_provider`, `server_group`, ...): the SHA-256 of its canonical JSON
/// before and after (null where it did not exist), so a record shows that it changed and
/// which stored version it was, without copying documents (which can name secrets' places)
/// into the trail.
pub fn admin_change(
    actor: Actor,
    kind: &str,
    name: &str,
    action: Action,
    before: Option<&Value>,
    after: Option<&Value>,
) -> AuditRecord {
    let mut r = AuditRecord::new(Event::AdminChange, Decision::Allow);
    r.principal = Some(actor);
    r.detail = Some(json!({
        "kind": kind,
        "name": name,
        "action": action.as_str(),
        "before": before.map(canonical_hash),
        "after": after.map(canonical_hash),
    }));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_w3c_traceparents_are_kept() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("traceparent", HeaderValue::from_str(v).unwrap());
            traceparent(&h)
        };
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(with(good).as_deref(), Some(good));
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "token-secret",
        ] {
            assert_eq!(with(bad), None, "{bad}");
        }
        assert_eq!(traceparent(&HeaderMap::new()), None);
    }

    #[test]
    fn an_admin_change_carries_hashes_not_documents() {
        let before =
            json!({"name": "s", "auth": {"type": "header", "headers": {"K": "secret://x"}}});
        let after =
            json!({"auth": {"headers": {"K": "secret://y"}, "type": "header"}, "name": "s"});
        let actor = actor_without_request("admin@example.com", "console");
        let r = admin_change(
            actor,
            "server",
            "s",
            Action::Replace,
            Some(&before),
            Some(&after),
        );
        let d = r.detail.unwrap();
        assert_eq!(d["action"], "replace");
        assert_eq!(d["before"].as_str().unwrap().len(), 64);
        assert_ne!(d["before"], d["after"]);
        assert!(!d.to_string().contains("secret://"));
        let created = admin_change(
            actor_without_request("a", "console"),
            "server",
            "s",
            Action::Create,
            None,
            Some(&after),
        );
        assert_eq!(created.detail.unwrap()["before"], Value::Null);
    }
}
