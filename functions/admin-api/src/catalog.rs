//! The effective catalog: every endpoint and tool a principal can reach, computed by the same
//! decision function the proxy uses (`mcpgw::upstream::catalog`). `GET /me/catalog` for the caller;
//! `GET /admin/users/{user}/catalog[?groups=a,b]` for anyone, with a hypothetical set of IdP
//! groups: the "what would this user see" review.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::future::join_all;
use mcpgw::http::{ApiError, ApiPath};
use mcpgw::policy::Subject;
use mcpgw::state::AppState;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Admin, Caller};
use mcpgw::http::ErrorCode;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/me/catalog", get(mine))
        .route("/admin/users/{user}/catalog", get(for_user))
}

async fn mine(
    Caller(p): Caller,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        catalog(&state, &Subject::from(&p), p.api_key_id.as_deref()).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hypothetical {
    /// Comma-separated IdP groups the user would present.
    #[serde(default)]
    groups: Option<String>,
}

async fn for_user(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(user): ApiPath<String>,
    query: Result<Query<Hypothetical>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::bad_request(
            ErrorCode::InvalidQuery,
            "the only query parameter is groups=a,b",
        )
    })?;
    let user = crate::connections::check_user(&user)?;
    let groups: Vec<String> = q
        .groups
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    if groups.len() > 200 || groups.iter().any(|g| g.len() > 320) {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            "groups takes at most 200 names of at most 320 characters",
        ));
    }
    Ok(Json(
        catalog(&state, &Subject { user, groups }, None).await?,
    ))
}

/// The catalog of `subject` (calling with the API key `api_key_id`, whose per-key limits
/// then show; without one, per-key rules count per user, as calls do).
async fn catalog(
    state: &AppState,
    subject: &Subject,
    api_key_id: Option<&str>,
) -> Result<Value, ApiError> {
    let snap = state.policy().await?;
    let teams: Vec<&str> = snap.teams_of(subject).into_iter().collect();
    let mut endpoints = Vec::new();
    let mut pending = Vec::new();
    for access in snap.endpoints(subject) {
        let kind = if access.virtual_server.is_some() {
            "virtual_server"
        } else if state.server(&access.endpoint).await?.is_some() {
            "server"
        } else {
            // A group may outlive nothing: deletions are refused while referenced, but a
            // race with one could leave a name behind. It is not an endpoint.
            continue;
        };
        pending.push((access, kind));
    }
    let listed = join_all(pending.iter().map(|(access, _)| {
        mcpgw::upstream::catalog::endpoint_tools(&state.upstreams, &subject.user, access)
    }))
    .await;
    for ((access, kind), tools) in pending.iter().zip(listed) {
        let names: Vec<&str> = tools
            .tools
            .iter()
            .filter_map(|t| t.tool.get("name").and_then(Value::as_str))
            .collect();
        let mut budgets = state
            .limits
            .budgets(subject, api_key_id, &access.endpoint, &names)
            .await;
        let mut e = json!({
            "name": access.endpoint,
            "kind": kind,
            "url": format!("{}/mcp/{}", state.config.public_url, access.endpoint),
            "tools": tools.tools.iter().map(|t| {
                let mut v = json!({
                    "name": t.tool.get("name").cloned().unwrap_or_default(),
                    "upstream_server": t.server,
                    "upstream_tool": t.upstream_tool,
                });
                if let Some(d) = t.tool.get("description").filter(|d| d.is_string()) {
                    v["description"] = d.clone();
                }
                let name = t.tool.get("name").and_then(Value::as_str).unwrap_or_default();
                if let Some(list) = budgets.remove(name) {
                    v["rate_limits"] = list.iter().map(budget_view).collect();
                }
                v
            }).collect::<Vec<_>>(),
        });
        if !tools.errors.is_empty() {
            e["error"] = tools.errors.join("; ").into();
        }
        endpoints.push(e);
    }
    Ok(json!({"user": subject.user, "teams": teams, "endpoints": endpoints}))
}

/// What is left of one limit, as the catalog shows it (reset time rounded up to a second).
fn budget_view(b: &mcpgw::limits::Budget) -> Value {
    json!({
        "rule": b.rule,
        "mode": b.mode,
        "limit": b.limit,
        "remaining": b.remaining,
        "reset_at": crate::time_fmt::to_rfc3339((b.reset_at_ms + 999).div_euclid(1000)),
    })
}
