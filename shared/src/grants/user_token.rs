//! Tokens users store for themselves (`per_user_token` servers: an API token, a personal
//! access token). Kept as a grant without refresh token or expiry, so they share the grant's
//! sealing (bound to user and server), its version check, and the connection views and
//! revocation routes; the proxy reads them through [`super::tokens::access_token`] and its
//! memory. Never shown back.

use axum::http::{HeaderName, HeaderValue};

use super::Grants;
use super::flow::grant_record;
use super::{GrantError, TokenSet, ring};
use crate::domain::{McpServer, UpstreamAuth};
use crate::store::StoreError;

/// Longest token accepted (personal access tokens and JWTs are well under this).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused (before anything is stored).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenRefused {
    #[error("token must be 1 to {MAX_TOKEN_BYTES} bytes")]
    Length,
    #[error("token must be visible ASCII without spaces or control characters")]
    Characters,
}

/// The header that carries `token` for `server` (`format` with `{token}` replaced).
pub fn header_for(server: &McpServer, token: &str) -> Option<(HeaderName, HeaderValue)> {
    let UpstreamAuth::PerUserToken { header, format } = &server.auth else {
        return None;
    };
    let name = HeaderName::from_bytes(header.as_bytes()).ok()?;
    let mut value = HeaderValue::from_str(&format.replace("{token}", token)).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

/// Checks a token a user wants to store: what any header value can carry safely.
pub fn check_token(token: &str) -> Result<(), TokenRefused> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(TokenRefused::Length);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenRefused::Characters);
    }
    Ok(())
}

/// Stores (or replaces) `user`'s token for `server`, with the version check: of two
/// concurrent writers exactly one wins, and the loser retries on what the winner wrote.
pub async fn store(
    grants: &Grants,
    user: &str,
    server: &McpServer,
    token: &str,
) -> Result<(), GrantError> {
    let ring = ring(grants).await?;
    let tokens = TokenSet {
        access_token: token.to_owned(),
        refresh_token: None,
        expires_at: None,
    };
    for _ in 0..4 {
        let previous = grants
            .store
            .get_grant(user, &server.name)
            .await?
            .map(|g| g.version);
        let record = grant_record(
            &ring,
            user,
            &server.name,
            &tokens,
            Vec::new(),
            previous,
            grants.clock.now(),
        )?;
        match grants.store.save_grant_if_version(&record, previous).await {
            Ok(()) => {
                grants.tokens.forget(user, &server.name);
                grants.announce_connected(user, &server.name);
                return Ok(());
            }
            Err(StoreError::VersionConflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(GrantError::Upstream(
        "the token kept changing while it was stored".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_be_header_safe_and_bounded() {
        assert_eq!(check_token("ghp_abc123"), Ok(()));
        assert_eq!(check_token(""), Err(TokenRefused::Length));
        assert_eq!(
            check_token(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(TokenRefused::Length)
        );
        for bad in ["a b", "a\r\nX-Evil: 1", "tab\t", "é"] {
            assert_eq!(check_token(bad), Err(TokenRefused::Characters), "{bad:?}");
        }
    }

    #[test]
    fn the_header_is_the_configured_one_formatted() {
        let server: McpServer = serde_json::from_value(serde_json::json!({
            "name": "gh", "url": "http://x/mcp",
            "auth": {"type": "per_user_token", "header": "X-Api-Key", "format": "token {token}"},
            "created_at": 0, "updated_at": 0
        }))
        .unwrap();
        let (name, value) = header_for(&server, "abc").unwrap();
        assert_eq!(name, "x-api-key");
        assert_eq!(value, "token abc");
        assert!(value.is_sensitive());
    }
}
