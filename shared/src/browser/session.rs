//! The console session: one cookie, sealed with the keyring (AES-GCM under the active key,
//! bound to its purpose), so the browser holds it but can neither read nor alter it.
//!
//! - A session from an API key keeps the key itself, sealed, and authenticates it again on
//!   every request: a revoked or expired key ends its console sessions at once.
//! - A session from an identity-provider sign-in keeps the principal the ID token named
//!   (email, groups, admin role), for [`SESSION_TTL`] or until the provider is removed.
//!
//! Issued by the console (admin-api, which adds the cookie's attributes and pages); opened
//! there on every console request and by the connect flow (oauth-callback), which refuses to
//! connect an account for another gateway user than the one this browser is signed in as.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::crypto::KeyringError;
use crate::identity::{AuthMethod, Principal};
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "mcpgw_console";
/// How long a console session lasts.
pub const SESSION_TTL: i64 = 8 * 3600;
const CONTEXT: &[u8] = b"console-session";

/// Who a session is for.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Who {
    /// A gateway credential pasted once (an API key), authenticated again on every request.
    Key { credential: String },
    /// Signed in at an identity provider.
    Oidc {
        user: String,
        subject: String,
        groups: Vec<String>,
        is_admin: bool,
        issuer: String,
        provider: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    who: Who,
    csrf: String,
    exp: i64,
}

/// An open console session.
pub struct Session {
    pub principal: Principal,
    /// The token every state-changing console form must carry.
    pub csrf: String,
}

/// Why there is no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    /// No cookie.
    Absent,
    /// A cookie that does not open, is expired, or whose key no longer authenticates.
    Invalid,
    /// The credential could not be checked (keyring or store down): not a sign-out.
    Unavailable,
}

/// Why a session could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the keyring is unavailable: {0}")]
    Keyring(String),
    #[error("the session could not be sealed")]
    Seal(#[from] KeyringError),
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// The cookie value of a new session for `who`, valid for [`SESSION_TTL`].
pub async fn seal(state: &AppState, who: Who) -> Result<String, SealError> {
    let sealed = Sealed {
        who,
        csrf: crate::crypto::random_token(24),
        exp: state.clock.now() + SESSION_TTL,
    };
    let ring = state
        .keyring
        .get()
        .await
        .map_err(|e| SealError::Keyring(crate::http::error_chain(&e)))?;
    let plain = serde_json::to_vec(&sealed).map_err(|_| KeyringError::Malformed)?;
    Ok(b64().encode(ring.seal(&plain, CONTEXT)?))
}

/// The session of a request.
pub async fn open(state: &AppState, headers: &HeaderMap) -> Result<Session, NoSession> {
    let raw = super::read_cookie(headers, COOKIE).ok_or(NoSession::Absent)?;
    let blob = b64().decode(raw).map_err(|_| NoSession::Invalid)?;
    let ring = state
        .keyring
        .get()
        .await
        .map_err(|_| NoSession::Unavailable)?;
    let plain = ring.open(&blob, CONTEXT).map_err(|_| NoSession::Invalid)?;
    let s: Sealed = serde_json::from_slice(&plain).map_err(|_| NoSession::Invalid)?;
    if s.exp <= state.clock.now() {
        return Err(NoSession::Invalid);
    }
    let principal = match s.who {
        Who::Key { credential } => {
            let mut h = HeaderMap::new();
            let v = HeaderValue::from_str(&format!("Bearer {credential}"))
                .map_err(|_| NoSession::Invalid)?;
            h.insert(header::AUTHORIZATION, v);
            match state.auth.authenticate(&h).await {
                Ok(p) => p,
                Err(crate::identity::AuthError::Store(_)) => return Err(NoSession::Unavailable),
                Err(_) => return Err(NoSession::Invalid),
            }
        }
        Who::Oidc {
            user,
            subject,
            groups,
            is_admin,
            issuer,
            provider,
        } => {
            // A provider removed (or re-pointed) by an admin ends the sessions it signed in.
            let providers = state
                .auth
                .providers()
                .await
                .map_err(|_| NoSession::Unavailable)?;
            if !providers
                .iter()
                .any(|p| p.name == provider && p.issuer == issuer && p.console.is_some())
            {
                return Err(NoSession::Invalid);
            }
            Principal {
                email: Some(user.clone()),
                user,
                subject,
                groups,
                is_admin,
                service_account: false,
                method: AuthMethod::Jwt { issuer, provider },
                api_key_id: None,
            }
        }
    };
    Ok(Session {
        principal,
        csrf: s.csrf,
    })
}

/// A console session could not be checked (keyring or store down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the console session could not be checked")]
pub struct Unchecked;

/// The gateway user this browser is signed in to the console as: `None` without a session
/// (no cookie, or one that is altered, expired or whose key was revoked: such a cookie names
/// nobody); an error only when it could not be checked.
pub async fn signed_in_user(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<String>, Unchecked> {
    match open(state, headers).await {
        Ok(s) => Ok(Some(s.principal.user)),
        Err(NoSession::Absent | NoSession::Invalid) => Ok(None),
        Err(NoSession::Unavailable) => Err(Unchecked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TEST_ADMIN_KEY, local_state};

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("other=1; {COOKIE}={value}").parse().unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn a_sealed_session_opens_as_its_user_and_an_altered_one_names_nobody() {
        let (state, _dir) = local_state(&[], &[]);
        let value = seal(
            &state,
            Who::Key {
                credential: TEST_ADMIN_KEY.into(),
            },
        )
        .await
        .unwrap();
        let s = open(&state, &with_cookie(&value)).await.unwrap();
        assert_eq!(s.principal.user, "bootstrap-admin");
        assert_eq!(
            signed_in_user(&state, &with_cookie(&value))
                .await
                .unwrap()
                .as_deref(),
            Some("bootstrap-admin")
        );
        let mut bytes = b64().decode(&value).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let altered = b64().encode(bytes);
        assert_eq!(
            open(&state, &with_cookie(&altered)).await.err(),
            Some(NoSession::Invalid)
        );
        assert_eq!(
            signed_in_user(&state, &with_cookie(&altered))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            open(&state, &HeaderMap::new()).await.err(),
            Some(NoSession::Absent)
        );
    }
}
