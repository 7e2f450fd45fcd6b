//! The access token the proxy injects for (user, server), refreshed on demand when it
//! expires within [`REFRESH_MARGIN_SECS`], and by the sweeper ahead of time.
//!
//! Races: within a process one refresh per (user, server) runs at a time (the others wait
//! and then find the fresh token). Across processes a refresher first claims the grant: a
//! version-checked write that sets `refresh_lease_until` ([`LEASE_SECS`]), before the
//! refresh token leaves the gateway. Exactly one claim succeeds; the others see the lease,
//! wait for the winner's write and use its token. So a rotating refresh token is redeemed
//! once, never twice (a provider that detects reuse would revoke the whole grant). Opened
//! tokens are kept in memory for at most
//! [`CACHE_SECS`] (a grant revoked through another process stops being used within that).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oauth2::{RefreshToken, Scope, TokenResponse};

use super::Grants;
use super::endpoints;
use super::flow::{self, grant_record, resource, token_error, token_set};
use super::{GrantError, TokenSet, ring};
use crate::domain::{Grant, GrantStatus, McpServer, UpstreamAuth};
use crate::store::StoreError;

/// A token expiring within this is refreshed before use.
pub const REFRESH_MARGIN_SECS: i64 = 60;
/// How long an opened token is reused without reading the store.
pub const CACHE_SECS: u64 = 30;
/// After a failed refresh, how long a still-valid token is used before the provider is
/// asked again.
pub const RETRY_AFTER_ERROR_SECS: i64 = 10;
/// How long a claim on a grant lasts: beyond the token endpoint's whole timeout, so a live
/// refresher always writes its result within it; a refresher that died holds the grant up to
/// this long.
pub const LEASE_SECS: i64 = 2 * endpoints::OAUTH_CALL_TIMEOUT.as_secs() as i64 + 5;
/// How often a process waiting on another's claim reads the grant again.
const LEASE_POLL: Duration = Duration::from_millis(100);

/// Whether another refresher holds `grant` now.
fn leased(grant: &Grant, now: i64) -> bool {
    grant.refresh_lease_until.is_some_and(|t| t > now)
}

/// Waits until `grant` changes in the store (the holder wrote its result, or gave up) or its
/// lease runs out.
async fn wait_for_holder(grants: &Grants, grant: &Grant) -> Result<(), GrantError> {
    loop {
        tokio::time::sleep(LEASE_POLL).await;
        let now = grants.clock.now();
        match grants.store.get_grant(&grant.user, &grant.server).await? {
            Some(g) if g.version == grant.version && leased(&g, now) => continue,
            _ => return Ok(()),
        }
    }
}

type Key = (String, String);

/// What one process (one [`super::Grants`]) remembers: opened tokens, and one refresh lock per
/// (user, server).
#[derive(Default)]
pub struct TokenMemory {
    tokens: Mutex<HashMap<Key, (Instant, TokenSet)>>,
    locks: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

fn key(user: &str, server: &str) -> Key {
    (user.to_owned(), server.to_owned())
}

impl TokenMemory {
    /// Drops what this process remembers of (user, server) (a new grant, a revocation).
    pub fn forget(&self, user: &str, server: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(user, server));
    }

    fn cached(&self, user: &str, server: &str, now: i64) -> Option<String> {
        let c = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let (at, t) = c.get(&key(user, server))?;
        (at.elapsed() < Duration::from_secs(CACHE_SECS) && fresh(t, now))
            .then(|| t.access_token.clone())
    }

    fn remember(&self, user: &str, server: &str, t: &TokenSet) {
        let mut c = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(key(user, server), (Instant::now(), t.clone()));
    }

    /// What is remembered for (user, server), however old (machine tokens are kept until
    /// they expire: nothing else can revoke them).
    pub(crate) fn peek(&self, user: &str, server: &str) -> Option<TokenSet> {
        let c = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        c.get(&key(user, server)).map(|(_, t)| t.clone())
    }

    pub(crate) fn keep(&self, user: &str, server: &str, t: &TokenSet) {
        self.remember(user, server, t);
    }

    pub(crate) fn lock_for(&self, user: &str, server: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut l = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() > 10_000 {
            l.retain(|_, m| Arc::strong_count(m) > 1);
        }
        l.entry(key(user, server)).or_default().clone()
    }
}

fn fresh(t: &TokenSet, now: i64) -> bool {
    t.expires_at.is_none_or(|e| e > now + REFRESH_MARGIN_SECS)
}

/// The access token for `user` at `server`, refreshing it first if it is about to expire.
/// `rejected`: the token the upstream just answered 401 to; it is refreshed unless the stored
/// token is already another one (someone else refreshed meanwhile), so any number of callers
/// that saw the same 401 cause one refresh.
pub async fn access_token(
    grants: &Grants,
    user: &str,
    server: &McpServer,
    rejected: Option<&str>,
) -> Result<String, GrantError> {
    let now = grants.clock.now();
    if let Some(t) = grants.tokens.cached(user, &server.name, now)
        && rejected != Some(t.as_str())
    {
        return Ok(t);
    }
    let lock = grants.tokens.lock_for(user, &server.name);
    let _one_at_a_time = lock.lock().await;
    let ring = ring(grants).await?;
    for _ in 0..4 {
        let grant = grants
            .store
            .get_grant(user, &server.name)
            .await?
            .ok_or(GrantError::NotConnected)?;
        if grant.status != GrantStatus::Active {
            return Err(GrantError::NeedsReconsent);
        }
        let tokens = TokenSet::open(&ring, &grant.sealed_tokens, user, &server.name)?;
        let must_refresh = !fresh(&tokens, now) || rejected == Some(tokens.access_token.as_str());
        if !must_refresh {
            grants.tokens.remember(user, &server.name, &tokens);
            return Ok(tokens.access_token);
        }
        if leased(&grant, grants.clock.now()) {
            // Another process is redeeming the refresh token: use what it writes.
            wait_for_holder(grants, &grant).await?;
            continue;
        }
        // Refreshed ahead of time and still valid: usable if the provider cannot answer now.
        let still_valid = (rejected != Some(tokens.access_token.as_str())
            && tokens.expires_at.is_some_and(|e| e > now))
        .then(|| tokens.access_token.clone());
        // A refresh failed moments ago and the token still works: use it without asking the
        // provider again, so an outage does not turn every call into a token request. (The
        // failure's write is the grant's last update: a success clears `last_error`.)
        if let Some(t) = &still_valid
            && grant.last_error.is_some()
            && grant.updated_at > now - RETRY_AFTER_ERROR_SECS
        {
            return Ok(t.clone());
        }
        match refresh_grant(grants, server, &grant, tokens).await {
            Ok(t) => {
                grants.tokens.remember(user, &server.name, &t);
                return Ok(t.access_token);
            }
            // Another process refreshed first: read its token.
            Err(GrantError::Store(StoreError::VersionConflict { .. })) => continue,
            // A provider outage within the last minute of a token's life does not fail the
            // call: the error is recorded and the next call or sweep tries again. Not after
            // `invalid_grant` (the user revoked the grant at the provider).
            Err(e) => {
                return match still_valid {
                    Some(t) if !matches!(e, GrantError::NeedsReconsent) => {
                        tracing::warn!(server = %server.name, error = e.code(),
                            "refresh failed; the current token is still valid");
                        Ok(t)
                    }
                    _ => Err(e),
                };
            }
        }
    }
    Err(GrantError::Upstream(
        "the grant kept changing while it was refreshed".into(),
    ))
}

/// The sweeper's refresh of a due grant: under the same per-process lock as the proxy's
/// on-demand refresh, on the grant as stored now (unchanged since the sweep read it, or it
/// is left alone: someone else wrote it meanwhile). `Ok(false)`: nothing to do.
pub async fn refresh_due(
    grants: &Grants,
    server: &McpServer,
    seen: &Grant,
) -> Result<bool, GrantError> {
    let lock = grants.tokens.lock_for(&seen.user, &seen.server);
    let _one_at_a_time = lock.lock().await;
    let Some(grant) = grants.store.get_grant(&seen.user, &seen.server).await? else {
        return Ok(false);
    };
    if grant.version != seen.version
        || grant.status != GrantStatus::Active
        || leased(&grant, grants.clock.now())
    {
        return Ok(false);
    }
    let ring = ring(grants).await?;
    let tokens = TokenSet::open(&ring, &grant.sealed_tokens, &grant.user, &grant.server)?;
    let fresh_tokens = refresh_grant(grants, server, &grant, tokens).await?;
    grants
        .tokens
        .remember(&grant.user, &grant.server, &fresh_tokens);
    Ok(true)
}

/// Claims `grant` (the lease), redeems its refresh token once and writes the result with the
/// version check. `Store(VersionConflict)` means another refresher claimed it first; nothing
/// was sent to the provider.
pub async fn refresh_grant(
    grants: &Grants,
    server: &McpServer,
    grant: &Grant,
    tokens: TokenSet,
) -> Result<TokenSet, GrantError> {
    let now = grants.clock.now();
    let ring = ring(grants).await?;
    let Some(refresh) = tokens.refresh_token.clone() else {
        mark_needs_reconsent(grants, grant, now).await;
        return Err(GrantError::NeedsReconsent);
    };
    let mut claimed = grant.clone();
    claimed.version += 1;
    claimed.refresh_lease_until = Some(now + LEASE_SECS);
    claimed.updated_at = now;
    grants
        .store
        .save_grant_if_version(&claimed, Some(grant.version))
        .await?;
    let grant = &claimed;
    // From here on every way out releases the claim, so a failure before the provider is
    // even asked does not hold the grant for the whole lease.
    let c = async {
        let e = endpoints::for_server(grants, server).await?;
        flow::client(grants, server, &e, None).await
    };
    let c = match c.await {
        Ok(c) => c,
        Err(e) => {
            record_error(grants, grant, e.code(), now).await;
            return Err(e);
        }
    };
    // Scope and resource on refresh too: some providers (Entra) refuse refreshes without.
    let scopes: Vec<Scope> = match &server.auth {
        UpstreamAuth::OAuth2 { scopes, .. } => scopes.iter().cloned().map(Scope::new).collect(),
        _ => Vec::new(),
    };
    let answer = c
        .exchange_refresh_token(&RefreshToken::new(refresh))
        .add_scopes(scopes)
        .add_extra_param("resource", resource(server))
        .request_async(&grants.oauth_http)
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            let e = token_error(e);
            if matches!(e, GrantError::NeedsReconsent) {
                mark_needs_reconsent(grants, grant, now).await;
            } else {
                // Network or provider trouble: the grant stays usable and is retried later
                // (its refresh time has passed, so the next sweep or call tries again).
                record_error(grants, grant, e.code(), now).await;
            }
            return Err(e);
        }
    };
    let new = token_set(&answer, now, tokens.refresh_token);
    let granted = answer
        .scopes()
        .map(|s| s.iter().map(|s| s.to_string()).collect())
        .unwrap_or_else(|| grant.scopes.clone());
    let mut record = grant_record(
        &ring,
        &grant.user,
        &grant.server,
        &new,
        granted,
        Some(grant.version),
        now,
    )?;
    record.last_refresh_at = Some(now);
    grants
        .store
        .save_grant_if_version(&record, Some(grant.version))
        .await?;
    tracing::info!(server = %grant.server, version = record.version, "grant refreshed");
    Ok(new)
}

/// Records why a refresh failed and releases the claim on `grant` (the claimed version), so
/// the next call or sweep may try again at once. A lost race leaves the winner's record.
async fn record_error(grants: &Grants, grant: &Grant, code: &str, now: i64) {
    grants.audit.emit(crate::audit::events::refresh_failed(
        &grant.user,
        &grant.server,
        code,
        false,
    ));
    let mut g = grant.clone();
    g.version += 1;
    g.refresh_lease_until = None;
    g.last_error = Some(code.to_owned());
    g.updated_at = now;
    if let Err(e) = grants
        .store
        .save_grant_if_version(&g, Some(grant.version))
        .await
    {
        tracing::debug!(error = %crate::http::error_chain(&e), "refresh error not recorded");
    }
}

async fn mark_needs_reconsent(grants: &Grants, grant: &Grant, now: i64) {
    grants.audit.emit(crate::audit::events::refresh_failed(
        &grant.user,
        &grant.server,
        "invalid_grant",
        true,
    ));
    let mut g = grant.clone();
    g.version += 1;
    g.status = GrantStatus::NeedsReconsent;
    g.refresh_at = None;
    g.refresh_lease_until = None;
    g.updated_at = now;
    g.last_error = Some("invalid_grant".to_owned());
    if let Err(e) = grants
        .store
        .save_grant_if_version(&g, Some(grant.version))
        .await
    {
        tracing::warn!(error = %crate::http::error_chain(&e), "could not mark a grant for re-consent");
    }
    grants.tokens.forget(&grant.user, &grant.server);
}
