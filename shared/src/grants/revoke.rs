//! Disconnecting a user from a server: the local grant is deleted first (so the gateway stops
//! using it whatever the provider says), then the refresh token is revoked at the provider
//! (RFC 7009), and the access token only if the provider answers `unsupported_token_type`.
//! Best effort, bounded by the OAuth call timeout; the outcome is reported, never raised.

use serde::Serialize;

use super::Grants;
use super::endpoints;
use super::{GrantError, TokenSet, ring};
use crate::domain::McpServer;

/// What the provider said.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// The provider accepted the revocation of this token type.
    Revoked { token: &'static str },
    /// The provider offers no revocation endpoint.
    NotSupported,
    /// The revocation failed; the local grant is gone anyway.
    Failed { reason: String },
    /// A token the user stored themselves: there is no provider to tell.
    NotApplicable,
}

/// Deletes `user`'s grant for `server` and revokes it at the provider. `Ok(None)`: there was
/// no grant.
pub async fn disconnect(
    grants: &Grants,
    user: &str,
    server: &McpServer,
) -> Result<Option<Revocation>, GrantError> {
    let Some(grant) = grants.store.get_grant(user, &server.name).await? else {
        return Ok(None);
    };
    if !grants.store.delete_grant(user, &server.name).await? {
        return Ok(None);
    }
    grants.tokens.forget(user, &server.name);
    let tokens = match ring(grants).await.and_then(|r| {
        TokenSet::open(&r, &grant.sealed_tokens, user, &server.name).map_err(Into::into)
    }) {
        Ok(t) => t,
        Err(e) => {
            return Ok(Some(Revocation::Failed {
                reason: format!("the stored tokens could not be opened ({})", e.code()),
            }));
        }
    };
    Ok(Some(revoke(grants, server, &tokens).await))
}

async fn revoke(grants: &Grants, server: &McpServer, tokens: &TokenSet) -> Revocation {
    let e = match endpoints::for_server(grants, server).await {
        Ok(e) => e,
        Err(e) => {
            return Revocation::Failed {
                reason: e.to_string(),
            };
        }
    };
    let Some(endpoint) = e.revocation.clone() else {
        return Revocation::NotSupported;
    };
    let creds = match super::registration::credentials(grants, server, &e).await {
        Ok(c) => c,
        Err(e) => {
            return Revocation::Failed {
                reason: format!("client credentials: {e}"),
            };
        }
    };
    let (client_id, secret) = (creds.client_id, creds.client_secret);
    let mut candidates: Vec<(&'static str, &str)> = Vec::new();
    if let Some(r) = &tokens.refresh_token {
        candidates.push(("refresh_token", r));
    }
    candidates.push(("access_token", &tokens.access_token));
    let mut last = Revocation::NotSupported;
    for (i, (hint, token)) in candidates.iter().enumerate() {
        let mut form = vec![("token", *token), ("token_type_hint", *hint)];
        let mut req = grants.oauth_http.post(&endpoint);
        match &secret {
            Some(s) => req = req.basic_auth(&client_id, Some(s)),
            None => form.push(("client_id", client_id.as_str())),
        }
        let resp = match req.form(&form).send().await {
            Ok(r) => r,
            Err(e) => {
                return Revocation::Failed {
                    reason: format!("network_error: {}", crate::http::error_chain(&e)),
                };
            }
        };
        if resp.status().is_success() {
            return Revocation::Revoked { token: hint };
        }
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let code = body["error"].as_str().unwrap_or("").to_owned();
        // Only an unsupported refresh-token revocation goes on to the access token.
        if code == "unsupported_token_type" && i + 1 < candidates.len() && i == 0 {
            last = Revocation::Failed { reason: code };
            continue;
        }
        return Revocation::Failed {
            reason: format!("upstream_error: HTTP {status} {code}"),
        };
    }
    last
}
