//! Era rewriting of relayed answers, when the client and the upstream speak different eras:
//! what a result carries per era is decided in [`crate::results`].

use mcpgw::mcp::jsonrpc;
use serde_json::Value;

use crate::results::{self, ClientEra, Ttl};

/// How results are adapted when the client and the upstream speak different eras. Only
/// JSON-RPC results are touched; notifications and errors pass as they are.
#[derive(Debug, Clone, PartialEq)]
pub enum Rewrite {
    /// Session-era answers to a stateless-era client: 2026-07-28 requires `resultType` on
    /// every result and the caching fields on cacheable ones (immediately stale, private:
    /// the gateway cannot vouch for more). The upstream session is shared by the user's
    /// stateless clients, so their requests carry gateway-made ids: `restore_id` maps the
    /// answer's id (the gateway's) back to the client's.
    ToModern {
        cacheable: bool,
        restore_id: Option<(Value, Value)>,
    },
    /// Stateless-era answers to a session-era client: the new fields are dropped, since
    /// some older SDKs validate results (empty ones especially) strictly.
    ToSession,
}

impl Rewrite {
    /// Rewrites one JSON-RPC message (results, the one error code 2026-07-28 renumbered; the
    /// id of a bridged answer too).
    pub fn apply(&self, message: &mut Value) {
        if let Self::ToModern {
            restore_id: Some((gateway, client)),
            ..
        } = self
            && message.get("id") == Some(gateway)
            && (message.get("result").is_some() || message.get("error").is_some())
        {
            message["id"] = client.clone();
        }
        if let Self::ToModern { .. } = self
            && message["error"]["code"] == jsonrpc::RESOURCE_NOT_FOUND
        {
            // 2026-07-28 answers an unknown resource with invalid params; its -32002 is an
            // implementation's own code, which would tell the client something else.
            message["error"]["code"] = jsonrpc::INVALID_PARAMS.into();
        }
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
            return;
        };
        match self {
            // Immediately stale: the gateway cannot vouch for a session-era upstream's result.
            Self::ToModern { cacheable, .. } => {
                results::shape(result, ClientEra::Modern, *cacheable, Ttl::AtMost(0))
            }
            Self::ToSession => results::shape(result, ClientEra::Session, false, Ttl::Set(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_modern() -> Rewrite {
        Rewrite::ToModern {
            cacheable: true,
            restore_id: Some((json!("mcpgw-1"), json!(7))),
        }
    }

    #[test]
    fn session_answers_become_modern_ones() {
        let mut list = json!({"jsonrpc": "2.0", "id": "mcpgw-1", "result": {"tools": []}});
        to_modern().apply(&mut list);
        assert_eq!(
            list,
            json!({"jsonrpc": "2.0", "id": 7, "result": {"tools": [], "resultType": "complete",
                "ttlMs": 0, "cacheScope": "private"}})
        );
        let mut missing = json!({"jsonrpc": "2.0", "id": "mcpgw-1",
            "error": {"code": -32002, "message": "Resource not found"}});
        to_modern().apply(&mut missing);
        assert_eq!(missing["error"]["code"], -32602);
        assert_eq!(missing["id"], 7);
        // Notifications pass as they are.
        let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": 1, "progress": 1}});
        let mut relayed = note.clone();
        to_modern().apply(&mut relayed);
        assert_eq!(relayed, note);
    }

    #[test]
    fn modern_answers_become_session_ones() {
        let mut read = json!({"jsonrpc": "2.0", "id": 1, "result": {"contents": [],
            "resultType": "complete", "ttlMs": 60000, "cacheScope": "public"}});
        Rewrite::ToSession.apply(&mut read);
        assert_eq!(read["result"], json!({"contents": []}));
        let mut invalid = json!({"jsonrpc": "2.0", "id": 1,
            "error": {"code": -32602, "message": "Resource not found"}});
        Rewrite::ToSession.apply(&mut invalid);
        assert_eq!(
            invalid["error"]["code"], -32602,
            "left as the upstream said"
        );
    }
}
