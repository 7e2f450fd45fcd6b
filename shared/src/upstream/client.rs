//! The gateway as an MCP client of one upstream, on a user's behalf: one request, one answer,
//! whatever era the upstream speaks. Used where the gateway itself is the MCP server the
//! client talks to (virtual servers), and to read an upstream's tools for the effective
//! catalog and for checking tool rules when they are saved.
//!
//! Session-era upstreams are reached through a bridged upstream session
//! (`Memory::bridged_slot`) of the gateway's own: per (user, server), opened on first use
//! with the gateway's (empty) client capabilities, apart from the sessions of stateless
//! clients, which declare their own; a lost session (404) is re-opened once.

use crate::mcp::envelope;
use crate::mcp::handshake::CallError;
use crate::mcp::jsonrpc::Message;
use crate::mcp::memory::{BridgedSession, Era, UpstreamSession, bridge_key};
use crate::mcp::session::ClientInit;
use crate::mcp::versions;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};

use super::Upstream;
use super::handshakes::{self, Discovery, InitOutcome};

/// At most this many pages of a list are read (a misbehaving upstream cannot loop forever).
const MAX_PAGES: usize = 20;

fn gateway_client() -> ClientInit {
    ClientInit {
        capabilities: json!({}),
        client_info: None,
    }
}

fn next_id() -> Value {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Value::from(format!("mcpgw-c{n}"))
}

/// The upstream's era, probed once per process (only definite answers are remembered).
async fn era(up: &Upstream) -> Result<Era, CallError> {
    let memory = up.memory();
    let (name, url) = (up.server.name.as_str(), up.url());
    if let Some(e) = memory.era(name, url) {
        return Ok(e);
    }
    let era = match handshakes::discover(up, &gateway_client()).await? {
        Discovery::Modern(_) => Era::Modern,
        Discovery::Refused => Era::Session,
        Discovery::Unclear(s) => return Err(CallError::Unavailable(s.as_u16())),
    };
    memory.set_era(name, url, era);
    Ok(era)
}

/// The bridged upstream session for `key` ([`bridge_key`]), opened with `client`'s
/// declarations on first use (one per key even under concurrent first requests); `stale`
/// names a session the upstream lost: it is replaced.
pub async fn bridged_session(
    up: &Upstream,
    user: &str,
    key: &str,
    client: impl FnOnce() -> ClientInit,
    stale: Option<&UpstreamSession>,
) -> Result<Bridged, CallError> {
    let Some(slot) = up.memory().bridged_slot(user, &up.server.name, key) else {
        return Ok(Bridged::TooManyKinds);
    };
    let mut held = slot.lock().await;
    if let Some(b) = held.as_ref()
        && Some(&b.session) != stale
    {
        return Ok(Bridged::Session(b.session.clone()));
    }
    // Built only to open one: a request on a known session copies nothing of the client's.
    let client = client();
    match handshakes::initialize(up, &client, versions::LATEST_HANDSHAKE, None).await? {
        InitOutcome::Opened(s) => {
            let (closing, headers) = (
                up.clone(),
                up.session_headers(s.session_id.as_deref(), &s.version),
            );
            // A replaced session is left alone: the upstream already lost it.
            *held = Some(BridgedSession {
                session: s.clone(),
                close: Box::new(move || closing.close_later(headers)),
            });
            Ok(Bridged::Session(s))
        }
        InitOutcome::Refused(_) => {
            *held = None;
            up.memory().forget_era(&up.server.name, up.url());
            Ok(Bridged::Refused)
        }
    }
}

/// What [`bridged_session`] found.
pub enum Bridged {
    Session(UpstreamSession),
    /// The upstream refused `initialize` (what was learned of its era is forgotten, so it is
    /// probed again).
    Refused,
    /// The user holds as many bridged sessions to the server as allowed
    /// (`memory::BRIDGED_PER_USER`), none idle: a new kind of client is refused rather than
    /// one more session opened.
    TooManyKinds,
}

async fn session(
    up: &Upstream,
    user: &str,
    stale: Option<&UpstreamSession>,
) -> Result<UpstreamSession, CallError> {
    // The gateway's own declarations, under a version no client can send (not a date).
    let key = bridge_key(
        user,
        &up.server.name,
        up.url(),
        "gateway",
        &gateway_client().capabilities,
        None,
    );
    match bridged_session(up, user, &key, gateway_client, stale).await? {
        Bridged::Session(s) => Ok(s),
        Bridged::Refused => Err(CallError::BadAnswer),
        Bridged::TooManyKinds => Err(CallError::Unavailable(429)),
    }
}

/// Sends `method` with `params` and returns the upstream's JSON-RPC answer (a `result` or an
/// `error` object, with the gateway's request id).
pub async fn request(
    up: &Upstream,
    user: &str,
    method: &str,
    params: Value,
) -> Result<Value, CallError> {
    let msg = Message::from_value(
        json!({"jsonrpc": "2.0", "id": next_id(), "method": method, "params": params}),
    )
    .map_err(|_| CallError::BadAnswer)?;
    forward(up, user, msg).await
}

/// Sends a request a client made (parsed, authorized and routed: its params as the gateway
/// judged them, re-serialized) under a gateway id, and returns the upstream's answer to that
/// id. An answer to any other id, or that is not JSON-RPC, is `BadAnswer`.
pub async fn forward(up: &Upstream, user: &str, mut msg: Message) -> Result<Value, CallError> {
    msg.value["id"] = next_id();
    match era(up).await? {
        Era::Modern => {
            let client = gateway_client();
            envelope::apply(&mut msg, &client.capabilities, None);
            let mut headers = HeaderMap::new();
            for (k, v) in envelope::routing_headers(&msg) {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    headers.insert(k, v);
                }
            }
            let reply = up.exchange_message(headers, &msg).await?;
            reply.message.ok_or(CallError::BadAnswer)
        }
        Era::Session => {
            let mut s = session(up, user, None).await?;
            for attempt in 0..2 {
                let headers = up.session_headers(s.session_id.as_deref(), &s.version);
                let reply = up.exchange_message(headers, &msg).await?;
                if reply.status == StatusCode::NOT_FOUND && s.session_id.is_some() && attempt == 0 {
                    s = session(up, user, Some(&s)).await?;
                    continue;
                }
                return reply.message.ok_or(CallError::BadAnswer);
            }
            Err(CallError::BadAnswer)
        }
    }
}

/// Every item of a paginated list (`tools/list` -> `tools`, ...), in the upstream's order.
/// A JSON-RPC error answer is `BadAnswer` (the upstream does not offer the list).
pub async fn list_all(
    up: &Upstream,
    user: &str,
    method: &str,
    key: &str,
) -> Result<Vec<Value>, CallError> {
    let mut items = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..MAX_PAGES {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let answer = request(up, user, method, params).await?;
        let result = answer.get("result").ok_or(CallError::BadAnswer)?;
        let page = result
            .get(key)
            .and_then(Value::as_array)
            .ok_or(CallError::BadAnswer)?;
        items.extend(page.iter().cloned());
        cursor = result.get("nextCursor").filter(|c| c.is_string()).cloned();
        if cursor.is_none() {
            break;
        }
    }
    Ok(items)
}

/// The upstream's tools.
pub async fn list_tools(up: &Upstream, user: &str) -> Result<Vec<Value>, CallError> {
    list_all(up, user, "tools/list", "tools").await
}

/// The names in a tools list.
pub fn tool_names(tools: &[Value]) -> Vec<&str> {
    tools
        .iter()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .collect()
}
