//! Era rewriting of relayed answers, when the client and the upstream speak different eras:
//! what a result carries per era is decided in [`crate::results`].

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
    /// Rewrites one JSON-RPC message (results only; the id of a bridged answer too).
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
