//! The three HTTP methods of `/mcp/{endpoint}`: transport checks common to every era, then
//! the message goes to the era that owns it (`session_era` when it is an `initialize` or
//! carries a gateway session id, `stateless_era` when it is a 2026-07-28 request).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mcpgw::http::{ApiError, ApiPath, is_json_content_type, read_body};
use mcpgw::mcp::envelope;
use mcpgw::mcp::jsonrpc::{self, ClientPayload};
use mcpgw::state::AppState;

use mcpgw::identity::Principal;
use mcpgw::policy::Access;
use mcpgw::upstream::Upstream;

use crate::admission::{Target, admit};
use crate::relay::{Adapt, rpc_error};
use crate::{connect_prompt, session_era, stateless_era};

/// The gateway session id a request presents, if any.
pub fn session_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("mcp-session-id").and_then(|v| v.to_str().ok())
}

pub async fn post(
    State(state): State<AppState>,
    ApiPath(endpoint): ApiPath<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let (principal, target) = admit(&state, &parts.headers, &endpoint).await?;
    if !is_json_content_type(&parts.headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ));
    }
    if !accepts_mcp(&parts.headers) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
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
    let (server, access) = match target {
        Target::Server(server, access) => (server, access),
        Target::Virtual(access) => {
            return Ok(crate::virtual_endpoint::post(
                &state,
                &principal,
                access,
                parts.headers,
                payload,
            )
            .await);
        }
    };
    let mut headers = parts.headers;
    let adapt = shape(&state, &access, &mut payload, &mut headers);
    let upstream = match state.upstreams.open(server.clone(), &principal.user).await {
        Ok(u) => u,
        Err(e) => {
            // A caller without their own credential still gets a session, answered in-band
            // with the connect link; anything else is refused as before.
            let Some(missing) = connect_prompt::Missing::of(&e) else {
                return Err(e.into());
            };
            let at = connect_prompt::At {
                state: &state,
                user: &principal.user,
                endpoint: &endpoint,
                upstream_url: &server.url,
                headers: &headers,
            };
            return match connect_prompt::post(&at, &missing, payload).await {
                Some(answer) => Ok(answer),
                None => Err(e.into()),
            };
        }
    };
    let call = Call {
        state: state.clone(),
        upstream,
        principal_user: principal.user,
        endpoint,
        headers,
        adapt,
    };
    let msg = match payload {
        ClientPayload::Batch(items) => return Ok(session_era::batch(&call, items).await),
        ClientPayload::One(msg) => msg,
    };
    if msg.is_request("initialize") {
        return Ok(session_era::initialize(&call, msg).await);
    }
    if session_header(&call.headers).is_some() {
        return Ok(session_era::post(&call, msg).await);
    }
    if envelope::looks_modern(&msg, &call.headers) {
        return Ok(stateless_era::post(&call, msg).await);
    }
    if msg.is_request("ping") {
        // Liveness needs no session: the gateway answers for itself.
        let id = msg.id().cloned().unwrap_or_default();
        return Ok(axum::Json(jsonrpc::result(&id, serde_json::json!({}))).into_response());
    }
    Ok(rpc_error(
        StatusCode::BAD_REQUEST,
        msg.id(),
        jsonrpc::INVALID_REQUEST,
        "Bad Request: no Mcp-Session-Id; send initialize first, or use the 2026-07-28 per-request envelope",
        None,
    ))
}

pub async fn get(
    State(state): State<AppState>,
    ApiPath(endpoint): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match Call::admit(&state, endpoint, headers).await? {
        Admitted::Server(call) => Ok(session_era::get(&call).await),
        Admitted::Unconnected(_) => Ok(connect_prompt::get()),
        Admitted::Virtual(p, access, headers) => {
            Ok(crate::virtual_endpoint::get(&state, &p, &access, &headers).await)
        }
    }
}

pub async fn delete(
    State(state): State<AppState>,
    ApiPath(endpoint): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match Call::admit(&state, endpoint, headers).await? {
        Admitted::Server(call) => Ok(session_era::delete(&call).await),
        Admitted::Unconnected(u) => {
            // Admitted (the refusal is about the caller's own upstream credential): the
            // gateway session alone ends.
            let at = connect_prompt::At {
                state: &state,
                user: &u.principal.user,
                endpoint: &u.endpoint,
                upstream_url: &u.server.url,
                headers: &u.headers,
            };
            Ok(connect_prompt::delete(&at).await)
        }
        Admitted::Virtual(p, access, headers) => {
            Ok(crate::virtual_endpoint::delete(&state, &p, &access, &headers).await)
        }
    }
}

/// Prefix of the names hidden tools are called under: no upstream has such a tool, so the
/// answer is the upstream's own answer to an unknown tool.
const HIDDEN_PREFIX: &str = "mcpgw-unknown-tool-";

/// Applies the access decision to a client's message (or batch) before it is forwarded, and
/// says what must change in the answer: a call of a tool the caller may not use goes out
/// under a name that cannot exist (arguments dropped), so the caller gets exactly the answer
/// an unknown tool gets, from the upstream itself (no existence oracle, whatever the upstream
/// says for unknown tools); `tools/list` answers are filtered by the same decision.
fn shape(
    state: &AppState,
    access: &mcpgw::policy::Access,
    payload: &mut ClientPayload,
    headers: &mut HeaderMap,
) -> Adapt {
    let mut adapt = Adapt::default();
    // Only list answers change for a stateless client (and only lists pay for the check).
    let modern = match &*payload {
        ClientPayload::One(m) if m.method().is_some_and(|m| m.ends_with("/list")) => {
            envelope::looks_modern(m, headers) && session_header(headers).is_none()
        }
        _ => false,
    };
    for msg in payload.messages_mut() {
        let method = msg.method();
        // Filtered even for a caller no rule restricts: names with control or format
        // characters are listed to no one (`Access::tool`).
        if method == Some("tools/list") {
            adapt.filter = Some(std::sync::Arc::new(access.clone()));
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
        adapt.private_lists = Some(state.config.policy_cache_ttl.as_millis() as u64);
    }
    adapt
}

/// An admitted bodyless request.
pub enum Admitted {
    Server(Call),
    /// A registered server the caller may use, without the credential of their own it needs.
    Unconnected(Unconnected),
    Virtual(Principal, Access, HeaderMap),
}

/// An admitted caller who lacks their own credential for the server.
pub struct Unconnected {
    pub principal: Principal,
    pub server: std::sync::Arc<mcpgw::domain::McpServer>,
    pub endpoint: String,
    pub headers: HeaderMap,
}

/// One admitted request: who, which endpoint, its upstream, its headers.
pub struct Call {
    pub state: AppState,
    pub upstream: Upstream,
    pub principal_user: String,
    pub endpoint: String,
    pub headers: HeaderMap,
    /// What access control changes in the answer.
    pub adapt: Adapt,
}

impl Call {
    /// Admits a bodyless request (GET, DELETE): caller, endpoint and upstream credential.
    async fn admit(
        state: &AppState,
        endpoint: String,
        headers: HeaderMap,
    ) -> Result<Admitted, ApiError> {
        let (principal, target) = admit(state, &headers, &endpoint).await?;
        let server = match target {
            Target::Server(server, _) => server,
            Target::Virtual(access) => return Ok(Admitted::Virtual(principal, access, headers)),
        };
        let upstream = match state.upstreams.open(server.clone(), &principal.user).await {
            Ok(u) => u,
            Err(e) if e.needs_user() => {
                return Ok(Admitted::Unconnected(Unconnected {
                    principal,
                    server,
                    endpoint,
                    headers,
                }));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Admitted::Server(Self {
            state: state.clone(),
            upstream,
            principal_user: principal.user,
            endpoint,
            headers,
            adapt: Adapt::default(),
        }))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Client headers that may travel upstream for this era: the MCP routing headers and
    /// `Last-Event-ID`, never the session id or version (the gateway sets those) and never
    /// a credential. `stateless`: the 2026-07-28 era, whose routing headers were checked
    /// against the body; otherwise they are not the client's to send (the gateway sets them
    /// from the body when the upstream needs them), so none can route differently upstream
    /// from what was authorized.
    pub fn forwarded(&self, stateless: bool) -> HeaderMap {
        let mut h = mcpgw::upstream::forwarded_request_headers(&self.headers);
        h.remove("mcp-session-id");
        if !stateless {
            for name in ["mcp-protocol-version", "mcp-method", "mcp-name"] {
                h.remove(name);
            }
        }
        h
    }
}

/// 405 for a GET stream this deployment or this session cannot serve; the spec lets servers
/// answer so, and clients then rely on POST responses alone.
pub fn no_get_stream() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "no server-to-client stream is offered here",
    )
    .with_header(header::ALLOW, HeaderValue::from_static("POST, DELETE"))
    .into_response()
}

/// Whether the client accepts what an MCP POST may answer. A missing Accept or `*/*` is
/// taken as accepting both; otherwise both types (or their wildcards) must appear.
fn accepts_mcp(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let types: Vec<String> = accept
        .split(',')
        .filter_map(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let has = |exact: &str, family: &str| {
        types
            .iter()
            .any(|t| t == exact || t == family || t == "*/*")
    };
    has("application/json", "application/*") && has("text/event-stream", "text/*")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accept_rules() {
        assert!(accepts_mcp(&HeaderMap::new()));
        assert!(accepts_mcp(&accept("application/json, text/event-stream")));
        assert!(accepts_mcp(&accept("*/*")));
        assert!(accepts_mcp(&accept("application/json;q=0.9, text/*")));
        assert!(!accepts_mcp(&accept("text/html")));
        assert!(!accepts_mcp(&accept("application/json")));
    }
}
