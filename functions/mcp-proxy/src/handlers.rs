//! The three HTTP methods of `/mcp/{endpoint}`. Every request reads in one direction:
//! admit (authenticate and decide, once: [`admit`]), resolve the caller's credential for
//! the upstream ([`route`]), then hand the message to the era that owns it (`session_era`
//! for `initialize` and requests in a gateway session, `stateless_era` for 2026-07-28
//! requests), which forwards it; the relay adapts the answer on its way back. Virtual
//! servers and callers without their own credential are answered by the gateway itself
//! (`virtual_endpoint`, `connect_prompt`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mcpgw::audit::CredentialUse;
use mcpgw::domain::McpServer;
use mcpgw::http::{ApiError, ApiPath, is_json_content_type, read_body};
use mcpgw::identity::Principal;
use mcpgw::mcp::envelope;
use mcpgw::mcp::jsonrpc::{self, ClientPayload, Message};
use mcpgw::policy::Access;
use mcpgw::state::AppState;
use mcpgw::upstream::{CredentialError, credential_use, snapshots};
use serde_json::{Value, json};

use crate::adapt::{Adapt, shape};
use crate::admission::{Admitted, Target, admit};
use crate::answers::{no_session, rpc_error};
use crate::call::Call;
use crate::connect_prompt::{self, Missing};
use crate::govern::{Asker, Counted, Gate, Routed, Tickets, counted, gate, too_many};
use crate::headers::{accepts_mcp, session_header};
use crate::results::{self, ClientEra};
use crate::sessions::SessionAt;
use crate::{session_era, stateless_era, virtual_endpoint};
use mcpgw::http::ErrorCode;

pub async fn post(
    State(state): State<AppState>,
    ApiPath(endpoint): ApiPath<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let (parts, body) = req.into_parts();
    let admitted = admit(&state, &parts.headers, endpoint).await?;
    if !is_json_content_type(&parts.headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ));
    }
    if !accepts_mcp(&parts.headers) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            ErrorCode::NotAcceptable,
            "Accept must allow application/json and text/event-stream",
        ));
    }
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    // Every message is inspected before anything reaches the upstream: the upstream never
    // sees garbage in the gateway's name, and routing needs the method. It is read strictly
    // (no member twice, no near-spelling of one the gateway reads), and from here on only
    // the parsed message exists: what goes upstream is it, re-serialized, never these bytes.
    let mut payload = match jsonrpc::parse_client_message(&bytes) {
        Ok(p) => p,
        Err(invalid) => {
            return Ok(rpc_error(
                StatusCode::BAD_REQUEST,
                invalid.id.as_ref(),
                invalid.code,
                &invalid.message,
                None,
            ));
        }
    };
    drop(bytes);
    if let ClientPayload::Batch(items) = &payload
        && items.len() > MAX_BATCH
    {
        // Each member is a limit check and a record: a batch's cost is bounded here, before
        // anything is counted.
        return Ok(rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            jsonrpc::INVALID_REQUEST,
            &format!("Invalid Request: a batch holds at most {MAX_BATCH} messages"),
            None,
        ));
    }
    let (mut call, access) = match route(&state, admitted, parts.headers).await? {
        Route::Server(call, access) => (call, access),
        Route::Virtual(v) => {
            let asker = v.asker(&state, received);
            return Ok(virtual_endpoint::post(&asker, &v.access, payload).await);
        }
        Route::Unconnected(u) => {
            let asker = Asker {
                state: &state,
                principal: &u.principal,
                endpoint: &u.endpoint,
                headers: &u.headers,
                received,
            };
            if matches!(payload, ClientPayload::Batch(_)) {
                // The prompt answers no batch: refused before anything is counted.
                return Err(u.refusal.into());
            }
            let credential = credential_use(&u.server, &u.principal.user);
            let server = &u.server;
            let tickets =
                match govern_payload(&asker, &u.access, server, &payload, credential).await {
                    Ok(t) => t,
                    Err(limited) => return Ok(limited),
                };
            // A caller without their own credential still gets a session, answered in-band
            // with the connect link; a batch gets the refusal itself.
            return match connect_prompt::post(&u.at(&state), &u.missing, payload).await {
                Some(answer) => {
                    tickets.answered(&answer);
                    Ok(answer)
                }
                None => Err(u.refusal.into()),
            };
        }
    };
    // A batch that will be refused is refused before its members are counted or recorded.
    let batch_to = match &payload {
        ClientPayload::Batch(items) => match session_era::batch_to(&call, items).await {
            Ok(to) => Some(to),
            Err(refused) => return Ok(refused),
        },
        ClientPayload::One(_) => None,
    };
    let tickets = {
        let asker = Asker {
            state: &state,
            principal: &call.principal,
            endpoint: &call.endpoint,
            headers: &call.headers,
            received,
        };
        let credential = call.upstream.credential_use(call.user());
        let server = &call.upstream.server;
        match govern_payload(&asker, &access, server, &payload, credential).await {
            Ok(t) => t,
            Err(limited) => return Ok(limited),
        }
    };
    let list_ttl = state.config.policy_cache_ttl.as_millis() as u64;
    call.adapt = shape(&access, &mut payload, &mut call.headers, list_ttl);
    call.adapt.tickets = tickets.clone();
    if lists_every_tool(&payload) && snapshots::kept(&call.upstream.server) {
        // What a connected caller gets is what callers not connected yet are shown.
        let observer = state
            .upstreams
            .snapshots()
            .observer(call.upstream.server.clone());
        call.adapt.snapshot = Some(Arc::new(observer));
    }
    let answer = dispatch(&call, payload, batch_to).await;
    // A relayed answer's tickets are the relay's to complete (as each owed response
    // passes); an answer the gateway made or read whole completes them here.
    if answer.extensions().get::<mcpgw::http::Relayed>().is_none() {
        tickets.answered(&answer);
    }
    Ok(answer)
}

/// The era of a client's single message, where it reaches an era at all (else the gateway
/// answers it without a session, and it is not counted).
fn era_of(msg: &Message, headers: &HeaderMap) -> Option<ClientEra> {
    if session_header(headers).is_some() {
        Some(ClientEra::Session)
    } else if envelope::looks_modern(msg, headers) {
        Some(ClientEra::Modern)
    } else {
        None
    }
}

/// The most messages a batch may hold (beyond: 400, nothing counted).
pub const MAX_BATCH: usize = 100;

/// The gate for every counted message of a registered server's payload: their tickets, or
/// the answer when a limit refused one (a batch with a member limited: 429 as a whole).
async fn govern_payload<'a>(
    asker: &Asker<'a>,
    access: &Access,
    server: &'a McpServer,
    payload: &'a ClientPayload,
    credential: CredentialUse,
) -> Result<Tickets, Response> {
    let mut tickets = Tickets::default();
    let gated = |c: &Counted<'a>| -> Routed<'a> {
        // A tool the caller may not use is decided here like everywhere: the same
        // function that renames it on the way (`adapt::shape`).
        let hidden = c.method == "tools/call" && access.tool(c.name).is_none();
        Routed {
            hidden,
            upstream: (!hidden).then_some((server.name.as_str(), c.name)),
            credential: Some(credential.clone()),
            capture: server.audit.as_ref(),
        }
    };
    match payload {
        ClientPayload::One(msg) => {
            let (Some(c), Some(era)) = (counted(msg), era_of(msg, asker.headers)) else {
                return Ok(tickets);
            };
            match gate(asker, &c, gated(&c)).await {
                Gate::Pass(t) => tickets.push(c.id.clone(), t),
                Gate::Limited(l) => return Err(l.answer(&c, era)),
            }
        }
        ClientPayload::Batch(items) => {
            // The first limited member decides the batch's answer: the members after it are
            // neither counted nor recorded (they were not attempted).
            for c in items.iter().filter_map(counted) {
                match gate(asker, &c, gated(&c)).await {
                    Gate::Pass(t) => tickets.push(c.id.clone(), t),
                    Gate::Limited(l) => {
                        let answer = too_many(None, l.seconds());
                        l.in_batch(&answer);
                        tickets.answered(&answer);
                        return Err(answer);
                    }
                }
            }
        }
    }
    Ok(tickets)
}

/// Hands the message to the era that owns it (a batch with where [`session_era::batch_to`]
/// said it goes).
async fn dispatch(
    call: &Call<'_>,
    payload: ClientPayload,
    batch_to: Option<session_era::BatchTo>,
) -> Response {
    let msg = match (payload, batch_to) {
        (ClientPayload::Batch(items), Some(to)) => {
            return session_era::batch(call, items, to).await;
        }
        (ClientPayload::Batch(_), None) => {
            // `post` checks every batch first; unreachable, answered as a refused batch.
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                jsonrpc::INVALID_REQUEST,
                "Invalid Request: batches are only accepted in a 2025-03-26 session",
                None,
            );
        }
        (ClientPayload::One(msg), _) => msg,
    };
    if msg.is_request("initialize") {
        return session_era::initialize(call, msg).await;
    }
    if session_header(&call.headers).is_some() {
        return session_era::post(call, msg).await;
    }
    if envelope::looks_modern(&msg, &call.headers) {
        return stateless_era::post(call, msg).await;
    }
    if msg.is_request("ping") {
        // Liveness needs no session: the gateway answers for itself.
        let id = msg.id().cloned().unwrap_or_default();
        return results::ok(&id, json!({}));
    }
    no_session(msg.id())
}

pub async fn get(
    State(state): State<AppState>,
    ApiPath(endpoint): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let admitted = admit(&state, &headers, endpoint).await?;
    Ok(match route(&state, admitted, headers).await? {
        Route::Server(mut call, access) => {
            // A GET stream that resumes a POST's (`Last-Event-ID`) can carry that POST's
            // answer: a `tools/list` result is filtered there as on the POST stream.
            call.adapt.filter = Some(Arc::new(access));
            session_era::get(&call).await
        }
        Route::Unconnected(u) => connect_prompt::get(&u.at(&state)).await,
        Route::Virtual(v) => {
            virtual_endpoint::get(&v.asker(&state, Instant::now()), &v.access).await
        }
    })
}

pub async fn delete(
    State(state): State<AppState>,
    ApiPath(endpoint): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let admitted = admit(&state, &headers, endpoint).await?;
    Ok(match route(&state, admitted, headers).await? {
        Route::Server(call, _) => session_era::delete(&call).await,
        // No upstream session: the gateway's own session alone ends.
        Route::Unconnected(u) => connect_prompt::delete(&u.at(&state)).await,
        Route::Virtual(v) => {
            virtual_endpoint::delete(&v.asker(&state, Instant::now()), &v.access).await
        }
    })
}

/// Whether `payload` is one `tools/list` from the start (no cursor): its answer is the
/// whole list when it has no `nextCursor`.
fn lists_every_tool(payload: &ClientPayload) -> bool {
    match payload {
        ClientPayload::One(m) => {
            m.is_request("tools/list")
                && m.params()
                    .and_then(|p| p.get("cursor"))
                    .is_none_or(Value::is_null)
        }
        ClientPayload::Batch(_) => false,
    }
}

/// Where an admitted request goes, the caller's credential resolved.
enum Route<'a> {
    /// A registered server, ready to call, and what the caller may do there.
    Server(Call<'a>, Access),
    /// A registered server the caller may use, without the credential of their own it needs.
    Unconnected(Unconnected),
    /// A virtual server: the gateway is the MCP server.
    Virtual(Virtual),
}

struct Unconnected {
    principal: Principal,
    endpoint: String,
    server: Arc<McpServer>,
    access: Access,
    headers: HeaderMap,
    missing: Missing,
    /// The refusal itself, for what the prompt cannot answer.
    refusal: CredentialError,
}

impl Unconnected {
    fn at<'a>(&'a self, state: &'a AppState) -> connect_prompt::At<'a> {
        connect_prompt::At {
            session: SessionAt {
                state,
                user: &self.principal.user,
                endpoint: &self.endpoint,
                bound_to: &self.server.url,
            },
            headers: &self.headers,
            server: &self.server,
            access: &self.access,
        }
    }
}

struct Virtual {
    principal: Principal,
    endpoint: String,
    access: Access,
    headers: HeaderMap,
}

impl Virtual {
    fn asker<'a>(&'a self, state: &'a AppState, received: Instant) -> Asker<'a> {
        Asker {
            state,
            principal: &self.principal,
            endpoint: &self.endpoint,
            headers: &self.headers,
            received,
        }
    }
}

/// Resolves the caller's credential for the admitted endpoint's upstream (none for a
/// virtual server: its members are called with theirs, one by one).
async fn route(
    state: &AppState,
    admitted: Admitted,
    headers: HeaderMap,
) -> Result<Route<'_>, ApiError> {
    let Admitted {
        principal,
        endpoint,
        target,
    } = admitted;
    let (server, access) = match target {
        Target::Server(server, access) => (server, access),
        Target::Virtual(access) => {
            return Ok(Route::Virtual(Virtual {
                principal,
                endpoint,
                access,
                headers,
            }));
        }
    };
    match state.upstreams.open(server.clone(), &principal.user).await {
        Ok(upstream) => Ok(Route::Server(
            Call {
                state,
                upstream,
                principal,
                endpoint,
                headers,
                adapt: Adapt::default(),
            },
            access,
        )),
        Err(refusal) => match Missing::of(&refusal) {
            Some(missing) => Ok(Route::Unconnected(Unconnected {
                principal,
                endpoint,
                server,
                access,
                headers,
                missing,
                refusal,
            })),
            None => Err(refusal.into()),
        },
    }
}
