//! `/console`: what the signed-in user can use, and their own per-user credentials.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use mcpgw::domain::UpstreamAuth;
use mcpgw::policy::Subject;
use mcpgw::state::AppState;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Form;
use super::api::{self, seg};
use super::html::{self, Page, button_form, csrf_field, escape, message};
use super::session::Console;

#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
    revocation: Option<String>,
}

/// Fixed texts for `?done=`: nothing from the URL is shown.
fn done_text(d: &Done) -> Option<String> {
    let base = match d.done.as_deref()? {
        "disconnected" => "Disconnected.",
        "token_saved" => "Token saved.",
        "token_cleared" => "Token removed.",
        _ => return None,
    };
    let rev = match d.revocation.as_deref() {
        Some("revoked") => " The provider revoked the token.",
        Some("not_supported") => {
            " The provider offers no revocation; the gateway's copy is deleted."
        }
        Some("failed") => " The provider could not be told; the gateway's copy is deleted.",
        _ => "",
    };
    Some(format!("{base}{rev}"))
}

/// The `type` of an upstream auth, as the admin API spells it.
fn auth_type(auth: &UpstreamAuth) -> String {
    serde_json::to_value(auth)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn status_label(code: &str) -> &'static str {
    match code {
        "connected" => "connected",
        "expired" => "expired",
        "needs_reconsent" => "needs re-consent",
        "not_connected" => "not connected",
        _ => "",
    }
}

/// One row of the page.
struct Row {
    name: String,
    kind: &'static str,
    url: Option<String>,
    auth: String,
    /// `/me/connections`' entry for a server taking a per-user credential.
    connection: Option<Value>,
}

pub async fn page(
    console: Console,
    State(state): State<AppState>,
    Query(done): Query<Done>,
) -> Response {
    render(
        &console,
        &state,
        StatusCode::OK,
        done_text(&done).map(|t| message("notice", &t)),
    )
    .await
}

async fn render(
    console: &Console,
    state: &AppState,
    status: StatusCode,
    note: Option<String>,
) -> Response {
    let p = &console.principal;
    let subject = Subject::from(p);
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut problems = Vec::new();
    match state.policy().await {
        Ok(snap) => {
            for access in snap.endpoints(&subject) {
                let name = access.endpoint.clone();
                let url = format!(
                    "{}/mcp/{name}",
                    state.config.public_url.trim_end_matches('/')
                );
                if access.virtual_server.is_some() {
                    rows.insert(
                        name.clone(),
                        Row {
                            name,
                            kind: "virtual server",
                            url: Some(url),
                            auth: "per member".into(),
                            connection: None,
                        },
                    );
                } else if let Ok(Some(s)) = state.server(&name).await {
                    rows.insert(
                        name.clone(),
                        Row {
                            name,
                            kind: "server",
                            url: Some(url),
                            auth: auth_type(&s.auth),
                            connection: None,
                        },
                    );
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %mcpgw::http::error_chain(&e), "console: policy unavailable");
            problems.push("What you can use cannot be read right now.".to_owned());
        }
    }
    let conns = api::call(state, p, Method::GET, "/me/connections", None).await;
    if conns.ok() {
        for c in conns.body["connections"].as_array().into_iter().flatten() {
            let Some(server) = c["server"].as_str() else {
                continue;
            };
            let unreachable = c["reachable"] == false;
            let row = rows.entry(server.to_owned()).or_insert_with(|| Row {
                name: server.to_owned(),
                kind: if unreachable {
                    "no longer reachable"
                } else {
                    "member of a virtual server"
                },
                url: None,
                auth: c["auth"].as_str().unwrap_or("oauth2").to_owned(),
                connection: None,
            });
            row.connection = Some(c.clone());
        }
    } else {
        problems.push(conns.message());
    }
    let csrf = &console.csrf;
    let b = &console.base;
    let mut body = String::new();
    if let Some(n) = note {
        body.push_str(&n);
    }
    for pr in &problems {
        body.push_str(&message("error", pr));
    }
    body.push_str("<p class=\"muted\">Point your MCP client at an endpoint's URL with your gateway credential. Servers that act with your own account need you to connect it once.</p>");
    if rows.is_empty() {
        body.push_str("<p id=\"nothing\">You have no MCP endpoints yet. Ask a gateway admin to add you to a server group.</p>");
    } else {
        body.push_str("<table id=\"endpoints\"><thead><tr><th>Endpoint</th><th>Kind</th><th>Auth</th><th>Status</th><th>Actions</th></tr></thead><tbody>");
        for r in rows.values() {
            let name = escape(&r.name);
            let n = seg(&r.name);
            let url = r
                .url
                .as_deref()
                .map(|u| format!("<br><code class=\"url\">{}</code>", escape(u)))
                .unwrap_or_default();
            let (status_cell, actions) = match (&r.connection, r.auth.as_str()) {
                (Some(c), "oauth2") => {
                    let code = c["status"].as_str().unwrap_or("not_connected");
                    let mut a = String::new();
                    let reachable = c["reachable"] != false;
                    if reachable {
                        let label = if code == "not_connected" {
                            "Connect"
                        } else {
                            "Reconnect"
                        };
                        a.push_str(&button_form(
                            &format!("connect-{}", r.name),
                            &format!("{b}/console/connections/{n}/connect"),
                            csrf,
                            label,
                            "",
                        ));
                    }
                    if code != "not_connected" {
                        a.push_str(&button_form(
                            &format!("disconnect-{}", r.name),
                            &format!("{b}/console/connections/{n}/disconnect"),
                            csrf,
                            "Disconnect",
                            "danger",
                        ));
                    }
                    let mut cell = format!(
                        "<td class=\"status status-{code}\" data-status=\"{code}\">{}",
                        status_label(code)
                    );
                    if let Some(e) = c["last_error"].as_str() {
                        cell.push_str(&format!(
                            "<br><span class=\"muted\">last error: {}</span>",
                            escape(e)
                        ));
                    }
                    cell.push_str("</td>");
                    (cell, a)
                }
                (Some(c), "per_user_token") => {
                    let set = c["status"] == "connected";
                    let code = if set { "connected" } else { "not_connected" };
                    let label = if set { "token set" } else { "no token" };
                    let mut a = String::new();
                    if c["reachable"] != false {
                        a.push_str(&format!(
                            "<form id=\"token-{id}\" class=\"inline\" method=\"post\" action=\"{b}/console/credentials/{n}\">{}\
                             <input type=\"password\" name=\"token\" aria-label=\"token for {name}\" autocomplete=\"off\" required> \
                             <button type=\"submit\">{}</button></form>",
                            csrf_field(csrf),
                            if set { "Replace token" } else { "Save token" },
                            id = name,
                        ));
                    }
                    if set {
                        a.push_str(&button_form(
                            &format!("clear-token-{}", r.name),
                            &format!("{b}/console/credentials/{n}/clear"),
                            csrf,
                            "Remove token",
                            "danger",
                        ));
                    }
                    (
                        format!(
                            "<td class=\"status status-{code}\" data-status=\"{code}\">{label}</td>"
                        ),
                        a,
                    )
                }
                _ => (
                    "<td class=\"status\" data-status=\"none\">—</td>".to_owned(),
                    String::new(),
                ),
            };
            body.push_str(&format!(
                "<tr id=\"row-{name}\" data-endpoint=\"{name}\"><td><strong>{name}</strong>{url}</td><td>{kind}</td><td class=\"auth\">{auth}</td>{status_cell}<td>{actions}</td></tr>",
                kind = r.kind,
                auth = escape(&r.auth),
            ));
        }
        body.push_str("</tbody></table>");
    }
    Page::new(status, "My connections", body)
        .with_nav(console.nav())
        .render(b)
}

/// A form on this page failed: the page again, with the API's message.
async fn failed(console: &Console, state: &AppState, a: &api::Answer) -> Response {
    render(
        console,
        state,
        a.status,
        Some(message("error", &a.message())),
    )
    .await
}

/// `POST /console/connections/{server}/connect`: a fresh single-use connect link, then the
/// gateway's connect page (which names the user and server before going to the provider).
pub async fn connect(
    console: Console,
    State(state): State<AppState>,
    Path(server): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = console.check_csrf(&form) {
        return r;
    }
    let a = api::call(
        &state,
        &console.principal,
        Method::POST,
        &format!("/me/connections/{}/link", seg(&server)),
        None,
    )
    .await;
    match a.body["url"].as_str() {
        Some(url) if a.ok() => html::see_other(url, &[]),
        _ => failed(&console, &state, &a).await,
    }
}

pub async fn disconnect(
    console: Console,
    State(state): State<AppState>,
    Path(server): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = console.check_csrf(&form) {
        return r;
    }
    let a = api::call(
        &state,
        &console.principal,
        Method::DELETE,
        &format!("/me/connections/{}", seg(&server)),
        None,
    )
    .await;
    if !a.ok() {
        return failed(&console, &state, &a).await;
    }
    let rev = a.body["provider_revocation"]["status"]
        .as_str()
        .unwrap_or("");
    let rev = match rev {
        "revoked" | "not_supported" | "failed" => rev,
        _ => "not_applicable",
    };
    html::see_other(
        &format!(
            "{}/console?done=disconnected&revocation={rev}",
            console.base
        ),
        &[],
    )
}

pub async fn set_token(
    console: Console,
    State(state): State<AppState>,
    Path(server): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = console.check_csrf(&form) {
        return r;
    }
    let body = json!({"token": form.get("token").unwrap_or_default()});
    let a = api::call(
        &state,
        &console.principal,
        Method::PUT,
        &format!("/me/credentials/{}", seg(&server)),
        Some(&body),
    )
    .await;
    if !a.ok() {
        return failed(&console, &state, &a).await;
    }
    html::see_other(&format!("{}/console?done=token_saved", console.base), &[])
}

pub async fn clear_token(
    console: Console,
    State(state): State<AppState>,
    Path(server): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = console.check_csrf(&form) {
        return r;
    }
    let a = api::call(
        &state,
        &console.principal,
        Method::DELETE,
        &format!("/me/credentials/{}", seg(&server)),
        None,
    )
    .await;
    if !a.ok() {
        return failed(&console, &state, &a).await;
    }
    html::see_other(&format!("{}/console?done=token_cleared", console.base), &[])
}
