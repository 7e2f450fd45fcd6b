//! The records of events outside the request path's decision point: connections made and
//! removed, refreshes that failed, and admin changes. One constructor each, so every place
//! that emits one fills the same fields the same way.

use serde_json::{Value, json};

use super::{Actor, AuditRecord, CredentialUse, Decision, Event, canonical_hash};

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
