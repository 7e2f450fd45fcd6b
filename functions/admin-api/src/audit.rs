//! Reading the audit trail: `GET /admin/audit` (anyone's records, admins only),
//! `GET /me/audit` (the caller's own records: the user filter is always the caller; each as
//! `mcpgw::audit::view::for_user` shows it, so a hidden tool's call reads like an unknown
//! tool's, and `decision=` selects on that view) and
//! `GET /admin/audit/verify` (the chain check of `mcpgw::audit::verify`, admins only).
//!
//! Filters: `user`, `endpoint`, `tool`, `outcome` (`ok`, `is_error`, ...), `decision`
//! (`allow`, `deny`, `limited`, `would_limit`), `since` (inclusive) and `until` (exclusive)
//! as RFC 3339 or milliseconds since the epoch, `limit` (1 to 100, default 50) and the
//! opaque `cursor` of the previous page's `next_cursor`. Newest first. Without `since`, the
//! retention period (`MCPGW_AUDIT_RETENTION_DAYS`) back from `until` (default: now).

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use mcpgw::audit::range::{parse_time_ms, time_range, verify_range};
use mcpgw::audit::verify::{VerifyError, verify_store};
use mcpgw::audit::view;
use mcpgw::http::{ApiError, ErrorCode};
use mcpgw::state::AppState;
use mcpgw::store::{AUDIT_PAGE_MAX, AuditCursor, AuditPage, AuditQuery};
use serde::Deserialize;
use serde_json::json;

use crate::{Admin, Caller};

/// Default page size.
const DEFAULT_LIMIT: usize = 50;
/// Longest filter value accepted (longer cannot match anything the gateway records).
const MAX_FILTER_LEN: usize = 512;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/audit", get(admin_list))
        .route("/admin/audit/verify", get(admin_verify))
        .route("/me/audit", get(my_list))
}

/// The query string of both lists.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    pub user: Option<String>,
    pub endpoint: Option<String>,
    pub tool: Option<String>,
    pub outcome: Option<String>,
    pub decision: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

/// The query string of verify.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyParams {
    since: Option<String>,
    until: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidQuery, message)
}

fn params<T>(q: Result<Query<T>, QueryRejection>, allowed: &str) -> Result<T, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|_| bad(format!("the query parameters are {allowed}")))
}

/// A time bound: RFC 3339, or milliseconds since the epoch.
fn parse_time(field: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.map(|t| {
        parse_time_ms(t).ok_or_else(|| {
            bad(format!(
                "{field} must be RFC 3339 or milliseconds since the epoch"
            ))
        })
    })
    .transpose()
}

/// `[since, until)` from the parameters, defaults filled in.
fn range(
    state: &AppState,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<(i64, i64), ApiError> {
    let (since, until) = time_range(
        parse_time("since", since)?,
        parse_time("until", until)?,
        state.config.audit_retention,
    );
    if since >= until {
        return Err(bad("since must be before until"));
    }
    Ok((since, until))
}

fn filter(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(v) if v.is_empty() => Ok(None),
        Some(v) if v.len() > MAX_FILTER_LEN => Err(bad(format!(
            "{field} is longer than {MAX_FILTER_LEN} characters"
        ))),
        other => Ok(other),
    }
}

/// The store query the parameters ask for (`400` for anything malformed).
pub(crate) fn to_query(state: &AppState, p: AuditParams) -> Result<AuditQuery, ApiError> {
    let (since_ms, until_ms) = range(state, p.since.as_deref(), p.until.as_deref())?;
    let limit = match p.limit.as_deref() {
        None | Some("") => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=AUDIT_PAGE_MAX).contains(l))
            .ok_or_else(|| bad(format!("limit must be 1 to {AUDIT_PAGE_MAX}")))?,
    };
    let cursor = match p.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => {
            Some(AuditCursor::decode(c).ok_or_else(|| bad("cursor is not one this API gave"))?)
        }
    };
    let decision = filter("decision", p.decision)?;
    if let Some(d) = decision.as_deref()
        && !["allow", "deny", "limited", "would_limit"].contains(&d)
    {
        return Err(bad("decision must be allow, deny, limited or would_limit"));
    }
    Ok(AuditQuery {
        since_ms,
        until_ms,
        user: filter("user", p.user)?,
        endpoint: filter("endpoint", p.endpoint)?,
        tool: filter("tool", p.tool)?,
        outcome: filter("outcome", p.outcome)?,
        decision,
        cursor,
        limit,
        own: false,
    })
}

const LIST_PARAMS: &str = "user, endpoint, tool, outcome, decision, since, until, cursor and limit";

fn page_json(page: AuditPage) -> serde_json::Value {
    json!({
        "records": page.records,
        "next_cursor": page.next.map(|c| c.encode()),
    })
}

async fn admin_list(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let query = to_query(&state, params(q, LIST_PARAMS)?)?;
    Ok(Json(page_json(state.store.query_audit(&query).await?)))
}

async fn my_list(
    Caller(p): Caller,
    State(state): State<AppState>,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let mut params = params(q, LIST_PARAMS)?;
    // Only ever the caller's own records, whatever was asked.
    match params.user.as_deref() {
        None | Some("") => {}
        Some(u) if u == p.user => {}
        Some(_) => return Err(bad("/me/audit lists your own records only; drop user=")),
    }
    params.user = Some(p.user.clone());
    let mut query = AuditQuery {
        own: true,
        ..to_query(&state, params)?
    };
    // The decision filter selects on what the user is shown (`audit::view`): the store's
    // decision of a hidden tool's call (`deny`) is not the one the user sees (`allow`).
    let decision = query.decision.take();
    let page = state.store.query_audit(&query).await?;
    let records: Vec<serde_json::Value> = page
        .records
        .iter()
        .filter(|r| {
            decision
                .as_deref()
                .is_none_or(|d| view::user_decision_is(r, d))
        })
        .map(view::for_user)
        .collect();
    Ok(Json(json!({
        "records": records,
        "next_cursor": page.next.map(|c| c.encode()),
    })))
}

async fn admin_verify(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<VerifyParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let p = params(q, "since and until")?;
    // A verify holds its range in memory: the last day by default, at most 31 days.
    let (since, until) = verify_range(
        parse_time("since", p.since.as_deref())?,
        parse_time("until", p.until.as_deref())?,
    )
    .map_err(|e| bad(e.to_string()))?;
    let report = verify_store(state.store.as_ref(), &state.keyring, since, until)
        .await
        .map_err(|e| match e {
            VerifyError::Store(s) => ApiError::from(s),
            VerifyError::Keyring(_) => ApiError::internal(&e),
        })?;
    Ok(Json(report))
}
