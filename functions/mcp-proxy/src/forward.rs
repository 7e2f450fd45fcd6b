//! Forwarding one MCP HTTP request upstream and streaming the answer back.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use mcpgw::domain::{McpServer, validate_name};
use mcpgw::http::{ApiError, ApiPath, is_json_content_type, read_body};
use mcpgw::state::AppState;
use mcpgw::upstream::{
    UpstreamError, credential_headers, forwarded_request_headers, returned_response_headers,
};
use std::sync::Arc;

use crate::resource_metadata_url;

/// Why a proxied request failed before or while reaching the upstream.
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("upstream request failed")]
    Transport(#[source] reqwest::Error),
    #[error("upstream rejected the gateway's credential (HTTP {0})")]
    UpstreamAuth(u16),
    #[error("upstream answered with a redirect (HTTP {0}), which the gateway does not follow")]
    UpstreamRedirect(u16),
    /// No response headers within the configured time. The body (an SSE stream) may then
    /// take as long as the deployment allows; this bounds only the wait for an answer.
    #[error("upstream sent no response within {0:?}")]
    HeaderTimeout(std::time::Duration),
}

impl From<ProxyError> for ApiError {
    fn from(e: ProxyError) -> Self {
        match &e {
            ProxyError::Upstream(UpstreamError::Secrets(_))
            | ProxyError::Upstream(UpstreamError::BadHeaderValue(_))
            | ProxyError::Upstream(UpstreamError::OutOfScope(_)) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_credential_unavailable",
                "the gateway could not load its credential for this server",
            )
            .with_cause(&e),
            ProxyError::Upstream(UpstreamError::UnsupportedAuth { .. }) => ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "unsupported_auth",
                e.to_string(),
            ),
            ProxyError::Transport(inner) if inner.is_timeout() => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream MCP server did not answer in time",
            )
            .with_cause(&e),
            ProxyError::Transport(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream MCP server could not be reached",
            )
            .with_cause(&e),
            ProxyError::HeaderTimeout(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream MCP server did not answer in time",
            )
            .with_cause(&e),
            ProxyError::UpstreamRedirect(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_redirect", e.to_string())
            }
            ProxyError::UpstreamAuth(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_auth_failed",
                e.to_string(),
            ),
        }
    }
}

/// Authenticates the caller and finds the endpoint. Unknown endpoints are 404 only after
/// authentication, so unauthenticated callers cannot probe what is registered.
async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<Arc<McpServer>, ApiError> {
    // A name that cannot be registered is unknown: it never reaches the store (DynamoDB would
    // reject an oversized key) nor the challenge header (a quote would inject parameters).
    let metadata = validate_name(endpoint)
        .is_ok()
        .then(|| resource_metadata_url(state, endpoint));
    state
        .auth
        .authenticate(headers)
        .await
        .map_err(|e| e.into_api_error(metadata.as_deref()))?;
    let unknown = || ApiError::not_found("no MCP endpoint by that name");
    if metadata.is_none() {
        return Err(unknown());
    }
    state.server(endpoint).await?.ok_or_else(unknown)
}

/// A JSON-RPC error answer (HTTP 400) for a body that is not a JSON-RPC message.
fn jsonrpc_error(code: i64, message: &str) -> Response {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn is_jsonrpc_message(v: &serde_json::Value) -> bool {
    v.as_object()
        .is_some_and(|o| o.get("jsonrpc").and_then(|j| j.as_str()) == Some("2.0"))
}

pub async fn post(
    State(state): State<AppState>,
    ApiPath(endpoint): ApiPath<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let server = admit(&state, &parts.headers, &endpoint).await?;
    if !is_json_content_type(&parts.headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ));
    }
    if !accepts_mcp(&parts.headers) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "Accept must allow application/json and text/event-stream",
        ));
    }
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    // Validate before forwarding: the upstream should never see garbage in our name, and
    // later issues inspect the method here (tool filtering).
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(jsonrpc_error(-32700, "Parse error: body is not valid JSON"));
    };
    let valid = match &message {
        serde_json::Value::Array(items) => {
            !items.is_empty() && items.iter().all(is_jsonrpc_message)
        }
        other => is_jsonrpc_message(other),
    };
    if !valid {
        return Ok(jsonrpc_error(
            -32600,
            "Invalid Request: expected a JSON-RPC 2.0 message",
        ));
    }
    forward(&state, &server, Method::POST, &parts.headers, Some(bytes)).await
}

pub async fn get(
    State(state): State<AppState>,
    ApiPath(endpoint): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let server = admit(&state, &headers, &endpoint).await?;
    if !state.config.allow_get_stream {
        // A buffered Lambda response cannot hold a server-to-client stream open; the spec
        // lets servers answer 405 and clients then rely on POST responses alone.
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this deployment does not offer a GET stream",
        )
        .with_header(header::ALLOW, HeaderValue::from_static("POST, DELETE")));
    }
    forward(&state, &server, Method::GET, &headers, None).await
}

pub async fn delete(
    State(state): State<AppState>,
    ApiPath(endpoint): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let server = admit(&state, &headers, &endpoint).await?;
    forward(&state, &server, Method::DELETE, &headers, None).await
}

/// Whether the client accepts what an MCP POST may answer. A missing Accept or `*/*` is
/// taken as accepting both; otherwise both types (or their wildcards) must appear.
fn accepts_mcp(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let types: Vec<String> = accept
        .split(',')
        .filter_map(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let has = |exact: &str, family: &str| {
        types
            .iter()
            .any(|t| t == exact || t == family || t == "*/*")
    };
    has("application/json", "application/*") && has("text/event-stream", "text/*")
}

async fn forward(
    state: &AppState,
    server: &McpServer,
    method: Method,
    inbound: &HeaderMap,
    body: Option<axum::body::Bytes>,
) -> Result<Response, ApiError> {
    let mut headers = forwarded_request_headers(inbound);
    let credentials =
        credential_headers(server, state.secrets.as_ref(), &state.config.secret_scope)
            .await
            .map_err(ProxyError::from)?;
    headers.extend(credentials);
    let accept = if method == Method::GET {
        "text/event-stream"
    } else {
        "application/json, text/event-stream"
    };
    headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
    let mut request = state.http.request(method, &server.url).headers(headers);
    if let Some(body) = body {
        request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let timeout = state.config.upstream_header_timeout;
    let upstream = tokio::time::timeout(timeout, request.send())
        .await
        .map_err(|_| ProxyError::HeaderTimeout(timeout))?
        // Without the URL: an upstream's query string may carry its API key, and this error
        // is logged.
        .map_err(|e| ProxyError::Transport(e.without_url()))?;
    let status = upstream.status();
    if status.is_redirection() {
        // Redirects are not followed (the injected credential must not travel to another
        // host), and one without its Location is useless to the client.
        return Err(ProxyError::UpstreamRedirect(status.as_u16()).into());
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(ProxyError::UpstreamAuth(status.as_u16()).into());
    }
    let mut response = Response::builder()
        .status(status)
        .extension(mcpgw::http::Relayed);
    if let Some(h) = response.headers_mut() {
        *h = returned_response_headers(upstream.headers());
    }
    // Stream the body through as it arrives: SSE events reach the client one by one.
    let stream = upstream
        .bytes_stream()
        .map_err(|e| std::io::Error::other(e.without_url()));
    response
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accept_rules() {
        assert!(accepts_mcp(&HeaderMap::new()));
        assert!(accepts_mcp(&accept("application/json, text/event-stream")));
        assert!(accepts_mcp(&accept("*/*")));
        assert!(accepts_mcp(&accept("application/json;q=0.9, text/*")));
        assert!(!accepts_mcp(&accept("text/html")));
        assert!(!accepts_mcp(&accept("application/json")));
    }
}
