//! Clients of the session era (2025-03-26, 2025-06-18, 2025-11-25): `initialize` opens a
//! gateway session whose id is sealed (see `mcpgw::mcp::session`); every later request
//! presents it and is forwarded within the upstream session it names, or with the
//! per-request envelope when the upstream speaks only the stateless era.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use mcpgw::mcp::envelope;
use mcpgw::mcp::handshake::{AnswerType, CallError, Reply};
use mcpgw::mcp::jsonrpc::{self, Kind, Message};
use mcpgw::mcp::session::{SessionClaims, UpstreamLink};
use mcpgw::mcp::versions;
use mcpgw::upstream::handshakes::{self, Discovery, InitOutcome};
use serde_json::{Value, json};

use crate::answers::{
    accepted, call_failed, method_not_found, no_get_stream, rpc_error, session_not_found,
};
use crate::call::Call;
use crate::cancel::CancelOnDrop;
use crate::headers::{bad_version_header, session_header};
use crate::initialize::handshake_params;
use crate::input_rounds::{self, Rounds};
use crate::inputs::{self, Declared};
use crate::owed::{Expect, expect_for};
use crate::relay::{RelayOptions, stream_back};
use crate::results::{self, ClientEra, Ttl};
use crate::rewrite::Rewrite;
use crate::sessions::{self, Refusal, SessionAt};

pub async fn initialize(call: &Call<'_>, msg: Message) -> Response {
    let id = msg.id().cloned().unwrap_or(Value::Null);
    let (offered, client) = match handshake_params(&msg, &id) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let up = &call.upstream;
    let memory = &call.state.mcp;
    let (name, url) = (up.server.name.as_str(), up.url());

    // Twice at most: skipping a handshake this process saw refused, then trying it after all
    // when discovery is refused too (the upstream went back to the session era).
    let mut skip_handshake = memory.handshake_refused(name, url);
    loop {
        let mut refusal = None;
        if !skip_handshake {
            match handshakes::initialize(up, &client, &offered, Some(&msg)).await {
                Ok(InitOutcome::Opened(s)) => {
                    // The client gets the upstream's version when the gateway speaks it too.
                    let version = if versions::is_handshake(&s.version) {
                        s.version.clone()
                    } else {
                        offered.clone()
                    };
                    let mut result = s.init_result;
                    result["protocolVersion"] = Value::from(version.as_str());
                    let link = UpstreamLink::Session {
                        session_id: s.session_id,
                        version: s.version,
                    };
                    return sessions::issue(&session_at(call), &id, version, link, client, result)
                        .await;
                }
                Ok(InitOutcome::Refused(reply)) => refusal = Some(reply),
                Err(e) => return call_failed(&e, Some(&id)),
            }
        }
        // The upstream refused the handshake: it may speak only the stateless era.
        return match handshakes::discover(up, &client).await {
            Ok(Discovery::Modern(discovered)) => {
                memory.set_handshake_refused(name, url);
                let result = handshakes::initialize_result_from_discover(
                    &discovered,
                    &offered,
                    &call.endpoint,
                );
                sessions::issue(
                    &session_at(call),
                    &id,
                    offered,
                    UpstreamLink::Modern,
                    client,
                    result,
                )
                .await
            }
            Ok(Discovery::Refused) if skip_handshake => {
                memory.forget_era(name, url);
                skip_handshake = false;
                continue;
            }
            Ok(Discovery::Refused) => relay_refusal(refusal, &id),
            Ok(Discovery::Unclear(status)) => match refusal {
                // The handshake was refused for real; the probe says nothing more.
                Some(_) => relay_refusal(refusal, &id),
                None => call_failed(&CallError::Unavailable(status.as_u16()), Some(&id)),
            },
            Err(e) => call_failed(&e, Some(&id)),
        };
    }
}

/// Passes the upstream's refusal of `initialize` to the client with the client's id.
fn relay_refusal(refusal: Option<Reply>, id: &Value) -> Response {
    let error = refusal
        .as_ref()
        .and_then(|r| r.message.as_ref())
        .and_then(|m| m.get("error"))
        .cloned();
    match (refusal, error) {
        (Some(r), Some(error)) => {
            let status = if r.status.is_client_error() || r.status.is_server_error() {
                r.status
            } else {
                StatusCode::OK
            };
            let body = json!({"jsonrpc": "2.0", "id": id, "error": error});
            let mut resp = (status, axum::Json(body)).into_response();
            resp.extensions_mut().insert(mcpgw::http::Relayed);
            resp
        }
        _ => call_failed(&CallError::BadAnswer, Some(id)),
    }
}

/// Where this call's session is: the caller, the endpoint, bound to the upstream's URL.
fn session_at<'a>(call: &'a Call<'_>) -> SessionAt<'a> {
    SessionAt {
        state: call.state,
        user: call.user(),
        endpoint: &call.endpoint,
        bound_to: call.upstream.url(),
    }
}

/// The claims of the request's session and its fingerprint.
async fn session_of(call: &Call<'_>) -> Result<(SessionClaims, String), Refusal> {
    sessions::open(&session_at(call), &call.headers).await
}

/// A JSON-RPC batch. Only 2025-03-26 allowed them on Streamable HTTP; they are forwarded
/// whole (as parsed, re-serialized) when both the client's session and the upstream's speak
/// that version, and refused otherwise (splitting a batch would change its semantics for the
/// upstream). The answer must hold a response to each request in it, and no other.
pub async fn batch(call: &Call<'_>, items: Vec<Message>, to: BatchTo) -> Response {
    let BatchTo { sid, version } = to;
    let mut headers = call.forwarded(false);
    headers.extend(call.upstream.session_headers(sid.as_deref(), &version));
    let owed: Vec<Value> = items
        .iter()
        .filter(|m| m.kind == Kind::Request)
        .filter_map(|m| m.id().cloned())
        .collect();
    let expect = if owed.is_empty() {
        Expect::Nothing
    } else {
        Expect::Batch(owed)
    };
    let body = Bytes::from(jsonrpc::batch_to_bytes(&items));
    match call.upstream.send(Method::POST, headers, Some(body)).await {
        Ok(r) => {
            stream_back(
                &call.upstream,
                r,
                RelayOptions {
                    expect,
                    adapt: call.adapt.clone(),
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) => call_failed(&e, None),
    }
}

/// Where a batch that passed [`batch_to`] goes: the upstream session and its version.
pub struct BatchTo {
    sid: Option<String>,
    version: String,
}

/// Checks that `items` may be sent as a batch at all (no `initialize`, distinct request ids,
/// in a valid 2025-03-26 session): the answer refusing it otherwise. Run before the batch's members
/// are gated, so a batch that is refused anyway costs no limit write and no record.
pub async fn batch_to(call: &Call<'_>, items: &[Message]) -> Result<BatchTo, Response> {
    let refuse = |message: &str| {
        rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            jsonrpc::INVALID_REQUEST,
            message,
            None,
        )
    };
    // Non-empty and every item a message: checked by `parse_client_message`.
    if items.iter().any(|m| m.method() == Some("initialize")) {
        return Err(refuse(
            "Invalid Request: initialize cannot be part of a batch",
        ));
    }
    // Responses are matched to requests by id: two requests with one id cannot both be
    // answered (or recorded) as theirs.
    let ids: Vec<&Value> = items
        .iter()
        .filter(|m| m.kind == Kind::Request)
        .filter_map(|m| m.id())
        .collect();
    if ids.iter().enumerate().any(|(i, id)| ids[..i].contains(id)) {
        return Err(refuse(
            "Invalid Request: the requests in a batch need distinct ids",
        ));
    }
    let only_old = "Invalid Request: batches are only accepted in a 2025-03-26 session";
    if session_header(&call.headers).is_none() {
        return Err(refuse(only_old));
    }
    if let Some(resp) = bad_version_header(&call.headers, None) {
        return Err(resp);
    }
    let (claims, fingerprint) = session_of(call).await.map_err(|r| r.into_response(None))?;
    let old = "2025-03-26";
    let UpstreamLink::Session {
        session_id,
        version,
    } = &claims.upstream
    else {
        return Err(refuse(only_old));
    };
    if claims.version != old || version != old {
        return Err(refuse(only_old));
    }
    Ok(BatchTo {
        sid: call.state.mcp.rebound(&fingerprint).or(session_id.clone()),
        version: version.clone(),
    })
}

pub async fn post(call: &Call<'_>, msg: Message) -> Response {
    let id = msg.id().cloned();
    if let Some(resp) = bad_version_header(&call.headers, id.as_ref()) {
        return resp;
    }
    let (claims, fingerprint) = match session_of(call).await {
        Ok(c) => c,
        Err(r) => return r.into_response(id.as_ref()),
    };
    // `server/discover`, `subscriptions/listen`: not requests of this era, whatever the
    // upstream speaks (a dual-era upstream would answer with a 2026-07-28 result).
    if msg.kind == Kind::Request
        && let Some(method) = msg.method()
        && !results::is_request_of(ClientEra::Session, method)
    {
        return method_not_found(id.as_ref().unwrap_or(&Value::Null));
    }
    match claims.upstream.clone() {
        UpstreamLink::Session {
            session_id,
            version,
        } => forward_in_session(call, &claims, &fingerprint, msg, session_id, &version).await,
        UpstreamLink::Modern => forward_with_envelope(call, &claims, &fingerprint, msg).await,
        // A virtual server's session presented to a registered server of the same name.
        UpstreamLink::Virtual => session_not_found(id.as_ref()),
        UpstreamLink::Pending => settle(call, &claims, &fingerprint, msg).await,
    }
}

/// A request in a session the gateway opened before the caller had a credential, which it
/// now has: opens the upstream session with the client's original parameters (once per
/// process; remembered like a re-initialized session) and forwards the request into it.
/// An upstream that refuses the handshake is tried in the stateless era.
async fn settle(
    call: &Call<'_>,
    claims: &SessionClaims,
    fingerprint: &str,
    msg: Message,
) -> Response {
    let up = &call.upstream;
    let memory = &call.state.mcp;
    if memory.rebound(fingerprint).is_some() {
        return forward_in_session(call, claims, fingerprint, msg, None, &claims.version).await;
    }
    // One handshake per session even when its first requests after connecting arrive at
    // once: the others wait here, then find the session it opened.
    let settling = memory.settling(fingerprint).await;
    if memory.rebound(fingerprint).is_some() {
        drop(settling);
        return forward_in_session(call, claims, fingerprint, msg, None, &claims.version).await;
    }
    let opened = handshakes::initialize(up, &claims.client, &claims.version, None).await;
    if let Ok(InitOutcome::Opened(s)) = &opened
        && let Some(sid) = &s.session_id
    {
        memory.set_rebound(fingerprint, sid.clone());
    }
    drop(settling);
    match opened {
        Ok(InitOutcome::Opened(s)) => {
            tracing::info!(session = %fingerprint, "credential now present; upstream session opened");
            forward_in_session(call, claims, fingerprint, msg, s.session_id, &s.version).await
        }
        Ok(InitOutcome::Refused(_)) => forward_with_envelope(call, claims, fingerprint, msg).await,
        Err(e) => call_failed(&e, msg.id()),
    }
}

/// Forwards within the upstream session; if the upstream has lost it (404), opens a new one
/// with the client's original parameters and retries once, transparently, unless the session
/// was ended by a `DELETE` served elsewhere (the store's record, read only on this path).
async fn forward_in_session(
    call: &Call<'_>,
    claims: &SessionClaims,
    fingerprint: &str,
    msg: Message,
    session_id: Option<String>,
    version: &str,
) -> Response {
    let up = &call.upstream;
    let memory = &call.state.mcp;
    let id = msg.id().cloned();
    // What was parsed and authorized, re-serialized.
    let body = Bytes::from(msg.to_bytes());
    let mut upstream_sid = memory.rebound(fingerprint).or(session_id);
    for attempt in 0..2 {
        let session_headers = up.session_headers(upstream_sid.as_deref(), version);
        let mut headers = call.forwarded(false);
        headers.extend(session_headers.clone());
        let mut guard = match (&id, msg.kind) {
            (Some(id), Kind::Request) => Some(CancelOnDrop::new(up, session_headers, id.clone())),
            _ => None,
        };
        let response = match up.send(Method::POST, headers, Some(body.clone())).await {
            Ok(r) => r,
            Err(e) => {
                // Only a request that may still be running upstream needs cancelling.
                if !e.is_timeout()
                    && let Some(g) = guard.take()
                {
                    g.disarm();
                }
                return call_failed(&e, id.as_ref());
            }
        };
        let lost = response.status() == StatusCode::NOT_FOUND && upstream_sid.is_some();
        if lost && attempt == 0 && msg.kind == Kind::Request {
            if let Some(g) = guard.take() {
                g.disarm();
            }
            if ended_elsewhere(call, fingerprint).await {
                return session_not_found(id.as_ref());
            }
            match handshakes::initialize(up, &claims.client, version, None).await {
                Ok(InitOutcome::Opened(s)) if s.session_id.is_some() => {
                    tracing::info!(session = %fingerprint, "upstream lost the session; re-initialized");
                    if let Some(sid) = &s.session_id {
                        memory.set_rebound(fingerprint, sid.clone());
                    }
                    upstream_sid = s.session_id;
                    continue;
                }
                Ok(_) => return session_not_found(id.as_ref()),
                Err(e) => return call_failed(&e, id.as_ref()),
            }
        }
        if lost {
            return session_not_found(id.as_ref());
        }
        let opts = RelayOptions {
            expect: expect_for(&msg, id.as_ref()),
            adapt: call.adapt.clone(),
            request_id: id,
            cancel_on_drop: guard,
            ..Default::default()
        };
        return stream_back(&call.upstream, response, opts).await;
    }
    session_not_found(id.as_ref())
}

/// Whether the session was ended by a `DELETE` another process served (its upstream session
/// is gone for that reason, and must not be opened again). Asked only once the upstream has
/// answered 404, so the normal path reads nothing from the store. An ended session is
/// remembered here, so its id is refused at once from now on. When the store cannot say, the
/// answer is yes: the client is told its session is gone (it initializes a new one, as it
/// would have to without the transparent re-initialization) rather than an ended session
/// coming back.
async fn ended_elsewhere(call: &Call<'_>, fingerprint: &str) -> bool {
    let state = call.state;
    match state
        .store
        .session_ended(fingerprint, state.clock.now())
        .await
    {
        Ok(true) => {
            tracing::info!(session = %fingerprint, "session ended elsewhere; not re-initialized");
            state.mcp.end(fingerprint);
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::warn!(session = %fingerprint, error = %mcpgw::http::error_chain(&e),
                "could not tell whether the session was ended; not re-initialized");
            true
        }
    }
}

/// Session client, stateless upstream: every request gets the envelope built from the
/// client's `initialize`; notifications have no upstream meaning except cancellation, which
/// stops the call in flight on this process.
async fn forward_with_envelope(
    call: &Call<'_>,
    claims: &SessionClaims,
    fingerprint: &str,
    mut msg: Message,
) -> Response {
    let memory = &call.state.mcp;
    match msg.kind {
        Kind::Notification => {
            if msg.method() == Some("notifications/cancelled")
                && let Some(rid) = msg.params().and_then(|p| p.get("requestId"))
            {
                memory.cancel(&format!("{fingerprint}\n{rid}"));
            }
            return accepted();
        }
        // The client's answer to a request the gateway sent it for an `input_required`
        // round (`input_rounds`); anything else awaits no answer.
        Kind::Response => {
            if let Some(id) = msg.id() {
                memory.give_answer(&format!("{fingerprint}\n{id}"), msg.value);
            }
            return accepted();
        }
        Kind::Request => {}
    }
    let id = msg.id().cloned();
    // What the session era asks of every server but 2026-07-28 dropped, answered by the
    // gateway for the stateless upstream (which would refuse it): `ping` (the session is
    // alive) and `logging/setLevel` (a stateless upstream takes a level per request only).
    if let Some(method @ ("ping" | "logging/setLevel")) = msg.method() {
        let id = id.unwrap_or_default();
        return results::answer(&id, method, json!({}), ClientEra::Session, Ttl::Set(0));
    }
    envelope::apply(
        &mut msg,
        &claims.client.capabilities,
        claims.client.client_info.as_ref(),
    );
    let mut headers = call.forwarded(false);
    for (k, v) in envelope::routing_headers(&msg) {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    }
    let key = format!(
        "{fingerprint}\n{}",
        id.as_ref().map(Value::to_string).unwrap_or_default()
    );
    let (in_flight, cancel) = memory.track(key);
    let declared = Declared::of(&claims.client.capabilities);
    // Kept for the rounds of an `input_required` answer, where one may come.
    let again =
        (declared.any() && msg.method().is_some_and(inputs::can_ask)).then(|| headers.clone());
    let response = match call
        .upstream
        .send(Method::POST, headers, Some(Bytes::from(msg.to_bytes())))
        .await
    {
        Ok(r) => r,
        Err(e) => return call_failed(&e, id.as_ref()),
    };
    let response = if let Some(headers) = again
        && AnswerType::of(response.headers()) == AnswerType::Json
    {
        // A JSON answer may be `input_required`: read, then taken up or relayed as it was.
        let Some((status, bytes)) = input_rounds::read_json(response).await else {
            return call_failed(&CallError::BadAnswer, id.as_ref());
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(answer)
                if input_rounds::is_input_required(&answer) && id.as_ref() == answer.get("id") =>
            {
                let (rewrite, adapt) = (Rewrite::ToSession, call.adapt.clone());
                let rounds = Rounds {
                    up: call.upstream.clone(),
                    headers,
                    msg,
                    client_id: id.unwrap_or_default(),
                    declared,
                    fingerprint: fingerprint.to_owned(),
                    user: call.user().to_owned(),
                    finish: Box::new(move |mut v| {
                        rewrite.apply(&mut v);
                        adapt.apply(&mut v);
                        v
                    }),
                    cancel,
                    _in_flight: in_flight,
                };
                return input_rounds::run(rounds, answer);
            }
            _ => {
                let mut again = axum::http::Response::new(bytes);
                *again.status_mut() = status;
                again.headers_mut().insert(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                reqwest::Response::from(again)
            }
        }
    } else {
        response
    };
    let opts = RelayOptions {
        expect: expect_for(&msg, id.as_ref()),
        adapt: call.adapt.clone(),
        request_id: id,
        cancel: Some(cancel),
        in_flight: Some(in_flight),
        rewrite: Some(Rewrite::ToSession),
        ..Default::default()
    };
    stream_back(&call.upstream, response, opts).await
}

pub async fn get(call: &Call<'_>) -> Response {
    if !call.state.config.allow_get_stream {
        // A buffered Lambda response cannot hold a stream open.
        return no_get_stream();
    }
    let (claims, fingerprint) = match session_of(call).await {
        Ok(c) => c,
        Err(r) => return r.into_response(None),
    };
    let state = call.state;
    let (sid, version) = match claims.upstream {
        UpstreamLink::Session {
            session_id,
            version,
        } => (state.mcp.rebound(&fingerprint).or(session_id), version),
        // Opened before the caller connected, settled since by a request this process
        // served (`settle`): the upstream session it opened has a stream to listen to.
        UpstreamLink::Pending => match state.mcp.rebound(&fingerprint) {
            Some(sid) => (Some(sid), claims.version.clone()),
            None => return no_get_stream(),
        },
        // A stateless upstream has no server-to-client stream to open.
        UpstreamLink::Modern | UpstreamLink::Virtual => return no_get_stream(),
    };
    let mut headers = call.forwarded(false);
    headers.extend(call.upstream.session_headers(sid.as_deref(), &version));
    match call.upstream.send(Method::GET, headers, None).await {
        Ok(r) => {
            stream_back(
                &call.upstream,
                r,
                RelayOptions {
                    unbounded: true,
                    policy_changes: Some(state.policy.changes()),
                    adapt: call.adapt.clone(),
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) => call_failed(&e, None),
    }
}

pub async fn delete(call: &Call<'_>) -> Response {
    let (claims, fingerprint) = match session_of(call).await {
        Ok(c) => c,
        Err(r) => return r.into_response(None),
    };
    // Read before the session ends: ending it forgets the re-initialized upstream session.
    let rebound = call.state.mcp.rebound(&fingerprint);
    if let Err(refused) = sessions::end(call.state, &claims, &fingerprint).await {
        return refused;
    }
    let upstream = match claims.upstream {
        UpstreamLink::Session {
            session_id,
            version,
        } => rebound.or(session_id).map(|sid| (sid, version)),
        // Opened before the caller connected, settled since by a request this process served
        // (`settle`): the upstream session it opened is this session's to end.
        UpstreamLink::Pending => rebound.map(|sid| (sid, claims.version.clone())),
        UpstreamLink::Modern | UpstreamLink::Virtual => None,
    };
    if let Some((sid, version)) = upstream {
        let headers = call.upstream.session_headers(Some(&sid), &version);
        // The gateway session is over whatever the upstream says (it may refuse client
        // termination with 405, or have forgotten the session already).
        match call.upstream.send(Method::DELETE, headers, None).await {
            Ok(r) => tracing::debug!(status = r.status().as_u16(), "upstream session ended"),
            Err(e) => {
                tracing::info!(error = %mcpgw::http::error_chain(&e), "upstream session end failed")
            }
        }
    }
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::NO_CONTENT.into_response())
}
