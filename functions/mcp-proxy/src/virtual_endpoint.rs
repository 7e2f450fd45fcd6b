//! Virtual MCP servers: the gateway is the MCP server. It answers `initialize` and
//! `server/discover` itself, lists the picked tools under their exposed names (schemas from
//! each upstream's live list, fetched with that upstream's own credential for this caller),
//! and routes every call to its upstream under the upstream's own tool name, through the
//! gateway's per-(user, server) upstream sessions (`client`). Resources and prompts come
//! whole from the servers the virtual server names for them.
//!
//! Both eras are served: session-era clients get a sealed session id (bound to user and
//! endpoint like any other; it names no upstream session, so nothing is lost when a
//! request lands on another process), 2026-07-28 clients the per-request envelope.
//! Every decision is [`Access::tool`], the same function that filters registered servers.

use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::join_all;
use mcpgw::mcp::envelope;
use mcpgw::mcp::jsonrpc::{self, ClientPayload, Kind, Message};
use mcpgw::mcp::session::{SessionClaims, UpstreamLink};
use mcpgw::mcp::{sse, versions};
use mcpgw::policy::{Access, VirtualServer};
use mcpgw::state::AppState;
use mcpgw::upstream::catalog::{endpoint_tools, upstream_for};
use mcpgw::upstream::client;
use serde_json::{Value, json};

use crate::answers::{
    call_failed, method_not_found, no_get_stream, no_session, resource_not_found, rpc_error,
    session_not_found,
};
use crate::connect_prompt::{self, Missing};
use crate::govern::{Asker, Gate, Routed, Ticket, counted, gate};
use crate::headers::{bad_version_header, session_header};
use crate::initialize::{check_envelope, envelope_capabilities, handshake_params};
use crate::results::{self, ClientEra, Ttl};
use crate::sessions::{self, SessionAt};

struct Ctx<'a> {
    state: &'a AppState,
    /// Who asks, where, when (for the gate and the records).
    asker: &'a Asker<'a>,
    user: &'a str,
    access: &'a Access,
    vs: &'a VirtualServer,
    /// What a session of this endpoint is bound to (in place of an upstream URL): a
    /// registered server later given the same name never accepts it (and the reverse).
    bound_to: String,
    era: ClientEra,
    /// What the client declared (at `initialize`, or in this request's envelope): decides
    /// the form of a connect prompt.
    client_capabilities: Value,
}

impl<'a> Ctx<'a> {
    fn new(asker: &'a Asker<'a>, access: &'a Access) -> Self {
        let vs = vs_of(access);
        Self {
            state: asker.state,
            asker,
            user: &asker.principal.user,
            access,
            vs,
            bound_to: format!("virtual:{}", vs.name),
            era: ClientEra::Session,
            client_capabilities: json!({}),
        }
    }

    fn session_at(&self) -> SessionAt<'_> {
        SessionAt {
            state: self.state,
            user: self.user,
            endpoint: &self.vs.name,
            bound_to: &self.bound_to,
        }
    }

    /// How long a 2026-07-28 client may reuse a list: as long as the policy is reused.
    fn list_ttl(&self) -> u64 {
        self.state.config.policy_cache_ttl.as_millis() as u64
    }
}

fn vs_of(access: &Access) -> &VirtualServer {
    access
        .virtual_server
        .as_deref()
        .expect("a virtual target carries its virtual server")
}

fn err(id: Option<&Value>, code: i64, message: &str) -> Response {
    rpc_error(StatusCode::OK, id, code, message, None)
}

pub async fn post(asker: &Asker<'_>, access: &Access, payload: ClientPayload) -> Response {
    let headers = asker.headers;
    let msg = match payload {
        ClientPayload::One(m) => m,
        ClientPayload::Batch(_) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                jsonrpc::INVALID_REQUEST,
                "Invalid Request: batches are not accepted on a virtual server",
                None,
            );
        }
    };
    let mut ctx = Ctx::new(asker, access);
    if msg.is_request("initialize") {
        return initialize(&ctx, &msg).await;
    }
    if session_header(headers).is_some() {
        if let Some(bad) = bad_version_header(headers, msg.id()) {
            return bad;
        }
        match session_of(&ctx, headers, msg.id()).await {
            Ok((claims, _)) => ctx.client_capabilities = claims.client.capabilities,
            Err(r) => return r,
        }
        return dispatch(&ctx, msg).await;
    }
    if envelope::looks_modern(&msg, headers) {
        ctx.era = ClientEra::Modern;
        ctx.client_capabilities = envelope_capabilities(&msg);
        if let Err(refused) = check_envelope(&msg, headers) {
            return refused;
        }
        return dispatch(&ctx, msg).await;
    }
    if msg.is_request("ping") {
        return results::ok(msg.id().unwrap_or(&Value::Null), json!({}));
    }
    no_session(msg.id())
}

fn capabilities(vs: &VirtualServer) -> Value {
    let mut caps = json!({"tools": {"listChanged": true}});
    if !vs.resources_from.is_empty() {
        caps["resources"] = json!({});
    }
    if !vs.prompts_from.is_empty() {
        caps["prompts"] = json!({});
    }
    caps
}

fn server_info(vs: &VirtualServer) -> Value {
    json!({"name": vs.name, "version": env!("CARGO_PKG_VERSION")})
}

async fn initialize(ctx: &Ctx<'_>, msg: &Message) -> Response {
    let id = msg.id().cloned().unwrap_or(Value::Null);
    let (version, client) = match handshake_params(msg, &id) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let mut result = json!({
        "protocolVersion": version,
        "capabilities": capabilities(ctx.vs),
        "serverInfo": server_info(ctx.vs),
    });
    if let Some(d) = &ctx.vs.description {
        result["instructions"] = d.as_str().into();
    }
    sessions::issue(
        &ctx.session_at(),
        &id,
        version,
        UpstreamLink::Virtual,
        client,
        result,
    )
    .await
}

/// Opens the request's session: 404 when it is not usable (which check failed is not said),
/// answering request `id` (a client matches the answer to its request by it).
async fn session_of(
    ctx: &Ctx<'_>,
    headers: &HeaderMap,
    id: Option<&Value>,
) -> Result<(SessionClaims, String), Response> {
    match sessions::open(&ctx.session_at(), headers).await {
        Ok((claims, fingerprint)) if claims.upstream == UpstreamLink::Virtual => {
            Ok((claims, fingerprint))
        }
        Ok(_) | Err(sessions::Refusal::Missing | sessions::Refusal::NotFound) => {
            Err(session_not_found(id))
        }
        Err(refused @ sessions::Refusal::Keyring(_)) => Err(refused.into_response(id)),
    }
}

/// A result the gateway made, in the client's era: lists reusable as long as the policy is.
fn answer(ctx: &Ctx<'_>, id: &Value, method: &str, result: Value) -> Response {
    results::answer(id, method, result, ctx.era, Ttl::Set(ctx.list_ttl()))
}

async fn dispatch(ctx: &Ctx<'_>, mut msg: Message) -> Response {
    if msg.kind != Kind::Request {
        // Notifications (initialized, cancelled) and responses: nothing upstream awaits them
        // (the gateway's own upstream calls take no server-to-client requests).
        return StatusCode::ACCEPTED.into_response();
    }
    envelope::strip(&mut msg);
    let id = msg.id().cloned().unwrap_or(Value::Null);
    let vs = ctx.vs;
    let method = msg.method().unwrap_or_default();
    if !results::is_request_of(ctx.era, method) {
        return method_not_found(&id);
    }
    let served = match method {
        "tools/call" => true,
        "resources/read" => !vs.resources_from.is_empty(),
        "prompts/get" => !vs.prompts_from.is_empty(),
        _ => false,
    };
    let ticket = match counted(&msg).filter(|_| served) {
        Some(c) => {
            // A tool decides its upstream here (hidden and unknown alike: `hidden_tool`); a
            // resource's or prompt's server is known once one answers.
            let upstream = match c.method {
                "tools/call" => ctx.access.tool(c.name).map(|r| (r.server, r.tool)),
                _ => None,
            };
            let routed = Routed {
                hidden: c.method == "tools/call" && upstream.is_none(),
                upstream,
                credential: None,
                // The member's own setting applies, once the member is known.
                capture: None,
            };
            match gate(ctx.asker, &c, routed).await {
                Gate::Pass(t) => Some(t),
                Gate::Limited(l) => return l.answer(&c, ctx.era),
            }
        }
        None => None,
    };
    let answer = answer_request(ctx, &id, &msg, method, ticket.as_deref()).await;
    if let Some(t) = ticket {
        t.answered(&answer);
    }
    answer
}

async fn answer_request(
    ctx: &Ctx<'_>,
    id: &Value,
    msg: &Message,
    method: &str,
    ticket: Option<&Ticket>,
) -> Response {
    let (id, vs) = (id.clone(), ctx.vs);
    match method {
        "ping" => answer(ctx, &id, method, json!({})),
        "server/discover" => {
            let mut r = json!({
                "supportedVersions": versions::MODERN,
                "capabilities": capabilities(vs),
                "_meta": {envelope::META_SERVER_INFO: server_info(vs)},
            });
            if let Some(d) = &vs.description {
                r["instructions"] = d.as_str().into();
            }
            answer(ctx, &id, method, r)
        }
        "logging/setLevel" => answer(ctx, &id, method, json!({})),
        "tools/list" => {
            let listed = endpoint_tools(&ctx.state.upstreams, ctx.user, ctx.access).await;
            for e in &listed.errors {
                tracing::warn!(endpoint = %vs.name, error = %e, "a virtual server's upstream could not be listed");
            }
            let tools: Vec<Value> = listed.tools.into_iter().map(|t| t.tool).collect();
            answer(ctx, &id, method, json!({"tools": tools}))
        }
        "tools/call" => call_tool(ctx, &id, msg, ticket).await,
        "resources/list" if !vs.resources_from.is_empty() => {
            aggregate(ctx, &id, &vs.resources_from, "resources/list", "resources").await
        }
        "resources/templates/list" if !vs.resources_from.is_empty() => {
            aggregate(
                ctx,
                &id,
                &vs.resources_from,
                "resources/templates/list",
                "resourceTemplates",
            )
            .await
        }
        "resources/read" if !vs.resources_from.is_empty() => {
            read_resource(ctx, &id, msg, ticket).await
        }
        "prompts/list" if !vs.prompts_from.is_empty() => {
            aggregate(ctx, &id, &vs.prompts_from, "prompts/list", "prompts").await
        }
        "prompts/get" if !vs.prompts_from.is_empty() => get_prompt(ctx, &id, msg, ticket).await,
        _ => method_not_found(&id),
    }
}

/// The upstream's answer to `method` relayed with the client's id, its result in the
/// client's era (reusable no longer than the upstream said, nor than the policy is).
fn relay_answer(ctx: &Ctx<'_>, id: &Value, method: &str, answer: Value) -> Response {
    if let Some(result) = answer.get("result").filter(|r| r.is_object()) {
        let ttl = Ttl::AtMost(ctx.list_ttl());
        return results::answer(id, method, result.clone(), ctx.era, ttl);
    }
    // An error object a client can read (a code and a message) is relayed; anything else
    // (no result object, an error without a code) never reaches the client: 502, like every
    // other answer of an upstream that failed.
    let readable = |e: &&Value| e["code"].is_i64() && e["message"].is_string();
    match answer.get("error").filter(readable) {
        Some(e) => {
            let code = e["code"].as_i64().unwrap_or_default();
            let mut resp =
                axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": e})).into_response();
            resp.extensions_mut()
                .insert(results::Answered::Error { code });
            resp
        }
        None => call_failed(&mcpgw::mcp::handshake::CallError::BadAnswer, Some(id)),
    }
}

/// The string param `key` of a client's request ("" when absent).
fn str_param<'m>(msg: &'m Message, key: &str) -> &'m str {
    msg.params()
        .and_then(|p| p.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

async fn call_tool(ctx: &Ctx<'_>, id: &Value, msg: &Message, ticket: Option<&Ticket>) -> Response {
    let name = str_param(msg, "name").to_owned();
    // Hidden, removed and never-existing tools get this one answer: no existence oracle.
    let Some(route) = ctx.access.tool(&name) else {
        return err(
            Some(id),
            jsonrpc::INVALID_PARAMS,
            &format!("Unknown tool: {name}"),
        );
    };
    let up = match ctx.state.server(route.server).await {
        Ok(Some(s)) => match ctx.state.upstreams.open(s, ctx.user).await {
            Ok(up) => {
                if let Some(t) = ticket {
                    t.credential(up.credential_use(ctx.user));
                    let args = msg.params().and_then(|p| p.get("arguments"));
                    t.capture(args, up.server.audit.as_ref());
                }
                Ok(up)
            }
            // A member that takes the caller's own credential, which they lack: the connect
            // prompt, exactly as on the server's own endpoint.
            Err(e) => match Missing::of(&e) {
                Some(missing) => {
                    let caps = &ctx.client_capabilities;
                    return connect_prompt::tool_call(msg, id, ctx.era, caps, &missing);
                }
                None => Err(e.to_string()),
            },
        },
        Ok(None) => Err(format!("server '{}' is not registered", route.server)),
        Err(e) => Err(mcpgw::http::error_chain(&e)),
    };
    let up = match up {
        Ok(up) => up,
        Err(e) => {
            tracing::warn!(endpoint = %ctx.vs.name, error = %e, "virtual server upstream unavailable");
            return call_failed(
                &mcpgw::mcp::handshake::CallError::Unavailable(503),
                Some(id),
            );
        }
    };
    // What was authorized goes upstream: the client's call as parsed, under the upstream's
    // own name for the tool the policy admitted.
    let mut routed = msg.clone();
    if let Some(p) = routed.params_mut() {
        p.insert("name".into(), route.tool.into());
    }
    let sent = Instant::now();
    let answer = client::forward(&up, ctx.user, routed).await;
    if let Some(t) = ticket {
        t.upstream_time(sent.elapsed());
    }
    match answer {
        Ok(a) => relay_answer(ctx, id, "tools/call", a),
        Err(e) => call_failed(&e, Some(id)),
    }
}

/// A list concatenated over `servers`, in their order; servers that fail are left out.
async fn aggregate(
    ctx: &Ctx<'_>,
    id: &Value,
    servers: &[String],
    method: &str,
    key: &str,
) -> Response {
    let fetched = join_all(servers.iter().map(|s| async move {
        let up = upstream_for(&ctx.state.upstreams, s, ctx.user).await?;
        client::list_all(&up, ctx.user, method, key)
            .await
            .map_err(|e| format!("server '{s}': {}", mcpgw::http::error_chain(&e)))
    }))
    .await;
    let mut items = Vec::new();
    for r in fetched {
        match r {
            Ok(mut v) => items.append(&mut v),
            Err(e) => {
                tracing::warn!(endpoint = %ctx.vs.name, error = %e, "a virtual server's upstream could not be listed")
            }
        }
    }
    answer(ctx, id, method, json!({ key: items }))
}

/// The first of the resource servers that can read the URI answers.
async fn read_resource(
    ctx: &Ctx<'_>,
    id: &Value,
    msg: &Message,
    ticket: Option<&Ticket>,
) -> Response {
    let sent = Instant::now();
    for s in &ctx.vs.resources_from {
        let Ok(up) = upstream_for(&ctx.state.upstreams, s, ctx.user).await else {
            continue;
        };
        if let Ok(a) = client::forward(&up, ctx.user, msg.clone()).await
            && a.get("result").is_some()
        {
            if let Some(t) = ticket {
                t.upstream(s, str_param(msg, "uri"), up.credential_use(ctx.user));
                t.upstream_time(sent.elapsed());
            }
            return relay_answer(ctx, id, "resources/read", a);
        }
    }
    resource_not_found(id, ctx.era)
}

/// The prompt server that lists the name answers.
async fn get_prompt(ctx: &Ctx<'_>, id: &Value, msg: &Message, ticket: Option<&Ticket>) -> Response {
    let name = str_param(msg, "name");
    let sent = Instant::now();
    for s in &ctx.vs.prompts_from {
        let Ok(up) = upstream_for(&ctx.state.upstreams, s, ctx.user).await else {
            continue;
        };
        let Ok(prompts) = client::list_all(&up, ctx.user, "prompts/list", "prompts").await else {
            continue;
        };
        if prompts
            .iter()
            .any(|p| p.get("name").and_then(Value::as_str) == Some(name))
        {
            let answer = client::forward(&up, ctx.user, msg.clone()).await;
            if let Some(t) = ticket {
                t.upstream(s, name, up.credential_use(ctx.user));
                t.capture(
                    msg.params().and_then(|p| p.get("arguments")),
                    up.server.audit.as_ref(),
                );
                t.upstream_time(sent.elapsed());
            }
            return match answer {
                Ok(a) => relay_answer(ctx, id, "prompts/get", a),
                Err(e) => call_failed(&e, Some(id)),
            };
        }
    }
    err(
        Some(id),
        jsonrpc::INVALID_PARAMS,
        &format!("Unknown prompt: {name}"),
    )
}

/// The server-to-client stream of a virtual session: the gateway's own
/// `notifications/tools/list_changed` whenever the policy changes (locally; 405 where no
/// stream can be held).
pub async fn get(asker: &Asker<'_>, access: &Access) -> Response {
    let (state, headers) = (asker.state, asker.headers);
    if !state.config.allow_get_stream {
        return no_get_stream();
    }
    let ctx = Ctx::new(asker, access);
    if let Err(r) = session_of(&ctx, headers, None).await {
        return r;
    }
    let rx = state.policy.changes();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        Some((Ok::<_, std::io::Error>(sse::message_event(&note)), rx))
    });
    crate::answers::event_stream(Body::from_stream(stream))
}

pub async fn delete(asker: &Asker<'_>, access: &Access) -> Response {
    let (state, headers) = (asker.state, asker.headers);
    let ctx = Ctx::new(asker, access);
    let (claims, fingerprint) = match session_of(&ctx, headers, None).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match sessions::end(state, &claims, &fingerprint).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => refused,
    }
}
