//! Token refresh: the scheduled sweep that refreshes OAuth grants before their access tokens
//! expire. Run by an EventBridge schedule in Lambda (`main.rs`) and by a timer in
//! `functions/local`.
//!
//! One sweep reads at most [`SWEEP_LIMIT`] due grants from the refresh index (soonest
//! first; the next run takes the rest) and refreshes each with the same code, lock and
//! version check as the proxy's on-demand refresh, so a sweep racing a proxy redeems a
//! rotating refresh token once. Idempotent: a grant written within [`RECENT_SECS`] (just
//! connected or refreshed, by anyone) is skipped, so a second run right after the first
//! refreshes nothing. Grants are spread over a short jitter so a large batch does not hit a
//! provider in one burst.

use std::time::Duration;

use mcpgw::grants::{GrantError, tokens};
use mcpgw::state::AppState;
use mcpgw::store::StoreError;
use serde::Serialize;

/// How far ahead of its refresh time a grant counts as due.
pub const REFRESH_WINDOW_SECS: i64 = 10 * 60;
/// Most grants handled by one sweep; the next run picks up the rest.
pub const SWEEP_LIMIT: usize = 500;
/// A grant written this recently is left alone.
pub const RECENT_SECS: i64 = 60;
/// At most this many refreshes run at once.
const CONCURRENCY: usize = 8;

/// What one sweep saw and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SweepReport {
    pub due: usize,
    pub refreshed: usize,
    pub failed: usize,
    pub skipped: usize,
}

enum Outcome {
    Refreshed,
    Failed,
    Skipped,
}

async fn one(state: &AppState, grant: mcpgw::domain::Grant, now: i64) -> Outcome {
    if grant.updated_at > now - RECENT_SECS {
        return Outcome::Skipped;
    }
    let Ok(Some(server)) = state.server(&grant.server).await else {
        return Outcome::Skipped;
    };
    match tokens::refresh_due(&state.grants, &server, &grant).await {
        Ok(true) => Outcome::Refreshed,
        Ok(false) => Outcome::Skipped,
        // Someone else refreshed it meanwhile: nothing left to do.
        Err(GrantError::Store(StoreError::VersionConflict { .. })) => Outcome::Skipped,
        Err(e) => {
            tracing::warn!(server = %grant.server, last_error = e.code(), "scheduled refresh failed");
            Outcome::Failed
        }
    }
}

/// Refreshes the grants whose refresh time falls within the window.
pub async fn sweep(state: &AppState) -> Result<SweepReport, StoreError> {
    let now = state.clock.now();
    let due = state
        .store
        .grants_due(now + REFRESH_WINDOW_SECS, SWEEP_LIMIT)
        .await?;
    let mut report = SweepReport {
        due: due.len(),
        ..SweepReport::default()
    };
    let mut pending = due.into_iter();
    loop {
        let batch: Vec<_> = pending.by_ref().take(CONCURRENCY).collect();
        if batch.is_empty() {
            break;
        }
        let runs = batch.into_iter().enumerate().map(|(i, g)| async move {
            // jitter: spread the batch over up to ~200 ms
            tokio::time::sleep(Duration::from_millis((i as u64 * 25) % 200)).await;
            one(state, g, now).await
        });
        // concurrently, without spawning (the futures borrow the state)
        for outcome in futures_util::future::join_all(runs).await {
            match outcome {
                Outcome::Refreshed => report.refreshed += 1,
                Outcome::Failed => report.failed += 1,
                Outcome::Skipped => report.skipped += 1,
            }
        }
    }
    use mcpgw::metrics::RefreshOutcome;
    state
        .metrics
        .refreshed(RefreshOutcome::Refreshed, report.refreshed as u64);
    state
        .metrics
        .refreshed(RefreshOutcome::Failed, report.failed as u64);
    state
        .metrics
        .refreshed(RefreshOutcome::Skipped, report.skipped as u64);
    tracing::info!(
        due = report.due,
        refreshed = report.refreshed,
        failed = report.failed,
        skipped = report.skipped,
        "token refresh sweep"
    );
    Ok(report)
}
