//! Connect links: `{public}/oauth/connect/{server}?link=...`, bound to one gateway user and
//! one server, sealed with the keyring (so they cannot be forged or altered), valid for
//! [`LINK_TTL_SECS`] and usable once (the nonce is a stored state consumed on first use).

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{GrantError, ring};
use crate::domain::OAuthState;
use crate::state::AppState;

pub const LINK_TTL_SECS: i64 = 600;
const CONTEXT: &[u8] = b"connect-link";

#[derive(Serialize, Deserialize)]
struct Claims {
    user: String,
    server: String,
    nonce: String,
    exp: i64,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// A fresh connect link for `user` to connect `server`.
pub async fn make(state: &AppState, user: &str, server: &str) -> Result<String, GrantError> {
    let now = state.clock.now();
    let claims = Claims {
        user: user.to_owned(),
        server: server.to_owned(),
        nonce: crate::crypto::random_token(16),
        exp: now + LINK_TTL_SECS,
    };
    state
        .store
        .put_state(&OAuthState {
            id: format!("link:{}", claims.nonce),
            user: user.to_owned(),
            server: server.to_owned(),
            sealed_payload: Vec::new(),
            created_at: now,
            expires_at: claims.exp,
        })
        .await?;
    let plain = serde_json::to_vec(&claims).map_err(|_| GrantError::Keyring("link".into()))?;
    let sealed = ring(state).await?.seal(&plain, CONTEXT)?;
    Ok(format!(
        "{}/oauth/connect/{server}?link={}",
        state.config.public_url.trim_end_matches('/'),
        b64().encode(sealed)
    ))
}

/// The user a link for `server` was made for; `None` when it is forged, altered, for
/// another server, expired or already used (it is used up by this call).
pub async fn redeem(
    state: &AppState,
    server: &str,
    link: &str,
) -> Result<Option<String>, GrantError> {
    let Ok(sealed) = b64().decode(link) else {
        return Ok(None);
    };
    let Ok(plain) = ring(state).await?.open(&sealed, CONTEXT) else {
        return Ok(None);
    };
    let Ok(c) = serde_json::from_slice::<Claims>(&plain) else {
        return Ok(None);
    };
    let now = state.clock.now();
    if c.server != server || c.exp <= now {
        return Ok(None);
    }
    let used = state
        .store
        .consume_state(&format!("link:{}", c.nonce), now)
        .await?;
    Ok(used.filter(|s| s.user == c.user).map(|_| c.user))
}

/// Seals a provider authorization URL into the connect page's continue link, so the
/// gateway only ever redirects to URLs it built itself (no open redirect).
pub async fn seal_go(state: &AppState, server: &str, url: &str) -> Result<String, GrantError> {
    let sealed = ring(state)
        .await?
        .seal(url.as_bytes(), format!("go:{server}").as_bytes())?;
    Ok(b64().encode(sealed))
}

pub async fn open_go(
    state: &AppState,
    server: &str,
    go: &str,
) -> Result<Option<String>, GrantError> {
    let Ok(sealed) = b64().decode(go) else {
        return Ok(None);
    };
    Ok(ring(state)
        .await?
        .open(&sealed, format!("go:{server}").as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::FixedClock;

    /// The `link` query value of a connect link.
    fn value(url: &str) -> String {
        url.split("?link=").nth(1).unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_link_works_once_for_its_server_and_not_after_it_expires() {
        let (mut state, _dir) = crate::testing::local_state(&[], &[]);
        let clock = Arc::new(FixedClock::at(1_000_000));
        state.clock = clock.clone();

        let url = make(&state, "alice@example.com", "notes").await.unwrap();
        assert!(url.contains("/oauth/connect/notes?link="), "{url}");
        let link = value(&url);
        // at another server: refused (and not used up)
        assert_eq!(redeem(&state, "other", &link).await.unwrap(), None);
        assert_eq!(
            redeem(&state, "notes", &link).await.unwrap().as_deref(),
            Some("alice@example.com")
        );
        // used once
        assert_eq!(redeem(&state, "notes", &link).await.unwrap(), None);

        // a fresh link, presented when its lifetime is over
        let late = value(&make(&state, "alice@example.com", "notes").await.unwrap());
        clock.advance(LINK_TTL_SECS);
        assert_eq!(redeem(&state, "notes", &late).await.unwrap(), None);
        // an altered one
        let mut bytes = b64().decode(&late).unwrap();
        bytes[20] ^= 1;
        assert_eq!(
            redeem(&state, "notes", &b64().encode(bytes)).await.unwrap(),
            None
        );
    }
}
