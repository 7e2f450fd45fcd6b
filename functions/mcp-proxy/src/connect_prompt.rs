//! The in-band connect prompt: a caller without the credential an upstream needs (an OAuth2
//! grant not yet made or needing re-consent, a `per_user_token` not stored) still gets an MCP
//! session. The gateway answers it alone: `initialize` with the connect link in
//! `instructions`, empty lists, and every `tools/call` with the link, as a URL-mode
//! elicitation (`-32042` in the session era, an `input_required` result in 2026-07-28) for
//! clients that declare URL elicitation, else as a tool result with `isError` whose text
//! carries it. Once the credential exists, the session's next request opens the upstream
//! session (`session_era::settle`).

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use mcpgw::mcp::envelope;
use mcpgw::mcp::jsonrpc::{self, ClientPayload, Kind, Message};
use mcpgw::mcp::session::UpstreamLink;
use mcpgw::mcp::versions;
use mcpgw::upstream::CredentialError;
use mcpgw::upstream::handshakes::discover_result_from_initialize;
use serde_json::{Value, json};

use crate::answers::{accepted, method_not_found, no_get_stream};
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

/// Where the prompt is answered: the session it belongs to and the request's headers.
pub struct At<'a> {
    pub session: SessionAt<'a>,
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
    Some(answer(
        &msg,
        &id,
        era,
        &capabilities,
        at.session.endpoint,
        missing,
    ))
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

/// The in-band answer to request `msg` of an unconnected caller. Lists are empty and
/// immediately stale: they fill once the caller is connected.
fn answer(
    msg: &Message,
    id: &Value,
    era: ClientEra,
    capabilities: &Value,
    endpoint: &str,
    missing: &Missing,
) -> Response {
    let method = msg.method().unwrap_or_default();
    if !results::is_request_of(era, method) {
        return method_not_found(id);
    }
    let made = |result: Value| results::answer(id, method, result, era, Ttl::Set(0));
    match method {
        "ping" => made(json!({})),
        "tools/list" => made(json!({"tools": []})),
        "resources/list" => made(json!({"resources": []})),
        "resources/templates/list" => made(json!({"resourceTemplates": []})),
        "prompts/list" => made(json!({"prompts": []})),
        "server/discover" => made(discover_result_from_initialize(&init_result(
            versions::LATEST_HANDSHAKE,
            endpoint,
            missing,
        ))),
        "tools/call" => tool_call(id, era, capabilities, missing),
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
pub fn tool_call(id: &Value, era: ClientEra, capabilities: &Value, missing: &Missing) -> Response {
    let result = |r: Value| results::answer(id, "tools/call", r, era, Ttl::Set(0));
    match (&missing.url, declares_url_elicitation(capabilities), era) {
        (Some(url), true, ClientEra::Modern) => {
            // The client retries the call once the user is done; if they have connected
            // by then it reaches the upstream, else it gets this again. No requestState:
            // the gateway keeps nothing between the rounds.
            result(json!({
                "resultType": "input_required",
                "inputRequests": {"mcpgw-connect": {
                    "method": "elicitation/create",
                    "params": {"mode": "url", "url": url, "message": missing.message},
                }},
            }))
        }
        (Some(url), true, ClientEra::Session) => {
            let data = json!({"elicitations": [{
                "mode": "url",
                "elicitationId": mcpgw::crypto::random_token(16),
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

    fn list() -> Message {
        Message::from_value(json!({"jsonrpc":"2.0","id":7,"method":"tools/list"})).unwrap()
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
        ))
        .await;
        assert_eq!(s["result"]["resultType"], "input_required", "{s}");
        let req = &s["result"]["inputRequests"]["mcpgw-connect"];
        assert_eq!(req["method"], "elicitation/create");
        assert_eq!(req["params"]["mode"], "url");
        assert_eq!(req["params"]["url"], m.url.clone().unwrap());
        for era in [ClientEra::Session, ClientEra::Modern] {
            let r = body(answer(&call(), &id, era, &json!({}), "x", &m)).await;
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
        let modern = body(answer(&list(), &id, ClientEra::Modern, &json!({}), "x", &m)).await;
        assert_eq!(
            modern["result"],
            json!({"tools": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"})
        );
        let session = body(answer(
            &list(),
            &id,
            ClientEra::Session,
            &json!({}),
            "x",
            &m,
        ))
        .await;
        assert_eq!(session["result"], json!({"tools": []}));
        let failed = body(answer(&call(), &id, ClientEra::Modern, &json!({}), "x", &m)).await;
        assert_eq!(failed["result"]["resultType"], "complete", "{failed}");
    }
}
