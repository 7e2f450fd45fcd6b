//! The credential the gateway injects for one caller at one upstream, chosen by one exhaustive
//! `match` over the server's [`UpstreamAuth`]: nothing, a shared secret, the token the caller
//! stored, the caller's OAuth2 grant, or the gateway's own machine token.
//!
//! What the caller lacks is a typed [`CredentialError`], carried as a value to whoever answers
//! the client: the proxy turns `ConnectRequired`/`TokenRequired` into its in-band connect
//! prompt (the link is a field, not text to cut out of a message), the catalog lists a
//! placeholder, and an HTTP answer comes from `From<CredentialError> for ApiError`.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::domain::{McpServer, UpstreamAuth};
use crate::grants::{GrantError, Grants, link, machine, tokens, user_token};
use crate::http::{ApiError, ErrorCode};
use crate::secrets::SecretsError;

/// Why the gateway has no credential for this caller at this upstream.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// An OAuth2 server the caller has not connected (or must connect again): `url` is a
    /// fresh single-use connect link for them.
    #[error("{}: open {url}", if *.reconsent {
        "your connection to this server must be renewed"
    } else {
        "connect your account at this server first"
    })]
    ConnectRequired { url: String, reconsent: bool },
    /// A `per_user_token` server the caller stored no token for: `store_at` is where to
    /// `PUT` it.
    #[error("store your token for this server first: PUT {store_at} with {{\"token\": \"...\"}}")]
    TokenRequired { store_at: String },
    /// The credential exists (or is the gateway's) but could not be obtained now.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl CredentialError {
    /// Whether the caller can fix this themselves (connect, or store a token): the cases the
    /// proxy answers in band and the catalog lists with a placeholder.
    pub fn needs_user(&self) -> bool {
        match self {
            Self::ConnectRequired { .. } | Self::TokenRequired { .. } => true,
            Self::Unavailable(_) => false,
        }
    }
}

/// Why an existing credential could not be obtained. The messages are the client's; the
/// sources are for the log.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("the gateway could not get a token for this server ({})", .0.code())]
    UserToken(#[source] GrantError),
    #[error("the gateway could not read your token for this server ({})", .0.code())]
    StoredToken(#[source] GrantError),
    #[error("the gateway could not get its token for this server ({})", .0.code())]
    MachineToken(#[source] GrantError),
    /// The caller must connect, but the link could not be made (store or keyring trouble).
    #[error("could not make a connect link, retry later")]
    ConnectLink(#[source] GrantError),
    #[error("the gateway could not load its credential for this server")]
    SharedSecret(#[source] SecretError),
    #[error("the provider issued a token that cannot be sent")]
    TokenNotSendable,
    #[error("the stored token cannot be sent in this server's header")]
    StoredTokenNotSendable,
}

/// Why a shared secret (`header` auth) could not become a header.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("secret for header '{0}' is not a valid header value")]
    BadHeaderValue(String),
    /// The configuration names a secret outside the operator's scope (never resolved).
    #[error("secret reference '{0}' is outside the allowed secret scope")]
    OutOfScope(String),
}

impl From<CredentialError> for ApiError {
    fn from(e: CredentialError) -> Self {
        let (status, code) = match &e {
            CredentialError::ConnectRequired { .. } => {
                (StatusCode::FORBIDDEN, ErrorCode::ConnectRequired)
            }
            CredentialError::TokenRequired { .. } => {
                (StatusCode::FORBIDDEN, ErrorCode::CredentialRequired)
            }
            CredentialError::Unavailable(u) => match u {
                Unavailable::ConnectLink(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::ConnectLinkUnavailable,
                ),
                Unavailable::UserToken(_)
                | Unavailable::StoredToken(_)
                | Unavailable::MachineToken(_)
                | Unavailable::SharedSecret(_)
                | Unavailable::TokenNotSendable
                | Unavailable::StoredTokenNotSendable => (
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::UpstreamCredentialUnavailable,
                ),
            },
        };
        let api = ApiError::new(status, code, e.to_string());
        match e {
            CredentialError::Unavailable(_) => api.with_cause(&e),
            CredentialError::ConnectRequired { .. } | CredentialError::TokenRequired { .. } => api,
        }
    }
}

/// Whose OAuth2 token a renewable credential is.
#[derive(Debug, Clone)]
enum TokenOwner {
    /// The caller's own grant.
    User(String),
    /// The gateway's machine token (`oauth2_client_credentials`), the same for every caller.
    Machine,
}

/// A bearer token and the header carrying it.
struct Bearer {
    token: String,
    headers: HeaderMap,
}

/// The headers that authenticate the gateway upstream for one call.
#[derive(Clone)]
pub struct Credentials(Held);

#[derive(Clone)]
enum Held {
    /// Fixed for the call: none, a shared secret, or the token the caller stored.
    Fixed(HeaderMap),
    /// An OAuth2 token, replaced after an upstream 401 (shared by the clones of one
    /// `Upstream`, so the handshakes and the call of one request renew it at most once).
    Renewable {
        owner: TokenOwner,
        current: Arc<Mutex<Bearer>>,
    },
}

impl Credentials {
    /// No credential at all (the gateway asking an upstream what it tells anyone).
    pub fn none() -> Self {
        Self(Held::Fixed(HeaderMap::new()))
    }

    /// The gateway's machine token for `server` (client credentials grant), whatever the
    /// caller: for `oauth2` servers that allow it, only to list their tools.
    pub async fn machine(grants: &Grants, server: &McpServer) -> Result<Self, CredentialError> {
        Self::renewable(grants, server, TokenOwner::Machine).await
    }

    /// The credential for `user` at `server`: the one place that reads the server's auth type.
    pub async fn resolve(
        grants: &Grants,
        server: &McpServer,
        user: &str,
    ) -> Result<Self, CredentialError> {
        let fixed = |headers| Ok(Self(Held::Fixed(headers)));
        match &server.auth {
            UpstreamAuth::None => fixed(HeaderMap::new()),
            UpstreamAuth::Header { headers } => fixed(
                shared_secret(grants, headers)
                    .await
                    .map_err(Unavailable::SharedSecret)?,
            ),
            UpstreamAuth::PerUserToken { .. } => fixed(stored_token(grants, server, user).await?),
            UpstreamAuth::OAuth2 { .. } => {
                Self::renewable(grants, server, TokenOwner::User(user.to_owned())).await
            }
            UpstreamAuth::OAuth2ClientCredentials { .. } => {
                Self::renewable(grants, server, TokenOwner::Machine).await
            }
        }
    }

    async fn renewable(
        grants: &Grants,
        server: &McpServer,
        owner: TokenOwner,
    ) -> Result<Self, CredentialError> {
        let current = bearer_for(grants, server, &owner, None).await?;
        Ok(Self(Held::Renewable {
            owner,
            current: Arc::new(Mutex::new(current)),
        }))
    }

    /// The headers to send now.
    pub fn headers(&self) -> HeaderMap {
        match &self.0 {
            Held::Fixed(h) => h.clone(),
            Held::Renewable { current, .. } => current
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .headers
                .clone(),
        }
    }

    /// After the upstream refused the token (401): a new one, unless someone already renewed
    /// it. Whether a retry may succeed. A provider that refuses the refresh marks the grant
    /// for re-consent, so the next call asks the user to connect again.
    pub async fn renew(&self, grants: &Grants, server: &McpServer) -> bool {
        let Held::Renewable { owner, current } = &self.0 else {
            return false;
        };
        let rejected = current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .token
            .clone();
        match bearer_for(grants, server, owner, Some(&rejected)).await {
            Ok(fresh) if fresh.token != rejected => {
                *current.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::info!(server = %server.name, error = %crate::http::error_chain(&e),
                    "no token after an upstream 401");
                false
            }
        }
    }
}

/// The token of `owner` for `server`. `rejected`: the token the upstream just refused
/// (replaced unless someone already did).
async fn bearer_for(
    grants: &Grants,
    server: &McpServer,
    owner: &TokenOwner,
    rejected: Option<&str>,
) -> Result<Bearer, CredentialError> {
    let token = match owner {
        TokenOwner::User(user) => {
            match tokens::access_token(grants, user, server, rejected).await {
                Ok(t) => t,
                Err(GrantError::NotConnected) => {
                    return Err(connect_required(grants, user, server, false).await);
                }
                Err(GrantError::NeedsReconsent) => {
                    return Err(connect_required(grants, user, server, true).await);
                }
                Err(e) => return Err(Unavailable::UserToken(e).into()),
            }
        }
        TokenOwner::Machine => machine::token(grants, server, rejected)
            .await
            .map_err(Unavailable::MachineToken)?,
    };
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| Unavailable::TokenNotSendable)?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    Ok(Bearer { token, headers })
}

/// `ConnectRequired` with a fresh connect link for `user`.
async fn connect_required(
    grants: &Grants,
    user: &str,
    server: &McpServer,
    reconsent: bool,
) -> CredentialError {
    match link::for_prompt(grants, user, &server.name).await {
        Ok(url) => CredentialError::ConnectRequired { url, reconsent },
        Err(e) => Unavailable::ConnectLink(e).into(),
    }
}

/// The header carrying the token `user` stored for a `per_user_token` server.
async fn stored_token(
    grants: &Grants,
    server: &McpServer,
    user: &str,
) -> Result<HeaderMap, CredentialError> {
    let token = match tokens::access_token(grants, user, server, None).await {
        Ok(t) => t,
        Err(GrantError::NotConnected | GrantError::NeedsReconsent) => {
            return Err(CredentialError::TokenRequired {
                store_at: format!("{}/me/credentials/{}", grants.public_url, server.name),
            });
        }
        Err(e) => return Err(Unavailable::StoredToken(e).into()),
    };
    let (name, value) =
        user_token::header_for(server, &token).ok_or(Unavailable::StoredTokenNotSendable)?;
    let mut h = HeaderMap::new();
    h.insert(name, value);
    Ok(h)
}

/// The shared-secret headers of a `header` server, values marked sensitive so they are
/// redacted from any `Debug` output.
async fn shared_secret(
    grants: &Grants,
    headers: &std::collections::BTreeMap<String, crate::secrets::SecretRef>,
) -> Result<HeaderMap, SecretError> {
    let mut out = HeaderMap::new();
    for (name, reference) in headers {
        // Checked again here, not only at registration: a record written around the admin
        // API must not turn the proxy into a way to read the keyring.
        if !grants.secret_scope.permits(reference) {
            return Err(SecretError::OutOfScope(reference.to_string()));
        }
        let value = grants.secrets.resolve(reference).await?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SecretError::BadHeaderValue(name.clone()))?;
        let mut value = HeaderValue::from_str(value.expose())
            .map_err(|_| SecretError::BadHeaderValue(name.to_string()))?;
        value.set_sensitive(true);
        out.insert(name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_becomes_its_answer() {
        let cases = [
            (
                CredentialError::ConnectRequired {
                    url: "https://gw/oauth/connect/s?link=x".into(),
                    reconsent: false,
                },
                403,
                "connect_required",
                "connect your account at this server first: open https://gw/oauth/connect/s?link=x",
            ),
            (
                CredentialError::TokenRequired {
                    store_at: "https://gw/me/credentials/s".into(),
                },
                403,
                "credential_required",
                "store your token for this server first: PUT https://gw/me/credentials/s with {\"token\": \"...\"}",
            ),
            (
                Unavailable::ConnectLink(GrantError::Keyring("down".into())).into(),
                503,
                "connect_link_unavailable",
                "could not make a connect link, retry later",
            ),
            (
                Unavailable::UserToken(GrantError::Network("down".into())).into(),
                502,
                "upstream_credential_unavailable",
                "the gateway could not get a token for this server (network_error)",
            ),
            (
                Unavailable::SharedSecret(SecretError::OutOfScope("secret://x".into())).into(),
                502,
                "upstream_credential_unavailable",
                "the gateway could not load its credential for this server",
            ),
        ];
        for (e, status, code, message) in cases {
            let needs_user = e.needs_user();
            let api = ApiError::from(e);
            assert_eq!(
                (api.status.as_u16(), api.code.as_str(), api.message.as_str()),
                (status, code, message)
            );
            assert_eq!(needs_user, status == 403, "{code}");
        }
    }
}
