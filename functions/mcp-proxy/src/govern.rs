//! The decision point of every counted call (`tools/call`, `resources/read`, `prompts/get`;
//! never `initialize` or a list), for registered and virtual servers alike: the rate limits
//! are checked ([`gate`]) and the call gets its audit [`Ticket`], which is completed with how
//! the call ended and emitted exactly once, on completion or, failing that, when dropped
//! (`no_answer`: the client went away, the call timed out or was cancelled).
//!
//! A hidden tool's call counts against the limits like any other: it is the caller's
//! attempt, and an unknown tool counts the same, so a limited answer says nothing about which
//! names exist. Its record says `deny` by `hidden_tool` (records are for admins).
//!
//! A limited `tools/call` is a tool result with `isError` ("Rate limit reached: retry in
//! N s": no rule named, the record keeps it), shaped for the client's era by `results`; a
//! limited `resources/read` or `prompts/get` (no result fits) is HTTP 429 with `Retry-After`
//! and the JSON-RPC error `RATE_LIMITED` (`data: {retryAfterSeconds}`). A batch is gated
//! member by member up to the first limited one, and then answered 429 as a whole (a batch
//! is one HTTP exchange; the members before it were counted, and their records say `allow`
//! with outcome HTTP 429; those after it are neither counted nor recorded).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use mcpgw::audit::args::captured;
use mcpgw::audit::events::traceparent;
use mcpgw::audit::record::{capped, round_ms};
use mcpgw::audit::sample::SampleKey;
use mcpgw::audit::{Actor, AuditRecord, Auditor, CredentialUse, Decision, Event, Outcome};
use mcpgw::domain::ServerAudit;
use mcpgw::identity::Principal;
use mcpgw::limits::{CallKey, Verdict};
use mcpgw::mcp::jsonrpc::{self, Ending, Kind, Message};
use mcpgw::state::AppState;
use serde_json::{Value, json};

use crate::results::{self, Answered, ClientEra, Ttl};

/// A counted request: its method, the name the caller used, its id.
pub struct Counted<'m> {
    pub event: Event,
    pub method: &'static str,
    /// A tool's exposed name, a resource URI, a prompt name ("" when absent).
    pub name: &'m str,
    pub id: &'m Value,
    pub arguments: Option<&'m Value>,
}

/// The counted request `msg` is, if it is one.
pub fn counted(msg: &Message) -> Option<Counted<'_>> {
    if msg.kind != Kind::Request {
        return None;
    }
    let (event, method, key) = match msg.method()? {
        "tools/call" => (Event::ToolCall, "tools/call", "name"),
        "resources/read" => (Event::ResourceRead, "resources/read", "uri"),
        "prompts/get" => (Event::PromptGet, "prompts/get", "name"),
        _ => return None,
    };
    let params = msg.params();
    let name = params
        .and_then(|p| p.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default();
    Some(Counted {
        event,
        method,
        name,
        id: msg.id().unwrap_or(&Value::Null),
        arguments: params.and_then(|p| p.get("arguments")),
    })
}

/// Who asks where: the request's facts every record of it carries.
pub struct Asker<'a> {
    pub state: &'a AppState,
    pub principal: &'a Principal,
    pub endpoint: &'a str,
    pub headers: &'a HeaderMap,
    /// When the request was received (the records' latency starts here).
    pub received: Instant,
}

/// Where a counted call goes, as far as the caller's endpoint decides it.
pub struct Routed<'a> {
    /// A tool the caller may not use (hidden, removed, never existing on a virtual server):
    /// decided `deny` by `hidden_tool`.
    pub hidden: bool,
    /// The upstream server and its own name for the tool, where known before the call.
    pub upstream: Option<(&'a str, &'a str)>,
    pub credential: Option<CredentialUse>,
    /// The server's audit settings (argument capture), where known before the call.
    pub capture: Option<&'a ServerAudit>,
}

/// What the gate decided.
pub enum Gate {
    /// Go on; complete the ticket with the answer (or let it drop: `no_answer`).
    Pass(Arc<Ticket>),
    /// A rate limit refused it: the answer, and the completed ticket.
    Limited(Limited),
}

/// A refused call: when to retry (its rule is in its record only).
pub struct Limited {
    pub retry_after: Duration,
    ticket: Arc<Ticket>,
}

/// The rule of a hidden tool's call, and the `detail` flag of one that was limited.
pub const HIDDEN_TOOL: &str = mcpgw::audit::view::HIDDEN_TOOL;

/// Checks the limits for `call` and opens its ticket.
pub async fn gate(asker: &Asker<'_>, call: &Counted<'_>, routed: Routed<'_>) -> Gate {
    let verdict = asker
        .state
        .limits
        .check(&CallKey {
            principal: asker.principal,
            endpoint: asker.endpoint,
            method: call.method,
            name: call.name,
        })
        .await;
    let mut record = AuditRecord::new(call.event, Decision::Allow);
    // Every text the caller chose is cut (`capped`): the record stays small whatever was sent.
    record.request_id = Some(capped(&id_text(call.id)));
    record.traceparent = traceparent(asker.headers);
    record.principal = Some(Actor::of(asker.principal));
    record.endpoint = Some(capped(asker.endpoint));
    record.method = Some(call.method.to_owned());
    record.tool = Some(capped(call.name));
    if let Some((server, tool)) = routed.upstream {
        record.upstream_server = Some(capped(server));
        record.upstream_tool = Some(capped(tool));
    }
    if routed.hidden {
        record.decision = Decision::Deny;
        record.rule = Some(HIDDEN_TOOL.into());
    }
    record.credential = routed.credential;
    if let Some(args) = call.arguments {
        record.args_hmac = args_hmac(asker.state, args).await;
        record.args = routed.capture.and_then(|c| captured(args, c));
    }
    let ticket = |record| {
        Arc::new(Ticket {
            audit: asker.state.audit.clone(),
            received: asker.received,
            passed: Instant::now(),
            record: Mutex::new(Some(record)),
        })
    };
    match verdict {
        Verdict::Pass { would_limit } => {
            if let Some(rule) = would_limit
                && record.decision == Decision::Allow
            {
                record.decision = Decision::WouldLimit;
                record.rule = Some(rule);
            }
            Gate::Pass(ticket(record))
        }
        Verdict::Limited { rule, retry_after } => {
            if routed.hidden {
                // Still a hidden tool's call (L3): said in `detail.hidden_tool`, which the
                // metrics read so the caller's invented name never becomes a tool label,
                // and which `/me/audit`'s view leaves out.
                record.detail = Some(json!({ HIDDEN_TOOL: true }));
            }
            record.decision = Decision::Limited;
            record.rule = Some(rule);
            Gate::Limited(Limited {
                retry_after,
                ticket: ticket(record),
            })
        }
    }
}

/// The keyed hash of a call's arguments (their canonical JSON): `None` only when the keyring
/// cannot be had (the record is still written). The keyring is the process's cached one.
async fn args_hmac(state: &AppState, args: &Value) -> Option<String> {
    let ring = state.keyring.get().await.ok()?;
    Some(ring.audit_mac_hex(&mcpgw::audit::canonical_json(args)))
}

/// Records a request for an endpoint the caller may not use (or that does not exist: the
/// caller is answered alike), sampled per caller and endpoint. `registered`: the endpoint
/// is one the policy names; any other name is sampled (and recorded) as `*`, so inventing
/// names makes no new sample keys.
pub fn denied(
    state: &AppState,
    headers: &HeaderMap,
    principal: &Principal,
    endpoint: &str,
    registered: bool,
) {
    let key = SampleKey {
        event: Event::Denied,
        endpoint: if registered {
            capped(endpoint)
        } else {
            "*".into()
        },
        who: capped(&principal.user),
    };
    let endpoint = key.endpoint.clone();
    state.audit_sampler.emit(&state.audit, key, || {
        let mut r = AuditRecord::new(Event::Denied, Decision::Deny);
        r.traceparent = traceparent(headers);
        r.principal = Some(Actor::of(principal));
        r.endpoint = Some(endpoint);
        r.rule = Some("endpoint_access".into());
        r.outcome = Some(Outcome {
            status: "http_error".into(),
            code: None,
            http_status: Some(404),
        });
        r
    });
}

/// Whole seconds to wait, rounded up, at least 1.
pub fn retry_seconds(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

impl Limited {
    /// The answer to the limited request `call` of a client of `era` (completes the ticket).
    pub fn answer(self, call: &Counted<'_>, era: ClientEra) -> Response {
        let secs = retry_seconds(self.retry_after);
        let resp = if call.method == "tools/call" {
            let text = limit_text(secs);
            let result = json!({"content": [{"type": "text", "text": text}], "isError": true});
            results::answer(call.id, call.method, result, era, Ttl::Set(0))
        } else {
            too_many(Some(call.id), secs)
        };
        self.ticket.answered(&resp);
        resp
    }

    /// Completes the ticket of a limited batch member with the batch's answer.
    pub fn in_batch(self, resp: &Response) {
        self.ticket.answered(resp);
    }

    pub fn seconds(&self) -> u64 {
        retry_seconds(self.retry_after)
    }
}

/// What a limited caller is told. It names no rule: rule names are the operator's (they can
/// say how limits are set up, or whom they target); the record keeps the rule.
pub fn limit_text(secs: u64) -> String {
    format!("Rate limit reached: retry in {secs} s")
}

/// HTTP 429 with `Retry-After`: the JSON-RPC error `RATE_LIMITED` answering `id` (`None`:
/// a batch).
pub fn too_many(id: Option<&Value>, secs: u64) -> Response {
    let message = limit_text(secs);
    let data = json!({"retryAfterSeconds": secs});
    let mut resp = crate::answers::rpc_error(
        StatusCode::TOO_MANY_REQUESTS,
        id,
        jsonrpc::RATE_LIMITED,
        &message,
        Some(data),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// The JSON-RPC id as text: a string as it is, a number in its JSON form.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One counted call's audit record, emitted exactly once: when completed, else when the
/// last holder drops it (`no_answer`). Completing is a lock and a stdout line, never a
/// store access or an await (the store write is batched by the `Auditor`).
pub struct Ticket {
    audit: Arc<Auditor>,
    received: Instant,
    /// When the gate let it through (the upstream's time is counted from here).
    passed: Instant,
    record: Mutex<Option<AuditRecord>>,
}

impl Ticket {
    /// Completes the record with `outcome` and emits it (only the first completion counts).
    pub fn finish(&self, outcome: Outcome, upstream: bool) {
        let Some(mut record) = self.record.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        record.outcome = Some(outcome);
        record.latency_ms = Some(ms(self.received.elapsed()));
        if upstream {
            record.upstream_ms = Some(ms(self.passed.elapsed()));
        }
        self.audit.emit(record);
    }

    /// Completes it with an upstream response's ending.
    pub fn ended(&self, ending: Ending) {
        self.finish(outcome_of(ending), true);
    }

    /// Completes it with an answer the gateway made or relayed whole (`Answered` marks
    /// what the answer is; without a mark, by its HTTP status).
    pub fn answered(&self, resp: &Response) {
        let status = resp.status();
        if status == StatusCode::ACCEPTED {
            // The answer to a request the client cancelled while it was read: nothing owed.
            return self.finish(no_answer(), false);
        }
        let mark = resp.extensions().get::<Answered>().copied();
        let mut outcome = match mark {
            Some(Answered::Result { is_error }) => outcome_of(Ending::Result { is_error }),
            Some(Answered::Error { code }) => outcome_of(Ending::Error { code: Some(code) }),
            None if status.is_success() => outcome_of(Ending::Result { is_error: false }),
            None => Outcome {
                status: "http_error".into(),
                code: None,
                http_status: None,
            },
        };
        if !status.is_success() {
            outcome.status = "http_error".into();
            outcome.http_status = Some(status.as_u16());
        }
        let upstream = resp.extensions().get::<mcpgw::http::Relayed>().is_some();
        self.finish(outcome, upstream);
    }

    /// Sets the credential once it is known (a virtual server's member, opened after the
    /// gate).
    pub fn credential(&self, credential: CredentialUse) {
        self.with_record(|r| r.credential = Some(credential));
    }

    /// Sets where the call went once it is known (a virtual server's resource or prompt
    /// server: the first that answers).
    pub fn upstream(&self, server: &str, tool: &str, credential: CredentialUse) {
        self.with_record(|r| {
            r.upstream_server = Some(capped(server));
            r.upstream_tool = Some(capped(tool));
            r.credential = Some(credential);
        });
    }

    /// Keeps the arguments as `settings` say (a virtual server's member, known after the
    /// gate).
    pub fn capture(&self, args: Option<&Value>, settings: Option<&ServerAudit>) {
        if let (Some(args), Some(settings)) = (args, settings) {
            let kept = captured(args, settings);
            self.with_record(|r| r.args = kept);
        }
    }

    /// The time the upstream took, measured by the caller (a virtual server's member call).
    pub fn upstream_time(&self, d: Duration) {
        self.with_record(|r| r.upstream_ms = Some(ms(d)));
    }

    fn with_record(&self, f: impl FnOnce(&mut AuditRecord)) {
        if let Some(r) = self
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            f(r);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.finish(no_answer(), false);
    }
}

/// The outcome of a call whose answer never completed.
fn no_answer() -> Outcome {
    Outcome {
        status: "no_answer".into(),
        code: None,
        http_status: None,
    }
}

fn ms(d: Duration) -> f64 {
    round_ms(d.as_secs_f64() * 1000.0)
}

/// The record's outcome of a response's ending.
pub fn outcome_of(ending: Ending) -> Outcome {
    let (status, code) = match ending {
        Ending::Result { is_error: false } => ("ok", None),
        Ending::Result { is_error: true } => ("is_error", None),
        Ending::Error { code } => ("rpc_error", code),
    };
    Outcome {
        status: status.into(),
        code,
        http_status: None,
    }
}

/// The tickets of the counted requests in one message or batch, by the id the client sent.
/// Carried with the answer's adaptation to the relay, which completes each as its response
/// passes.
#[derive(Clone, Default)]
pub struct Tickets(Vec<(Value, Arc<Ticket>)>);

impl Tickets {
    pub fn push(&mut self, id: Value, ticket: Arc<Ticket>) {
        self.0.push((id, ticket));
    }

    /// The response to `id` passed, ended `ending`. With one ticket, any owed response is
    /// its own (a bridged call's upstream answers the gateway's id, not the client's).
    pub fn ended(&self, id: &Value, ending: Ending) {
        match self.0.as_slice() {
            [(_, only)] => only.ended(ending),
            many => {
                if let Some((_, t)) = many.iter().find(|(i, _)| i == id) {
                    t.ended(ending);
                }
            }
        }
    }

    /// The responses to `ids` passed, ended `endings` (in the same order).
    pub fn all_of(&self, ids: &[Value], endings: Vec<Ending>) {
        for (id, ending) in ids.iter().zip(endings) {
            self.ended(id, ending);
        }
    }

    /// Every ticket still open completed with `ending` (the gateway's own error in place of
    /// a bad answer; an `input_required` result).
    pub fn all_ended(&self, ending: Ending) {
        for (_, t) in &self.0 {
            t.ended(ending);
        }
    }

    /// Every ticket still open completed with `resp` (a whole answer the gateway made or
    /// read).
    pub fn answered(&self, resp: &Response) {
        for (_, t) in &self.0 {
            t.answered(resp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> (Arc<Ticket>, Arc<Mutex<Vec<AuditRecord>>>) {
        let (auditor, kept) = Auditor::recording();
        let t = Ticket {
            audit: Arc::new(auditor),
            received: Instant::now(),
            passed: Instant::now(),
            record: Mutex::new(Some(AuditRecord::new(Event::ToolCall, Decision::Allow))),
        };
        (Arc::new(t), kept)
    }

    fn statuses(kept: &Mutex<Vec<AuditRecord>>) -> Vec<String> {
        let kept = kept.lock().unwrap();
        kept.iter()
            .map(|r| r.outcome.as_ref().unwrap().status.clone())
            .collect()
    }

    #[test]
    fn a_ticket_is_emitted_once_when_completed_or_else_when_dropped() {
        // Completed (twice, by two holders): one record, the first completion's.
        let (t, kept) = ticket();
        let relay = Tickets(vec![(json!(1), t.clone())]);
        relay.ended(&json!(1), Ending::Result { is_error: true });
        t.ended(Ending::Error { code: Some(-1) });
        drop((t, relay));
        assert_eq!(statuses(&kept), ["is_error"]);
        // Never completed: the last holder's drop records `no_answer`.
        let (t, kept) = ticket();
        let relay = Tickets(vec![(json!(1), t.clone())]);
        drop(t);
        assert!(statuses(&kept).is_empty(), "still held by the relay");
        drop(relay);
        assert_eq!(statuses(&kept), ["no_answer"]);
        // A batch: each by its own id.
        let ((a, ka), (b, kb)) = (ticket(), ticket());
        let relay = Tickets(vec![(json!("a"), a), (json!("b"), b)]);
        relay.all_of(&[json!("b")], vec![Ending::Error { code: Some(-32601) }]);
        assert_eq!(
            (statuses(&ka), statuses(&kb)),
            (vec![], vec!["rpc_error".into()])
        );
        drop(relay);
        assert_eq!(statuses(&ka), ["no_answer"]);
    }

    #[test]
    fn retry_seconds_round_up_to_at_least_one() {
        assert_eq!(retry_seconds(Duration::ZERO), 1);
        assert_eq!(retry_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(retry_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_seconds(Duration::from_secs(59)), 59);
    }
}
