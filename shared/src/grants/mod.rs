//! Per-user OAuth2 grants for upstream servers: the authorization-code flow with PKCE
//! ([`flow`]), the provider's endpoints as pinned on the server record ([`endpoints`]),
//! discovered from checked metadata ([`discovery`], [`endpoint_url`]), and the tokens the proxy injects,
//! refreshed on demand with the store's version check ([`tokens`]); revocation
//! ([`revoke`]), connect and continue links ([`link`]), the flow's binding to one browser
//! ([`binding`]), and tokens users store themselves for
//! `per_user_token` servers ([`user_token`]), kept as grants without refresh; the gateway's
//! own client at providers, configured or registered by RFC 7591 ([`registration`]).
//!
//! Every function here takes the [`Grants`] service: what they read and write (store,
//! keyring, secrets, clock), the client for authorization servers, this process's token memory
//! and the server records the endpoints are pinned on. It is built once per process, like the
//! `identity::Authenticator`, and nothing here keeps a global.
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

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::{Keyring, KeyringError};
use crate::domain::McpServer;
use crate::egress::EgressPolicy;
use crate::http::{ApiError, ErrorCode};
use crate::keyring::KeyringSource;
use crate::secrets::{SecretScope, Secrets};
use crate::servers::ServerCache;
use crate::store::{Store, StoreResult};

/// The grant functions' dependencies, built once per process ([`Grants::new`]).
pub struct Grants {
    pub store: Arc<dyn Store>,
    /// Where refresh failures are recorded (the process's auditor).
    pub audit: Arc<crate::audit::Auditor>,
    pub secrets: Arc<dyn Secrets>,
    pub keyring: Arc<KeyringSource>,
    pub clock: Arc<dyn Clock>,
    /// Client for authorization servers (metadata, token, revocation, registration): built by
    /// the egress policy (every connection judged on its resolved address), no redirects (a
    /// redirect could carry a code or a client secret elsewhere), every call bounded by
    /// [`endpoints::OAUTH_CALL_TIMEOUT`].
    pub oauth_http: reqwest::Client,
    /// Opened tokens and refresh locks of this process (see [`tokens`]).
    pub tokens: tokens::TokenMemory,
    /// Server records, on which the endpoints are pinned ([`endpoints`]): read through the
    /// process's cache, which a pin invalidates.
    pub servers: Arc<ServerCache>,
    /// The gateway's base URL (redirect URIs, connect links).
    pub public_url: String,
    /// Which secret references may be resolved (client secrets).
    pub secret_scope: SecretScope,
    /// Which addresses authorization servers may have.
    pub egress: EgressPolicy,
    /// (user, server) of every credential stored by this process (a grant after the OAuth
    /// callback, a token a user stored), so streams waiting for it wake at once; other
    /// processes learn of it from the store.
    connected: tokio::sync::broadcast::Sender<(String, String)>,
    /// Connect links recently shown by the connect prompt ([`link::for_prompt`]).
    pub(crate) links: link::LinkMemory,
}

/// How many announcements a slow listener may fall behind before it re-reads the store.
const CONNECTED_BACKLOG: usize = 256;

impl Grants {
    /// Builds the service for `config` from the process's parts; the client for
    /// authorization servers is built here, once.
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        secrets: Arc<dyn Secrets>,
        keyring: Arc<KeyringSource>,
        clock: Arc<dyn Clock>,
        servers: Arc<ServerCache>,
        audit: Arc<crate::audit::Auditor>,
    ) -> Result<Self, reqwest::Error> {
        let oauth_http = config
            .egress
            .client_builder()
            .timeout(endpoints::OAUTH_CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            store,
            audit,
            secrets,
            keyring,
            clock,
            oauth_http,
            tokens: tokens::TokenMemory::default(),
            servers,
            public_url: config.public_url.trim_end_matches('/').to_owned(),
            secret_scope: config.secret_scope.clone(),
            egress: config.egress.clone(),
            connected: tokio::sync::broadcast::channel(CONNECTED_BACKLOG).0,
            links: link::LinkMemory::default(),
        })
    }

    /// Tells this process's listeners that `user` now holds a credential for `server`.
    pub fn announce_connected(&self, user: &str, server: &str) {
        // No listener is not an error: nobody waits.
        let _ = self.connected.send((user.to_owned(), server.to_owned()));
    }

    /// Listens for [`Grants::announce_connected`] in this process.
    pub fn connections(&self) -> tokio::sync::broadcast::Receiver<(String, String)> {
        self.connected.subscribe()
    }

    /// Drops what this process remembers of `user`'s token for `server` (a new grant, a
    /// revocation).
    pub fn forget(&self, user: &str, server: &str) {
        self.tokens.forget(user, server);
    }

    /// A server's record, from the process's cache when fresh.
    pub async fn server(&self, name: &str) -> StoreResult<Option<Arc<McpServer>>> {
        self.servers.get(name).await
    }
}

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
pub(crate) async fn ring(grants: &Grants) -> Result<Arc<Keyring>, GrantError> {
    grants
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

impl From<GrantError> for ApiError {
    /// What a handler answers when a grant operation fails. The caller's own state (not
    /// connected, to be renewed, not an OAuth2 server) is said as it is; everything else is
    /// the gateway's trouble with its store, keyring, secrets or the provider, answered as
    /// unavailable (503) with the fixed `last_error` code and the cause kept for the log.
    fn from(e: GrantError) -> Self {
        let (status, code) = match &e {
            GrantError::NotConnected => (StatusCode::NOT_FOUND, ErrorCode::NotConnected),
            GrantError::NeedsReconsent => (StatusCode::FORBIDDEN, ErrorCode::ConnectRequired),
            GrantError::NotOAuth => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::NotOauth),
            GrantError::Network(_)
            | GrantError::Upstream(_)
            | GrantError::Discovery(_)
            | GrantError::Store(_)
            | GrantError::Sealed(_)
            | GrantError::Keyring(_)
            | GrantError::Secret(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::GrantStoreUnavailable,
            ),
        };
        let message = match code {
            ErrorCode::GrantStoreUnavailable => {
                format!("the connection could not be read ({})", e.code())
            }
            _ => e.to_string(),
        };
        ApiError::new(status, code, message).with_cause(&e)
    }
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

    #[test]
    fn grant_errors_answer_by_kind_and_never_echo_their_cause() {
        let answer = |e: GrantError| {
            let a = ApiError::from(e);
            (a.status.as_u16(), a.code.as_str(), a.message)
        };
        assert_eq!(answer(GrantError::NotConnected).0, 404);
        assert_eq!(answer(GrantError::NeedsReconsent).1, "connect_required");
        let (status, code, message) = answer(GrantError::Keyring("kms said no: key arn:x".into()));
        assert_eq!((status, code), (503, "grant_store_unavailable"));
        assert_eq!(message, "the connection could not be read (refresh_failed)");
    }

    /// `state.rs` assembles the grant service; nothing the grant functions use may lead back
    /// to it (a circle: grants built from the state they depend on).
    #[test]
    fn grants_never_depend_on_the_state_that_assembles_them() {
        use crate::testing::module_graph::ModuleGraph;
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let g = ModuleGraph::read(&src).unwrap();
        assert!(
            g.reachable("state.rs").contains("grants/mod.rs"),
            "the graph is read: state.rs uses grants"
        );
        for file in g.uses.keys().filter(|f| f.starts_with("grants/")) {
            assert_eq!(
                g.path(file, "state.rs"),
                None,
                "{file} reaches state.rs: a grants <-> state circle"
            );
        }
    }
}
