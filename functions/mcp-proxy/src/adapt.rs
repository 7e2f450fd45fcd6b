//! What access control changes on the way, both directions: a call of a tool the caller may
//! not use goes upstream under a name that cannot exist ([`shape`]), and the answer comes
//! back with the caller's name put back and `tools/list` filtered by the same decision
//! ([`Adapt`]).

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use mcpgw::mcp::envelope;
use mcpgw::mcp::jsonrpc::ClientPayload;
use mcpgw::policy::Access;
use mcpgw::upstream::snapshots::Observer;
use serde_json::Value;

use crate::govern::Tickets;
use crate::headers::session_header;
use crate::results::{self, Ttl};

/// Prefix of the names hidden tools are called under: no upstream has such a tool, so the
/// answer is the upstream's own answer to an unknown tool.
const HIDDEN_PREFIX: &str = "mcpgw-unknown-tool-";

/// Applies the access decision to a client's message (or batch) before it is forwarded, and
/// says what must change in the answer ([`Adapt`]): a call of a tool the caller may not use goes out
/// under a name that cannot exist (arguments dropped), so the caller gets exactly the answer
/// an unknown tool gets, from the upstream itself (no existence oracle, whatever the upstream
/// says for unknown tools); `tools/list` answers are filtered by the same decision.
pub fn shape(
    access: &Access,
    payload: &mut ClientPayload,
    headers: &mut HeaderMap,
    list_ttl_ms: u64,
) -> Adapt {
    let mut adapt = Adapt::default();
    // Only cacheable answers change for a stateless client (and only they pay for the check),
    // but for `server/discover`: the upstream's own description, the same for every caller.
    let per_caller = |m: &str| results::is_cacheable(m) && m != "server/discover";
    let modern = match &*payload {
        ClientPayload::One(m) if m.method().is_some_and(per_caller) => {
            envelope::looks_modern(m, headers) && session_header(headers).is_none()
        }
        _ => false,
    };
    for msg in payload.messages_mut() {
        let method = msg.method();
        // Filtered even for a caller no rule restricts: names with control or format
        // characters are listed to no one (`Access::tool`).
        if method == Some("tools/list") {
            adapt.filter = Some(Arc::new(access.clone()));
            continue;
        }
        if method != Some("tools/call") {
            continue;
        }
        let Some(name) = msg
            .params()
            .and_then(|p| p.get("name"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
        else {
            continue;
        };
        if access.tool(&name).is_some() {
            continue;
        }
        // Lowercase, so an upstream that normalizes names (and echoes them in its
        // unknown-tool error) still answers with this exact name, which is put back.
        let sentinel = format!(
            "{HIDDEN_PREFIX}{}",
            mcpgw::crypto::random_token(12).to_ascii_lowercase()
        );
        msg.value["params"]["name"] = sentinel.clone().into();
        msg.value["params"]["arguments"] = serde_json::json!({});
        // The routing header follows the body when it named the same tool (a header
        // that did not match stays, and fails the same check an unknown tool's would).
        if let Some(h) = headers.get("mcp-name").and_then(|v| v.to_str().ok())
            && envelope::decode_header_value(h).as_deref() == Some(name.as_str())
            && let Ok(v) = HeaderValue::from_str(&envelope::encode_header_value(&sentinel))
        {
            headers.insert("mcp-name", v);
        }
        adapt.renames.push((sentinel, name));
    }
    if modern {
        adapt.private_results = Some(list_ttl_ms);
    }
    adapt
}

/// What access control changes in an answer (see [`shape`]). Applied to every
/// JSON-RPC result in the answer, batches included.
#[derive(Clone, Default)]
pub struct Adapt {
    /// Drops the tools the caller may not use from `tools/list` results.
    pub filter: Option<Arc<Access>>,
    /// For 2026-07-28 clients: the result of a cacheable request (lists, `resources/read`)
    /// is per caller (`cacheScope: "private"`: it was made with their
    /// credential, under their policy, whatever the upstream says) and cached no longer than
    /// this many milliseconds (the policy's own reuse time).
    pub private_results: Option<u64>,
    /// Hidden tools were called under names that cannot exist (`sentinel`, `original`): the
    /// upstream's unknown-tool answer is relayed with the caller's name put back.
    pub renames: Vec<(String, String)>,
    /// Records a per-user server's whole `tools/list` result, before it is filtered, as the
    /// list shown to callers who have not connected yet (`mcpgw::upstream::snapshots`).
    pub snapshot: Option<Arc<Observer>>,
    /// The audit tickets of the counted requests answered here, completed by the relay as
    /// each owed response passes (`crate::govern`).
    pub tickets: Tickets,
}

impl Adapt {
    /// Whether messages change on the way (filtered, or marked private).
    pub fn changes_results(&self) -> bool {
        self.filter.is_some() || self.private_results.is_some() || self.snapshot.is_some()
    }

    /// Filters and marks the results in one JSON-RPC message (or batch).
    pub fn apply(&self, message: &mut Value) {
        if let Value::Array(items) = message {
            items.iter_mut().for_each(|m| self.apply(m));
            return;
        }
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
            return;
        };
        if let Some(observer) = &self.snapshot {
            observer.observe(result);
        }
        if let Some(access) = &self.filter
            && let Some(Value::Array(tools)) = result.get_mut("tools")
        {
            mcpgw::upstream::catalog::filter_listed(access, tools);
        }
        // Set only for one request of a cacheable method, so this result answers it; an
        // `input_required` one is not cached at all.
        if let Some(max_ttl) = self.private_results
            && result.get("resultType").and_then(Value::as_str) != Some("input_required")
        {
            results::private_cache(result, Ttl::AtMost(max_ttl));
        }
    }

    /// The caller's names back in place of the sentinels, in serialized JSON.
    pub fn rename_back(&self, mut text: Vec<u8>) -> Vec<u8> {
        for (sentinel, original) in &self.renames {
            let Ok(s) = String::from_utf8(text.clone()) else {
                return text;
            };
            // The original as it appears inside a JSON string (quotes stripped).
            let escaped = serde_json::to_string(original).unwrap_or_default();
            let inner = &escaped[1..escaped.len().saturating_sub(1).max(1)];
            text = s.replace(sentinel.as_str(), inner).into_bytes();
        }
        text
    }
}
