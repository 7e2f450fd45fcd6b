//! `/admin/teams`, `/admin/server-groups` and `/admin/virtual-servers`: the access-control
//! documents (docs/access-control.md). One generic CRUD over [`PolicyDoc`]; what differs per
//! kind is its own validation and its references to other documents, all checked before
//! anything is written. Exact tool names in rules and virtual servers are checked against the
//! upstream's live list when it is reachable (a typo is a 422, not a silent mismatch); when it
//! is not, the document is saved and the answer carries `warnings`.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use mcpgw::http::{ApiError, ApiJson, ApiPath, error_chain};
use mcpgw::policy::pattern::Pattern;
use mcpgw::policy::{Members, ServerGroup, Snapshot, Team, VirtualServer};
use mcpgw::state::AppState;
use mcpgw::store::{ConfigKind, ConfigStoreExt, to_doc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Admin;
use crate::config_path::{check_path_name, not_found};
use crate::time_fmt::to_rfc3339;
use mcpgw::http::ErrorCode;

/// How long a save waits for an upstream's tool list before saving with a warning.
const TOOL_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

pub fn routes() -> Router<AppState> {
    let r = Router::new();
    let r = crud::<Team>(r);
    let r = crud::<ServerGroup>(r);
    let r = crud::<VirtualServer>(r);
    crud::<mcpgw::limits::rule::RateLimitRule>(r)
}

/// The five routes of one document kind.
fn crud<T: PolicyDoc>(r: Router<AppState>) -> Router<AppState> {
    r.route(T::PATH, get(list::<T>).post(create::<T>)).route(
        &format!("{}/{{name}}", T::PATH),
        get(read::<T>).put(replace::<T>).delete(remove::<T>),
    )
}

/// What the generic handlers need of a document kind.
pub trait PolicyDoc: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: ConfigKind;
    const PATH: &'static str;
    const LIST_KEY: &'static str;
    fn name(&self) -> &str;
    fn stamps(&mut self) -> (&mut i64, &mut i64);
    fn validate(&self) -> Result<(), String>;
    /// Checks references to other documents; returns warnings for what could not be checked.
    fn check_refs(
        &self,
        state: &AppState,
        admin: &str,
        snap: &Snapshot,
    ) -> impl Future<Output = Result<Vec<String>, ApiError>> + Send;
    /// What still refers to a document of this kind named `name` (deletion is refused).
    fn referrers(snap: &Snapshot, name: &str) -> Vec<String>;
}

pub(crate) fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::unprocessable(ErrorCode::InvalidField, m)
}

/// The policy as the store holds it now: writes check against this, never a cached copy.
async fn fresh_snapshot(state: &AppState) -> Result<Snapshot, ApiError> {
    let (teams, groups, virtuals) = tokio::try_join!(
        state.store.list_typed(ConfigKind::Team),
        state.store.list_typed(ConfigKind::ServerGroup),
        state.store.list_typed(ConfigKind::VirtualServer),
    )?;
    Ok(Snapshot::new(teams, groups, virtuals))
}

/// After a write: this process decides on the new policy at once (and open streams hear it).
async fn policy_changed(state: &AppState) {
    state.policy.invalidate().await;
    state.limits.invalidate().await;
    if let Err(e) = state.policy().await {
        tracing::warn!(error = %error_chain(&e), "policy reload after a write failed");
    }
}

async fn check_members(m: &Members, snap: &Snapshot) -> Result<(), ApiError> {
    for t in &m.teams {
        if !snap.teams.iter().any(|x| x.name == *t) {
            return Err(ApiError::unprocessable(
                ErrorCode::UnknownTeam,
                format!("members.teams: no team named '{t}'"),
            ));
        }
    }
    Ok(())
}

pub(crate) async fn server_exists(state: &AppState, name: &str) -> Result<bool, ApiError> {
    Ok(state.store.get_server(name).await?.is_some())
}

pub(crate) fn unknown_server(what: &str, name: &str) -> ApiError {
    ApiError::unprocessable(
        ErrorCode::UnknownServer,
        format!("{what}: no server named '{name}'"),
    )
}

/// The exact names among `names` that `server` does not list, or a warning when the list
/// could not be read.
async fn missing_tools(
    state: &AppState,
    admin: &str,
    server: &str,
    names: &[&str],
) -> Result<Vec<String>, String> {
    let up = mcpgw::upstream::catalog::upstream_for(&state.upstreams, server, admin).await?;
    let listed = tokio::time::timeout(
        TOOL_CHECK_TIMEOUT,
        mcpgw::upstream::client::list_tools(&up, admin),
    )
    .await
    .map_err(|_| format!("server '{server}' did not list its tools within {TOOL_CHECK_TIMEOUT:?}"))?
    .map_err(|e| {
        format!(
            "server '{server}' could not list its tools: {}",
            error_chain(&e)
        )
    })?;
    let have: BTreeSet<&str> = mcpgw::upstream::client::tool_names(&listed)
        .into_iter()
        .collect();
    Ok(names
        .iter()
        .filter(|n| !have.contains(*n))
        .map(|n| n.to_string())
        .collect())
}

/// Refuses exact tool names the upstream does not have; collects warnings otherwise.
async fn check_tools(
    state: &AppState,
    admin: &str,
    what: &str,
    server: &str,
    names: &[&str],
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    if names.is_empty() {
        return Ok(());
    }
    match missing_tools(state, admin, server, names).await {
        Ok(missing) if missing.is_empty() => Ok(()),
        Ok(missing) => Err(ApiError::unprocessable(
            ErrorCode::UnknownTool,
            format!(
                "{what}: server '{server}' has no tool named {}",
                missing
                    .iter()
                    .map(|m| format!("'{m}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        Err(w) => {
            warnings.push(format!("{w}; tool names in {what} were not checked"));
            Ok(())
        }
    }
}

impl PolicyDoc for Team {
    const KIND: ConfigKind = ConfigKind::Team;
    const PATH: &'static str = "/admin/teams";
    const LIST_KEY: &'static str = "teams";
    fn name(&self) -> &str {
        &self.name
    }
    fn stamps(&mut self) -> (&mut i64, &mut i64) {
        (&mut self.created_at, &mut self.updated_at)
    }
    fn validate(&self) -> Result<(), String> {
        Team::validate(self)
    }
    async fn check_refs(
        &self,
        _: &AppState,
        _: &str,
        _: &Snapshot,
    ) -> Result<Vec<String>, ApiError> {
        Ok(Vec::new())
    }
    fn referrers(snap: &Snapshot, name: &str) -> Vec<String> {
        snap.referrers_of_team(name)
    }
}

impl PolicyDoc for ServerGroup {
    const KIND: ConfigKind = ConfigKind::ServerGroup;
    const PATH: &'static str = "/admin/server-groups";
    const LIST_KEY: &'static str = "server_groups";
    fn name(&self) -> &str {
        &self.name
    }
    fn stamps(&mut self) -> (&mut i64, &mut i64) {
        (&mut self.created_at, &mut self.updated_at)
    }
    fn validate(&self) -> Result<(), String> {
        ServerGroup::validate(self)
    }
    async fn check_refs(
        &self,
        state: &AppState,
        admin: &str,
        snap: &Snapshot,
    ) -> Result<Vec<String>, ApiError> {
        for s in &self.servers {
            if !snap.virtual_servers.contains_key(s) && !server_exists(state, s).await? {
                return Err(unknown_server("servers", s));
            }
        }
        check_members(&self.members, snap).await?;
        let mut warnings = Vec::new();
        for (server, rule) in &self.tool_rules {
            let what = format!("tool_rules.{server}");
            let exact: Vec<&str> = rule
                .patterns()
                .iter()
                .map(String::as_str)
                .filter(|p| Pattern::new(p).is_exact())
                .collect();
            if let Some(vs) = snap.virtual_servers.get(server) {
                // The exposed names are the gateway's own: always checkable.
                if let Some(m) = exact.iter().find(|n| vs.tool(n).is_none()) {
                    return Err(ApiError::unprocessable(
                        ErrorCode::UnknownTool,
                        format!("{what}: virtual server '{server}' exposes no tool named '{m}'"),
                    ));
                }
                continue;
            }
            check_tools(state, admin, &what, server, &exact, &mut warnings).await?;
        }
        Ok(warnings)
    }
    fn referrers(_: &Snapshot, _: &str) -> Vec<String> {
        Vec::new()
    }
}

impl PolicyDoc for VirtualServer {
    const KIND: ConfigKind = ConfigKind::VirtualServer;
    const PATH: &'static str = "/admin/virtual-servers";
    const LIST_KEY: &'static str = "virtual_servers";
    fn name(&self) -> &str {
        &self.name
    }
    fn stamps(&mut self) -> (&mut i64, &mut i64) {
        (&mut self.created_at, &mut self.updated_at)
    }
    fn validate(&self) -> Result<(), String> {
        VirtualServer::validate(self)
    }
    async fn check_refs(
        &self,
        state: &AppState,
        admin: &str,
        snap: &Snapshot,
    ) -> Result<Vec<String>, ApiError> {
        // One namespace for /mcp/{endpoint}.
        if server_exists(state, &self.name).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::AlreadyExists,
                format!("a server named '{}' already exists", self.name),
            ));
        }
        if let Some(name) = self.collision() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::ToolNameCollision,
                format!("two tools would both be exposed as '{name}'; set an alias on one"),
            ));
        }
        for (i, t) in self.tools.iter().enumerate() {
            if !server_exists(state, &t.server).await? {
                return Err(unknown_server(&format!("tools[{i}].server"), &t.server));
            }
        }
        for (what, list) in [
            ("resources_from", &self.resources_from),
            ("prompts_from", &self.prompts_from),
        ] {
            for s in list {
                if !server_exists(state, s).await? {
                    return Err(unknown_server(what, s));
                }
            }
        }
        check_members(&self.members, snap).await?;
        let mut warnings = Vec::new();
        for server in self.upstreams() {
            let names: Vec<&str> = self
                .tools
                .iter()
                .filter(|t| t.server == server)
                .map(|t| t.tool.as_str())
                .collect();
            check_tools(state, admin, "tools", server, &names, &mut warnings).await?;
        }
        Ok(warnings)
    }
    fn referrers(snap: &Snapshot, name: &str) -> Vec<String> {
        snap.groups
            .iter()
            .filter(|g| g.servers.iter().any(|s| s == name))
            .map(|g| format!("server group '{}'", g.name))
            .collect()
    }
}

/// A stored document as the API shows it: timestamps as RFC 3339.
fn view<T: PolicyDoc>(doc: &T) -> Value {
    let mut v = to_doc(doc);
    for k in ["created_at", "updated_at"] {
        if let Some(t) = v.get(k).and_then(Value::as_i64) {
            v[k] = Value::from(to_rfc3339(t));
        }
    }
    v
}

fn with_warnings(mut v: Value, warnings: Vec<String>) -> Value {
    if !warnings.is_empty() {
        v["warnings"] = warnings.into();
    }
    v
}

/// The body as a document named `name` (from the path, or the body's own on create).
fn parse<T: PolicyDoc>(mut body: Value, path_name: Option<&str>) -> Result<T, ApiError> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidJson,
            "the body must be a JSON object",
        ));
    };
    for k in ["created_at", "updated_at"] {
        if obj.contains_key(k) {
            return Err(invalid(format!("{k} is set by the gateway")));
        }
    }
    match (path_name, obj.get("name")) {
        (None, None) => return Err(invalid("name is required")),
        (None, Some(n)) if !n.is_string() => return Err(invalid("name must be a string")),
        (Some(p), Some(n)) if n.as_str() != Some(p) => {
            return Err(invalid(
                "name in the body must match the path (documents cannot be renamed)",
            ));
        }
        (Some(p), _) => {
            obj.insert("name".into(), p.into());
        }
        _ => {}
    }
    let doc: T = serde_json::from_value(body).map_err(|e| invalid(format!("invalid body: {e}")))?;
    doc.validate().map_err(invalid)?;
    Ok(doc)
}

async fn list<T: PolicyDoc>(
    _: Admin,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let docs: Vec<T> = state.store.list_typed(T::KIND).await?;
    let views: Vec<Value> = docs.iter().map(view).collect();
    Ok(Json(serde_json::json!({ T::LIST_KEY: views })))
}

async fn create<T: PolicyDoc>(
    Admin(admin): Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let mut doc: T = parse(body, None)?;
    let snap = fresh_snapshot(&state).await?;
    let warnings = doc.check_refs(&state, &admin.user, &snap).await?;
    let now = state.clock.now();
    let (c, u) = doc.stamps();
    (*c, *u) = (now, now);
    let name = doc.name().to_owned();
    state
        .store
        .create_config(T::KIND, &name, &to_doc(&doc))
        .await?;
    policy_changed(&state).await;
    Ok((
        StatusCode::CREATED,
        Json(with_warnings(view(&doc), warnings)),
    ))
}

async fn read<T: PolicyDoc>(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_path_name(T::KIND, &name)?;
    let doc: T = state
        .store
        .get_typed(T::KIND, &name)
        .await?
        .ok_or_else(|| not_found(T::KIND, &name))?;
    Ok(Json(view(&doc)))
}

async fn replace<T: PolicyDoc>(
    Admin(admin): Admin,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<impl IntoResponse, ApiError> {
    check_path_name(T::KIND, &name)?;
    let mut doc: T = parse(body, Some(&name))?;
    let mut existing: T = state
        .store
        .get_typed(T::KIND, &name)
        .await?
        .ok_or_else(|| not_found(T::KIND, &name))?;
    let snap = fresh_snapshot(&state).await?;
    let warnings = doc.check_refs(&state, &admin.user, &snap).await?;
    let created = *existing.stamps().0;
    let (c, u) = doc.stamps();
    (*c, *u) = (created, state.clock.now());
    state
        .store
        .replace_config(T::KIND, &name, &to_doc(&doc))
        .await?;
    policy_changed(&state).await;
    Ok(Json(with_warnings(view(&doc), warnings)))
}

async fn remove<T: PolicyDoc>(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_path_name(T::KIND, &name)?;
    refuse_if_referenced(
        T::referrers(&fresh_snapshot(&state).await?, &name),
        T::KIND,
        &name,
    )?;
    let deleted = state.store.delete_config(T::KIND, &name).await?;
    policy_changed(&state).await;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(T::KIND, &name))
    }
}

/// 409 naming what still refers to the document.
pub fn refuse_if_referenced(
    referrers: Vec<String>,
    kind: ConfigKind,
    name: &str,
) -> Result<(), ApiError> {
    if referrers.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::InUse,
        format!(
            "{} '{name}' is still used by {}; remove it there first",
            kind.label(),
            referrers.join(", ")
        ),
    ))
}

/// For `/admin/servers`: deleting a server that groups or virtual servers name is refused,
/// and a server may not take a virtual server's name.
pub async fn server_referrers(state: &AppState, name: &str) -> Result<Vec<String>, ApiError> {
    Ok(fresh_snapshot(state).await?.referrers_of_server(name))
}

pub async fn virtual_server_exists(state: &AppState, name: &str) -> Result<bool, ApiError> {
    Ok(state
        .store
        .get_config(ConfigKind::VirtualServer, name)
        .await?
        .is_some())
}
