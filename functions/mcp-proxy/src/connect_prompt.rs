//! The in-band connect prompt: a caller without the credential an upstream needs (an OAuth2
//! grant not yet made or needing re-consent, a `per_user_token` not stored) still gets an MCP
//! session. The gateway answers it alone: `initialize` with the connect link in
//! `instructions`, empty lists, and every `tools/call` with the link, as a URL-mode
//! elicitation error (`-32042`) for clients that declare URL elicitation, else as a tool
//! result with `isError` whose text carries it. Once the credential exists, the session's
//! next request opens the upstream session (`session_era::settle`).

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mcpgw::http::ApiError;
use mcpgw::mcp::envelope;
use mcpgw::mcp::jsonrpc::{self, ClientPayload, Kind, Message};
use mcpgw::mcp::session::UpstreamLink;
use mcpgw::state::AppState;
use mcpgw::upstream::CredentialError;
use serde_json::{Value, json};

use crate::forward::{no_get_stream, session_header};
use crate::session_era::{self, SessionAt};

/// JSON-RPC error of a request that needs the user to open a URL first (MCP 2025-11-25).
pub const URL_ELICITATION_REQUIRED: i64 = -32042;

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

/// Where the prompt is answered.
pub struct At<'a> {
    pub state: &'a AppState,
    pub user: &'a str,
    pub endpoint: &'a str,
    pub upstream_url: &'a str,
    pub headers: &'a HeaderMap,
}

/// Answers one POSTed message without the upstream. `None`: not a message the prompt can
/// answer (a batch), so the caller gets the refusal itself.
pub async fn post(at: &At<'_>, missing: &Missing, payload: ClientPayload) -> Option<Response> {
    let ClientPayload::One(msg) = payload else {
        return None;
    };
    let id = msg.id().cloned().unwrap_or(Value::Null);
    if msg.is_request("initialize") {
        let (offered, client) = match session_era::handshake_params(&msg, &id) {
            Ok(p) => p,
            Err(refused) => return Some(refused),
        };
        let result = init_result(&offered, at.endpoint, missing);
        let where_ = SessionAt {
            state: at.state,
            user: at.user,
            endpoint: at.endpoint,
            upstream_url: at.upstream_url,
        };
        return Some(
            session_era::answer_with_session(
                where_,
                &id,
                offered,
                UpstreamLink::Pending,
                client,
                result,
            )
            .await,
        );
    }
    let client = if session_header(at.headers).is_some() {
        match session_era::claims_of(at.state, at.headers, at.endpoint, at.user, at.upstream_url)
            .await
        {
            Ok((claims, _)) => Client::Session(claims.client.capabilities),
            Err(r) => return Some(r.into_response(msg.id())),
        }
    } else if envelope::looks_modern(&msg, at.headers) {
        // Stateless (2026-07-28): each request carries the client's capabilities.
        Client::Stateless(
            msg.params()
                .and_then(|p| p.get("_meta"))
                .and_then(|m| m.get(CLIENT_CAPABILITIES))
                .cloned()
                .unwrap_or_else(|| json!({})),
        )
    } else {
        return None;
    };
    if msg.kind != Kind::Request {
        return Some(StatusCode::ACCEPTED.into_response());
    }
    Some(answer(&msg, &id, &client, at.endpoint, missing))
}

/// Where the client's capabilities came from, which decides the elicitation's form.
pub(crate) enum Client {
    /// Declared at `initialize`: URL elicitation is the `-32042` error.
    Session(Value),
    /// Declared in the request's envelope: URL elicitation goes inside an `input_required`
    /// result (2026-07-28, multi round-trip requests).
    Stateless(Value),
}

pub(crate) const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

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

/// The in-band answer to request `msg` of an unconnected caller.
fn answer(
    msg: &Message,
    id: &Value,
    client: &Client,
    endpoint: &str,
    missing: &Missing,
) -> Response {
    let ok = |result: Value| axum::Json(jsonrpc::result(id, result)).into_response();
    match msg.method().unwrap_or_default() {
        "ping" => ok(json!({})),
        "tools/list" => ok(json!({"tools": []})),
        "resources/list" => ok(json!({"resources": []})),
        "resources/templates/list" => ok(json!({"resourceTemplates": []})),
        "prompts/list" => ok(json!({"prompts": []})),
        "server/discover" => ok(
            mcpgw::upstream::handshakes::discover_result_from_initialize(&init_result(
                mcpgw::mcp::versions::LATEST_HANDSHAKE,
                endpoint,
                missing,
            )),
        ),
        "tools/call" => tool_call(id, client, missing),
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
pub(crate) fn tool_call(id: &Value, client: &Client, missing: &Missing) -> Response {
    let capabilities = match client {
        Client::Session(c) | Client::Stateless(c) => c,
    };
    let ok = |result: Value| axum::Json(jsonrpc::result(id, result)).into_response();
    match (&missing.url, declares_url_elicitation(capabilities)) {
        (Some(url), true) if matches!(client, Client::Stateless(_)) => {
            // The client retries the call once the user is done; if they have connected
            // by then it reaches the upstream, else it gets this again. No requestState:
            // the gateway keeps nothing between the rounds.
            ok(json!({
                "resultType": "input_required",
                "inputRequests": {"mcpgw-connect": {
                    "method": "elicitation/create",
                    "params": {"mode": "url", "url": url, "message": missing.message},
                }},
            }))
        }
        (Some(url), true) => {
            let data = json!({"elicitations": [{
                "mode": "url",
                "elicitationId": mcpgw::crypto::random_token(16),
                "url": url,
                "message": missing.message,
            }]});
            axum::Json(jsonrpc::error(
                Some(id),
                URL_ELICITATION_REQUIRED,
                &missing.message,
                Some(data),
            ))
            .into_response()
        }
        _ => ok(json!({
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
    let (claims, fingerprint) =
        match session_era::claims_of(at.state, at.headers, at.endpoint, at.user, at.upstream_url)
            .await
        {
            Ok(c) => c,
            Err(r) => return r.into_response(None),
        };
    if let Err(e) = at
        .state
        .store
        .end_session(&fingerprint, claims.expires_at)
        .await
    {
        return ApiError::from(e).into_response();
    }
    at.state.mcp.end(&fingerprint);
    StatusCode::NO_CONTENT.into_response()
}

/// A GET stream for an unconnected caller: none is offered.
pub fn get() -> Response {
    no_get_stream()
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
    fn init_result_carries_the_link() {
        let r = init_result("2025-11-25", "notes", &missing());
        assert!(r["instructions"].as_str().unwrap().contains("?link=abc"));
        assert_eq!(r["protocolVersion"], "2025-11-25");
    }

    #[tokio::test]
    async fn tool_call_forms() {
        let m = missing();
        let id = json!(7);
        let body = |r: Response| async move {
            let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            serde_json::from_slice::<Value>(&b).unwrap()
        };
        let url_capable = json!({"elicitation": {"url": {}}});
        let e = body(answer(
            &call(),
            &id,
            &Client::Session(url_capable.clone()),
            "x",
            &m,
        ))
        .await;
        assert_eq!(e["error"]["code"], URL_ELICITATION_REQUIRED);
        assert_eq!(
            e["error"]["data"]["elicitations"][0]["url"],
            m.url.clone().unwrap()
        );
        let s = body(answer(
            &call(),
            &id,
            &Client::Stateless(url_capable),
            "x",
            &m,
        ))
        .await;
        assert_eq!(s["result"]["resultType"], "input_required", "{s}");
        let req = &s["result"]["inputRequests"]["mcpgw-connect"];
        assert_eq!(req["method"], "elicitation/create");
        assert_eq!(req["params"]["mode"], "url");
        assert_eq!(req["params"]["url"], m.url.clone().unwrap());
        for c in [Client::Session(json!({})), Client::Stateless(json!({}))] {
            let r = body(answer(&call(), &id, &c, "x", &m)).await;
            assert_eq!(r["result"]["isError"], true, "{r}");
        }
        let r = body(answer(&call(), &id, &Client::Session(json!({})), "x", &m)).await;
        assert_eq!(r["result"]["isError"], true);
        assert!(
            r["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("?link=abc")
        );
    }
}
