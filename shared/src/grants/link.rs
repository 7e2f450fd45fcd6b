//! The two links of the connect flow, both usable once (each a record in the state table,
//! consumed on first use):
//!
//! - Connect links: `{public}/oauth/connect/{server}?link=...`, bound to one gateway user and
//!   one server, sealed with the keyring (so they cannot be forged or altered), valid for
//!   [`LINK_TTL_SECS`].
//! - Continue links: the connect page's `?go=...`, a random id whose record holds the
//!   provider URL the gateway built (sealed: no open redirect), the flow's user, and the hash
//!   of the connect cookie of the browser that saw the page ([`super::binding`]), valid for
//!   [`CONTINUE_TTL_SECS`].

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::Grants;
use super::{GrantError, ring};
use crate::domain::OAuthState;

pub const LINK_TTL_SECS: i64 = 600;
/// A continue link lives as long as the authorization state it leads to.
pub const CONTINUE_TTL_SECS: i64 = super::flow::STATE_TTL_SECS;
const CONTEXT: &[u8] = b"connect-link";
/// Random ids (continue links, authorization states) are 32 random bytes, base64url.
const TOKEN_LEN: usize = 43;

/// Whether `s` has the shape of a [`crate::crypto::random_token`] of 32 bytes: checked
/// before a store lookup, so no made-up value (a `link:` or `go:` record's id, or a
/// megabyte of query) reaches the store.
pub(crate) fn is_token(s: &str) -> bool {
    s.len() == TOKEN_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

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
pub async fn make(grants: &Grants, user: &str, server: &str) -> Result<String, GrantError> {
    let now = grants.clock.now();
    let claims = Claims {
        user: user.to_owned(),
        server: server.to_owned(),
        nonce: crate::crypto::random_token(16),
        exp: now + LINK_TTL_SECS,
    };
    grants
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
    let sealed = ring(grants).await?.seal(&plain, CONTEXT)?;
    Ok(format!(
        "{}/oauth/connect/{server}?link={}",
        grants.public_url,
        b64().encode(sealed)
    ))
}

/// The user a link for `server` was made for; `None` when it is forged, altered, for
/// another server, expired or already used (it is used up by this call).
pub async fn redeem(
    grants: &Grants,
    server: &str,
    link: &str,
) -> Result<Option<String>, GrantError> {
    let Ok(sealed) = b64().decode(link) else {
        return Ok(None);
    };
    let Ok(plain) = ring(grants).await?.open(&sealed, CONTEXT) else {
        return Ok(None);
    };
    let Ok(c) = serde_json::from_slice::<Claims>(&plain) else {
        return Ok(None);
    };
    let now = grants.clock.now();
    if c.server != server || c.exp <= now {
        return Ok(None);
    }
    let used = grants
        .store
        .consume_state(&format!("link:{}", c.nonce), now)
        .await?;
    Ok(used.filter(|s| s.user == c.user).map(|_| c.user))
}

/// Sealed in a continue record.
#[derive(Serialize, Deserialize)]
struct ContinuePayload {
    provider_url: String,
    browser: String,
}

/// What a followed continue link leads to.
pub struct Continue {
    /// The gateway user the flow connects an account for.
    pub user: String,
    /// The provider's authorization URL, as the gateway built it.
    pub provider_url: String,
    /// The SHA-256 of the connect cookie of the browser that saw the connect page.
    pub browser: String,
}

fn continue_context(server: &str, id: &str) -> Vec<u8> {
    format!("continue:{server}:{id}").into_bytes()
}

/// Records a continue link of `user`'s flow for `server` leading to `provider_url`, for the
/// browser whose connect cookie hashes to `browser`: the link's `go` value.
pub async fn make_continue(
    grants: &Grants,
    user: &str,
    server: &str,
    provider_url: &str,
    browser: &str,
) -> Result<String, GrantError> {
    let id = crate::crypto::random_token(32);
    let plain = serde_json::to_vec(&ContinuePayload {
        provider_url: provider_url.to_owned(),
        browser: browser.to_owned(),
    })
    .map_err(|_| GrantError::Keyring("continue".into()))?;
    let now = grants.clock.now();
    grants
        .store
        .put_state(&OAuthState {
            id: format!("go:{id}"),
            user: user.to_owned(),
            server: server.to_owned(),
            sealed_payload: ring(grants)
                .await?
                .seal(&plain, &continue_context(server, &id))?,
            created_at: now,
            expires_at: now + CONTINUE_TTL_SECS,
        })
        .await?;
    Ok(id)
}

/// The continue link `go` of `server`, used up by this call; `None` when it is made up,
/// already used, expired or for another server. Whether this browser may follow it is the
/// caller's check ([`super::binding::Browser::admits`]), after it is used up: a continue
/// link that reached another browser has leaked, and is dead for everyone.
pub async fn take_continue(
    grants: &Grants,
    server: &str,
    go: &str,
) -> Result<Option<Continue>, GrantError> {
    if !is_token(go) {
        return Ok(None);
    }
    let Some(record) = grants
        .store
        .consume_state(&format!("go:{go}"), grants.clock.now())
        .await?
    else {
        return Ok(None);
    };
    if record.server != server {
        return Ok(None);
    }
    let Ok(plain) = ring(grants)
        .await?
        .open(&record.sealed_payload, &continue_context(server, go))
    else {
        return Ok(None);
    };
    let Ok(p) = serde_json::from_slice::<ContinuePayload>(&plain) else {
        return Ok(None);
    };
    Ok(Some(Continue {
        user: record.user,
        provider_url: p.provider_url,
        browser: p.browser,
    }))
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
        let clock = Arc::new(FixedClock::at(1_000_000));
        let (state, _dir) = crate::testing::local_state_at(clock.clone(), &[], &[]);
        let state = &state.grants;

        let url = make(state, "alice@example.com", "notes").await.unwrap();
        assert!(url.contains("/oauth/connect/notes?link="), "{url}");
        let link = value(&url);
        // at another server: refused (and not used up)
        assert_eq!(redeem(state, "other", &link).await.unwrap(), None);
        assert_eq!(
            redeem(state, "notes", &link).await.unwrap().as_deref(),
            Some("alice@example.com")
        );
        // used once
        assert_eq!(redeem(state, "notes", &link).await.unwrap(), None);

        // a fresh link, presented when its lifetime is over
        let late = value(&make(state, "alice@example.com", "notes").await.unwrap());
        clock.advance(LINK_TTL_SECS);
        assert_eq!(redeem(state, "notes", &late).await.unwrap(), None);
        // an altered one
        let mut bytes = b64().decode(&late).unwrap();
        bytes[20] ^= 1;
        assert_eq!(
            redeem(state, "notes", &b64().encode(bytes)).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_continue_link_works_once_for_its_server_and_not_after_it_expires() {
        let clock = Arc::new(FixedClock::at(1_000_000));
        let (state, _dir) = crate::testing::local_state_at(clock.clone(), &[], &[]);
        let state = &state.grants;
        let url = "https://idp.example.com/authorize?state=s";

        let go = make_continue(state, "alice@example.com", "notes", url, "h1")
            .await
            .unwrap();
        assert!(is_token(&go), "{go}");
        let c = take_continue(state, "notes", &go).await.unwrap().unwrap();
        assert_eq!(
            (c.user.as_str(), c.provider_url.as_str(), c.browser.as_str()),
            ("alice@example.com", url, "h1")
        );
        // used once
        assert!(take_continue(state, "notes", &go).await.unwrap().is_none());
        // at another server: refused, and used up too (it was moved: tampering)
        let moved = make_continue(state, "alice@example.com", "notes", url, "h1")
            .await
            .unwrap();
        assert!(
            take_continue(state, "other", &moved)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            take_continue(state, "notes", &moved)
                .await
                .unwrap()
                .is_none()
        );
        // past its lifetime
        let late = make_continue(state, "alice@example.com", "notes", url, "h1")
            .await
            .unwrap();
        clock.advance(CONTINUE_TTL_SECS);
        assert!(
            take_continue(state, "notes", &late)
                .await
                .unwrap()
                .is_none()
        );
        // made up, a connect link's record id, or oversized: never reach the store
        for bad in ["", "x", "link:abc", &"A".repeat(44), &"A".repeat(100_000)] {
            assert!(take_continue(state, "notes", bad).await.unwrap().is_none());
        }
    }
}
