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
/// How long the connect prompt shows the same link again to a caller still not connected
/// (see [`for_prompt`]).
pub const PROMPT_LINK_REUSE_SECS: i64 = 20;
/// Bound on the (user, server) pairs [`LinkMemory`] holds (it is only a cache).
const MAX_REMEMBERED_LINKS: usize = 4096;
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

/// The connect links this process recently showed in a connect prompt, per (user, server),
/// with the time they were made.
#[derive(Default)]
pub struct LinkMemory(std::sync::Mutex<std::collections::HashMap<(String, String), (i64, String)>>);

impl LinkMemory {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), (i64, String)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The connect link the prompt shows `user` for `server`: the one this process made for
/// them in the last [`PROMPT_LINK_REUSE_SECS`], else a fresh one. Every request of a caller
/// not connected yet meets the prompt (lists re-read every few seconds, pings, held
/// streams), and each fresh link is a store write: without this, one key could drive store
/// writes without bound. A link stays single-use: once redeemed here it is forgotten at
/// once (redeemed in another process, the prompt may show it for the rest of the window,
/// and its page then says to start again).
pub async fn for_prompt(grants: &Grants, user: &str, server: &str) -> Result<String, GrantError> {
    let now = grants.clock.now();
    let key = (user.to_owned(), server.to_owned());
    if let Some((made, url)) = grants.links.lock().get(&key)
        && now - made < PROMPT_LINK_REUSE_SECS
        && now >= *made
    {
        return Ok(url.clone());
    }
    let url = make(grants, user, server).await?;
    let mut links = grants.links.lock();
    if links.len() >= MAX_REMEMBERED_LINKS {
        links.clear();
    }
    links.insert(key, (now, url.clone()));
    Ok(url)
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
    let user = used.filter(|s| s.user == c.user).map(|_| c.user);
    if let Some(u) = &user {
        grants.links.lock().remove(&(u.clone(), c.server.clone()));
    }
    Ok(user)
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

    /// GIVEN a caller not connected who meets the prompt again and again WHEN the prompt asks
    /// for their link THEN one store write serves the window, the link still works once, and
    /// a used or old link is never shown again.
    #[tokio::test]
    async fn the_prompt_shows_one_link_per_window_and_never_a_used_one() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let clock = Arc::new(FixedClock::at(1_000_000));
        let writes = Arc::new(AtomicUsize::new(0));
        let w = writes.clone();
        let store = crate::testing::ObservedStore::new(
            Arc::new(crate::store::sqlite::SqliteStore::in_memory().unwrap()),
            move |call| {
                if call.method == "put_state" {
                    w.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            },
        );
        let dir = crate::testing::tempfile_guard::TempDir::new();
        let data = dir.path().display().to_string();
        let config = crate::config::Config::from_lookup(|k| match k {
            "MCPGW_DATA_DIR" => Some(data.clone()),
            "MCPGW_BOOTSTRAP_ADMIN_KEY" => Some(crate::testing::TEST_ADMIN_KEY.into()),
            _ => None,
        })
        .unwrap();
        let secrets = crate::secrets::env::EnvSecrets::from_map(Default::default());
        let state = crate::state::AppState::from_parts(
            config,
            Arc::new(store),
            Arc::new(secrets),
            clock.clone(),
        )
        .unwrap();
        let grants = &state.grants;
        let alice = "alice@example.com";
        let first = for_prompt(grants, alice, "notes").await.unwrap();
        for _ in 0..50 {
            assert_eq!(for_prompt(grants, alice, "notes").await.unwrap(), first);
        }
        assert_eq!(writes.load(Ordering::SeqCst), 1, "one write for the window");
        // Another user, another server: links of their own.
        assert_ne!(
            for_prompt(grants, "bob@example.com", "notes")
                .await
                .unwrap(),
            first
        );
        assert_ne!(for_prompt(grants, alice, "docs").await.unwrap(), first);
        // Used once here: the next prompt shows a fresh link.
        assert_eq!(
            redeem(grants, "notes", &value(&first))
                .await
                .unwrap()
                .as_deref(),
            Some(alice)
        );
        let second = for_prompt(grants, alice, "notes").await.unwrap();
        assert_ne!(second, first);
        // Past the window: fresh again.
        clock.advance(PROMPT_LINK_REUSE_SECS);
        assert_ne!(for_prompt(grants, alice, "notes").await.unwrap(), second);
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
