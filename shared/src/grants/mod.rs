//! Per-user OAuth2 grants for upstream servers: the authorization-code flow with PKCE
//! ([`flow`]), the provider's endpoints as pinned on the server record ([`endpoints`]),
//! discovered from checked metadata ([`discovery`], [`endpoint_url`]), and the tokens the proxy injects,
//! refreshed on demand with the store's version check ([`tokens`]); revocation
//! ([`revoke`]), connect and continue links ([`link`]), the flow's binding to one browser
//! ([`binding`]), and tokens users store themselves for
//! `per_user_token` servers ([`user_token`]), kept as grants without refresh; the gateway's
//! own client at providers, configured or registered by RFC 7591 ([`registration`]).
//!
//! Tokens are sealed with the keyring under the context `grant:{user}:{server}`, so a sealed
//! blob copied onto another user's (or server's) record does not open: one user's grant can
//! never be used for another.

pub mod binding;
pub mod discovery;
pub mod endpoint_url;
pub mod endpoints;
pub mod flow;
pub mod link;
pub mod machine;
pub mod registration;
pub mod revoke;
pub mod tokens;
pub mod user_token;

use serde::{Deserialize, Serialize};

use crate::crypto::{Keyring, KeyringError};

/// What the provider gave: sealed as one blob in [`crate::domain::Grant::sealed_tokens`].
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenSet {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds; `None` when the provider did not say (refreshed only after a 401).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for TokenSet {
    // Never print tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "…"))
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The keyring, or why it is unavailable.
pub(crate) async fn ring(
    state: &crate::state::AppState,
) -> Result<std::sync::Arc<Keyring>, GrantError> {
    state
        .keyring
        .get()
        .await
        .map_err(|e| GrantError::Keyring(crate::http::error_chain(&e)))
}

fn context(user: &str, server: &str) -> Vec<u8> {
    format!("grant:{user}:{server}").into_bytes()
}

impl TokenSet {
    pub fn seal(&self, ring: &Keyring, user: &str, server: &str) -> Result<Vec<u8>, KeyringError> {
        let plain = serde_json::to_vec(self).map_err(|_| KeyringError::Crypto)?;
        ring.seal(&plain, &context(user, server))
    }

    pub fn open(
        ring: &Keyring,
        blob: &[u8],
        user: &str,
        server: &str,
    ) -> Result<Self, KeyringError> {
        let plain = ring.open(blob, &context(user, server))?;
        serde_json::from_slice(&plain).map_err(|_| KeyringError::Malformed)
    }
}

/// Why a grant could not give a token. `last_error` of a grant uses [`GrantError::code`].
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("the user has not connected this server")]
    NotConnected,
    #[error("the provider refused the stored grant; the user must connect again")]
    NeedsReconsent,
    #[error("could not reach the authorization server")]
    Network(String),
    #[error("the authorization server answered an error")]
    Upstream(String),
    /// The message says which document or endpoint and why (no secrets: URLs and rules).
    #[error("the provider's endpoints could not be found or were refused: {0}")]
    Discovery(String),
    #[error("this server is not an OAuth2 server")]
    NotOAuth,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the sealed grant could not be opened")]
    Sealed(#[from] KeyringError),
    #[error("the keyring is unavailable")]
    Keyring(String),
    #[error("the client secret could not be loaded")]
    Secret(String),
}

impl GrantError {
    /// The fixed set of `last_error` values.
    pub fn code(&self) -> &'static str {
        match self {
            GrantError::Network(_) => "network_error",
            GrantError::Upstream(_) => "upstream_error",
            GrantError::NeedsReconsent => "invalid_grant",
            _ => "refresh_failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_token_set_opens_only_for_its_user_and_server() {
        let ring = Keyring::from_json(&Keyring::generate_document()).unwrap();
        let t = TokenSet {
            access_token: "at".into(),
            refresh_token: Some("rt".into()),
            expires_at: Some(10),
        };
        let blob = t.seal(&ring, "alice@example.com", "docs").unwrap();
        assert_eq!(
            TokenSet::open(&ring, &blob, "alice@example.com", "docs").unwrap(),
            t
        );
        assert!(TokenSet::open(&ring, &blob, "bob@example.com", "docs").is_err());
        assert!(TokenSet::open(&ring, &blob, "alice@example.com", "other").is_err());
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(TokenSet::open(&ring, &tampered, "alice@example.com", "docs").is_err());
        assert!(!format!("{t:?}").contains("rt\""), "{t:?}");
    }
}
