//! Machine tokens for `oauth2_client_credentials` servers: one token per server for every
//! caller, obtained with the client credentials grant (the `oauth2` crate, the client built
//! by [`crate::oauth_client`]), kept in the
//! process's [`super::tokens::TokenMemory`] until a minute before it expires, fetched by one
//! caller at a time, and renewed after an upstream 401. Nothing is stored: a new process
//! fetches its own.

use oauth2::basic::BasicTokenResponse;
use oauth2::{Scope, TokenResponse, TokenUrl};

use super::Grants;
use super::endpoints;
use super::flow::token_error;
use super::tokens::REFRESH_MARGIN_SECS;
use super::{GrantError, TokenSet};
use crate::domain::{McpServer, UpstreamAuth};

/// The memory key: the server as configured now (a changed client or secret is a new key).
fn key(server: &McpServer) -> String {
    format!("{}@{}", server.name, server.updated_at)
}

/// The user slot machine tokens take in the token memory; no principal can be named so
/// (principals are emails or `service:` names).
const MACHINE: &str = "\u{0}machine";

/// The machine token for `server`. `rejected`: the token the upstream just refused (a new
/// one is fetched unless another caller already replaced it).
pub async fn token(
    grants: &Grants,
    server: &McpServer,
    rejected: Option<&str>,
) -> Result<String, GrantError> {
    let k = key(server);
    let now = grants.clock.now();
    let usable = |t: &TokenSet| {
        t.expires_at.is_none_or(|e| e > now + REFRESH_MARGIN_SECS)
            && rejected != Some(t.access_token.as_str())
    };
    if let Some(t) = grants.tokens.peek(MACHINE, &k).filter(usable) {
        return Ok(t.access_token);
    }
    let lock = grants.tokens.lock_for(MACHINE, &k);
    let _one_at_a_time = lock.lock().await;
    // Someone may have fetched while this caller waited.
    if let Some(t) = grants.tokens.peek(MACHINE, &k).filter(usable) {
        return Ok(t.access_token);
    }
    let t = fetch(grants, server).await?;
    grants.tokens.keep(MACHINE, &k, &t);
    tracing::info!(server = %server.name, "machine token fetched");
    Ok(t.access_token)
}

async fn fetch(grants: &Grants, server: &McpServer) -> Result<TokenSet, GrantError> {
    let (client_id, client_secret, scopes, resource) = match &server.auth {
        UpstreamAuth::OAuth2ClientCredentials {
            client_id,
            client_secret,
            scopes,
            resource,
            ..
        } => (client_id, client_secret, scopes, resource),
        // An `oauth2` server's own client, for listing its tools to callers not connected
        // yet (`upstream::snapshots`), only where the admin allowed it.
        UpstreamAuth::OAuth2 {
            client_id: Some(client_id),
            client_secret: Some(client_secret),
            scopes,
            resource,
            list_tools_with_client_credentials: true,
            ..
        } => (client_id, client_secret, scopes, resource),
        UpstreamAuth::OAuth2 { .. }
        | UpstreamAuth::None
        | UpstreamAuth::Header { .. }
        | UpstreamAuth::PerUserToken { .. } => return Err(GrantError::NotOAuth),
    };
    let e = endpoints::for_server(grants, server).await?;
    if !grants.secret_scope.permits(client_secret) {
        return Err(GrantError::Secret(format!(
            "{client_secret} is out of scope"
        )));
    }
    let secret = grants
        .secrets
        .resolve(client_secret)
        .await
        .map_err(|e| GrantError::Secret(crate::http::error_chain(&e)))?;
    let client = crate::oauth_client::new::<BasicTokenResponse>(client_id, Some(secret.expose()))
        .set_token_uri(
            TokenUrl::new(e.token).map_err(|x| GrantError::Discovery(format!("token URL: {x}")))?,
        );
    let answer = client
        .exchange_client_credentials()
        .add_scopes(scopes.iter().cloned().map(Scope::new))
        .add_extra_param(
            "resource",
            resource.clone().unwrap_or_else(|| server.url.clone()),
        )
        .request_async(&grants.oauth_http)
        .await
        .map_err(token_error)?;
    Ok(TokenSet {
        access_token: answer.access_token().secret().clone(),
        refresh_token: None,
        expires_at: answer
            .expires_in()
            .map(|d| grants.clock.now() + i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)),
    })
}
