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

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::join_all;
use mcpgw::http::ApiError;
use mcpgw::identity::Principal;
use mcpgw::mcp::envelope;
use mcpgw::mcp::jsonrpc::{self, ClientPayload, Kind, Message};
use mcpgw::mcp::session::{self, ClientInit, SessionClaims, UpstreamLink};
use mcpgw::mcp::{sse, versions};
use mcpgw::policy::{Access, VirtualServer};
use mcpgw::state::AppState;
use serde_json::{Value, json};

use crate::forward::{no_get_stream, session_header};
use crate::relay::{call_failed, rpc_error};
use mcpgw::upstream::catalog::{endpoint_tools, upstream_for};
use mcpgw::upstream::client;

/// JSON-RPC "method not found".
const METHOD_NOT_FOUND: i64 = -32601;
/// The spec's code for an unknown resource.
const RESOURCE_NOT_FOUND: i64 = -32002;
/// Largest client capabilities + clientInfo a session keeps (as for registered servers).
const MAX_CLIENT_INIT: usize = 4 * 1024;

/// The era a request arrived in, for shaping its answer.
#[derive(Clone, Copy, PartialEq)]
enum Era {
    Session,
    Modern,
}

struct Ctx<'a> {
    state: &'a AppState,
    user: &'a str,
    access: &'a Access,
    vs: &'a VirtualServer,
    era: Era,
    /// What the client declared (at `initialize`, or in this request's envelope): decides
    /// the form of a connect prompt.
    client_capabilities: Value,
}

fn vs_of(access: &Access) -> &VirtualServer {
    access
        .virtual_server
        .as_deref()
        .expect("a virtual target carries its virtual server")
}

/// Sessions of a virtual endpoint are bound to this in place of an upstream URL: a registered
/// server later given the same name never accepts them (and the reverse).
fn fingerprint_of(vs: &VirtualServer) -> String {
    session::upstream_fingerprint(&format!("virtual:{}", vs.name))
}

fn ok(id: &Value, result: Value) -> Response {
    axum::Json(jsonrpc::result(id, result)).into_response()
}

fn err(id: Option<&Value>, code: i64, message: &str) -> Response {
    rpc_error(StatusCode::OK, id, code, message, None)
}

pub async fn post(
    state: &AppState,
    principal: &Principal,
    access: Access,
    headers: HeaderMap,
    payload: ClientPayload,
) -> Response {
    let vs = vs_of(&access);
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
    let mut ctx = Ctx {
        state,
        user: &principal.user,
        access: &access,
        vs,
        era: Era::Session,
        client_capabilities: json!({}),
    };
    if msg.is_request("initialize") {
        return initialize(&ctx, &msg).await;
    }
    if session_header(&headers).is_some() {
        if let Some(bad) = bad_version_header(&headers, msg.id()) {
            return bad;
        }
        match session_of(&ctx, &headers).await {
            Ok((claims, _)) => ctx.client_capabilities = claims.client.capabilities,
            Err(r) => return r,
        }
        return dispatch(&ctx, msg).await;
    }
    if envelope::looks_modern(&msg, &headers) {
        ctx.era = Era::Modern;
        ctx.client_capabilities = msg
            .params()
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(crate::connect_prompt::CLIENT_CAPABILITIES))
            .cloned()
            .unwrap_or_else(|| json!({}));
        if msg.kind == Kind::Request
            && let Err(r) = envelope::check(&msg, &headers)
        {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                msg.id(),
                r.code,
                &r.message,
                r.data,
            );
        }
        return dispatch(&ctx, msg).await;
    }
    if msg.is_request("ping") {
        return ok(msg.id().unwrap_or(&Value::Null), json!({}));
    }
    rpc_error(
        StatusCode::BAD_REQUEST,
        msg.id(),
        jsonrpc::INVALID_REQUEST,
        "Bad Request: no Mcp-Session-Id; send initialize first, or use the 2026-07-28 per-request envelope",
        None,
    )
}

fn bad_version_header(headers: &HeaderMap, id: Option<&Value>) -> Option<Response> {
    match headers.get("mcp-protocol-version").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) if versions::is_handshake(v) => None,
        Some(_) => Some(rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            jsonrpc::INVALID_REQUEST,
            "Bad Request: unsupported MCP-Protocol-Version",
            Some(json!({"supported": versions::HANDSHAKE})),
        )),
    }
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
    let params = msg.params();
    let Some(requested) = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
    else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Some(&id),
            jsonrpc::INVALID_PARAMS,
            "initialize needs params.protocolVersion",
            None,
        );
    };
    let version = if versions::is_handshake(requested) {
        requested
    } else {
        versions::LATEST_HANDSHAKE
    };
    let client = ClientInit {
        capabilities: params
            .and_then(|p| p.get("capabilities"))
            .cloned()
            .unwrap_or_else(|| json!({})),
        client_info: params.and_then(|p| p.get("clientInfo")).cloned(),
    };
    if serde_json::to_vec(&client).map_or(usize::MAX, |v| v.len()) > MAX_CLIENT_INIT {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Some(&id),
            jsonrpc::INVALID_PARAMS,
            &format!("initialize: capabilities and clientInfo exceed {MAX_CLIENT_INIT} bytes"),
            None,
        );
    }
    let state = ctx.state;
    let claims = SessionClaims {
        user: ctx.user.to_owned(),
        endpoint: ctx.vs.name.clone(),
        version: version.to_owned(),
        upstream: UpstreamLink::Virtual,
        upstream_url: fingerprint_of(ctx.vs),
        client,
        expires_at: state.clock.now() + state.config.session_ttl.as_secs() as i64,
    };
    let sealed = match state.keyring.get().await {
        Ok(k) => session::seal(&k, &claims),
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    let Ok(header) = sealed
        .map_err(|e| e.to_string())
        .and_then(|s| HeaderValue::from_str(&s).map_err(|e| e.to_string()))
    else {
        return ApiError::internal(&std::io::Error::other("session id")).into_response();
    };
    let mut result = json!({
        "protocolVersion": version,
        "capabilities": capabilities(ctx.vs),
        "serverInfo": server_info(ctx.vs),
    });
    if let Some(d) = &ctx.vs.description {
        result["instructions"] = d.as_str().into();
    }
    let mut resp = ok(&id, result);
    resp.headers_mut().insert("mcp-session-id", header);
    resp
}

/// Opens the request's session: 404 when it is not usable (which check failed is not said).
async fn session_of(
    ctx: &Ctx<'_>,
    headers: &HeaderMap,
) -> Result<(SessionClaims, String), Response> {
    let not_found = || {
        rpc_error(
            StatusCode::NOT_FOUND,
            None,
            jsonrpc::SESSION_NOT_FOUND,
            "Session not found: initialize a new session",
            None,
        )
    };
    let presented = session_header(headers).ok_or_else(not_found)?;
    let state = ctx.state;
    let fingerprint = session::fingerprint(presented);
    if state.mcp.is_ended(&fingerprint) {
        return Err(not_found());
    }
    let keyring = state
        .keyring
        .get()
        .await
        .map_err(|e| ApiError::internal(&e).into_response())?;
    let open = |k: &mcpgw::crypto::Keyring| {
        session::open(k, presented, &ctx.vs.name, ctx.user, state.clock.now())
    };
    let mut opened = open(&keyring);
    if opened == Err(session::SessionRejected::UnknownKey)
        && let Some(newer) = state.keyring.refresh().await
    {
        opened = open(&newer);
    }
    match opened {
        Ok(c)
            if c.upstream == UpstreamLink::Virtual && c.upstream_url == fingerprint_of(ctx.vs) =>
        {
            Ok((c, fingerprint))
        }
        _ => Err(not_found()),
    }
}

/// Result shaping per era: 2026-07-28 results carry `resultType`, and lists are private to
/// the caller and cached no longer than the policy is.
fn answer(ctx: &Ctx<'_>, id: &Value, mut result: Value, list: bool) -> Response {
    if ctx.era == Era::Modern
        && let Some(r) = result.as_object_mut()
    {
        r.entry("resultType").or_insert_with(|| "complete".into());
        if list {
            r.insert(
                "ttlMs".into(),
                (ctx.state.config.policy_cache_ttl.as_millis() as u64).into(),
            );
            r.insert("cacheScope".into(), "private".into());
        }
    } else if let Some(r) = result.as_object_mut() {
        for k in ["resultType", "ttlMs", "cacheScope"] {
            r.remove(k);
        }
    }
    ok(id, result)
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
    match msg.method().unwrap_or_default() {
        "ping" => answer(ctx, &id, json!({}), false),
        "server/discover" if ctx.era == Era::Modern => {
            let mut r = json!({
                "supportedVersions": versions::MODERN,
                "capabilities": capabilities(vs),
                "_meta": {envelope::META_SERVER_INFO: server_info(vs)},
            });
            if let Some(d) = &vs.description {
                r["instructions"] = d.as_str().into();
            }
            answer(ctx, &id, r, true)
        }
        "logging/setLevel" => answer(ctx, &id, json!({}), false),
        "tools/list" => {
            let listed = endpoint_tools(&ctx.state.upstreams, ctx.user, ctx.access).await;
            for e in &listed.errors {
                tracing::warn!(endpoint = %vs.name, error = %e, "a virtual server's upstream could not be listed");
            }
            let tools: Vec<Value> = listed.tools.into_iter().map(|t| t.tool).collect();
            answer(ctx, &id, json!({"tools": tools}), true)
        }
        "tools/call" => call_tool(ctx, &id, &msg).await,
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
        "resources/read" if !vs.resources_from.is_empty() => read_resource(ctx, &id, &msg).await,
        "prompts/list" if !vs.prompts_from.is_empty() => {
            aggregate(ctx, &id, &vs.prompts_from, "prompts/list", "prompts").await
        }
        "prompts/get" if !vs.prompts_from.is_empty() => get_prompt(ctx, &id, &msg).await,
        _ => err(Some(&id), METHOD_NOT_FOUND, "Method not found"),
    }
}

/// The upstream's answer relayed with the client's id.
fn relay_answer(ctx: &Ctx<'_>, id: &Value, answer: Value) -> Response {
    if let Some(result) = answer.get("result") {
        return self::answer(ctx, id, result.clone(), false);
    }
    let error = answer
        .get("error")
        .cloned()
        .unwrap_or_else(|| json!({"code": jsonrpc::UPSTREAM_ERROR, "message": "the upstream MCP server's answer was not valid MCP"}));
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": error})).into_response()
}

/// The string param `key` of a client's request ("" when absent).
fn str_param<'m>(msg: &'m Message, key: &str) -> &'m str {
    msg.params()
        .and_then(|p| p.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

async fn call_tool(ctx: &Ctx<'_>, id: &Value, msg: &Message) -> Response {
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
            Ok(up) => Ok(up),
            // A member that takes the caller's own credential, which they lack: the connect
            // prompt, exactly as on the server's own endpoint.
            Err(e) => match crate::connect_prompt::Missing::of(&e) {
                Some(missing) => {
                    let caps = ctx.client_capabilities.clone();
                    let client = match ctx.era {
                        Era::Modern => crate::connect_prompt::Client::Stateless(caps),
                        Era::Session => crate::connect_prompt::Client::Session(caps),
                    };
                    return crate::connect_prompt::tool_call(id, &client, &missing);
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
    match client::forward(&up, ctx.user, routed).await {
        Ok(a) => relay_answer(ctx, id, a),
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
    answer(ctx, id, json!({ key: items }), true)
}

/// The first of the resource servers that can read the URI answers.
async fn read_resource(ctx: &Ctx<'_>, id: &Value, msg: &Message) -> Response {
    for s in &ctx.vs.resources_from {
        let Ok(up) = upstream_for(&ctx.state.upstreams, s, ctx.user).await else {
            continue;
        };
        if let Ok(a) = client::forward(&up, ctx.user, msg.clone()).await
            && a.get("result").is_some()
        {
            return relay_answer(ctx, id, a);
        }
    }
    err(Some(id), RESOURCE_NOT_FOUND, "Resource not found")
}

/// The prompt server that lists the name answers.
async fn get_prompt(ctx: &Ctx<'_>, id: &Value, msg: &Message) -> Response {
    let name = str_param(msg, "name");
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
            return match client::forward(&up, ctx.user, msg.clone()).await {
                Ok(a) => relay_answer(ctx, id, a),
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
pub async fn get(
    state: &AppState,
    principal: &Principal,
    access: &Access,
    headers: &HeaderMap,
) -> Response {
    if !state.config.allow_get_stream {
        return no_get_stream();
    }
    let ctx = Ctx {
        state,
        user: &principal.user,
        access,
        vs: vs_of(access),
        era: Era::Session,
        client_capabilities: json!({}),
    };
    if let Err(r) = session_of(&ctx, headers).await {
        return r;
    }
    let rx = state.policy.changes();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        Some((Ok::<_, std::io::Error>(sse::message_event(&note)), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp
}

pub async fn delete(
    state: &AppState,
    principal: &Principal,
    access: &Access,
    headers: &HeaderMap,
) -> Response {
    let ctx = Ctx {
        state,
        user: &principal.user,
        access,
        vs: vs_of(access),
        era: Era::Session,
        client_capabilities: json!({}),
    };
    let (claims, fingerprint) = match session_of(&ctx, headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(e) = state
        .store
        .end_session(&fingerprint, claims.expires_at)
        .await
    {
        return ApiError::from(e).into_response();
    }
    state.mcp.end(&fingerprint);
    StatusCode::NO_CONTENT.into_response()
}
