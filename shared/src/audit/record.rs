//! One audit record: a decision the gateway made, who asked, what was used with whose
//! account, and how it ended. Never a token, key or secret value: principals are named by
//! user and key id or provider, credentials by kind and grant id, arguments by a keyed HMAC.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// `tools/call` (direct or through a virtual server).
    ToolCall,
    /// `resources/read`.
    ResourceRead,
    /// `prompts/get`.
    PromptGet,
    /// A request refused before it reached an upstream: an endpoint the caller may not use.
    /// (A hidden tool's call is a `ToolCall` with decision `deny`.)
    Denied,
    /// Failed authentication, counted and sampled (see `detail.count`).
    AuthFailed,
    /// A user connected their account at a server (OAuth grant or stored token).
    Connect,
    /// A user removed their own connection.
    Disconnect,
    /// An admin revoked someone's connection.
    Revoke,
    /// A grant could not be refreshed.
    RefreshFailed,
    /// An admin or console change to a configuration document.
    AdminChange,
}

/// The decision taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
    /// Refused by a rate limit in `enforce` mode.
    Limited,
    /// Let through, but a rule in `audit` mode would have limited it.
    WouldLimit,
}

/// Who was calling: never the credential itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `Principal::user`.
    pub user: String,
    /// `api_key`, `jwt`, `bootstrap` or `console`.
    pub auth: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The identity provider's name for a JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

impl Actor {
    /// The actor of an authenticated principal.
    pub fn of(p: &crate::identity::Principal) -> Self {
        use crate::identity::AuthMethod;
        let (auth, key_id, provider) = match &p.method {
            AuthMethod::ApiKey { key_id } => ("api_key", Some(key_id.clone()), None),
            AuthMethod::Bootstrap => ("bootstrap", None, None),
            AuthMethod::Jwt { provider, .. } => ("jwt", None, Some(provider.clone())),
        };
        Self {
            user: p.user.clone(),
            auth: auth.into(),
            key_id,
            provider,
        }
    }
}

/// Which upstream credential was used (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialUse {
    /// `none`, `header`, `per_user_token` or `oauth2`.
    pub kind: String,
    /// The grant's id (`user/server` and version) for `oauth2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `ok`, `is_error` (a tool result with `isError`), `rpc_error`, `http_error`,
    /// `no_answer` (the client went away or the call timed out).
    pub status: String,
    /// The JSON-RPC error code, for `rpc_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// The HTTP status the caller got, where the gateway answered with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

/// Where a record sits in its writer's hash chain (set by the chain, not by emitters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    /// The writing process (or Lambda instance): one chain each.
    pub writer: String,
    /// 1, 2, 3, ... within the writer's chain.
    pub seq: u64,
    /// The previous record's `hash` (empty for the first).
    pub prev: String,
    /// The keyring key whose chain key made `hash` (absent: a plain SHA-256, made only by
    /// an auditor without a store, whose records are never verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// HMAC-SHA256 (key `kid`'s chain key) of this record's canonical JSON without `hash`
    /// (so `writer`, `seq`, `prev` and `kid` are covered).
    pub hash: String,
}

/// One audit record. Optional fields are left out of the JSON when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub event: Event,
    pub decision: Decision,
    /// The JSON-RPC id of the request, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The W3C trace context of the request (the client's, or one the gateway started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The MCP method (`tools/call`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The name the caller used: a tool's exposed name (alias included), a resource URI,
    /// a prompt name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tool: Option<String>,
    /// What decided: a rate-limit rule's name, `hidden_tool`, `endpoint_access`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Time in the gateway, receipt to answer, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Time waiting on the upstream, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    /// Keyed HMAC-SHA256 of the arguments' canonical JSON (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_hmac: Option<String>,
    /// The arguments themselves, where the server opts in (size-capped, keys redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// Event-specific facts: an admin change's `{kind, name, before, after}` hashes, a
    /// sampled denial's `count`, a refresh failure's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    /// Set when the record is chained (every record that leaves the process has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainLink>,
}

impl AuditRecord {
    /// A record of `event` decided `decision` now, every other field empty.
    pub fn new(event: Event, decision: Decision) -> Self {
        Self {
            time_ms: now_ms(),
            event,
            decision,
            request_id: None,
            traceparent: None,
            principal: None,
            endpoint: None,
            method: None,
            tool: None,
            upstream_server: None,
            upstream_tool: None,
            rule: None,
            credential: None,
            outcome: None,
            latency_ms: None,
            upstream_ms: None,
            args_hmac: None,
            args: None,
            detail: None,
            chain: None,
        }
    }
}

/// The most bytes of a caller-chosen text (tool name, resource URI, request id, endpoint)
/// a record keeps. Such texts are only bounded by the request body (4 MB); uncut, one call
/// could make a record too large for the store (a DynamoDB item is at most 400 KB) and hold
/// megabytes in the buffer and the chain lock.
pub const MAX_TEXT_BYTES: usize = 256;
/// Appended to a text [`capped`] cut, so a reader sees it is not the whole name.
pub const TRUNCATED_MARK: &str = "…[truncated]";

/// `s` as a record keeps it: whole up to [`MAX_TEXT_BYTES`], else its first bytes up to
/// that (at a char boundary) followed by [`TRUNCATED_MARK`]. The one cut every record field
/// and span attribute that carries a caller's text goes through.
pub fn capped(s: &str) -> String {
    if s.len() <= MAX_TEXT_BYTES {
        return s.to_owned();
    }
    let mut end = MAX_TEXT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED_MARK}", &s[..end])
}

/// A duration in milliseconds as records carry it: rounded to the microsecond (3 decimals).
/// Shorter numbers print and parse back to the same `f64` in every JSON reader, so a stored
/// record's hash verifies (an unrounded `2123.8429889999998` may not survive a parse).
pub fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// Milliseconds since the Unix epoch on the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_at_a_char_boundary_with_a_mark() {
        assert_eq!(capped("search"), "search");
        let exact = "a".repeat(MAX_TEXT_BYTES);
        assert_eq!(capped(&exact), exact);
        let long = "é".repeat(300_000);
        let c = capped(&long);
        assert!(c.ends_with(TRUNCATED_MARK));
        let kept = c.strip_suffix(TRUNCATED_MARK).unwrap();
        assert!(kept.len() <= MAX_TEXT_BYTES && kept.len() > MAX_TEXT_BYTES - 4);
        assert!(long.starts_with(kept));
    }

    #[test]
    fn latencies_are_rounded_to_microseconds_and_survive_a_json_round_trip() {
        assert_eq!(round_ms(2123.8429889999998), 2123.843);
        assert_eq!(round_ms(0.0004), 0.0);
        let mut r = AuditRecord::new(Event::ToolCall, Decision::Allow);
        r.latency_ms = Some(round_ms(2123.8429889999998));
        let back: AuditRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
