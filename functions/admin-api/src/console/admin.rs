//! `/console/admin/...`: the admin pages. Every list and form is the admin API's: a
//! document is edited as the JSON the API takes (the API's own examples and validation
//! messages apply), created with POST, saved with PUT, deleted with DELETE, all in-process
//! as the signed-in admin.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use mcpgw::state::AppState;
use serde::Deserialize;
use serde_json::Value;

use super::Form;
use super::api::{self, seg};
use super::html::{self, Page, button_form, csrf_field, message};
use super::session::Console;

/// A document kind of the admin API.
struct Kind {
    slug: &'static str,
    title: &'static str,
    api: &'static str,
    list_key: &'static str,
    /// What the create form starts with.
    example: &'static str,
}

const KINDS: &[Kind] = &[
    Kind {
        slug: "servers",
        title: "Servers",
        api: "/admin/servers",
        list_key: "servers",
        example: "{\n  \"name\": \"notes\",\n  \"url\": \"https://mcp.example.com/mcp\",\n  \"auth\": {\"type\": \"none\"}\n}",
    },
    Kind {
        slug: "server-groups",
        title: "Server groups",
        api: "/admin/server-groups",
        list_key: "server_groups",
        example: "{\n  \"name\": \"engineering\",\n  \"servers\": [\"notes\"],\n  \"members\": {\"users\": [\"alice@example.com\"], \"teams\": []}\n}",
    },
    Kind {
        slug: "teams",
        title: "Teams",
        api: "/admin/teams",
        list_key: "teams",
        example: "{\n  \"name\": \"eng\",\n  \"members\": [\"alice@example.com\"],\n  \"idp_groups\": [\"engineering\"]\n}",
    },
    Kind {
        slug: "virtual-servers",
        title: "Virtual servers",
        api: "/admin/virtual-servers",
        list_key: "virtual_servers",
        example: "{\n  \"name\": \"toolbox\",\n  \"tools\": [{\"server\": \"notes\", \"tool\": \"search\"}],\n  \"members\": {\"everyone\": true}\n}",
    },
    Kind {
        slug: "rate-limits",
        title: "Rate limits",
        api: "/admin/rate-limits",
        list_key: "rate_limits",
        example: "{\n  \"name\": \"search-per-user\",\n  \"mode\": \"audit\",\n  \"match\": {\"endpoints\": [\"notes\"], \"tools\": [\"search\"]},\n  \"per\": \"user\",\n  \"limits\": [{\"count\": 60, \"window\": \"1m\"}, {\"count\": 1000, \"window\": \"1d\"}]\n}",
    },
    Kind {
        slug: "identity-providers",
        title: "Identity providers",
        api: "/admin/identity-providers",
        list_key: "identity_providers",
        example: "{\n  \"name\": \"corp\",\n  \"issuer\": \"https://login.example.com\",\n  \"admin_groups\": [\"mcp-admins\"]\n}",
    },
];

fn kind(slug: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.slug == slug)
}

fn unknown(console: &Console) -> Response {
    Page::new(
        StatusCode::NOT_FOUND,
        "Not found",
        message("error", "There is no such admin page."),
    )
    .with_nav(console.nav())
    .render(&console.base)
}

/// The kind a per-kind page is about, once the caller may see it: the admin role, then (for
/// a form) its CSRF token, then a known kind; the refusing page otherwise.
fn admin_kind(
    console: &Console,
    form: Option<&Form>,
    slug: &str,
) -> Result<&'static Kind, Response> {
    console.require_admin()?;
    if let Some(form) = form {
        console.check_csrf(form)?;
    }
    kind(slug).ok_or_else(|| unknown(console))
}

/// Fixed texts for `?done=`.
fn done_text(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "created" => "Created.",
        "saved" => "Saved.",
        "deleted" => "Deleted.",
        "revoked" => "Connection revoked.",
        _ => return None,
    })
}

#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

fn admin_page(console: &Console, status: StatusCode, title: &str, body: Markup) -> Response {
    Page::new(status, title, body)
        .with_nav(console.nav())
        .render(&console.base)
}

pub async fn index(console: Console) -> Response {
    if let Err(r) = console.require_admin() {
        return r;
    }
    let b = &console.base;
    let body = html! {
        ul id="admin-links" {
            @for k in KINDS {
                li { a id={ "admin-" (k.slug) } href={ (b) "/console/admin/" (k.slug) } { (k.title) } }
            }
            li { a id="admin-catalog" href={ (b) "/console/admin/catalog" } { "What would this user see" } }
            li { a id="admin-connections" href={ (b) "/console/admin/connections" } { "Everyone's connections" } }
            li { a id="admin-activity" href={ (b) "/console/admin/activity" } { "Activity" } }
        }
    };
    admin_page(&console, StatusCode::OK, "Admin", body)
}

/// A document as the edit form shows it: what the API takes back (its timestamps and a
/// server's pinned authorization server are its own).
fn editable(mut doc: Value) -> String {
    if let Some(o) = doc.as_object_mut() {
        for k in [
            "created_at",
            "updated_at",
            "warnings",
            "authorization_server",
        ] {
            o.remove(k);
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// One line saying what a document is.
fn summary(doc: &Value) -> String {
    if let Some(d) = doc["description"].as_str() {
        return d.to_owned();
    }
    for k in ["url", "issuer"] {
        if let Some(v) = doc[k].as_str() {
            return v.to_owned();
        }
    }
    let names = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| {
                        x.as_str()
                            .map(str::to_owned)
                            .or_else(|| x["tool"].as_str().map(str::to_owned))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    if let Some(limits) = doc["limits"].as_array() {
        // A rate-limit rule: `per user, enforce: 60/1m, 1000/1d`.
        let limits: Vec<String> = limits
            .iter()
            .map(|l| {
                format!(
                    "{}/{}",
                    l["count"],
                    l["window"].as_str().unwrap_or_default()
                )
            })
            .collect();
        return format!(
            "per {}, {}: {}",
            doc["per"].as_str().unwrap_or_default(),
            doc["mode"].as_str().unwrap_or_default(),
            limits.join(", ")
        );
    }
    if doc["servers"].is_array() {
        return format!("servers: {}", names(&doc["servers"]));
    }
    if doc["tools"].is_array() {
        return format!("tools: {}", names(&doc["tools"]));
    }
    if doc["members"].is_array() {
        return format!("members: {}", names(&doc["members"]));
    }
    String::new()
}

async fn list_page(
    console: &Console,
    state: &AppState,
    k: &Kind,
    status: StatusCode,
    note: Option<Markup>,
    draft: Option<&str>,
) -> Response {
    let b = &console.base;
    let a = api::call(state, &console.principal, Method::GET, k.api, None).await;
    let body = html! {
        @if let Some(n) = &note { (n) }
        @if !a.ok() { (message("error", &a.message())) }
        table id="items" {
            thead { tr { th { "Name" } th { "Summary" } th {} } }
            tbody {
                @for item in a.body[k.list_key].as_array().into_iter().flatten() {
                    @let name = item["name"].as_str().unwrap_or_default();
                    tr id={ "item-" (name) } data-name=(name) {
                        td { strong { (name) } }
                        td { (summary(item)) }
                        td { a class="edit" href={ (b) "/console/admin/" (k.slug) "/" (seg(name)) } { "Edit" } }
                    }
                }
            }
        }
        h2 { "Create" }
        form id="create" method="post" action={ (b) "/console/admin/" (k.slug) } {
            (csrf_field(&console.csrf))
            label for="doc" { "The document, as the admin API takes it (" code { "POST " (k.api) } ")" }
            textarea id="doc" name="doc" spellcheck="false" { (draft.unwrap_or(k.example)) }
            p { button type="submit" id="create-submit" { "Create" } }
        }
    };
    admin_page(console, status, k.title, body)
}

pub async fn list(
    console: Console,
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(d): Query<Done>,
) -> Result<Response, Response> {
    let k = admin_kind(&console, None, &slug)?;
    let note = done_text(d.done.as_deref()).map(|t| message("notice", t));
    Ok(list_page(&console, &state, k, StatusCode::OK, note, None).await)
}

/// The form's document, parsed; a page saying why not otherwise.
fn parse_doc(form: &Form) -> Result<Value, String> {
    let raw = form.get("doc").unwrap_or_default();
    serde_json::from_str::<Value>(raw)
        .map_err(|e| format!("The document is not valid JSON: {e}"))
        .and_then(|v| {
            if v.is_object() {
                Ok(v)
            } else {
                Err("The document must be a JSON object.".into())
            }
        })
}

/// Warnings the API attached to a successful write (tool names it could not check).
fn warnings(a: &api::Answer) -> Option<String> {
    let w: Vec<&str> = a.body["warnings"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!w.is_empty()).then(|| w.join("; "))
}

/// A document written from a form: created from a kind's list page, or saved from an
/// item's page, which is shown again with the outcome.
enum Write<'a> {
    Create(&'static Kind),
    Save(&'static Kind, &'a str),
}

impl Write<'_> {
    async fn page_again(
        &self,
        console: &Console,
        state: &AppState,
        status: StatusCode,
        note: Option<Markup>,
        draft: Option<&str>,
    ) -> Response {
        match *self {
            Write::Create(k) => list_page(console, state, k, status, note, draft).await,
            Write::Save(k, name) => edit_page(console, state, k, name, status, note, draft).await,
        }
    }
}

/// The form's JSON sent to the admin API: a bad document or a refusal shows the page again
/// with the draft kept and the reason, a write with warnings shows it again saying so, and
/// a clean write goes on to the page's `?done=`.
async fn write_doc(console: &Console, state: &AppState, form: &Form, write: Write<'_>) -> Response {
    let b = &console.base;
    let (method, path, done, warned, next) = match write {
        Write::Create(k) => (
            Method::POST,
            k.api.to_owned(),
            "Created",
            StatusCode::CREATED,
            format!("{b}/console/admin/{}?done=created", k.slug),
        ),
        Write::Save(k, name) => (
            Method::PUT,
            format!("{}/{}", k.api, seg(name)),
            "Saved",
            StatusCode::OK,
            format!("{b}/console/admin/{}/{}?done=saved", k.slug, seg(name)),
        ),
    };
    let draft = form.get("doc");
    let doc = match parse_doc(form) {
        Ok(d) => d,
        Err(e) => {
            let note = Some(message("error", &e));
            return write
                .page_again(console, state, StatusCode::BAD_REQUEST, note, draft)
                .await;
        }
    };
    let a = api::call(state, &console.principal, method, &path, Some(&doc)).await;
    if !a.ok() {
        let note = Some(message("error", &a.message()));
        return write
            .page_again(console, state, a.status, note, draft)
            .await;
    }
    if let Some(w) = warnings(&a) {
        let note = Some(message("notice", &format!("{done}, with warnings: {w}")));
        return write.page_again(console, state, warned, note, None).await;
    }
    html::see_other(&next, &[])
}

pub async fn create(
    console: Console,
    State(state): State<AppState>,
    Path(slug): Path<String>,
    form: Form,
) -> Result<Response, Response> {
    let k = admin_kind(&console, Some(&form), &slug)?;
    Ok(write_doc(&console, &state, &form, Write::Create(k)).await)
}

async fn edit_page(
    console: &Console,
    state: &AppState,
    k: &Kind,
    name: &str,
    status: StatusCode,
    note: Option<Markup>,
    draft: Option<&str>,
) -> Response {
    let b = &console.base;
    let path = format!("{}/{}", k.api, seg(name));
    let mut pinned = None;
    let doc = match draft {
        Some(d) => d.to_owned(),
        None => {
            let a = api::call(state, &console.principal, Method::GET, &path, None).await;
            if !a.ok() {
                let body = html! {
                    @if let Some(n) = &note { (n) }
                    (message("error", &a.message()))
                };
                return admin_page(console, a.status, k.title, body);
            }
            pinned = Some(a.body["authorization_server"].clone()).filter(Value::is_object);
            editable(a.body)
        }
    };
    let action = format!("{b}/console/admin/{}/{}", k.slug, seg(name));
    let body = html! {
        @if let Some(n) = &note { (n) }
        @if let Some(p) = &pinned { (authorization_server_table(p, &action, &console.csrf)) }
        h2 { (name) }
        form id="edit" method="post" action=(action) {
            (csrf_field(&console.csrf))
            label for="doc" { "The document (" code { "PUT " (k.api) "/" (name) } ")" }
            textarea id="doc" name="doc" spellcheck="false" { (doc) }
            p { button type="submit" id="save" { "Save" } }
        }
        (button_form("delete", &format!("{action}/delete"), &console.csrf, "Delete", "danger"))
        p { a href={ (b) "/console/admin/" (k.slug) } { "Back to " (k.title.to_lowercase()) } }
    };
    admin_page(console, status, k.title, body)
}

/// A server's pinned authorization server, read-only, with a button to discover it again:
/// these are the endpoints users' browsers and the client secret go to.
fn authorization_server_table(p: &Value, action: &str, csrf: &str) -> Markup {
    let rows: Vec<(&str, String)> = [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "revocation_endpoint",
        "registration_endpoint",
        "authorization_response_iss_parameter_supported",
        "source",
        "discovered_at",
        "metadata_url",
        "resource_metadata_url",
    ]
    .into_iter()
    .filter_map(|field| match &p[field] {
        Value::Null => None,
        Value::String(s) => Some((field, s.clone())),
        other => Some((field, other.to_string())),
    })
    .collect();
    html! {
        h2 { "Authorization server" }
        table id="authorization-server" {
            tbody {
                @for (field, v) in &rows {
                    tr { th { (field) } td { code { (v) } } }
                }
            }
        }
        (button_form("discover", &format!("{action}/discover"), csrf, "Discover again", "secondary"))
    }
}

pub async fn edit(
    console: Console,
    State(state): State<AppState>,
    Path((slug, name)): Path<(String, String)>,
    Query(d): Query<Done>,
) -> Result<Response, Response> {
    let k = admin_kind(&console, None, &slug)?;
    let note = done_text(d.done.as_deref()).map(|t| message("notice", t));
    Ok(edit_page(&console, &state, k, &name, StatusCode::OK, note, None).await)
}

pub async fn save(
    console: Console,
    State(state): State<AppState>,
    Path((slug, name)): Path<(String, String)>,
    form: Form,
) -> Result<Response, Response> {
    let k = admin_kind(&console, Some(&form), &slug)?;
    Ok(write_doc(&console, &state, &form, Write::Save(k, &name)).await)
}

pub async fn delete(
    console: Console,
    State(state): State<AppState>,
    Path((slug, name)): Path<(String, String)>,
    form: Form,
) -> Result<Response, Response> {
    let k = admin_kind(&console, Some(&form), &slug)?;
    let path = format!("{}/{}", k.api, seg(&name));
    let a = api::call(&state, &console.principal, Method::DELETE, &path, None).await;
    if !a.ok() {
        let note = Some(message("error", &a.message()));
        return Err(edit_page(&console, &state, k, &name, a.status, note, None).await);
    }
    Ok(html::see_other(
        &format!("{}/console/admin/{}?done=deleted", console.base, k.slug),
        &[],
    ))
}

/// "Discover again" on a server's page (`POST /admin/servers/{name}/discover`).
pub async fn discover(
    console: Console,
    State(state): State<AppState>,
    Path((slug, name)): Path<(String, String)>,
    form: Form,
) -> Result<Response, Response> {
    let k = admin_kind(&console, Some(&form), &slug)?;
    if k.slug != "servers" {
        return Err(unknown(&console));
    }
    let path = format!("{}/{}/discover", k.api, seg(&name));
    let a = api::call(&state, &console.principal, Method::POST, &path, None).await;
    let note = if a.ok() {
        let changed: Vec<&str> = a.body["changed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let text = if changed.is_empty() {
            "Discovered again: nothing changed.".to_owned()
        } else {
            format!("Discovered again; changed: {}.", changed.join(", "))
        };
        message("notice", &text)
    } else {
        message("error", &a.message())
    };
    let status = if a.ok() { StatusCode::OK } else { a.status };
    Ok(edit_page(&console, &state, k, &name, status, Some(note), None).await)
}

#[derive(Deserialize, Default)]
pub struct WhatIf {
    user: Option<String>,
    groups: Option<String>,
}

/// "What would this user see": the effective catalog of a user with a set of IdP groups.
pub async fn catalog(
    console: Console,
    State(state): State<AppState>,
    Query(q): Query<WhatIf>,
) -> Response {
    if let Err(r) = console.require_admin() {
        return r;
    }
    let b = &console.base;
    let user = q.user.as_deref().map(str::trim).unwrap_or_default();
    let groups = q.groups.as_deref().map(str::trim).unwrap_or_default();
    let form = html! {
        form id="whatif" method="get" action={ (b) "/console/admin/catalog" } {
            label { "User " input type="text" id="whatif-user" name="user" value=(user) required; }
            " "
            label { "IdP groups (comma-separated) " input type="text" id="whatif-groups" name="groups" value=(groups); }
            " "
            button type="submit" id="whatif-submit" { "Show" }
        }
    };
    let mut status = StatusCode::OK;
    let mut result = html! {};
    if !user.is_empty() {
        let mut path = format!("/admin/users/{}/catalog", seg(user));
        if !groups.is_empty() {
            path.push_str("?groups=");
            path.push_str(
                &url::form_urlencoded::byte_serialize(groups.as_bytes()).collect::<String>(),
            );
        }
        let a = api::call(&state, &console.principal, Method::GET, &path, None).await;
        if a.ok() {
            result = what_they_see(&a.body);
        } else {
            status = a.status;
            result = message("error", &a.message());
        }
    }
    let body = html! { (form) (result) };
    admin_page(&console, status, "What would this user see", body)
}

/// A user's effective catalog (`GET /admin/users/{user}/catalog`): teams, then each endpoint
/// with its tools.
fn what_they_see(catalog: &Value) -> Markup {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let teams = strings(&catalog["teams"]);
    let endpoints = catalog["endpoints"].as_array().cloned().unwrap_or_default();
    html! {
        p id="whatif-teams" {
            "Teams: "
            @if teams.is_empty() { "none" } @else { (teams.join(", ")) }
        }
        @if endpoints.is_empty() {
            p id="whatif-nothing" { "This user can use no endpoint." }
        } @else {
            table id="catalog" {
                thead { tr { th { "Endpoint" } th { "Kind" } th { "Tools" } } }
                tbody {
                    @for e in &endpoints {
                        @let name = e["name"].as_str().unwrap_or_default();
                        @let tools: Vec<String> = e["tools"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(tool_with_budget)
                            .collect();
                        tr id={ "endpoint-" (name) } data-endpoint=(name) {
                            td { (name) }
                            td { (e["kind"].as_str().unwrap_or_default()) }
                            td {
                                (tools.join(", "))
                                @if let Some(err) = e["error"].as_str() {
                                    br;
                                    span class="muted" { (err) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A catalog tool's name, with what is left of each rate limit on it:
/// `search (3 left of 5/1m until 2026-12-07T20:00:00Z)`.
fn tool_with_budget(t: &Value) -> Option<String> {
    let name = t["name"].as_str()?;
    let budgets: Vec<String> = t["rate_limits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            format!(
                "{} left of {} until {}",
                b["remaining"],
                b["limit"].as_str().unwrap_or_default(),
                b["reset_at"].as_str().unwrap_or_default()
            )
        })
        .collect();
    Some(if budgets.is_empty() {
        name.to_owned()
    } else {
        format!("{name} ({})", budgets.join("; "))
    })
}

/// Everyone's per-user connections, with revoke.
pub async fn grants(
    console: Console,
    State(state): State<AppState>,
    Query(d): Query<Done>,
) -> Response {
    if let Err(r) = console.require_admin() {
        return r;
    }
    grants_page(
        &console,
        &state,
        StatusCode::OK,
        done_text(d.done.as_deref()).map(|t| message("notice", t)),
    )
    .await
}

async fn grants_page(
    console: &Console,
    state: &AppState,
    status: StatusCode,
    note: Option<Markup>,
) -> Response {
    let b = &console.base;
    let a = api::call(
        state,
        &console.principal,
        Method::GET,
        "/admin/connections",
        None,
    )
    .await;
    // A connection's field as shown, a dash when it has none.
    let shown = |g: &Value, k: &str| g[k].as_str().unwrap_or("—").to_owned();
    let body = html! {
        @if let Some(n) = &note { (n) }
        @if !a.ok() { (message("error", &a.message())) }
        @if a.body["truncated"] == true {
            (message("notice", "Only the first 1000 connections are shown."))
        }
        table id="grants" {
            thead {
                tr {
                    th { "User" } th { "Server" } th { "Status" } th { "Access token expires" }
                    th { "Last refresh" } th { "Last error" } th {}
                }
            }
            tbody {
                @for g in a.body["connections"].as_array().into_iter().flatten() {
                    @let user = g["user"].as_str().unwrap_or_default();
                    @let server = g["server"].as_str().unwrap_or_default();
                    tr data-user=(user) data-server=(server) {
                        td { (user) }
                        td { (server) }
                        td class="status" { (shown(g, "status")) }
                        td { (shown(g, "expires_at")) }
                        td { (shown(g, "last_refresh_at")) }
                        td { (shown(g, "last_error")) }
                        td {
                            form class="revoke inline" method="post" action={ (b) "/console/admin/connections/revoke" } {
                                (csrf_field(&console.csrf))
                                input type="hidden" name="user" value=(user);
                                input type="hidden" name="server" value=(server);
                                button type="submit" class="danger" { "Revoke" }
                            }
                        }
                    }
                }
            }
        }
    };
    admin_page(console, status, "Everyone's connections", body)
}

pub async fn revoke(console: Console, State(state): State<AppState>, form: Form) -> Response {
    if let Err(r) = console
        .require_admin()
        .and_then(|_| console.check_csrf(&form))
    {
        return r;
    }
    let user = form.get("user").unwrap_or_default();
    let server = form.get("server").unwrap_or_default();
    let path = format!("/admin/users/{}/connections/{}", seg(user), seg(server));
    let a = api::call(&state, &console.principal, Method::DELETE, &path, None).await;
    if !a.ok() {
        return grants_page(
            &console,
            &state,
            a.status,
            Some(message("error", &a.message())),
        )
        .await;
    }
    html::see_other(
        &format!("{}/console/admin/connections?done=revoked", console.base),
        &[],
    )
}
