//! The authorization-code flow with PKCE (S256): [`start`] stores a single-use `state`
//! (10 minutes) bound to the browser that started it (the hash of its connect cookie, see
//! [`super::binding`]) and builds the provider's authorization URL; [`finish`] consumes the
//! state exactly once, checks it belongs to this server and to this browser, exchanges the
//! code (RFC 8707 `resource` sent; RFC 9207 `iss` must equal the pinned issuer when present,
//! and must be present when the pinned metadata says the provider sends it) and stores the
//! grant with the version check; [`cancel`] consumes it when the provider answered an error.
//! Code exchange and refresh use the `oauth2` crate.

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthUrl, AuthorizationCode, CsrfToken, EndpointNotSet, EndpointSet, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use super::Grants;
use super::binding::{Browser, Refusal};
use super::endpoints::{self, Endpoints};
use super::{GrantError, TokenSet, ring};
use crate::domain::{Grant, GrantStatus, McpServer, OAuthState, UpstreamAuth};
use crate::store::StoreError;

/// How long a started authorization may take.
pub const STATE_TTL_SECS: i64 = 600;
/// A grant is refreshed by the sweeper this long before its access token expires.
pub const REFRESH_AHEAD_SECS: i64 = 300;

pub type Client =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Why a callback stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("this authorization link is unknown, was already used, or has expired")]
    StateInvalid,
    #[error("this authorization was started for another server")]
    WrongServer,
    #[error("the response came from an unexpected authorization server")]
    IssuerMismatch,
    /// RFC 9207: the provider always names itself in its responses, and this one did not
    /// (a mix-up attack sends the code from another provider's response here).
    #[error("the response does not say which authorization server sent it")]
    IssuerMissing,
    #[error("the provider did not grant access: {0}")]
    Denied(String),
    /// The callback came to another browser than the one that started the flow, or to one
    /// signed in to the console as another user: the state is used up, nothing stored.
    #[error(transparent)]
    Browser(#[from] Refusal),
    #[error(transparent)]
    Grant(#[from] GrantError),
}

/// Sealed inside the stored state: what the callback needs and the provider must not see.
#[derive(Serialize, Deserialize)]
struct Payload {
    verifier: String,
    redirect_uri: String,
    /// SHA-256 of the connect cookie of the browser that started the flow. Not defaulted:
    /// a state without it (made before this field existed) is refused like a forged one.
    browser: String,
}

/// Where the provider sends the user back for `server`.
pub fn redirect_uri(grants: &Grants, server: &str) -> String {
    format!("{}/oauth/callback/{server}", grants.public_url)
}

/// The RFC 8707 resource for `server`.
pub fn resource(server: &McpServer) -> String {
    match &server.auth {
        UpstreamAuth::OAuth2 {
            resource: Some(r), ..
        } => r.clone(),
        _ => server.url.clone(),
    }
}

/// The oauth2 client for `server` (client id and secret configured or registered, sent as
/// [`crate::oauth_client`] says; authorization and token URL).
pub async fn client(
    grants: &Grants,
    server: &McpServer,
    e: &Endpoints,
    redirect: Option<String>,
) -> Result<Client, GrantError> {
    let creds = super::registration::credentials(grants, server, e).await?;
    let bad = |what: &str, e: &dyn std::fmt::Display| GrantError::Discovery(format!("{what}: {e}"));
    let mut c = crate::oauth_client::new::<BasicTokenResponse>(
        &creds.client_id,
        creds.client_secret.as_deref(),
    )
    .set_auth_uri(AuthUrl::new(e.authorization.clone()).map_err(|x| bad("authorization URL", &x))?)
    .set_token_uri(TokenUrl::new(e.token.clone()).map_err(|x| bad("token URL", &x))?);
    if let Some(r) = redirect {
        c = c.set_redirect_uri(RedirectUrl::new(r).map_err(|x| bad("redirect URI", &x))?);
    }
    Ok(c)
}

fn scopes(server: &McpServer) -> Vec<Scope> {
    match &server.auth {
        UpstreamAuth::OAuth2 { scopes, .. } => scopes.iter().cloned().map(Scope::new).collect(),
        _ => Vec::new(),
    }
}

fn state_context(id: &str) -> Vec<u8> {
    format!("oauth-state:{id}").into_bytes()
}

/// Starts an authorization of `server` for `user` in the browser whose connect cookie hashes
/// to `browser` ([`super::binding::Nonce::hash`]): the provider URL to send it to.
pub async fn start(
    grants: &Grants,
    user: &str,
    server: &McpServer,
    browser: &str,
) -> Result<String, GrantError> {
    let e = endpoints::for_server(grants, server).await?;
    let redirect = redirect_uri(grants, &server.name);
    let c = client(grants, server, &e, Some(redirect.clone())).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let id = crate::crypto::random_token(32);
    let mut req = c
        .authorize_url(|| CsrfToken::new(id.clone()))
        .add_scopes(scopes(server))
        .set_pkce_challenge(challenge)
        .add_extra_param("resource", resource(server));
    if let UpstreamAuth::OAuth2 { extra_params, .. } = &server.auth {
        for (k, v) in extra_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
    }
    let (url, _) = req.url();
    let payload = serde_json::to_vec(&Payload {
        verifier: verifier.secret().clone(),
        redirect_uri: redirect,
        browser: browser.to_owned(),
    })
    .map_err(|_| GrantError::Keyring("payload".into()))?;
    let now = grants.clock.now();
    grants
        .store
        .put_state(&OAuthState {
            id: id.clone(),
            user: user.to_owned(),
            server: server.name.clone(),
            sealed_payload: ring(grants).await?.seal(&payload, &state_context(&id))?,
            created_at: now,
            expires_at: now + STATE_TTL_SECS,
        })
        .await?;
    Ok(url.to_string())
}

/// What a provider's token endpoint said, as a [`GrantError`].
pub fn token_error<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
) -> GrantError {
    match e {
        RequestTokenError::ServerResponse(r)
            if *r.error() == BasicErrorResponseType::InvalidGrant =>
        {
            GrantError::NeedsReconsent
        }
        RequestTokenError::ServerResponse(r) => GrantError::Upstream(r.error().to_string()),
        RequestTokenError::Request(e) => GrantError::Network(crate::http::error_chain(&e)),
        RequestTokenError::Parse(e, _) => GrantError::Upstream(format!("unreadable answer: {e}")),
        RequestTokenError::Other(m) => GrantError::Upstream(m),
    }
}

/// The token set of a token-endpoint answer; `previous_refresh` is kept when the answer
/// carries no new refresh token.
pub fn token_set<T: TokenResponse>(r: &T, now: i64, previous_refresh: Option<String>) -> TokenSet {
    TokenSet {
        access_token: r.access_token().secret().clone(),
        refresh_token: r
            .refresh_token()
            .map(|t| t.secret().clone())
            .or(previous_refresh),
        expires_at: r.expires_in().map(|d| now + d.as_secs() as i64),
    }
}

/// The grant record for `tokens`, one version after `previous`.
pub fn grant_record(
    ring: &crate::crypto::Keyring,
    user: &str,
    server: &str,
    tokens: &TokenSet,
    scopes: Vec<String>,
    previous: Option<u64>,
    now: i64,
) -> Result<Grant, GrantError> {
    Ok(Grant {
        user: user.to_owned(),
        server: server.to_owned(),
        version: previous.map_or(1, |v| v + 1),
        sealed_tokens: tokens.seal(ring, user, server)?,
        status: GrantStatus::Active,
        scopes,
        access_expires_at: tokens.expires_at,
        // Nothing to refresh without a refresh token or an expiry: such grants are
        // refreshed (if at all) after an upstream 401.
        refresh_at: match (&tokens.refresh_token, tokens.expires_at) {
            (Some(_), Some(at)) => Some(at - REFRESH_AHEAD_SECS),
            _ => None,
        },
        updated_at: now,
        last_refresh_at: None,
        last_error: None,
        refresh_lease_until: None,
    })
}

/// RFC 9207, before the code goes anywhere: a present `iss` must be the pinned issuer, and
/// an authorization server whose pinned metadata says it sends `iss` must have sent it.
fn check_issuer(iss: Option<&str>, e: &Endpoints) -> Result<(), FlowError> {
    match (iss, e.issuer.as_deref()) {
        (Some(got), Some(want)) if got != want => Err(FlowError::IssuerMismatch),
        (None, _) if e.iss_parameter_supported => Err(FlowError::IssuerMissing),
        _ => Ok(()),
    }
}

/// Consumes the state `state_id` for `server_name`'s callback in `browser`: its record and
/// payload once the browser is admitted. Consumed whatever the outcome: a state that
/// reached another browser (with the provider's code for whoever signed in there) must not
/// stay usable for the browser that holds the cookie, or that browser could finish it with
/// the other person's code.
async fn claim(
    grants: &Grants,
    server_name: &str,
    state_id: &str,
    browser: &Browser,
) -> Result<(OAuthState, Payload), FlowError> {
    if !super::link::is_token(state_id) {
        // Connect-link and continue records share the state table under `link:`/`go:`
        // ids; they are not authorizations. Anything else of another shape is not ours.
        return Err(FlowError::StateInvalid);
    }
    let pending = grants
        .store
        .consume_state(state_id, grants.clock.now())
        .await
        .map_err(GrantError::from)?
        .ok_or(FlowError::StateInvalid)?;
    if pending.server != server_name {
        return Err(FlowError::WrongServer);
    }
    let payload: Payload = serde_json::from_slice(
        &ring(grants)
            .await?
            .open(&pending.sealed_payload, &state_context(state_id))
            .map_err(GrantError::from)?,
    )
    .map_err(|_| FlowError::StateInvalid)?;
    browser.admits(&payload.browser, &pending.user)?;
    Ok((pending, payload))
}

/// Ends the authorization `state_id` the provider answered with an error: consumed, so it
/// cannot be completed later. The flow's user when it was this browser's.
pub async fn cancel(
    grants: &Grants,
    server_name: &str,
    state_id: &str,
    browser: &Browser,
) -> Result<String, FlowError> {
    let (pending, _) = claim(grants, server_name, state_id, browser).await?;
    Ok(pending.user)
}

/// Completes an authorization in `browser`: the user whose grant was stored.
pub async fn finish(
    grants: &Grants,
    server_name: &str,
    code: &str,
    state_id: &str,
    iss: Option<&str>,
    browser: &Browser,
) -> Result<String, FlowError> {
    let now = grants.clock.now();
    let (pending, payload) = claim(grants, server_name, state_id, browser).await?;
    let Some(server) = grants.server(server_name).await.map_err(GrantError::from)? else {
        return Err(FlowError::WrongServer);
    };
    let ring = ring(grants).await?;
    let e = endpoints::for_server(grants, &server).await?;
    check_issuer(iss, &e)?;
    let c = client(grants, &server, &e, Some(payload.redirect_uri)).await?;
    let answer = c
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(PkceCodeVerifier::new(payload.verifier))
        .add_extra_param("resource", resource(&server))
        .request_async(&grants.oauth_http)
        .await
        .map_err(|e| match token_error(e) {
            GrantError::NeedsReconsent => FlowError::Denied("the code was refused".into()),
            other => FlowError::Grant(other),
        })?;
    let tokens = token_set(&answer, now, None);
    let granted: Vec<String> = answer
        .scopes()
        .map(|s| s.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    // A reconnect replaces the old grant; a concurrent writer makes us read again.
    for _ in 0..3 {
        let previous = grants
            .store
            .get_grant(&pending.user, server_name)
            .await
            .map_err(GrantError::from)?
            .map(|g| g.version);
        let g = grant_record(
            &ring,
            &pending.user,
            server_name,
            &tokens,
            granted.clone(),
            previous,
            now,
        )?;
        match grants.store.save_grant_if_version(&g, previous).await {
            Ok(()) => {
                grants.tokens.forget(&pending.user, server_name);
                grants.announce_connected(&pending.user, server_name);
                return Ok(pending.user);
            }
            Err(StoreError::VersionConflict { .. }) => continue,
            Err(e) => return Err(GrantError::from(e).into()),
        }
    }
    Err(GrantError::Upstream("the grant kept changing while it was saved".into()).into())
}
