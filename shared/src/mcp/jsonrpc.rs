//! JSON-RPC 2.0 messages, parsed just enough to route them: kind, id, method, params. The
//! message itself stays a `serde_json::Value`, so fields the gateway does not know (newer
//! protocol revisions add many) pass through untouched.

use serde_json::{Map, Value, json};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;
/// The gateway's own code for a session it does not (or no longer) recognise. The client's
/// cue, together with HTTP 404, to initialize again.
pub const SESSION_NOT_FOUND: i64 = -32001;
/// The upstream failed (unreachable, timed out, refused the gateway's credential).
pub const UPSTREAM_ERROR: i64 = -32002;
/// 2026-07-28: a routing header disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the requested protocol version is not supported (data lists the supported).
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// What a message is, by the JSON-RPC rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

/// One parsed JSON-RPC message.
#[derive(Debug, Clone)]
pub struct Message {
    pub kind: Kind,
    pub value: Value,
}

/// Why bytes are not one JSON-RPC message, as the error the client gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub code: i64,
    pub message: &'static str,
}

impl Message {
    /// Parses one message. Arrays (batches) are refused: Streamable HTTP from 2025-06-18 on
    /// carries one message per POST, and the gateway inspects every message it forwards.
    pub fn parse(bytes: &[u8]) -> Result<Self, Invalid> {
        let value: Value = serde_json::from_slice(bytes).map_err(|_| Invalid {
            code: PARSE_ERROR,
            message: "Parse error: body is not valid JSON",
        })?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, Invalid> {
        let invalid = |message| Invalid {
            code: INVALID_REQUEST,
            message,
        };
        let Some(obj) = value.as_object() else {
            return Err(invalid(if value.is_array() {
                "Invalid Request: batches are not accepted; send one JSON-RPC message per request"
            } else {
                "Invalid Request: expected a JSON-RPC 2.0 message"
            }));
        };
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(invalid("Invalid Request: expected a JSON-RPC 2.0 message"));
        }
        let id_ok = |id: &Value| id.is_string() || id.is_i64() || id.is_u64();
        let kind = match (obj.get("method"), obj.get("id")) {
            (Some(Value::String(_)), Some(id)) if id_ok(id) => Kind::Request,
            (Some(Value::String(_)), None) => Kind::Notification,
            (None, Some(id))
                if (id_ok(id) || id.is_null())
                    && (obj.contains_key("result") != obj.contains_key("error")) =>
            {
                Kind::Response
            }
            _ => {
                return Err(invalid(
                    "Invalid Request: not a request, notification or response",
                ));
            }
        };
        if let Some(params) = obj.get("params")
            && !(params.is_object() || params.is_array())
        {
            return Err(invalid("Invalid Request: params must be an object"));
        }
        Ok(Self { kind, value })
    }

    pub fn id(&self) -> Option<&Value> {
        self.value.get("id")
    }

    pub fn method(&self) -> Option<&str> {
        self.value.get("method").and_then(Value::as_str)
    }

    pub fn params(&self) -> Option<&Map<String, Value>> {
        self.value.get("params").and_then(Value::as_object)
    }

    /// The params object, created when absent (for adding `_meta`).
    pub fn params_mut(&mut self) -> Option<&mut Map<String, Value>> {
        let obj = self.value.as_object_mut()?;
        obj.entry("params")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
    }

    pub fn is_request(&self, method: &str) -> bool {
        self.kind == Kind::Request && self.method() == Some(method)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // A Value always serializes.
        serde_json::to_vec(&self.value).unwrap_or_default()
    }
}

/// A JSON-RPC error answer.
pub fn error(id: Option<&Value>, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut err = json!({"code": code, "message": message});
    if let Some(data) = data {
        err["data"] = data;
    }
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": err})
}

/// A JSON-RPC result answer.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Result<Kind, i64> {
        Message::parse(s.as_bytes())
            .map(|m| m.kind)
            .map_err(|e| e.code)
    }

    #[test]
    fn kinds_and_refusals() {
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Kind::Request)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":"a","method":"x","params":{}}"#),
            Ok(Kind::Request)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Kind::Notification)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
            Ok(Kind::Response)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"m"}}"#),
            Ok(Kind::Response)
        );
        assert_eq!(kind("{not json"), Err(PARSE_ERROR));
        assert_eq!(
            kind(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            Err(INVALID_REQUEST)
        );
        assert_eq!(kind(r#"{"id":1,"method":"ping"}"#), Err(INVALID_REQUEST));
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            Err(INVALID_REQUEST)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#),
            Err(INVALID_REQUEST)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#),
            Err(INVALID_REQUEST)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":3,"result":{},"error":{}}"#),
            Err(INVALID_REQUEST)
        );
        assert_eq!(kind(r#""2.0""#), Err(INVALID_REQUEST));
    }

    #[test]
    fn answers_carry_the_id() {
        let e = error(
            Some(&json!(7)),
            UPSTREAM_ERROR,
            "down",
            Some(json!({"x":1})),
        );
        assert_eq!(e["id"], 7);
        assert_eq!(e["error"]["code"], UPSTREAM_ERROR);
        assert_eq!(e["error"]["data"]["x"], 1);
        assert_eq!(error(None, PARSE_ERROR, "m", None)["id"], Value::Null);
        assert_eq!(result(&json!("a"), json!({}))["id"], "a");
    }
}
