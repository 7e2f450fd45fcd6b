//! `/admin/servers`: register, list, read, replace and delete upstream MCP servers.
//!
//! An `oauth2` or `oauth2_client_credentials` server's authorization server is resolved when
//! it is saved and pinned on its record (`authorization_server` in every answer), so admins
//! see which issuer and endpoints users' browsers and the client secret will go to before any
//! user does. Metadata that breaks a rule is a 422 (`invalid_discovered_metadata`) and nothing
//! is stored; an upstream that cannot be reached is saved with a warning and pinned at first
//! use. A save that changes nothing discovery depends on keeps the pin; `POST
//! /admin/servers/{name}/discover` discovers again on purpose. See `mcpgw::grants::endpoints`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use mcpgw::domain::{
    McpServer, PinSource, PinnedAuthServer, ServerAudit, UpstreamAuth, validate_name,
};
use mcpgw::egress::EgressPolicy;
use mcpgw::grants::discovery::DiscoveryError;
use mcpgw::grants::endpoint_url::{self, UrlRole};
use mcpgw::grants::endpoints;
use mcpgw::http::{ApiError, ApiJson, ApiPath};
use mcpgw::secrets::SecretsError;
use mcpgw::state::AppState;
use mcpgw::store::{ConfigKind, ConfigStoreExt, StoreError, to_doc};
use mcpgw::upstream::is_reserved_header;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Admin;
use crate::config_path::{check_path_name, not_found};
use crate::time_fmt::to_rfc3339;
use mcpgw::http::ErrorCode;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/servers", get(list).post(create))
        .route(
            "/admin/servers/{name}",
            get(read).put(replace).delete(remove),
        )
        .route("/admin/servers/{name}/discover", post(discover))
}

/// Request body of create and replace. Unknown fields are rejected so a typo ("auht") is an
/// error, not a silently unauthenticated server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerInput {
    #[serde(default)]
    name: Option<String>,
    url: String,
    #[serde(default)]
    description: Option<String>,
    auth: UpstreamAuth,
    /// See `McpServer::share_tool_list`.
    #[serde(default)]
    share_tool_list: bool,
    /// See `McpServer::audit`.
    #[serde(default)]
    audit: Option<ServerAudit>,
}

/// What the API returns for a server (timestamps as RFC 3339).
#[derive(Debug, Serialize)]
struct ServerView {
    name: String,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    auth: UpstreamAuth,
    created_at: String,
    updated_at: String,
    /// The pinned authorization server (`discovered_at` as RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_server: Option<Value>,
    share_tool_list: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit: Option<ServerAudit>,
    /// What the admin should know about a save that still succeeded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

fn pin_view(p: &PinnedAuthServer) -> Value {
    let mut v = to_doc(p);
    v["discovered_at"] = Value::String(to_rfc3339(p.discovered_at));
    v
}

impl From<McpServer> for ServerView {
    fn from(s: McpServer) -> Self {
        Self {
            name: s.name,
            url: s.url,
            description: s.description,
            auth: s.auth,
            created_at: to_rfc3339(s.created_at),
            updated_at: to_rfc3339(s.updated_at),
            authorization_server: s.authorization_server.as_ref().map(pin_view),
            share_tool_list: s.share_tool_list,
            audit: s.audit,
            warnings: Vec::new(),
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable(ErrorCode::InvalidField, message)
}

/// Bounds that keep a server document far below DynamoDB's 400 KB item limit.
const MAX_URL_LEN: usize = 2048;
const MAX_AUTH_HEADERS: usize = 16;

fn validate_url(raw: &str) -> Result<(), ApiError> {
    if raw.len() > MAX_URL_LEN {
        return Err(invalid(format!(
            "url must be at most {MAX_URL_LEN} characters"
        )));
    }
    let url = url::Url::parse(raw).map_err(|e| invalid(format!("url is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("url must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url must name a host"));
    }
    // Credentials in a URL end up in logs and Referer headers; use header auth instead.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "url must not contain credentials; use header auth with a secret",
        ));
    }
    if url.fragment().is_some() {
        return Err(invalid("url must not contain a fragment"));
    }
    Ok(())
}

fn validate_auth(auth: &UpstreamAuth, egress: &EgressPolicy) -> Result<(), ApiError> {
    match auth {
        UpstreamAuth::None => Ok(()),
        UpstreamAuth::Header { headers } => {
            if headers.is_empty() || headers.len() > MAX_AUTH_HEADERS {
                return Err(invalid(format!(
                    "auth.headers must name 1 to {MAX_AUTH_HEADERS} headers"
                )));
            }
            for name in headers.keys() {
                if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(invalid(format!(
                        "auth.headers: '{name}' is not a valid header name"
                    )));
                }
                if is_reserved_header(name) {
                    return Err(invalid(format!(
                        "auth.headers: '{name}' is reserved for the transport"
                    )));
                }
            }
            Ok(())
        }
        UpstreamAuth::PerUserToken { header, format } => {
            if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(invalid(format!(
                    "auth.header: '{header}' is not a valid header name"
                )));
            }
            if is_reserved_header(header) {
                return Err(invalid(format!(
                    "auth.header: '{header}' is reserved for the transport"
                )));
            }
            // One {token}; the rest must be header-safe text, so any valid token makes a
            // valid header.
            let rest = format.replacen("{token}", "", 1);
            if format.len() > 256
                || !format.contains("{token}")
                || rest.contains("{token}")
                || axum::http::HeaderValue::from_str(&rest).is_err()
            {
                return Err(invalid(
                    "auth.format must contain {token} once, in at most 256 header-safe characters",
                ));
            }
            Ok(())
        }
        UpstreamAuth::OAuth2 {
            client_id,
            client_secret,
            scopes,
            authorization_url,
            token_url,
            revocation_url,
            issuer,
            extra_params,
            resource,
            list_tools_with_client_credentials,
        } => {
            if *list_tools_with_client_credentials
                && (client_id.is_none() || client_secret.is_none())
            {
                return Err(invalid(
                    "auth.list_tools_with_client_credentials needs auth.client_id and auth.client_secret",
                ));
            }
            match client_id {
                Some(id) if id.is_empty() || id.len() > 512 => {
                    return Err(invalid("auth.client_id must be 1 to 512 characters"));
                }
                // Without a client id the gateway registers one (RFC 7591) and keeps the
                // secret the provider issues; a configured secret would belong to no client.
                None if client_secret.is_some() => {
                    return Err(invalid(
                        "auth.client_secret needs auth.client_id (omit both to let the gateway register its own client)",
                    ));
                }
                _ => {}
            }
            if scopes.len() > 50 || scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
                return Err(invalid(
                    "auth.scopes: at most 50 scopes, each non-empty and without spaces",
                ));
            }
            // The endpoints (and the issuer) follow the rules discovered ones do: the
            // authorization URL is where browsers are sent, the token URL gets the secret.
            // (The egress policy's part is `check_egress`, reported as `egress_denied`.)
            for (what, u, role) in [
                ("authorization_url", authorization_url, UrlRole::Endpoint),
                ("token_url", token_url, UrlRole::Endpoint),
                ("revocation_url", revocation_url, UrlRole::Endpoint),
                ("issuer", issuer, UrlRole::Issuer),
            ] {
                if let Some(u) = u {
                    endpoint_url::check_form(u, role, egress.allow_plain_http()).map_err(|e| {
                        invalid(format!("auth.{what}: {} {e}", endpoint_url::excerpt(u)))
                    })?;
                }
            }
            if let Some(u) = resource {
                validate_url(u).map_err(|e| invalid(format!("auth.resource: {}", e.message)))?;
            }
            // The flow's own parameters cannot be overridden.
            const FLOW: [&str; 8] = [
                "response_type",
                "client_id",
                "redirect_uri",
                "state",
                "code_challenge",
                "code_challenge_method",
                "scope",
                "resource",
            ];
            if extra_params.len() > 20 || extra_params.keys().any(|k| FLOW.contains(&k.as_str())) {
                return Err(invalid(
                    "auth.extra_params: at most 20, and not the flow's own parameters",
                ));
            }
            Ok(())
        }
        UpstreamAuth::OAuth2ClientCredentials {
            client_id,
            scopes,
            token_url,
            issuer,
            resource,
            ..
        } => validate_auth(
            &UpstreamAuth::OAuth2 {
                client_id: Some(client_id.clone()),
                client_secret: None,
                scopes: scopes.clone(),
                authorization_url: None,
                token_url: token_url.clone(),
                revocation_url: None,
                issuer: issuer.clone(),
                extra_params: Default::default(),
                resource: resource.clone(),
                list_tools_with_client_credentials: false,
            },
            egress,
        ),
    }
}

fn validate(input: &ServerInput, name: &str, egress: &EgressPolicy) -> Result<(), ApiError> {
    validate_name(name).map_err(|m| invalid(format!("name: {m}")))?;
    validate_url(&input.url)?;
    if input.description.as_ref().is_some_and(|d| d.len() > 1024) {
        return Err(invalid("description must be at most 1024 characters"));
    }
    if input.share_tool_list
        && !matches!(
            input.auth,
            UpstreamAuth::OAuth2 { .. } | UpstreamAuth::PerUserToken { .. }
        )
    {
        return Err(invalid(
            "share_tool_list applies only to oauth2 and per_user_token servers (others list with the server's own credential)",
        ));
    }
    if let Some(a) = &input.audit {
        a.validate().map_err(invalid)?;
    }
    validate_auth(&input.auth, egress)
}

/// Resolves and pins `server`'s authorization server (`source`), for a save: refused metadata
/// is the admin's 422 and stops the save; unreachable metadata is a warning (pinned at
/// first use instead).
async fn pin_for_save(
    state: &AppState,
    server: &mut McpServer,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    server.authorization_server = None;
    match endpoints::resolve(
        &state.grants.oauth_http,
        &state.config.egress,
        server,
        PinSource::DiscoveredAtSave,
        state.clock.now(),
    )
    .await
    {
        Ok(pin) => server.authorization_server = Some(pin),
        Err(DiscoveryError::Unavailable(why)) => warnings.push(format!(
            "the authorization server could not be discovered now ({why}); it will be \
             discovered and pinned at the first connect or token request (trust on first use), \
             or discover it with POST /admin/servers/{}/discover",
            server.name
        )),
        Err(e @ DiscoveryError::Invalid { .. }) => return Err(refused_metadata(&e)),
    }
    Ok(())
}

fn refused_metadata(e: &DiscoveryError) -> ApiError {
    ApiError::unprocessable(
        ErrorCode::InvalidDiscoveredMetadata,
        format!("the authorization server was refused: {e}"),
    )
}

/// The stored document of server `name` (for a compare-and-swap) and the server; 404 if none.
async fn stored(state: &AppState, name: &str) -> Result<(Value, McpServer), ApiError> {
    let doc = state
        .store
        .get_config(ConfigKind::Server, name)
        .await?
        .ok_or_else(|| not_found(ConfigKind::Server, name))?;
    let server = serde_json::from_value(doc.clone())
        .map_err(|e| StoreError::Corrupt(format!("server '{name}': {e}")))?;
    Ok((doc, server))
}

/// Writes `server` over `read` only if the record is still `read`: pinning at first use in
/// another process, or another admin, may have written since.
async fn replace_if_unchanged(
    state: &AppState,
    read: &Value,
    server: &McpServer,
) -> Result<(), ApiError> {
    let written = state
        .store
        .replace_config_if_unchanged(ConfigKind::Server, &server.name, read, &to_doc(server))
        .await?;
    state.servers.invalidate(&server.name).await;
    if !written {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!(
                "server '{}' changed while it was being saved; read it again and retry",
                server.name
            ),
        ));
    }
    Ok(())
}

/// Every URL the gateway will contact for this server, or send a browser to, passes the
/// egress policy (422 `egress_denied` naming the field and the rule). `resource` is an
/// identifier, never fetched.
fn check_egress(state: &AppState, input: &ServerInput) -> Result<(), ApiError> {
    crate::check_egress(state, "url", &input.url)?;
    let none = None;
    let (authorization_url, token_url, revocation_url, issuer) = match &input.auth {
        UpstreamAuth::OAuth2 {
            authorization_url,
            token_url,
            revocation_url,
            issuer,
            ..
        } => (authorization_url, token_url, revocation_url, issuer),
        UpstreamAuth::OAuth2ClientCredentials {
            token_url, issuer, ..
        } => (&none, token_url, &none, issuer),
        UpstreamAuth::None | UpstreamAuth::Header { .. } | UpstreamAuth::PerUserToken { .. } => {
            return Ok(());
        }
    };
    for (what, u) in [
        ("authorization_url", authorization_url),
        ("token_url", token_url),
        ("revocation_url", revocation_url),
        ("issuer", issuer),
    ] {
        if let Some(u) = u {
            crate::check_egress(state, &format!("auth.{what}"), u)?;
        }
    }
    Ok(())
}

/// Checks that every secret the server references resolves now, so a typo is reported to
/// the admin instead of to the first user.
async fn check_secrets(state: &AppState, auth: &UpstreamAuth) -> Result<(), ApiError> {
    let references: Vec<&mcpgw::secrets::SecretRef> = match auth {
        UpstreamAuth::Header { headers } => headers.values().collect(),
        UpstreamAuth::OAuth2 {
            client_secret: Some(r),
            ..
        } => vec![r],
        UpstreamAuth::OAuth2ClientCredentials { client_secret, .. } => vec![client_secret],
        _ => Vec::new(),
    };
    {
        for reference in references {
            if !state.config.secret_scope.permits(reference) {
                let prefix = state.config.secret_scope.prefix().unwrap_or_default();
                return Err(ApiError::unprocessable(
                    ErrorCode::SecretOutOfScope,
                    format!(
                        "auth.headers: '{reference}' is not an operator secret; name it '{prefix}...'"
                    ),
                ));
            }
            let value = match state.secrets.resolve(reference).await {
                Ok(v) => v,
                // An outage is not the admin's mistake: retry later, nothing was written.
                Err(e @ SecretsError::Backend(_)) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::SecretsUnavailable,
                        "the secrets backend is unavailable, retry later",
                    )
                    .with_cause(&e));
                }
                Err(e) => {
                    return Err(ApiError::unprocessable(
                        ErrorCode::SecretUnresolvable,
                        format!("auth.headers: {e}"),
                    ));
                }
            };
            // A value that cannot be a header (a trailing newline, say) would fail every call.
            if axum::http::HeaderValue::from_str(value.expose()).is_err() {
                return Err(ApiError::unprocessable(
                    ErrorCode::SecretInvalid,
                    format!(
                        "auth.headers: the value of '{reference}' is not a valid HTTP header value"
                    ),
                ));
            }
        }
    }
    Ok(())
}

async fn create(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<ServerInput>,
) -> Result<impl IntoResponse, ApiError> {
    let name = input
        .name
        .clone()
        .ok_or_else(|| invalid("name is required"))?;
    validate(&input, &name, &state.config.egress)?;
    check_egress(&state, &input)?;
    // Servers and virtual servers share the /mcp/{endpoint} namespace.
    if crate::access::virtual_server_exists(&state, &name).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyExists,
            format!("a virtual server named '{name}' already exists"),
        ));
    }
    check_secrets(&state, &input.auth).await?;
    let now = state.clock.now();
    let mut server = McpServer {
        name: name.clone(),
        url: input.url,
        description: input.description,
        auth: input.auth,
        created_at: now,
        updated_at: now,
        authorization_server: None,
        share_tool_list: input.share_tool_list,
        audit: input.audit,
    };
    let mut warnings = Vec::new();
    if endpoints::uses_oauth(&server) {
        pin_for_save(&state, &mut server, &mut warnings).await?;
    }
    state
        .store
        .create_config(ConfigKind::Server, &name, &to_doc(&server))
        .await?;
    state.servers.invalidate(&name).await;
    let mut view = ServerView::from(server);
    view.warnings = warnings;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn list(_: Admin, State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let servers: Vec<McpServer> = state.store.list_typed(ConfigKind::Server).await?;
    let views: Vec<ServerView> = servers.into_iter().map(ServerView::from).collect();
    Ok(Json(serde_json::json!({ "servers": views })))
}

async fn read(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_path_name(ConfigKind::Server, &name)?;
    let (_, server) = stored(&state, &name).await?;
    Ok(Json(ServerView::from(server)))
}

async fn replace(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<ServerInput>,
) -> Result<impl IntoResponse, ApiError> {
    if input.name.as_ref().is_some_and(|n| *n != name) {
        return Err(invalid(
            "name in the body must match the path (servers cannot be renamed)",
        ));
    }
    validate(&input, &name, &state.config.egress)?;
    check_egress(&state, &input)?;
    let (read, existing) = stored(&state, &name).await?;
    check_secrets(&state, &input.auth).await?;
    let mut server = McpServer {
        name: name.clone(),
        url: input.url,
        description: input.description,
        auth: input.auth,
        created_at: existing.created_at,
        updated_at: state.clock.now(),
        authorization_server: None,
        share_tool_list: input.share_tool_list,
        audit: input.audit,
    };
    let mut warnings = Vec::new();
    if endpoints::uses_oauth(&server) {
        // An edit that changes nothing discovery depends on (a description, scopes) keeps the
        // pinned endpoints: only an admin asking for it moves them.
        if existing.authorization_server.is_some()
            && endpoints::same_discovery_inputs(&existing, &server)
        {
            server.authorization_server = existing.authorization_server.clone();
        } else {
            pin_for_save(&state, &mut server, &mut warnings).await?;
        }
    }
    replace_if_unchanged(&state, &read, &server).await?;
    let mut view = ServerView::from(server);
    view.warnings = warnings;
    Ok(Json(view))
}

/// What `POST /admin/servers/{name}/discover` answers: the server as now pinned and which
/// pinned fields changed.
#[derive(Serialize)]
struct Rediscovered {
    #[serde(flatten)]
    server: ServerView,
    changed: Vec<&'static str>,
}

/// Discovers `name`'s authorization server again and pins the result
/// (`rediscovered_by_admin`); refused or unreachable metadata changes nothing.
async fn discover(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_path_name(ConfigKind::Server, &name)?;
    let (read, server) = stored(&state, &name).await?;
    if !endpoints::uses_oauth(&server) {
        return Err(ApiError::unprocessable(
            ErrorCode::NotOauth,
            format!(
                "server '{name}' does not use OAuth: there is no authorization server to discover"
            ),
        ));
    }
    let pin = match endpoints::resolve(
        &state.grants.oauth_http,
        &state.config.egress,
        &server,
        PinSource::RediscoveredByAdmin,
        state.clock.now(),
    )
    .await
    {
        Ok(p) => p,
        Err(DiscoveryError::Unavailable(why)) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::DiscoveryUnavailable,
                format!(
                    "the authorization server could not be discovered ({why}); the pinned endpoints are unchanged"
                ),
            ));
        }
        Err(e @ DiscoveryError::Invalid { .. }) => return Err(refused_metadata(&e)),
    };
    let changed = changed_fields(server.authorization_server.as_ref(), &pin);
    let mut next = server;
    next.authorization_server = Some(pin);
    replace_if_unchanged(&state, &read, &next).await?;
    tracing::info!(server = %name, changed = ?changed, "authorization server rediscovered by an admin");
    Ok(Json(Rediscovered {
        server: ServerView::from(next),
        changed,
    }))
}

/// The pinned fields whose values differ (every one when nothing was pinned).
fn changed_fields(old: Option<&PinnedAuthServer>, new: &PinnedAuthServer) -> Vec<&'static str> {
    let Some(old) = old else {
        return vec!["authorization_server"];
    };
    [
        ("issuer", old.issuer != new.issuer),
        (
            "authorization_endpoint",
            old.authorization_endpoint != new.authorization_endpoint,
        ),
        ("token_endpoint", old.token_endpoint != new.token_endpoint),
        (
            "revocation_endpoint",
            old.revocation_endpoint != new.revocation_endpoint,
        ),
        (
            "registration_endpoint",
            old.registration_endpoint != new.registration_endpoint,
        ),
        (
            "token_endpoint_auth_methods_supported",
            old.token_endpoint_auth_methods_supported != new.token_endpoint_auth_methods_supported,
        ),
        (
            "authorization_response_iss_parameter_supported",
            old.authorization_response_iss_parameter_supported
                != new.authorization_response_iss_parameter_supported,
        ),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect()
}

async fn remove(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_path_name(ConfigKind::Server, &name)?;
    crate::access::refuse_if_referenced(
        crate::access::server_referrers(&state, &name).await?,
        ConfigKind::Server,
        &name,
    )?;
    let deleted = state.store.delete_config(ConfigKind::Server, &name).await?;
    state.servers.invalidate(&name).await;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(ConfigKind::Server, &name))
    }
}
