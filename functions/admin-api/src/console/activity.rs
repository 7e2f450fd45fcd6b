//! The console's audit pages: "My activity" (`/console/activity`, the signed-in user's own
//! records through `GET /me/audit`) and "Activity" (`/console/admin/activity`, everyone's
//! through `GET /admin/audit`, admins only). Filters are a GET form whose fields are the
//! API's own query parameters, passed through unchanged, so the API's validation and its
//! 400 messages are what the page shows; "Older" follows the API's cursor.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use mcpgw::state::AppState;
use serde_json::Value;

use super::api;
use super::html::{Page, message};
use super::session::Console;

/// The filters the form offers (the API's query parameters); `user` on the admin page only.
const FILTERS: [(&str, &str); 7] = [
    ("user", "User"),
    ("endpoint", "Endpoint"),
    ("tool", "Tool"),
    ("outcome", "Outcome"),
    ("decision", "Decision"),
    ("since", "Since"),
    ("until", "Until"),
];

pub async fn mine(
    console: Console,
    State(state): State<AppState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    render(
        &console,
        &state,
        &q,
        "/me/audit",
        "/console/activity",
        "My activity",
    )
    .await
}

pub async fn all(
    console: Console,
    State(state): State<AppState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Err(r) = console.require_admin() {
        return r;
    }
    render(
        &console,
        &state,
        &q,
        "/admin/audit",
        "/console/admin/activity",
        "Activity",
    )
    .await
}

/// A query string of the known, non-empty parameters in `q` (plus `cursor`).
fn query_string(q: &BTreeMap<String, String>, admin: bool, cursor: Option<&str>) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (name, _) in FILTERS {
        if name == "user" && !admin {
            continue;
        }
        if let Some(v) = q.get(name).filter(|v| !v.is_empty()) {
            out.append_pair(name, v);
        }
    }
    if let Some(c) = cursor {
        out.append_pair("cursor", c);
    }
    out.finish()
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

/// A record's time as RFC 3339.
fn when(ms: &Value) -> String {
    ms.as_i64()
        .and_then(|ms| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
        })
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "—".into())
}

fn rows(records: &[Value], admin: bool) -> Markup {
    html! {
        table id="audit" {
            thead {
                tr {
                    th { "Time" }
                    @if admin { th { "User" } }
                    th { "Event" } th { "Endpoint" } th { "Tool" } th { "Decision" }
                    th { "Rule" } th { "Outcome" } th { "Latency (ms)" }
                }
            }
            tbody {
                @for r in records {
                    tr class="audit-record" {
                        td { (when(&r["time_ms"])) }
                        @if admin { td { (cell(&r["principal"]["user"])) } }
                        td { (cell(&r["event"])) }
                        td { (cell(&r["endpoint"])) }
                        td { (cell(&r["tool"])) }
                        td class="decision" { (cell(&r["decision"])) }
                        td { (cell(&r["rule"])) }
                        td class="outcome" { (cell(&r["outcome"]["status"])) }
                        td { (cell(&r["latency_ms"])) }
                    }
                }
            }
        }
    }
}

async fn render(
    console: &Console,
    state: &AppState,
    q: &BTreeMap<String, String>,
    api_path: &str,
    page_path: &str,
    title: &str,
) -> Response {
    let admin = api_path.starts_with("/admin/");
    let b = &console.base;
    let qs = query_string(q, admin, q.get("cursor").map(String::as_str));
    let path = if qs.is_empty() {
        api_path.to_owned()
    } else {
        format!("{api_path}?{qs}")
    };
    let a = api::call(state, &console.principal, Method::GET, &path, None).await;
    let records = a.body["records"].as_array().cloned().unwrap_or_default();
    let older = a.body["next_cursor"]
        .as_str()
        .map(|c| format!("{b}{page_path}?{}", query_string(q, admin, Some(c))));
    let status = if a.ok() { StatusCode::OK } else { a.status };
    let body = html! {
        form id="audit-filters" method="get" action={ (b) (page_path) } {
            @for (name, label) in FILTERS {
                @if name != "user" || admin {
                    label {
                        (label) " "
                        input type="text" name=(name) value=(q.get(name).map(String::as_str).unwrap_or_default());
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        p class="hint" { "Times: RFC 3339 (2026-01-31T12:00:00Z) or milliseconds since the epoch. Newest first." }
        @if !a.ok() { (message("error", &a.message())) }
        @if records.is_empty() && a.ok() { p id="audit-empty" { "No records." } }
        @else { (rows(&records, admin)) }
        @if let Some(href) = &older { p { a id="audit-older" href=(href) { "Older" } } }
    };
    Page::new(status, title, body)
        .with_nav(console.nav())
        .render(b)
}
