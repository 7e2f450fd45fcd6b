//! The in-band connect prompt: a caller without the credential an upstream needs (an OAuth2
//! grant not yet made or needing re-consent, a `per_user_token` not stored) still gets an MCP
//! session. The gateway answers it alone: `initialize` with the connect link in
//! `instructions`; `tools/list` with the server's tools where the gateway can list them
//! (`mcpgw::upstream::snapshots`: the list a connected caller last got, else the upstream's
//! unauthenticated list), filtered by the caller's access like a relayed list and each
//! marked as needing a connection; other lists empty; and every `tools/call` with the link,
//! as a URL-mode elicitation (`-32042` in the session era, an `input_required` result in
//! 2026-07-28) for clients that declare URL elicitation, else as a tool result with
//! `isError` whose text carries it. 2026-07-28 lists carry `ttlMs` [`UNCONNECTED_LIST_TTL_MS`]
//! (short: they change once the caller connects); session-era lists carry no caching fields.
//!
//! Once the caller connects, in any process, held streams say so (`connect_watch`): a
//! session-era client's GET stream gets `notifications/tools/list_changed` and, when it
//! declared URL elicitation, `notifications/elicitation/complete` with the id its `-32042`
//! carried ([`elicitation_id`], derived from the session so any process computes the same);
//! a 2026-07-28 client's `subscriptions/listen` gets its acknowledgement first, then
//! `notifications/tools/list_changed` when it asked for it. The session's next request opens
//! the upstream session (`session_era::settle`); a 2026-07-28 client's next request goes
//! upstream as usual.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mcpgw::domain::McpServer;
use mcpgw::mcp::envelope;
use mcpgw::mcp::jsonrpc::{self, ClientPayload, Kind, Message};
use mcpgw::mcp::session::UpstreamLink;
use mcpgw::mcp::versions;
use mcpgw::policy::Access;
use mcpgw::upstream::CredentialError;
use mcpgw::upstream::catalog::marked_for_unconnected;
use mcpgw::upstream::handshakes::discover_result_from_initialize;
use serde_json::{Value, json};

use crate::answers::{accepted, method_not_found, no_get_stream, rpc_error};
use crate::connect_watch::{self, Watch};
use crate::headers::{bad_version_header, session_header};
use crate::initialize::{check_envelope, envelope_capabilities, handshake_params};
use crate::results::{self, ClientEra, Ttl};
use crate::sessions::{self, SessionAt};

/// What the caller lacks.
pub struct Missing {
    /// What to tell the user, link included.
    pub message: String,
    /// The single-use connect link, for OAuth2 servers (a stored token has no page to open).
    pub url: Option<String>,
}

impl Missing {
    /// `Some` when `e` says a credential of the caller's own is missing.
    pub fn of(e: &CredentialError) -> Option<Self> {
        match e {
            CredentialError::ConnectRequired { url, .. } => Some(Self {
                url: Some(url.clone()),
                message: e.to_string(),
            }),
            CredentialError::TokenRequired { .. } => Some(Self {
                url: None,
                message: e.to_string(),
            }),
            CredentialError::Unavailable(_) => None,
        }
    }
}

/// How long a 2026-07-28 client may reuse a list answered while it is not connected: short,
/// since connecting changes it (and a client that listens is told at once).
pub const UNCONNECTED_LIST_TTL_MS: u64 = 5_000;

/// The `_meta` key naming the `subscriptions/listen` request a message belongs to.
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// Where the prompt is answered: the session it belongs to, the request's headers, the
/// server and what the caller may use of it.
pub struct At<'a> {
    pub session: SessionAt<'a>,
    pub headers: &'a HeaderMap,
    pub server: &'a Arc<McpServer>,
    pub access: &'a Access,
}

/// The `elicitationId` of the URL elicitation a session-era session gets for connecting
/// `endpoint`: derived from the session id the client presents (known only to it), so the
/// process that answers the call and the one holding its stream compute the same, with
/// nothing stored.
pub fn elicitation_id(session_id: &str, endpoint: &str) -> String {
    let digest = mcpgw::crypto::sha256_hex(
        format!("mcpgw-connect-elicitation\n{session_id}\n{endpoint}").as_bytes(),
    );
    format!("mcpgw-connect-{}", &digest[..32])
}

/// Answers one POSTed message without the upstream. `None`: not a message the prompt can
/// answer (a batch), so the caller gets the refusal itself.
pub async fn post(at: &At<'_>, missing: &Missing, payload: ClientPayload) -> Option<Response> {
    let ClientPayload::One(msg) = payload else {
        return None;
    };
    let id = msg.id().cloned().unwrap_or(Value::Null);
    if msg.is_request("initialize") {
        let (offered, client) = match handshake_params(&msg, &id) {
            Ok(p) => p,
            Err(refused) => return Some(refused),
        };
        let result = init_result(&offered, at.session.endpoint, missing);
        return Some(
            sessions::issue(
                &at.session,
                &id,
                offered,
                UpstreamLink::Pending,
                client,
                result,
            )
            .await,
        );
    }
    let (era, capabilities) = if session_header(at.headers).is_some() {
        if let Some(bad) = bad_version_header(at.headers, msg.id()) {
            return Some(bad);
        }
        match sessions::open(&at.session, at.headers).await {
            Ok((claims, _)) => (ClientEra::Session, claims.client.capabilities),
            Err(r) => return Some(r.into_response(msg.id())),
        }
    } else if envelope::looks_modern(&msg, at.headers) {
        // Stateless (2026-07-28): each request carries the client's capabilities, checked
        // like any other of the era.
        if let Err(refused) = check_envelope(&msg, at.headers) {
            return Some(refused);
        }
        (ClientEra::Modern, envelope_capabilities(&msg))
    } else {
        return None;
    };
    if msg.kind != Kind::Request {
        return Some(accepted());
    }
    match (msg.method(), era) {
        (Some("tools/list"), _) => {
            let state = at.session.state;
            let tools = state
                .upstreams
                .snapshots()
                .unconnected(&state.upstreams, at.server)
                .await;
            let tools = marked_for_unconnected(at.access, &at.server.name, tools);
            let ttl = Ttl::Set(UNCONNECTED_LIST_TTL_MS);
            return Some(results::answer(
                &id,
                "tools/list",
                json!({"tools": tools}),
                era,
                ttl,
            ));
        }
        (Some("subscriptions/listen"), ClientEra::Modern) => return Some(listen(at, &msg, &id)),
        _ => {}
    }
    let elicitation = session_header(at.headers).map(|s| elicitation_id(s, at.session.endpoint));
    Some(answer(
        &msg,
        &id,
        era,
        &capabilities,
        at.session.endpoint,
        missing,
        elicitation,
    ))
}

/// The notifications a `subscriptions/listen` asked for, as far as the gateway honors them
/// for an unconnected caller (only `toolsListChanged`: connecting changes the tools), or
/// why the params are not a listen's.
fn listen_filter(msg: &Message) -> Result<Value, &'static str> {
    let notifications = msg
        .params()
        .and_then(|p| p.get("notifications"))
        .and_then(Value::as_object)
        .ok_or("params.notifications must be an object")?;
    for (k, v) in notifications {
        let ok = match k.as_str() {
            "toolsListChanged" | "promptsListChanged" | "resourcesListChanged" => {
                v.is_boolean() || v.is_null()
            }
            "resourceSubscriptions" => {
                v.is_null() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
            }
            // Extensions add keys; they are not honored here, so not acknowledged.
            _ => true,
        };
        if !ok {
            return Err("params.notifications has a member of the wrong type");
        }
    }
    let tools = notifications.get("toolsListChanged") == Some(&Value::Bool(true));
    Ok(if tools {
        json!({"toolsListChanged": true})
    } else {
        json!({})
    })
}

/// A 2026-07-28 `subscriptions/listen` of an unconnected caller: the stream acknowledges
/// what it honors, then says `notifications/tools/list_changed` (if asked) once the caller
/// has connected, and ends with the listen's result (the client listens again, upstream).
fn listen(at: &At<'_>, msg: &Message, id: &Value) -> Response {
    let honored = match listen_filter(msg) {
        Ok(h) => h,
        Err(why) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Some(id),
                jsonrpc::INVALID_PARAMS,
                &format!("Invalid params: {why}"),
                None,
            );
        }
    };
    let state = at.session.state;
    if !state.config.allow_get_stream {
        // A buffered Lambda response cannot hold a stream open.
        return rpc_error(
            StatusCode::OK,
            Some(id),
            jsonrpc::METHOD_NOT_FOUND,
            "subscriptions/listen is not served by this deployment",
            None,
        );
    }
    let meta = json!({SUBSCRIPTION_ID: id});
    let note = |method: &str, mut params: Value| {
        params["_meta"] = meta.clone();
        json!({"jsonrpc": "2.0", "method": method, "params": params})
    };
    let mut on_connect = Vec::new();
    if honored.get("toolsListChanged").is_some() {
        on_connect.push(note("notifications/tools/list_changed", json!({})));
    }
    let mut done = json!({"_meta": meta});
    if let Some(r) = done.as_object_mut() {
        results::shape(r, ClientEra::Modern, false, Ttl::Set(0));
    }
    on_connect.push(jsonrpc::result(id, done));
    let watch = Watch {
        state: state.clone(),
        user: at.session.user.to_owned(),
        server: at.server.name.clone(),
        session: None,
        first: vec![note(
            "notifications/subscriptions/acknowledged",
            json!({"notifications": honored}),
        )],
        on_connect,
    };
    connect_watch::respond(watch).unwrap_or_else(|| {
        rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(id),
            jsonrpc::UPSTREAM_ERROR,
            "too many streams are held open; listen again later",
            None,
        )
    })
}

/// The gateway's own `initialize` result while the caller is not connected.
fn init_result(version: &str, endpoint: &str, missing: &Missing) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": true}},
        "serverInfo": {"name": endpoint, "version": env!("CARGO_PKG_VERSION")},
        "instructions": format!(
            "This server's tools need your own credential. {} Then list the tools again.",
            missing.message
        ),
    })
}

/// The in-band answer to request `msg` of an unconnected caller (`tools/list` and
/// `subscriptions/listen` aside). Lists are empty and short-lived: they fill once the
/// caller is connected. `elicitation`: the id of a session's URL elicitation.
fn answer(
    msg: &Message,
    id: &Value,
    era: ClientEra,
    capabilities: &Value,
    endpoint: &str,
    missing: &Missing,
    elicitation: Option<String>,
) -> Response {
    let method = msg.method().unwrap_or_default();
    if !results::is_request_of(era, method) {
        return method_not_found(id);
    }
    let ttl = match method {
        "server/discover" => Ttl::Set(0),
        _ => Ttl::Set(UNCONNECTED_LIST_TTL_MS),
    };
    let made = |result: Value| results::answer(id, method, result, era, ttl);
    match method {
        "ping" => made(json!({})),
        "resources/list" => made(json!({"resources": []})),
        "resources/templates/list" => made(json!({"resourceTemplates": []})),
        "prompts/list" => made(json!({"prompts": []})),
        "server/discover" => made(discover_result_from_initialize(&init_result(
            versions::LATEST_HANDSHAKE,
            endpoint,
            missing,
        ))),
        "tools/call" => tool_call_with(msg, id, era, capabilities, missing, elicitation),
        _ => axum::Json(jsonrpc::error(
            Some(id),
            jsonrpc::INVALID_REQUEST,
            &missing.message,
            Some(json!({"url": missing.url})),
        ))
        .into_response(),
    }
}

/// The answer to a `tools/call` that needs a credential of the caller's own they lack: a URL
/// elicitation for clients that declare it (the `-32042` error in the session era, an
/// `input_required` result in the 2026-07-28 era), else a tool result with `isError` whose
/// text carries the link. Also used by virtual servers for a member the caller lacks.
pub fn tool_call(
    msg: &Message,
    id: &Value,
    era: ClientEra,
    capabilities: &Value,
    missing: &Missing,
) -> Response {
    tool_call_with(msg, id, era, capabilities, missing, None)
}

/// The key of the connect prompt's input request in a 2026-07-28 `input_required` result.
const CONNECT_INPUT: &str = "mcpgw-connect";

/// Whether `msg` is a 2026-07-28 retry that already answers the connect prompt's input
/// request (the user declined, cancelled, or accepted without connecting): asking again
/// would loop until the client gives up (the Python SDK raises after ten rounds), so the
/// call ends with the link in its text instead.
fn answers_the_prompt(msg: &Message) -> bool {
    msg.params()
        .and_then(|p| p.get("inputResponses"))
        .and_then(|r| r.get(CONNECT_INPUT))
        .is_some()
}

/// [`tool_call`], the session-era elicitation under `elicitation` (a random id if none).
fn tool_call_with(
    msg: &Message,
    id: &Value,
    era: ClientEra,
    capabilities: &Value,
    missing: &Missing,
    elicitation: Option<String>,
) -> Response {
    let result = |r: Value| results::answer(id, "tools/call", r, era, Ttl::Set(0));
    let url_elicitation = declares_url_elicitation(capabilities) && !answers_the_prompt(msg);
    match (&missing.url, url_elicitation, era) {
        (Some(url), true, ClientEra::Modern) => {
            // The client retries the call once the user is done; if they have connected
            // by then it reaches the upstream, else it gets this again. No requestState:
            // the gateway keeps nothing between the rounds.
            result(json!({
                "resultType": "input_required",
                "inputRequests": {CONNECT_INPUT: {
                    "method": "elicitation/create",
                    "params": {"mode": "url", "url": url, "message": missing.message},
                }},
            }))
        }
        (Some(url), true, ClientEra::Session) => {
            let data = json!({"elicitations": [{
                "mode": "url",
                "elicitationId": elicitation.unwrap_or_else(|| mcpgw::crypto::random_token(16)),
                "url": url,
                "message": missing.message,
            }]});
            axum::Json(jsonrpc::error(
                Some(id),
                jsonrpc::URL_ELICITATION_REQUIRED,
                &missing.message,
                Some(data),
            ))
            .into_response()
        }
        _ => result(json!({
            "content": [{"type": "text", "text": missing.message}],
            "isError": true,
        })),
    }
}

/// Whether the client said it handles URL-mode elicitation (`elicitation.url`).
fn declares_url_elicitation(capabilities: &Value) -> bool {
    capabilities
        .get("elicitation")
        .and_then(|e| e.get("url"))
        .is_some_and(Value::is_object)
}

/// Ends the session of an unconnected caller: there is no upstream session to end, only the
/// gateway's own, recorded as ended like any other.
pub async fn delete(at: &At<'_>) -> Response {
    let (claims, fingerprint) = match sessions::open(&at.session, at.headers).await {
        Ok(c) => c,
        Err(r) => return r.into_response(None),
    };
    match sessions::end(at.session.state, &claims, &fingerprint).await {
        Ok(()) => axum::http::StatusCode::NO_CONTENT.into_response(),
        Err(refused) => refused,
    }
}

/// A session-era client's GET stream while it is not connected: held until the caller
/// connects (in any process), then `notifications/tools/list_changed` and, for a client
/// that declared URL elicitation (so its calls got `-32042`), the elicitation's
/// `notifications/elicitation/complete` (see `connect_watch`).
pub async fn get(at: &At<'_>) -> Response {
    let state = at.session.state;
    if !state.config.allow_get_stream {
        // A buffered Lambda response cannot hold a stream open.
        return no_get_stream();
    }
    let (claims, fingerprint) = match sessions::open(&at.session, at.headers).await {
        Ok(c) => c,
        Err(r) => return r.into_response(None),
    };
    let mut on_connect =
        vec![json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})];
    if declares_url_elicitation(&claims.client.capabilities)
        && let Some(sid) = session_header(at.headers)
    {
        on_connect.push(
            json!({"jsonrpc": "2.0", "method": "notifications/elicitation/complete",
            "params": {"elicitationId": elicitation_id(sid, at.session.endpoint)}}),
        );
    }
    let watch = Watch {
        state: state.clone(),
        user: at.session.user.to_owned(),
        server: at.server.name.clone(),
        session: Some((fingerprint, claims.expires_at)),
        first: Vec::new(),
        on_connect,
    };
    connect_watch::respond(watch).unwrap_or_else(no_get_stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing() -> Missing {
        Missing::of(&CredentialError::ConnectRequired {
            url: "https://gw/oauth/connect/x?link=abc".into(),
            reconsent: false,
        })
        .unwrap()
    }

    fn call() -> Message {
        Message::from_value(
            json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t"}}),
        )
        .unwrap()
    }

    fn list() -> Message {
        Message::from_value(json!({"jsonrpc":"2.0","id":7,"method":"resources/list"})).unwrap()
    }

    async fn body(r: Response) -> Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice::<Value>(&b).unwrap()
    }

    #[test]
    fn the_prompt_carries_the_link_and_says_what_to_do() {
        let m = missing();
        assert_eq!(
            m.url.as_deref(),
            Some("https://gw/oauth/connect/x?link=abc")
        );
        assert_eq!(
            m.message,
            "connect your account at this server first: open https://gw/oauth/connect/x?link=abc"
        );
        let renew = Missing::of(&CredentialError::ConnectRequired {
            url: "https://gw/l".into(),
            reconsent: true,
        })
        .unwrap();
        assert_eq!(
            renew.message,
            "your connection to this server must be renewed: open https://gw/l"
        );
        let token = Missing::of(&CredentialError::TokenRequired {
            store_at: "https://gw/me/credentials/x".into(),
        })
        .unwrap();
        assert_eq!(token.url, None);
        assert!(token.message.contains("PUT https://gw/me/credentials/x"));
        let down = CredentialError::Unavailable(mcpgw::upstream::Unavailable::TokenNotSendable);
        assert!(Missing::of(&down).is_none());
    }

    #[test]
    fn url_elicitation_only_when_declared() {
        assert!(declares_url_elicitation(
            &json!({"elicitation": {"url": {}}})
        ));
        assert!(!declares_url_elicitation(&json!({"elicitation": {}})));
        assert!(!declares_url_elicitation(&json!({})));
    }

    #[test]
    fn listen_params_are_checked_and_only_tool_changes_honored() {
        let listen = |params: Value| {
            Message::from_value(json!({"jsonrpc": "2.0", "id": 1,
                "method": "subscriptions/listen", "params": params}))
            .unwrap()
        };
        let ok = |n: Value| listen_filter(&listen(json!({"notifications": n})));
        assert_eq!(
            ok(json!({"toolsListChanged": true, "promptsListChanged": true})),
            Ok(json!({"toolsListChanged": true}))
        );
        assert_eq!(ok(json!({"toolsListChanged": false})), Ok(json!({})));
        assert_eq!(
            ok(json!({"x-ext": {"a": 1}})),
            Ok(json!({})),
            "extensions pass"
        );
        for bad in [
            json!({"toolsListChanged": "yes"}),
            json!({"resourceSubscriptions": [1]}),
            json!({"resourceSubscriptions": "file:///x"}),
        ] {
            assert!(ok(bad.clone()).is_err(), "{bad}");
        }
        for bad in [json!({}), json!({"notifications": "all"}), json!([])] {
            assert!(listen_filter(&listen(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_elicitation_id_is_the_sessions_own() {
        let id = elicitation_id("sealed-session-a", "notes");
        assert_eq!(
            id,
            elicitation_id("sealed-session-a", "notes"),
            "any process computes it"
        );
        assert_ne!(id, elicitation_id("sealed-session-b", "notes"));
        assert_ne!(id, elicitation_id("sealed-session-a", "other"));
        assert!(!id.contains("sealed-session"), "{id}");
    }

    #[test]
    fn init_result_carries_the_link() {
        let r = init_result("2025-11-25", "notes", &missing());
        assert!(r["instructions"].as_str().unwrap().contains("?link=abc"));
        assert_eq!(r["protocolVersion"], "2025-11-25");
    }

    #[tokio::test]
    async fn tool_call_forms() {
        let m = missing();
        let id = json!(7);
        let url_capable = json!({"elicitation": {"url": {}}});
        let e = body(answer(
            &call(),
            &id,
            ClientEra::Session,
            &url_capable,
            "x",
            &m,
            None,
        ))
        .await;
        assert_eq!(e["error"]["code"], jsonrpc::URL_ELICITATION_REQUIRED);
        assert_eq!(
            e["error"]["data"]["elicitations"][0]["url"],
            m.url.clone().unwrap()
        );
        let s = body(answer(
            &call(),
            &id,
            ClientEra::Modern,
            &url_capable,
            "x",
            &m,
            None,
        ))
        .await;
        assert_eq!(s["result"]["resultType"], "input_required", "{s}");
        let req = &s["result"]["inputRequests"]["mcpgw-connect"];
        assert_eq!(req["method"], "elicitation/create");
        assert_eq!(req["params"]["mode"], "url");
        assert_eq!(req["params"]["url"], m.url.clone().unwrap());
        // GIVEN the retry answers the prompt (declined, or accepted without connecting) THEN
        // the call ends with the link instead of asking again (no endless rounds).
        for action in ["decline", "cancel", "accept"] {
            let retry = Message::from_value(json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
                "params":{"name":"t","inputResponses":{"mcpgw-connect":{"action": action}}}}))
            .unwrap();
            let r = body(answer(
                &retry,
                &id,
                ClientEra::Modern,
                &url_capable,
                "x",
                &m,
                None,
            ))
            .await;
            assert_eq!(r["result"]["isError"], true, "{action}: {r}");
            assert_eq!(r["result"]["resultType"], "complete", "{r}");
        }
        for era in [ClientEra::Session, ClientEra::Modern] {
            let r = body(answer(&call(), &id, era, &json!({}), "x", &m, None)).await;
            assert_eq!(r["result"]["isError"], true, "{r}");
            assert!(
                r["result"]["content"][0]["text"]
                    .as_str()
                    .unwrap()
                    .contains("?link=abc")
            );
        }
    }

    #[tokio::test]
    async fn answers_are_in_the_clients_era() {
        let (m, id) = (missing(), json!(7));
        let ask = |msg: Message, era| answer(&msg, &id, era, &json!({}), "x", &m, None);
        let modern = body(ask(list(), ClientEra::Modern)).await;
        assert_eq!(
            modern["result"],
            json!({"resources": [], "resultType": "complete",
                "ttlMs": UNCONNECTED_LIST_TTL_MS, "cacheScope": "private"})
        );
        let session = body(ask(list(), ClientEra::Session)).await;
        assert_eq!(session["result"], json!({"resources": []}));
        let failed = body(ask(call(), ClientEra::Modern)).await;
        assert_eq!(failed["result"]["resultType"], "complete", "{failed}");
    }
}
