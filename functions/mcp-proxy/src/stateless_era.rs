//! Clients of the stateless era (2026-07-28): every request carries its version and the
//! client's capabilities; no session. In front of a stateless upstream the request passes
//! through; in front of a session-era upstream the gateway holds an upstream session per
//! (user, server, what the client declares) in process memory (`Memory::bridged_slot`) and
//! answers `server/discover` from the upstream's `initialize` result.

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use mcpgw::mcp::envelope::{self, Envelope};
use mcpgw::mcp::handshake::CallError;
use mcpgw::mcp::jsonrpc::{self, Kind, Message};
use mcpgw::mcp::memory::{BRIDGED_IDLE, BRIDGED_PER_USER, Era, UpstreamSession, bridge_key};
use mcpgw::mcp::request_state;
use mcpgw::mcp::session::ClientInit;
use mcpgw::upstream::client::{self, Bridged};
use mcpgw::upstream::handshakes::{self, Discovery};
use serde_json::Value;

use crate::answers::{Reason, call_failed, internal, method_not_found, rpc_error, upstream_error};
use crate::call::Call;
use crate::cancel::CancelOnDrop;
use crate::inputs::{self, Asking, Declared, Inputs, Listener};
use crate::owed::{Expect, expect_for};
use crate::relay::{RelayOptions, resume, stream_back};
use crate::results::{self, ClientEra, Ttl};
use crate::rewrite::Rewrite;

pub async fn post(call: &Call<'_>, msg: Message) -> Response {
    let id = msg.id().cloned();
    // `ping`, `logging/setLevel`, ...: no request of this era, whatever the upstream speaks.
    if msg.kind == Kind::Request
        && let Some(method) = msg.method()
        && !results::is_request_of(ClientEra::Modern, method)
    {
        return method_not_found(id.as_ref().unwrap_or(&Value::Null));
    }
    let env = if msg.kind == Kind::Request {
        match envelope::check(&msg, &call.headers) {
            Ok(env) => Some(env),
            Err(r) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    id.as_ref(),
                    r.code,
                    &r.message,
                    r.data,
                );
            }
        }
    } else {
        None
    };
    let up = &call.upstream;
    let memory = &call.state.mcp;
    let era = memory.era(&up.server.name, up.url());
    let Some(env) = env else {
        // Notifications and responses: the era defines none a server acts on, but a
        // stateless upstream may (extensions); a session-era one has no session for them.
        return match era {
            Some(Era::Session) => StatusCode::ACCEPTED.into_response(),
            _ => pass_through(call, msg).await,
        };
    };
    let era = match era {
        Some(era) => era,
        None => match probe(call, &msg, &env).await {
            Ok(Probe::Answered(resp)) => return resp,
            Ok(Probe::Era(era)) => era,
            Err(e) => return call_failed(&e, id.as_ref()),
        },
    };
    match era {
        Era::Modern => pass_through(call, msg).await,
        Era::Session => bridge(call, msg, &env).await,
    }
}

enum Probe {
    Era(Era),
    /// The client's own `server/discover` was the probe and its answer is ready.
    Answered(Response),
}

/// Learns whether the upstream speaks the stateless era. When the client's request is
/// `server/discover`, sending it is the probe. Only a definite answer is remembered: an
/// upstream that is briefly down must not be pinned to the wrong era.
async fn probe(call: &Call<'_>, msg: &Message, env: &Envelope) -> Result<Probe, CallError> {
    let up = &call.upstream;
    let memory = &call.state.mcp;
    let (name, url) = (up.server.name.as_str(), up.url());
    let discovery = if msg.method() == Some("server/discover") {
        let reply = up.exchange_message(call.forwarded(true), msg).await?;
        match handshakes::classify_discovery(&reply) {
            Discovery::Modern(_) => {
                memory.set_era(name, url, Era::Modern);
                let mut body = reply.message.unwrap_or_default();
                // The answer matched the request's id (or was a null-id error): the client's.
                body["id"] = msg.id().cloned().unwrap_or_default();
                return Ok(Probe::Answered(axum::Json(body).into_response()));
            }
            other => other,
        }
    } else {
        let client = ClientInit {
            capabilities: env.capabilities.clone(),
            client_info: env.client_info.clone(),
        };
        handshakes::discover(up, &client).await?
    };
    let era = match discovery {
        Discovery::Modern(_) => Era::Modern,
        Discovery::Refused => Era::Session,
        Discovery::Unclear(status) => return Err(CallError::Unavailable(status.as_u16())),
    };
    memory.set_era(name, url, era);
    Ok(Probe::Era(era))
}

/// Stateless client, stateless upstream: the request travels as it is, routing headers
/// included. Closing the connection (client gone) is the era's cancellation.
async fn pass_through(call: &Call<'_>, msg: Message) -> Response {
    let id = msg.id().cloned();
    // What was parsed and authorized, re-serialized.
    let body = Bytes::from(msg.to_bytes());
    match call
        .upstream
        .send(Method::POST, call.forwarded(true), Some(body))
        .await
    {
        Ok(r) => {
            stream_back(
                &call.upstream,
                r,
                RelayOptions {
                    expect: expect_for(&msg, id.as_ref()),
                    adapt: call.adapt.clone(),
                    request_id: id,
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) => call_failed(&e, id.as_ref()),
    }
}

/// The upstream session bridging this client: one per (user, server, URL, what the client
/// declares), so the upstream sees each kind of client as it is (a tool it offers only to
/// clients with `roots` is listed to those alone). `key`: [`bridge_key`], computed once per
/// request.
async fn bridged_session(
    call: &Call<'_>,
    env: &Envelope,
    key: &str,
    stale: Option<&UpstreamSession>,
) -> Result<UpstreamSession, BridgeError> {
    let client = || ClientInit {
        capabilities: env.capabilities.clone(),
        client_info: env.client_info.clone(),
    };
    match client::bridged_session(&call.upstream, call.user(), key, client, stale).await {
        Ok(Bridged::Session(s)) => Ok(s),
        Ok(Bridged::Refused) => Err(BridgeError::Refused),
        Ok(Bridged::TooManyKinds) => Err(BridgeError::TooManyKinds),
        Err(e) => Err(BridgeError::Call(e)),
    }
}

enum BridgeError {
    Call(CallError),
    /// The upstream answered `initialize` with an error although it had refused
    /// `server/discover`: it speaks neither era the gateway can use.
    Refused,
    /// The caller's clients already hold as many bridged sessions as allowed.
    TooManyKinds,
}

impl BridgeError {
    fn into_response(self, id: Option<&Value>) -> Response {
        match self {
            Self::Call(e) => call_failed(&e, id),
            Self::Refused => (
                StatusCode::BAD_GATEWAY,
                axum::Json(upstream_error(
                    id,
                    Reason::RefusedInitialize,
                    "the upstream MCP server refused the gateway's initialize",
                )),
            )
                .into_response(),
            Self::TooManyKinds => rpc_error(
                StatusCode::TOO_MANY_REQUESTS,
                id,
                jsonrpc::INVALID_REQUEST,
                &format!(
                    "too many kinds of client (distinct capabilities or clientInfo) of this \
                     user are bridged to this session-era server at once; at most {BRIDGED_PER_USER}, \
                     each kept until {} minutes unused",
                    BRIDGED_IDLE.as_secs() / 60
                ),
                None,
            ),
        }
    }
}

/// Stateless client, session-era upstream.
async fn bridge(call: &Call<'_>, mut msg: Message, env: &Envelope) -> Response {
    let id = msg.id().cloned();
    let up = &call.upstream;
    let key = bridge_key(
        call.user(),
        &up.server.name,
        up.url(),
        &env.version,
        &env.capabilities,
        env.client_info.as_ref(),
    );
    let mut session = match bridged_session(call, env, &key, None).await {
        Ok(s) => s,
        Err(e) => return e.into_response(id.as_ref()),
    };
    if msg.method() == Some("server/discover") {
        // Immediately stale: the upstream session it comes from may be replaced any time.
        let result = handshakes::discover_result_from_initialize(&session.init_result);
        return results::answer(
            id.as_ref().unwrap_or(&Value::Null),
            "server/discover",
            result,
            ClientEra::Modern,
            Ttl::Set(0),
        );
    }
    envelope::strip(&mut msg);
    // A round of the multi-round trip: its fields are for the gateway, not the upstream.
    let (state, responses) = match msg.params_mut() {
        Some(p) => (p.remove("requestState"), p.remove("inputResponses")),
        None => (None, None),
    };
    let declared = Declared::of(&env.capabilities);
    let method = msg.method().unwrap_or_default();
    let can_ask = id.is_some() && inputs::can_ask(method) && declared.any();
    let mut asking = None;
    let mut answered = Vec::new();
    let mut held = None;
    if can_ask || state.is_some() {
        let keyring = match call.state.keyring.get().await {
            Ok(k) => k,
            Err(e) => return internal(&e),
        };
        let binding = request_state::binding(call.user(), &call.endpoint, &key);
        let digest = request_state::call_digest(method, msg.params());
        let now = call.state.clock.now();
        if let Some(state) = state {
            let claims = state
                .as_str()
                .ok_or(request_state::Refused::Unreadable)
                .and_then(|s| request_state::open(&keyring, &binding, s, &digest, now));
            let Ok(claims) = claims else {
                return invalid_round(
                    id.as_ref(),
                    "requestState is not one the gateway issued for this call, or it expired",
                );
            };
            let Some(responses) = inputs::input_responses(responses) else {
                return invalid_round(
                    id.as_ref(),
                    "inputResponses must be an object of at most 16 results",
                );
            };
            match inputs::take_held(up.memory(), &claims.held, &binding) {
                Some(h) => {
                    answered.clone_from(&claims.answered);
                    answered.extend(h.answer(&responses, &claims.asked));
                    held = Some(h);
                }
                // Held elsewhere or no longer: the call is sent again and the upstream's
                // repeated requests answered from what the client gave.
                None => answered = inputs::answered_from(&claims, &responses),
            }
        }
        if can_ask {
            asking = Some(Asking {
                user: call.user().to_owned(),
                keyring,
                binding,
                call: digest,
                now,
            });
        }
    }
    let cacheable = msg.method().is_some_and(results::is_cacheable);
    if let Some(h) = held {
        let inputs = Inputs {
            declared,
            asking,
            answered,
            listener: None,
        };
        let opts = RelayOptions {
            expect: Expect::Response(h.gateway_id.clone()),
            adapt: call.adapt.clone(),
            rewrite: Some(Rewrite::ToModern {
                cacheable,
                restore_id: id.clone().map(|c| (h.gateway_id.clone(), c)),
            }),
            request_id: id,
            inputs: Some(inputs),
            ..Default::default()
        };
        return resume(up, h, opts);
    }
    // The upstream session is shared by this user's stateless clients that declare the same,
    // whose ids may collide: the upstream sees a gateway-unique id, the client gets its own back.
    let gateway_id = id.as_ref().map(|_| {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Value::from(format!("mcpgw-{n}"))
    });
    if let Some(gid) = &gateway_id {
        msg.value["id"] = gid.clone();
    }
    let body = Bytes::from(msg.to_bytes());
    for attempt in 0..2 {
        let session_headers = up.session_headers(session.session_id.as_deref(), &session.version);
        let mut headers = call.forwarded(false);
        for h in ["mcp-method", "mcp-name"] {
            headers.remove(h);
        }
        headers.extend(session_headers.clone());
        // Listening before the call is sent: a request the upstream sends on its session's
        // stream rather than the call's would otherwise be lost.
        let listener = match &asking {
            Some(_) => Listener::open(up, session_headers.clone()).await,
            None => None,
        };
        let guard = gateway_id
            .clone()
            .map(|rid| CancelOnDrop::new(up, session_headers.clone(), rid));
        let response = match up.send(Method::POST, headers, Some(body.clone())).await {
            Ok(r) => r,
            Err(e) => {
                if !e.is_timeout()
                    && let Some(g) = guard
                {
                    g.disarm();
                }
                return call_failed(&e, id.as_ref());
            }
        };
        if response.status() == StatusCode::NOT_FOUND
            && session.session_id.is_some()
            && attempt == 0
        {
            if let Some(g) = guard {
                g.disarm();
            }
            session = match bridged_session(call, env, &key, Some(&session)).await {
                Ok(s) => s,
                Err(e) => return e.into_response(id.as_ref()),
            };
            continue;
        }
        let restore_id = gateway_id.clone().zip(id.clone());
        // Requests only: the upstream's requests during a notification have no call to go to.
        let inputs = id.as_ref().map(|_| Inputs {
            declared,
            asking: asking.take(),
            answered: std::mem::take(&mut answered),
            listener,
        });
        let opts = RelayOptions {
            // The upstream answers the gateway's id; any other (another client's request in
            // the shared session, made up) is refused, never passed on.
            expect: match &gateway_id {
                Some(gid) => Expect::Response(gid.clone()),
                None => Expect::Nothing,
            },
            adapt: call.adapt.clone(),
            request_id: id,
            cancel_on_drop: guard,
            rewrite: Some(Rewrite::ToModern {
                cacheable,
                restore_id,
            }),
            inputs,
            ..Default::default()
        };
        return stream_back(&call.upstream, response, opts).await;
    }
    rpc_error(
        StatusCode::BAD_GATEWAY,
        id.as_ref(),
        jsonrpc::UPSTREAM_ERROR,
        "the upstream MCP server keeps losing its session",
        None,
    )
}

/// A retry whose round fields (`requestState`, `inputResponses`) cannot be used.
fn invalid_round(id: Option<&Value>, why: &str) -> Response {
    rpc_error(
        StatusCode::BAD_REQUEST,
        id,
        jsonrpc::INVALID_PARAMS,
        why,
        None,
    )
}
