//! HTTP plumbing shared by every function router: the JSON error type, a body reader with a
//! size limit, a JSON extractor whose rejections are JSON too, and [`finish`], which adds
//! `/healthz`, JSON fallbacks, panic recovery and error logging around a set of routes.
//!
//! Errors become responses without side effects; the `log_errors` middleware logs the cause
//! chain once, at the edge, from a response extension (so no handler logs and returns twice).

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::store::StoreError;

pub mod code;

pub use code::ErrorCode;

/// An HTTP error with a stable machine-readable code, rendered as
/// `{"error":{"code":"...","message":"..."}}`. 5xx messages are generic; the cause is kept
/// for the log only.
///
/// Errors of a type become an `ApiError` by one exhaustive `From` beside the type:
/// [`StoreError`] here, `identity::AuthError`, `grants::GrantError` and
/// `upstream::CredentialError` in their modules; handlers use `?`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    cause: Option<Arc<str>>,
}

/// Marks a response relayed from an upstream as it was: its 5xx status is the upstream's
/// failure, not the gateway's, and is logged as such (not as an error that pages someone).
#[derive(Debug, Clone, Copy)]
pub struct Relayed;

/// The cause chain of a failed request, left in the response for `log_errors`.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub Arc<str>);

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            cause: None,
        }
    }
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unprocessable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }
    /// A server-side failure: the client sees a generic message, the log sees `cause`.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        )
        .with_cause(cause)
    }
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
    pub fn with_cause(mut self, cause: &(dyn std::error::Error + 'static)) -> Self {
        self.cause = Some(error_chain(cause).into());
        self
    }
}

/// `outer: inner: innermost`, for one log line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        // Errors are counted by their code (see `metrics`).
        resp.extensions_mut()
            .insert(crate::metrics::ErrorReason(self.code.as_str()));
        for (k, v) in self.headers {
            resp.headers_mut().append(k, v);
        }
        if let Some(cause) = self.cause {
            resp.extensions_mut().insert(ErrorCause(cause));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::AlreadyExists { .. } => Self::new(
                StatusCode::CONFLICT,
                ErrorCode::AlreadyExists,
                e.to_string(),
            ),
            StoreError::NotFound { .. } => Self::not_found(e.to_string()),
            StoreError::VersionConflict { .. } => {
                Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, e.to_string())
            }
            // A caller that did not bump the grant version: a bug, never the client's input.
            StoreError::InvalidVersion { .. } => Self::internal(&e),
            StoreError::Corrupt(_) => Self::internal(&e),
            // Content the gateway should have capped before writing: a bug, not the caller's.
            StoreError::Rejected(_) => Self::internal(&e),
            StoreError::Backend(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreUnavailable,
                "the store is unavailable, retry later",
            )
            .with_cause(&e),
        }
    }
}

/// Reads a request body of at most `limit` bytes: 413 beyond it.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("request body exceeds {limit} bytes"),
        )),
        Err(e) if caused_by::<BodyReadTimeout>(e.as_ref()) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            "the request body did not arrive in time",
        )),
        // The client went away or sent a broken body: nothing was read, nothing is written.
        Err(_) => Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "the request body could not be read",
        )),
    }
}

/// The request body did not arrive within `config::ServerLimits::body_read_timeout` (the local server's body timeout).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyReadTimeout(pub std::time::Duration);

/// Whether `T` is `e` or anywhere in its source chain.
fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<T>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// A path parameter extractor whose failures (bad percent-encoding, invalid UTF-8) are JSON
/// [`ApiError`]s rather than axum's plain-text 400.
pub struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|_| {
                ApiError::bad_request(
                    ErrorCode::InvalidPath,
                    "a path parameter is not valid UTF-8 text",
                )
            })
    }
}

/// Whether the request declares a JSON body (`application/json`, parameters allowed).
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The largest body [`ApiJson`] reads; set per router with [`BodyLimit`] in extensions.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body extractor whose failures are [`ApiError`]s (415, 413, 400), not plain text.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ));
        }
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(1024 * 1024, |l| l.0);
        let bytes = read_body(req.into_body(), limit).await?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            ApiError::bad_request(ErrorCode::InvalidJson, format!("invalid request body: {e}"))
        })
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// Logs each failed request once: 5xx with the cause chain at error level, 4xx briefly.
/// Messages of 4xx are not logged: they may echo caller input.
async fn log_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status();
    if resp.extensions().get::<Relayed>().is_some() {
        if status.is_server_error() || status.is_client_error() {
            tracing::info!(%method, %path, status = status.as_u16(), "upstream answered with an error status");
        }
        return resp;
    }
    if status.is_server_error() {
        let cause = resp.extensions().get::<ErrorCause>().map(|c| c.0.clone());
        tracing::error!(%method, %path, status = status.as_u16(), cause = cause.as_deref().unwrap_or("-"), "request failed");
    } else if status.is_client_error() {
        tracing::info!(%method, %path, status = status.as_u16(), "request rejected");
    }
    resp
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The panic payload may hold data from the request; it is not echoed.
    tracing::error!("handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "internal error",
    )
    .into_response()
}

/// Wraps a function's routes with what every deployed router needs: `/healthz`, JSON 404/405
/// fallbacks, the body limit for [`ApiJson`], panic recovery and error logging.
pub fn finish(routes: Router, max_body_bytes: usize) -> Router {
    routes
        .route("/healthz", axum::routing::get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::Extension(BodyLimit(max_body_bytes)))
        .layer(middleware::from_fn(log_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    #[derive(serde::Deserialize)]
    struct In {
        #[allow(dead_code)]
        n: u32,
    }

    async fn boom() -> &'static str {
        let parsed: Result<u8, _> = "secret-in-panic".parse();
        if parsed.is_err() {
            panic!("secret-in-panic");
        }
        "unreachable"
    }

    fn app() -> Router {
        let r = Router::new()
            .route("/echo", post(|ApiJson(_): ApiJson<In>| async { "ok" }))
            .route("/boom", get(boom));
        finish(r, 64)
    }

    async fn call(req: Request) -> (StatusCode, serde_json::Value) {
        let resp = app().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    fn post_json(body: &str, ct: &str) -> Request {
        Request::post("/echo")
            .header("content-type", ct)
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn json_errors_for_every_bad_input() {
        let cases = [
            (
                post_json("{\"n\":1}", "text/plain"),
                415,
                "unsupported_media_type",
            ),
            (
                post_json("{not json", "application/json"),
                400,
                "invalid_json",
            ),
            (
                post_json(
                    &format!("{{\"n\":1,\"pad\":\"{}\"}}", "x".repeat(100)),
                    "application/json",
                ),
                413,
                "payload_too_large",
            ),
            (
                Request::get("/nope").body(Body::empty()).unwrap(),
                404,
                "not_found",
            ),
            (
                Request::delete("/echo").body(Body::empty()).unwrap(),
                405,
                "method_not_allowed",
            ),
            (
                Request::get("/boom").body(Body::empty()).unwrap(),
                500,
                "internal",
            ),
        ];
        for (req, status, code) in cases {
            let (s, body) = call(req).await;
            assert_eq!(
                (s.as_u16(), body["error"]["code"].as_str()),
                (status, Some(code)),
                "{body}"
            );
            assert!(!body.to_string().contains("secret-in-panic"));
        }
        let (s, body) = call(post_json("{\"n\":1}", "application/json; charset=utf-8")).await;
        assert_eq!(s, 200, "{body}");
    }

    #[tokio::test]
    async fn healthz_answers() {
        let (s, body) = call(Request::get("/healthz").body(Body::empty()).unwrap()).await;
        assert_eq!((s.as_u16(), body["status"].as_str()), (200, Some("ok")));
    }
}
