//! JSON-RPC 2.0 messages, parsed just enough to route them: kind, id, method, params. The
//! message itself stays a `serde_json::Value`, so fields the gateway does not know (newer
//! protocol revisions add many) pass through untouched.
//!
//! A client's message is read with [`parse_client_message`]: strictly (no member name twice
//! in any object, no near-spelling of a member the gateway reads), and what is forwarded is
//! the parsed message re-serialized ([`Message::to_bytes`]), so the upstream reads exactly
//! what the gateway authorized, whatever its own JSON parser does with odd input.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use super::envelope;
use super::strict_json::{self, Numbers};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
/// The gateway's own code for a session it does not (or no longer) recognise. The client's
/// cue, together with HTTP 404, to initialize again.
pub const SESSION_NOT_FOUND: i64 = -32001;
/// The upstream failed (unreachable, timed out, refused the gateway's credential, answered
/// something that is not an answer to the request); `data.reason` says which. In the range
/// MCP leaves to implementations (2026-07-28 schema: `-32000` to `-32019` are
/// implementation-defined and never allocated by the specification, `-32020` to `-32099`
/// are the specification's own), so it cannot collide with an MCP code in any era; it was
/// `-32002`, MCP's "resource not found" up to 2025-11-25.
pub const UPSTREAM_ERROR: i64 = -32010;
/// MCP up to 2025-11-25: the resource a `resources/read` names does not exist (what a
/// virtual server answers when none of its resource servers can read the URI).
pub const RESOURCE_NOT_FOUND: i64 = -32002;
/// MCP 2025-11-25: the request needs the user to open a URL first (URL-mode elicitation).
pub const URL_ELICITATION_REQUIRED: i64 = -32042;
/// 2026-07-28: a routing header disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the requested protocol version is not supported (data lists the supported).
pub const UNSUPPORTED_VERSION: i64 = -32022;
/// The gateway's own: a rate limit refused the request and no result fits it
/// (`resources/read`, `prompts/get`; HTTP 429 with `Retry-After` and `data.retryAfterSeconds`;
/// no rule named: the audit record keeps it). A limited `tools/call` is a tool result with `isError` instead.
pub const RATE_LIMITED: i64 = -32012;

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
    /// Number texts the value alone would write differently (kept from the client's text).
    numbers: Numbers,
}

/// Why bytes are not one JSON-RPC message, as the error the client gets (HTTP 400).
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub code: i64,
    pub message: Cow<'static, str>,
    /// The message's id when it can be read without doubt (it is a JSON-RPC id, given once,
    /// with no near-spelling beside it); the answer carries it, else null.
    pub id: Option<Value>,
}

impl Invalid {
    fn request(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code: INVALID_REQUEST,
            message: message.into(),
            id: None,
        }
    }
}

/// A client's POST body.
#[derive(Debug, Clone)]
pub enum ClientPayload {
    One(Message),
    /// A JSON-RPC batch, every item a valid message (only a 2025-03-26 session accepts one;
    /// the proxy decides).
    Batch(Vec<Message>),
}

impl ClientPayload {
    pub fn messages(&self) -> &[Message] {
        match self {
            Self::One(m) => std::slice::from_ref(m),
            Self::Batch(items) => items,
        }
    }

    pub fn messages_mut(&mut self) -> &mut [Message] {
        match self {
            Self::One(m) => std::slice::from_mut(m),
            Self::Batch(items) => items,
        }
    }
}

/// Members whose meaning the gateway reads (routing, policy, sessions, the envelope), by the
/// object they are in. A member spelled like one of these up to case (`Method`, `NAME`,
/// `ıd` with a dotless i) is refused: a case-insensitive upstream parser would read it as
/// the member the gateway did not judge.
const TOP_MEMBERS: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];
const PARAMS_MEMBERS: [&str; 9] = [
    "name",
    "uri",
    "arguments",
    "_meta",
    "protocolVersion",
    "capabilities",
    "clientInfo",
    "requestId",
    "cursor",
];
const META_MEMBERS: [&str; 4] = [
    envelope::META_PROTOCOL_VERSION,
    envelope::META_CLIENT_CAPABILITIES,
    envelope::META_CLIENT_INFO,
    "progressToken",
];

/// Whether `key` is `member` spelled differently only by case (Unicode case mapping both
/// ways, so `K` KELVIN SIGN and `ſ` LONG S count).
fn near_spelling(key: &str, member: &str) -> bool {
    if key == member {
        return false;
    }
    if key.is_ascii() {
        return key.eq_ignore_ascii_case(member);
    }
    key.to_lowercase() == member.to_lowercase() || key.to_uppercase() == member.to_uppercase()
}

/// The first member of `obj` that is a near-spelling of one of `members`.
fn misspelled<'a>(obj: &'a Map<String, Value>, members: &[&str]) -> Option<&'a str> {
    obj.keys()
        .find(|k| members.iter().any(|m| near_spelling(k, m)))
        .map(String::as_str)
}

/// Refuses near-spellings of the members the gateway reads, at the top, in `params` and in
/// `params._meta`.
fn check_spelling(value: &Value) -> Result<(), Invalid> {
    let refuse = |key: &str, at: &str| {
        Err(Invalid::request(format!(
            "Invalid Request: member {} {at} differs from a member the gateway reads only by case",
            Value::from(key)
        )))
    };
    let Some(top) = value.as_object() else {
        return Ok(());
    };
    if let Some(k) = misspelled(top, &TOP_MEMBERS) {
        return refuse(k, "at the top level");
    }
    let Some(params) = top.get("params").and_then(Value::as_object) else {
        return Ok(());
    };
    if let Some(k) = misspelled(params, &PARAMS_MEMBERS) {
        return refuse(k, "in params");
    }
    if let Some(meta) = params.get("_meta").and_then(Value::as_object)
        && let Some(k) = misspelled(meta, &META_MEMBERS)
    {
        return refuse(k, "in params._meta");
    }
    Ok(())
}

fn is_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// The id of a single message, when there is no doubt which it is.
fn unambiguous_id(value: &Value, root_duplicates: &[String]) -> Option<Value> {
    let top = value.as_object()?;
    let doubtful =
        root_duplicates.iter().any(|k| k == "id") || top.keys().any(|k| near_spelling(k, "id"));
    if doubtful {
        return None;
    }
    top.get("id").filter(|id| is_id(id)).cloned()
}

/// Reads a client's POST body: one JSON-RPC message or a batch. Refused, with the error the
/// client gets: text that is not JSON (-32700); a member name twice in any object at any
/// depth, a near-spelling of a member the gateway reads, or anything that is not a JSON-RPC
/// 2.0 message (-32600). Never panics, whatever the bytes (fuzzed).
pub fn parse_client_message(bytes: &[u8]) -> Result<ClientPayload, Invalid> {
    let doc = strict_json::parse(bytes).map_err(|_| Invalid {
        code: PARSE_ERROR,
        message: "Parse error: body is not valid JSON".into(),
        id: None,
    })?;
    let refuse = |e: Invalid, value: &Value| Invalid {
        id: unambiguous_id(value, &doc.root_duplicates),
        ..e
    };
    if let Some(dup) = &doc.duplicate {
        let at = if dup.object.is_empty() {
            "the top-level object".to_owned()
        } else {
            format!("the object at {}", Value::from(dup.object.as_str()))
        };
        let e = Invalid::request(format!(
            "Invalid Request: member {} appears twice in {at}",
            Value::from(dup.key.as_str())
        ));
        return Err(refuse(e, &doc.value));
    }
    match doc.value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(Invalid::request(
                    "Invalid Request: a batch must be a non-empty array of JSON-RPC messages",
                ));
            }
            let mut messages = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                check_spelling(&item)?;
                let mut msg = Message::from_value(item).map_err(|_| {
                    Invalid::request(
                        "Invalid Request: a batch must be a non-empty array of JSON-RPC messages",
                    )
                })?;
                msg.numbers = doc.numbers.of_item(i);
                messages.push(msg);
            }
            Ok(ClientPayload::Batch(messages))
        }
        value => {
            let kind = match check_spelling(&value).and_then(|()| kind_of(&value)) {
                Ok(kind) => kind,
                Err(e) => return Err(refuse(e, &value)),
            };
            Ok(ClientPayload::One(Message {
                kind,
                value,
                numbers: doc.numbers,
            }))
        }
    }
}

/// What a value is as a JSON-RPC message, or why it is none.
fn kind_of(value: &Value) -> Result<Kind, Invalid> {
    let Some(obj) = value.as_object() else {
        return Err(Invalid::request(if value.is_array() {
            "Invalid Request: batches are not accepted; send one JSON-RPC message per request"
        } else {
            "Invalid Request: expected a JSON-RPC 2.0 message"
        }));
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Invalid::request(
            "Invalid Request: expected a JSON-RPC 2.0 message",
        ));
    }
    // A request carrying a result (or error) reads as a response to some parsers.
    let answer_members = obj.contains_key("result") || obj.contains_key("error");
    let kind = match (obj.get("method"), obj.get("id")) {
        (Some(Value::String(_)), _) if answer_members => {
            return Err(Invalid::request(
                "Invalid Request: a request or notification carries no result or error",
            ));
        }
        (Some(Value::String(_)), Some(id)) if is_id(id) => Kind::Request,
        (Some(Value::String(_)), None) => Kind::Notification,
        (None, Some(id)) if (is_id(id) || id.is_null()) && answer_members => {
            if obj.contains_key("result") == obj.contains_key("error") {
                return Err(Invalid::request(
                    "Invalid Request: not a request, notification or response",
                ));
            }
            Kind::Response
        }
        _ => {
            return Err(Invalid::request(
                "Invalid Request: not a request, notification or response",
            ));
        }
    };
    if let Some(params) = obj.get("params")
        && !(params.is_object() || params.is_array())
    {
        return Err(Invalid::request(
            "Invalid Request: params must be an object",
        ));
    }
    Ok(kind)
}

impl Message {
    /// Parses one message, strictly (see [`parse_client_message`]); a batch is refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, Invalid> {
        match parse_client_message(bytes)? {
            ClientPayload::One(m) => Ok(m),
            ClientPayload::Batch(_) => Err(Invalid::request(
                "Invalid Request: batches are not accepted; send one JSON-RPC message per request",
            )),
        }
    }

    /// A message from a value (the gateway's own messages; client bytes go through
    /// [`parse_client_message`]).
    pub fn from_value(value: Value) -> Result<Self, Invalid> {
        Ok(Self {
            kind: kind_of(&value)?,
            value,
            numbers: Numbers::default(),
        })
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

    /// The message as it is now, serialized: what goes upstream. Numbers the client wrote in
    /// a form `serde_json` would not (past 64 bits, `1E5`) keep the client's text.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.numbers.to_vec(&self.value)
    }
}

/// A batch serialized (each message as [`Message::to_bytes`] writes it).
pub fn batch_to_bytes(messages: &[Message]) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&m.to_bytes());
    }
    out.push(b']');
    out
}

/// What one message from an upstream is, read without building it (answers can be large).
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamMessage {
    /// A server-to-client request or a notification: passed on to the client.
    RequestOrNotification,
    /// A response, with its id (`Value::Null` when the server could not read the request's)
    /// and how it ended (read in the same pass, for the audit record).
    Response { id: Value, ending: Ending },
}

/// How a response ended, as far as the reading that judges it already sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A result; `is_error`: a tool result with `isError: true`.
    Result { is_error: bool },
    /// An error, with its code when it is an integer.
    Error { code: Option<i64> },
}

impl Ending {
    pub fn is_error(self) -> bool {
        matches!(self, Self::Error { .. })
    }
}

/// The members of an upstream message that say what it is. A member given twice among
/// these makes the message unreadable (`serde` refuses duplicate fields).
#[derive(serde::Deserialize)]
struct Shape {
    jsonrpc: Option<String>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    method: Option<String>,
    #[serde(default, deserialize_with = "result_head")]
    result: Option<bool>,
    #[serde(default, deserialize_with = "error_head")]
    error: Option<Option<i64>>,
}

/// `Some` for a member that is there, even when it is null.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(d).map(Some)
}

/// `Some(is_error)` for a result member that is there (whatever it holds): whether it is an
/// object with `isError: true`. Reads nothing more than skipping it would.
fn result_head<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    d.deserialize_any(HeadVisitor("isError"))
        .map(|v| Some(matches!(v, Head::Bool(true))))
}

/// `Some(code)` for an error member that is there: its integer `code`, if it has one.
fn error_head<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    d.deserialize_any(HeadVisitor("code")).map(|v| {
        Some(match v {
            Head::Int(c) => Some(c),
            _ => None,
        })
    })
}

/// The one member of an object a [`HeadVisitor`] looks for.
enum Head {
    Absent,
    Bool(bool),
    Int(i64),
}

/// Skips any JSON value, keeping only the member `.0` of an object (a boolean or integer).
struct HeadVisitor(&'static str);

impl<'de> serde::de::Visitor<'de> for HeadVisitor {
    type Value = Head;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
        use serde::de::IgnoredAny;
        let mut found = Head::Absent;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.0 {
                found = match map.next_value::<Value>()? {
                    Value::Bool(b) => Head::Bool(b),
                    Value::Number(n) => n.as_i64().map_or(Head::Absent, Head::Int),
                    _ => Head::Absent,
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Head, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Head::Absent)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Head, E> {
        Ok(Head::Absent)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Head, E> {
        Ok(Head::Absent)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Head, E> {
        Ok(Head::Absent)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Head, E> {
        Ok(Head::Absent)
    }
    fn visit_str<E>(self, _: &str) -> Result<Head, E> {
        Ok(Head::Absent)
    }
    fn visit_unit<E>(self) -> Result<Head, E> {
        Ok(Head::Absent)
    }
    fn visit_none<E>(self) -> Result<Head, E> {
        Ok(Head::Absent)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Head, D::Error> {
        d.deserialize_any(self)
    }
}

impl Shape {
    fn kind(self) -> Option<UpstreamMessage> {
        if self.jsonrpc.as_deref() != Some("2.0") {
            return None;
        }
        match (self.method, self.id, self.result, self.error) {
            (Some(_), id, None, None) if id.as_ref().is_none_or(is_id) => {
                Some(UpstreamMessage::RequestOrNotification)
            }
            (None, Some(id), Some(is_error), None) if is_id(&id) => {
                Some(UpstreamMessage::Response {
                    id,
                    ending: Ending::Result { is_error },
                })
            }
            (None, Some(id), None, Some(code)) if is_id(&id) || id.is_null() => {
                Some(UpstreamMessage::Response {
                    id,
                    ending: Ending::Error { code },
                })
            }
            _ => None,
        }
    }
}

/// Reads one upstream message (JSON text); `None` when it is not a JSON-RPC 2.0 message.
pub fn read_upstream_message(bytes: &[u8]) -> Option<UpstreamMessage> {
    serde_json::from_slice::<Shape>(bytes).ok()?.kind()
}

/// Reads an upstream answer that may be a batch (an array of messages); `None` when it is
/// not JSON-RPC.
pub fn read_upstream_messages(bytes: &[u8]) -> Option<Vec<UpstreamMessage>> {
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
    if *first == b'[' {
        let items: Vec<Shape> = serde_json::from_slice(bytes).ok()?;
        if items.is_empty() {
            return None;
        }
        items.into_iter().map(Shape::kind).collect()
    } else {
        read_upstream_message(bytes).map(|m| vec![m])
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

    #[test]
    fn the_gateways_own_codes_are_where_mcp_never_allocates() {
        // 2026-07-28: -32000..-32019 are implementation-defined, -32020..-32099 MCP's own.
        let mcp = [
            PARSE_ERROR,
            INVALID_REQUEST,
            METHOD_NOT_FOUND,
            INVALID_PARAMS,
            RESOURCE_NOT_FOUND,
            URL_ELICITATION_REQUIRED,
            HEADER_MISMATCH,
            UNSUPPORTED_VERSION,
        ];
        for own in [SESSION_NOT_FOUND, UPSTREAM_ERROR, RATE_LIMITED] {
            assert!((-32019..=-32000).contains(&own), "{own}");
            assert!(!mcp.contains(&own), "{own}");
        }
        assert_ne!(SESSION_NOT_FOUND, UPSTREAM_ERROR);
    }

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

    fn refused(text: &str) -> Invalid {
        parse_client_message(text.as_bytes()).expect_err(text)
    }

    #[test]
    fn duplicate_members_anywhere_are_refused_with_the_id_when_unambiguous() {
        for (text, id) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}"#,
                json!(1),
            ),
            (
                r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"ok","name":"hidden"}}"#,
                json!("a"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"ok"},"params":{"name":"hidden"}}"#,
                json!(2),
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","arguments":{"q":{"a":1,"a":2}}}}"#,
                json!(3),
            ),
            (
                r#"{"jsonrpc":"2.0","id":4,"method":"x","params":{"_meta":{"progressToken":1,"progressToken":2}}}"#,
                json!(4),
            ),
            // Which id would the upstream answer? None can be named.
            (
                r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
                Value::Null,
            ),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping","method":"x"}]"#,
                Value::Null,
            ),
        ] {
            let e = refused(text);
            assert_eq!(e.code, INVALID_REQUEST, "{text}");
            assert_eq!(e.id.unwrap_or(Value::Null), id, "{text}");
        }
        // Syntax errors are parse errors, even after a duplicate.
        assert_eq!(refused(r#"{"id":1,"id":1,"#).code, PARSE_ERROR);
    }

    #[test]
    fn near_spellings_of_members_the_gateway_reads_are_refused() {
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"Method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","Params":{"name":"hidden"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok","Name":"hidden"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"NAME":"hidden"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"URI":"file:///etc"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","Arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_META":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"io.modelcontextprotocol/protocolversion":"1"}}}"#,
            r#"{"JSONRPC":"2.0","jsonrpc":"2.0","id":1,"method":"ping"}"#,
            // Unicode case mapping: KELVIN SIGN, LONG S, dotless i.
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"x\",\"\u{212a}\":1,\"argument\u{17f}\":{}}}",
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"\u{131}d\":2}",
        ] {
            let e = refused(text);
            assert_eq!(e.code, INVALID_REQUEST, "{text}");
        }
        // The id is carried unless the near-spelling is of the id itself.
        let e = refused(r#"{"jsonrpc":"2.0","id":7,"method":"x","Params":{}}"#);
        assert_eq!(e.id, Some(json!(7)));
        let e = refused(r#"{"jsonrpc":"2.0","id":7,"ID":8,"method":"x"}"#);
        assert_eq!(e.id, None);
        // Members the gateway does not read may be spelled any way, and baseline messages pass.
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"Name":1,"name":2,"NAME":3}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"Other":1,"other":2}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":5,"result":{"Result":1}}"#,
        ] {
            assert!(parse_client_message(text.as_bytes()).is_ok(), "{text}");
        }
    }

    #[test]
    fn batches_and_what_is_forwarded() {
        let text = " [ {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\",\"params\":{\"n\":1E3}} ,\n\
                    {\"jsonrpc\":\"2.0\",\"method\":\"n\\u0061\"} ] ";
        let ClientPayload::Batch(items) = parse_client_message(text.as_bytes()).unwrap() else {
            panic!("a batch");
        };
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].method(), Some("na"));
        assert_eq!(
            String::from_utf8(batch_to_bytes(&items)).unwrap(),
            r#"[{"id":1,"jsonrpc":"2.0","method":"a","params":{"n":1E3}},{"jsonrpc":"2.0","method":"na"}]"#
        );
        assert_eq!(refused("[]").code, INVALID_REQUEST);
        assert_eq!(refused(r#"[{"jsonrpc":"2.0"}]"#).code, INVALID_REQUEST);
    }

    #[test]
    fn upstream_messages_are_read_for_what_they_are() {
        let read = |t: &str| read_upstream_message(t.as_bytes());
        assert_eq!(
            read(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Some(UpstreamMessage::Response {
                id: json!(1),
                ending: Ending::Result { is_error: false }
            })
        );
        assert_eq!(
            read(
                r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"isError":false}],"isError":true}}"#
            ),
            Some(UpstreamMessage::Response {
                id: json!(2),
                ending: Ending::Result { is_error: true }
            })
        );
        assert_eq!(
            read(r#"{"jsonrpc":"2.0","id":3,"result":[1,{"isError":true}]}"#),
            Some(UpstreamMessage::Response {
                id: json!(3),
                ending: Ending::Result { is_error: false }
            })
        );
        assert_eq!(
            read(r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}"#),
            Some(UpstreamMessage::Response {
                id: Value::Null,
                ending: Ending::Error { code: Some(1) }
            })
        );
        assert_eq!(
            read(r#"{"jsonrpc":"2.0","id":4,"error":{"code":"x","message":"m"}}"#),
            Some(UpstreamMessage::Response {
                id: json!(4),
                ending: Ending::Error { code: None }
            })
        );
        assert_eq!(
            read(r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#),
            Some(UpstreamMessage::RequestOrNotification)
        );
        assert_eq!(
            read(r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#),
            Some(UpstreamMessage::RequestOrNotification)
        );
        for bad in [
            "<html>",
            "{}",
            r#"{"id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":null,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"result":{}}"#,
            r#"{"jsonrpc":"1.0","id":1,"result":1}"#,
            r#"[{"jsonrpc":"2.0","id":1,"result":{}}]"#,
        ] {
            assert_eq!(read(bad), None, "{bad}");
        }
        assert_eq!(
            read_upstream_messages(br#" [{"jsonrpc":"2.0","id":1,"result":{}}]"#).map(|v| v.len()),
            Some(1)
        );
        assert_eq!(read_upstream_messages(b"[]"), None);
    }

    proptest::proptest! {
        /// Whatever the bytes: an answer, never a panic; and what is accepted is forwarded as
        /// a text that reads back as the same message.
        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96)) {
            if let Ok(payload) = parse_client_message(&bytes) {
                for m in payload.messages() {
                    let back: Value = serde_json::from_slice(&m.to_bytes()).unwrap();
                    proptest::prop_assert_eq!(&back, &m.value);
                }
            }
        }

        /// Messages with random members: accepted exactly when no member of the top level,
        /// params or _meta is a case variant of one the gateway reads.
        #[test]
        fn case_variants_are_refused_exactly(
            top in "(jsonrpc|JsonRpc|id|Id|method|METHOD|params|Params|result|x|Y)",
            param in "(name|Name|uri|Uri|arguments|ARGUMENTS|_meta|_Meta|cursor|Cursor|q|Q)",
        ) {
            let text = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{{"{param}":{{}}}},"{top}":null}}"#
            );
            let near = |k: &str, all: &[&str]| all.iter().any(|m| near_spelling(k, m));
            let duplicate = ["jsonrpc", "id", "method", "params"].contains(&top.as_str());
            let expect_ok = !duplicate && !near(&top, &TOP_MEMBERS) && !near(&param, &PARAMS_MEMBERS)
                && top != "result";
            let got = parse_client_message(text.as_bytes());
            proptest::prop_assert_eq!(got.is_ok(), expect_ok, "{}", text);
        }
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
