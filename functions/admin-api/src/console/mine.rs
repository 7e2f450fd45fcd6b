//! `/console`: what the signed-in user can use, and their own per-user credentials.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use mcpgw::domain::UpstreamAuth;
use mcpgw::policy::Subject;
use mcpgw::state::AppState;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Form;
use super::api::{self, seg};
use super::html::{self, Page, button_form, csrf_field, message};
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
    note: Option<Markup>,
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
    let body = html! {
        @if let Some(n) = &note { (n) }
        @for pr in &problems { (message("error", pr)) }
        p class="muted" {
            "Point your MCP client at an endpoint's URL with your gateway credential. Servers \
             that act with your own account need you to connect it once."
        }
        @if rows.is_empty() {
            p id="nothing" {
                "You have no MCP endpoints yet. Ask a gateway admin to add you to a server group."
            }
        } @else {
            table id="endpoints" {
                thead {
                    tr { th { "Endpoint" } th { "Kind" } th { "Auth" } th { "Status" } th { "Actions" } }
                }
                tbody {
                    @for r in rows.values() { (row(r, b, csrf)) }
                }
            }
        }
    };
    Page::new(status, "My connections", body)
        .with_nav(console.nav())
        .render(b)
}

/// One endpoint's row: its URL, kind and auth, and for a per-user credential its status and
/// the forms that change it.
fn row(r: &Row, b: &str, csrf: &str) -> Markup {
    let n = seg(&r.name);
    let (status_cell, actions) = match (&r.connection, r.auth.as_str()) {
        (Some(c), "oauth2") => {
            let code = c["status"].as_str().unwrap_or("not_connected");
            let reachable = c["reachable"] != false;
            let connect = if code == "not_connected" {
                "Connect"
            } else {
                "Reconnect"
            };
            let cell = html! {
                td class={ "status status-" (code) } data-status=(code) {
                    (status_label(code))
                    @if let Some(e) = c["last_error"].as_str() {
                        br;
                        span class="muted" { "last error: " (e) }
                    }
                }
            };
            let actions = html! {
                @if reachable {
                    (button_form(
                        &format!("connect-{}", r.name),
                        &format!("{b}/console/connections/{n}/connect"),
                        csrf,
                        connect,
                        "",
                    ))
                }
                @if code != "not_connected" {
                    (button_form(
                        &format!("disconnect-{}", r.name),
                        &format!("{b}/console/connections/{n}/disconnect"),
                        csrf,
                        "Disconnect",
                        "danger",
                    ))
                }
            };
            (cell, actions)
        }
        (Some(c), "per_user_token") => {
            let set = c["status"] == "connected";
            let code = if set { "connected" } else { "not_connected" };
            let label = if set { "token set" } else { "no token" };
            let cell = html! {
                td class={ "status status-" (code) } data-status=(code) { (label) }
            };
            let actions = html! {
                @if c["reachable"] != false {
                    form id={ "token-" (r.name) } class="inline" method="post"
                        action={ (b) "/console/credentials/" (n) } {
                        (csrf_field(csrf))
                        input type="password" name="token" aria-label={ "token for " (r.name) }
                            autocomplete="off" required;
                        " "
                        button type="submit" { (if set { "Replace token" } else { "Save token" }) }
                    }
                }
                @if set {
                    (button_form(
                        &format!("clear-token-{}", r.name),
                        &format!("{b}/console/credentials/{n}/clear"),
                        csrf,
                        "Remove token",
                        "danger",
                    ))
                }
            };
            (cell, actions)
        }
        _ => (
            html! { td class="status" data-status="none" { "—" } },
            html! {},
        ),
    };
    html! {
        tr id={ "row-" (r.name) } data-endpoint=(r.name) {
            td {
                strong { (r.name) }
                @if let Some(u) = &r.url {
                    br;
                    code class="url" { (u) }
                }
            }
            td { (r.kind) }
            td class="auth" { (r.auth) }
            (status_cell)
            td { (actions) }
        }
    }
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

/// A form's action on the user's own API (`/me/...`): the CSRF check, the call, and, when
/// the API refuses, the console page again with its message. The four actions below differ
/// only in the call and in where a success leads.
async fn act(
    console: &Console,
    state: &AppState,
    form: &Form,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<api::Answer, Response> {
    console.check_csrf(form)?;
    let a = api::call(state, &console.principal, method, path, body).await;
    if !a.ok() {
        return Err(failed(console, state, &a).await);
    }
    Ok(a)
}

/// `POST /console/connections/{server}/connect`: a fresh single-use connect link, then the
/// gateway's connect page (which names the user and server before going to the provider).
pub async fn connect(
    console: Console,
    State(state): State<AppState>,
    Path(server): Path<String>,
    form: Form,
) -> Result<Response, Response> {
    let path = format!("/me/connections/{}/link", seg(&server));
    let a = act(&console, &state, &form, Method::POST, &path, None).await?;
    match a.body["url"].as_str() {
        Some(url) => Ok(html::see_other(url, &[])),
        None => Err(failed(&console, &state, &a).await),
    }
}

pub async fn disconnect(
    console: Console,
    State(state): State<AppState>,
    Path(server): Path<String>,
    form: Form,
) -> Result<Response, Response> {
    let path = format!("/me/connections/{}", seg(&server));
    let a = act(&console, &state, &form, Method::DELETE, &path, None).await?;
    let rev = a.body["provider_revocation"]["status"]
        .as_str()
        .unwrap_or("");
    let rev = match rev {
        "revoked" | "not_supported" | "failed" => rev,
        _ => "not_applicable",
    };
    Ok(html::see_other(
        &format!(
            "{}/console?done=disconnected&revocation={rev}",
            console.base
        ),
        &[],
    ))
}

pub async fn set_token(
    console: Console,
    State(state): State<AppState>,
    Path(server): Path<String>,
    form: Form,
) -> Result<Response, Response> {
    let body = json!({"token": form.get("token").unwrap_or_default()});
    let path = format!("/me/credentials/{}", seg(&server));
    act(&console, &state, &form, Method::PUT, &path, Some(&body)).await?;
    Ok(html::see_other(
        &format!("{}/console?done=token_saved", console.base),
        &[],
    ))
}

pub async fn clear_token(
    console: Console,
    State(state): State<AppState>,
    Path(server): Path<String>,
    form: Form,
) -> Result<Response, Response> {
    let path = format!("/me/credentials/{}", seg(&server));
    act(&console, &state, &form, Method::DELETE, &path, None).await?;
    Ok(html::see_other(
        &format!("{}/console?done=token_cleared", console.base),
        &[],
    ))
}
