//! The gateway's own sessions (session-era clients): issued at `initialize` as a sealed id
//! (see `mcpgw::mcp::session`) bound to the user, the endpoint and what the endpoint fronts
//! (an upstream URL, or the virtual server); opened on every later request; ended by
//! `DELETE`, recorded in the store so no process brings an ended session back.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use mcpgw::http::ApiError;
use mcpgw::keyring::KeyringSourceError;
use mcpgw::mcp::session::{self, ClientInit, SessionClaims, UpstreamLink};
use mcpgw::state::AppState;
use serde_json::Value;

use crate::answers::{internal, rpc_error, session_not_found};
use crate::headers::session_header;
use crate::results::{self, ClientEra, Ttl};

/// Where a session is opened: for whom, at which endpoint, bound to what the endpoint
/// fronts (the upstream URL, or `virtual:{name}` for a virtual server), so a session is
/// refused once the endpoint points elsewhere.
pub struct SessionAt<'a> {
    pub state: &'a AppState,
    pub user: &'a str,
    pub endpoint: &'a str,
    pub bound_to: &'a str,
}

/// The `initialize` answer `result` with a new sealed session id.
pub async fn issue(
    at: &SessionAt<'_>,
    id: &Value,
    version: String,
    upstream: UpstreamLink,
    client: ClientInit,
    result: Value,
) -> Response {
    let state = at.state;
    let claims = SessionClaims {
        user: at.user.to_owned(),
        endpoint: at.endpoint.to_owned(),
        version,
        upstream,
        upstream_url: session::upstream_fingerprint(at.bound_to),
        client,
        expires_at: state.clock.now() + state.config.session_ttl.as_secs() as i64,
    };
    let keyring = match state.keyring.get().await {
        Ok(k) => k,
        Err(e) => return internal(&e),
    };
    let sealed = match session::seal(&keyring, &claims) {
        Ok(s) => s,
        Err(e) => return internal(&e),
    };
    if sealed.len() > session::MAX_ID_LEN {
        // Unreachable with MAX_CLIENT_INIT, kept so an id is never issued that would be refused.
        return internal(&std::io::Error::other("session id too long"));
    }
    let Ok(header) = HeaderValue::from_str(&sealed) else {
        return internal(&std::io::Error::other("session id is not a header value"));
    };
    // Whoever made the result (the upstream, the gateway), it is a session-era result.
    let mut resp = results::answer(id, "initialize", result, ClientEra::Session, Ttl::Set(0));
    resp.headers_mut().insert("mcp-session-id", header);
    resp
}

/// Why a request's session cannot be used.
pub enum Refusal {
    Missing,
    NotFound,
    Keyring(KeyringSourceError),
}

impl Refusal {
    pub fn into_response(self, id: Option<&Value>) -> Response {
        match self {
            Self::Missing => rpc_error(
                axum::http::StatusCode::BAD_REQUEST,
                id,
                mcpgw::mcp::jsonrpc::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is required",
                None,
            ),
            Self::NotFound => session_not_found(id),
            Self::Keyring(e) => internal(&e),
        }
    }
}

/// The claims of the session `headers` present at `at` (whose binding must still hold), and
/// the session's fingerprint.
pub async fn open(
    at: &SessionAt<'_>,
    headers: &HeaderMap,
) -> Result<(SessionClaims, String), Refusal> {
    let state = at.state;
    let presented = session_header(headers).ok_or(Refusal::Missing)?;
    let fingerprint = session::fingerprint(presented);
    if state.mcp.is_ended(&fingerprint) {
        return Err(Refusal::NotFound);
    }
    let keyring = state.keyring.get().await.map_err(Refusal::Keyring)?;
    let open = |k: &mcpgw::crypto::Keyring| {
        session::open(k, presented, at.endpoint, at.user, state.clock.now())
    };
    let mut opened = open(&keyring);
    if opened == Err(session::SessionRejected::UnknownKey)
        && let Some(newer) = state.keyring.refresh().await
    {
        opened = open(&newer);
    }
    match opened {
        Ok(claims) if claims.upstream_url != session::upstream_fingerprint(at.bound_to) => {
            tracing::info!(session = %fingerprint, "session refused: the endpoint now fronts something else");
            Err(Refusal::NotFound)
        }
        Ok(claims) => Ok((claims, fingerprint)),
        Err(why) => {
            tracing::info!(session = %fingerprint, reason = %why, "session refused");
            Err(Refusal::NotFound)
        }
    }
}

/// Ends a gateway session: recorded in the store first (another process that later finds
/// its upstream session gone must know it was ended, not lost), then in this process. If
/// the record cannot be written nothing is ended, and the client may try again.
pub async fn end(
    state: &AppState,
    claims: &SessionClaims,
    fingerprint: &str,
) -> Result<(), Response> {
    state
        .store
        .end_session(fingerprint, claims.expires_at)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    state.mcp.end(fingerprint);
    Ok(())
}
