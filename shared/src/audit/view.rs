//! What a user is shown of their own records (`GET /me/audit`, the console's "My
//! activity"): the record as an admin sees it, less what tells the user more than their
//! calls' answers did.
//!
//! - A hidden tool's call must read like an unknown tool's (the answer did: the upstream's
//!   own unknown-tool error, see `mcp-proxy`'s `adapt`). Its record says `deny` by
//!   `hidden_tool` for admins; the user sees `allow` without a rule, like the unknown name
//!   the policy lets through. A limited hidden call keeps `limited` and the limit's rule
//!   (an unknown name is limited alike) without the `hidden_tool` flag.
//! - Where the call went upstream (`upstream_server`, `upstream_tool`: a virtual server's
//!   alias mapping, and set for an unknown name but not a hidden one) and the upstream's
//!   time (`upstream_ms`) are left out, as are the chain link, the argument HMAC and the
//!   captured arguments (operator evidence, not the user's).

use serde_json::Value;

use super::{AuditRecord, Decision};

/// The rule of a hidden tool's call (`decision: deny`), and the `detail` flag of one that a
/// rate limit refused (`decision: limited`).
pub const HIDDEN_TOOL: &str = "hidden_tool";

/// The fields a user never sees in their own records.
const ADMIN_ONLY: [&str; 6] = [
    "upstream_server",
    "upstream_tool",
    "upstream_ms",
    "chain",
    "args_hmac",
    "args",
];

/// `record` as its own user is shown it.
pub fn for_user(record: &AuditRecord) -> Value {
    let mut r = record.clone();
    if r.decision == Decision::Deny && r.rule.as_deref() == Some(HIDDEN_TOOL) {
        r.decision = Decision::Allow;
        r.rule = None;
    }
    if let Some(Value::Object(d)) = &mut r.detail {
        d.remove(HIDDEN_TOOL);
        if d.is_empty() {
            r.detail = None;
        }
    }
    let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        for k in ADMIN_ONLY {
            m.remove(k);
        }
    }
    v
}

/// Whether `record`, as its user is shown it, has the decision `decision` (`/me/audit`'s
/// `decision=` filter must select on what the user sees, or filtering by `deny` would pick
/// out the hidden names).
pub fn user_decision_is(record: &AuditRecord, decision: &str) -> bool {
    for_user(record)["decision"] == decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ChainLink, Event, Outcome};
    use serde_json::json;

    fn call(tool: &str) -> AuditRecord {
        let mut r = AuditRecord::new(Event::ToolCall, Decision::Allow);
        r.endpoint = Some("direct".into());
        r.tool = Some(tool.into());
        r.outcome = Some(Outcome {
            status: "rpc_error".into(),
            code: Some(-32602),
            http_status: None,
        });
        r.args_hmac = Some("ab".repeat(32));
        r.upstream_ms = Some(1.5);
        r.chain = Some(ChainLink {
            writer: "w".into(),
            seq: 1,
            prev: String::new(),
            hash: "h".into(),
            kid: None,
        });
        r
    }

    #[test]
    fn a_hidden_tool_reads_like_an_unknown_one() {
        let mut unknown = call("nope");
        unknown.upstream_server = Some("direct".into());
        unknown.upstream_tool = Some("nope".into());
        let mut hidden = call("nope");
        hidden.decision = Decision::Deny;
        hidden.rule = Some(HIDDEN_TOOL.into());
        assert_ne!(
            serde_json::to_value(&hidden).unwrap(),
            serde_json::to_value(&unknown).unwrap()
        );
        assert_eq!(for_user(&hidden), for_user(&unknown));
        let v = for_user(&hidden);
        assert_eq!(v["decision"], "allow");
        for k in ADMIN_ONLY.iter().chain(&["rule", "detail"]) {
            assert!(v.get(k).is_none(), "{k} in {v}");
        }
        assert!(user_decision_is(&hidden, "allow") && !user_decision_is(&hidden, "deny"));
        // Limited: the limit's rule stays, the hidden flag goes.
        let (mut lh, mut lu) = (call("nope"), call("nope"));
        for r in [&mut lh, &mut lu] {
            r.decision = Decision::Limited;
            r.rule = Some("per-user".into());
        }
        lh.detail = Some(json!({ HIDDEN_TOOL: true }));
        lu.upstream_server = Some("direct".into());
        assert_eq!(for_user(&lh), for_user(&lu));
        assert_eq!(for_user(&lh)["rule"], "per-user");
    }

    #[test]
    fn other_denials_and_details_are_kept() {
        let mut r = AuditRecord::new(Event::Denied, Decision::Deny);
        r.rule = Some("endpoint_access".into());
        r.detail = Some(json!({"count": 3}));
        let v = for_user(&r);
        assert_eq!(
            (v["decision"].clone(), v["rule"].clone()),
            (json!("deny"), json!("endpoint_access"))
        );
        assert_eq!(v["detail"]["count"], 3);
    }
}
