//! `/admin/servers`: register, list, read, replace and delete upstream MCP servers.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use mcpgw::domain::{McpServer, UpstreamAuth, validate_name};
use mcpgw::http::{ApiError, ApiJson, ApiPath};
use mcpgw::secrets::SecretsError;
use mcpgw::state::AppState;
use mcpgw::store::{ConfigKind, ConfigStoreExt, to_doc};
use mcpgw::upstream::is_reserved_header;
use serde::{Deserialize, Serialize};

use crate::Admin;
use crate::time_fmt::to_rfc3339;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/servers", get(list).post(create))
        .route(
            "/admin/servers/{name}",
            get(read).put(replace).delete(remove),
        )
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
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_field", message)
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

fn validate_auth(auth: &UpstreamAuth) -> Result<(), ApiError> {
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
            ..
        } => {
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
            for (what, u) in [
                ("authorization_url", authorization_url),
                ("token_url", token_url),
                ("revocation_url", revocation_url),
                ("issuer", issuer),
                ("resource", resource),
            ] {
                if let Some(u) = u {
                    validate_url(u).map_err(|e| invalid(format!("auth.{what}: {}", e.message)))?;
                }
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
        } => validate_auth(&UpstreamAuth::OAuth2 {
            client_id: Some(client_id.clone()),
            client_secret: None,
            scopes: scopes.clone(),
            authorization_url: None,
            token_url: token_url.clone(),
            revocation_url: None,
            issuer: issuer.clone(),
            extra_params: Default::default(),
            resource: resource.clone(),
        }),
    }
}

fn validate(input: &ServerInput, name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|m| invalid(format!("name: {m}")))?;
    validate_url(&input.url)?;
    if input.description.as_ref().is_some_and(|d| d.len() > 1024) {
        return Err(invalid("description must be at most 1024 characters"));
    }
    validate_auth(&input.auth)
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
                    "secret_out_of_scope",
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
                        "secrets_unavailable",
                        "the secrets backend is unavailable, retry later",
                    )
                    .with_cause(&e));
                }
                Err(e) => {
                    return Err(ApiError::unprocessable(
                        "secret_unresolvable",
                        format!("auth.headers: {e}"),
                    ));
                }
            };
            // A value that cannot be a header (a trailing newline, say) would fail every call.
            if axum::http::HeaderValue::from_str(value.expose()).is_err() {
                return Err(ApiError::unprocessable(
                    "secret_invalid",
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
    validate(&input, &name)?;
    check_egress(&state, &input)?;
    // Servers and virtual servers share the /mcp/{endpoint} namespace.
    if crate::access::virtual_server_exists(&state, &name).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!("a virtual server named '{name}' already exists"),
        ));
    }
    check_secrets(&state, &input.auth).await?;
    let now = state.clock.now();
    let server = McpServer {
        name: name.clone(),
        url: input.url,
        description: input.description,
        auth: input.auth,
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .create_config(ConfigKind::Server, &name, &to_doc(&server))
        .await?;
    state.servers.invalidate(&name).await;
    Ok((StatusCode::CREATED, Json(ServerView::from(server))))
}

async fn list(_: Admin, State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let servers: Vec<McpServer> = state.store.list_typed(ConfigKind::Server).await?;
    let views: Vec<ServerView> = servers.into_iter().map(ServerView::from).collect();
    Ok(Json(serde_json::json!({ "servers": views })))
}

/// A server name from a path, checked before it reaches the store: a name that could not
/// have been registered is the same 404 as an unknown one, without echoing it.
fn check_path_name(name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|_| ApiError::not_found("server not found"))
}

async fn read(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_path_name(&name)?;
    let server = state
        .store
        .get_server(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("server '{name}' not found")))?;
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
    validate(&input, &name)?;
    check_egress(&state, &input)?;
    let existing = state
        .store
        .get_server(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("server '{name}' not found")))?;
    check_secrets(&state, &input.auth).await?;
    let server = McpServer {
        name: name.clone(),
        url: input.url,
        description: input.description,
        auth: input.auth,
        created_at: existing.created_at,
        updated_at: state.clock.now(),
    };
    state
        .store
        .replace_config(ConfigKind::Server, &name, &to_doc(&server))
        .await?;
    state.servers.invalidate(&name).await;
    Ok(Json(ServerView::from(server)))
}

async fn remove(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_path_name(&name)?;
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
        Err(ApiError::not_found(format!("server '{name}' not found")))
    }
}
