//! Token refresh: the sweep that finds OAuth grants due for refresh. Run by an EventBridge
//! schedule in Lambda (`main.rs`) and by a timer in `functions/local`.
//!
//! The refresh itself (redeeming the refresh token, saving with a version check) arrives with
//! the per-user OAuth issue; today the sweep reports what is due so the schedule, the index
//! query and the Lambda wiring are exercised from the start.

use mcpgw::state::AppState;
use mcpgw::store::StoreError;
use serde::Serialize;

/// How far ahead of expiry a grant counts as due.
pub const REFRESH_WINDOW_SECS: i64 = 10 * 60;
/// Most grants handled by one sweep; the next run picks up the rest.
pub const SWEEP_LIMIT: usize = 500;

/// What one sweep saw and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SweepReport {
    pub due: usize,
    pub refreshed: usize,
    pub failed: usize,
}

/// Finds the grants whose refresh time falls within the window.
pub async fn sweep(state: &AppState) -> Result<SweepReport, StoreError> {
    let before = state.clock.now() + REFRESH_WINDOW_SECS;
    let due = state.store.grants_due(before, SWEEP_LIMIT).await?;
    let report = SweepReport {
        due: due.len(),
        ..SweepReport::default()
    };
    tracing::info!(
        due = report.due,
        refreshed = report.refreshed,
        failed = report.failed,
        "token refresh sweep"
    );
    Ok(report)
}
