//! A Lambda Runtime API loop for HTTP functions whose responses stream (API Gateway REST with
//! `ResponseTransferMode: STREAM`).
//!
//! Why not `lambda_http::run_with_streaming_response`: its Runtime API client (hyper's
//! `HttpConnector` inside `lambda_runtime_api_client` 1.1) leaves TCP_NODELAY off, and writes
//! the response as several small chunks (metadata prelude, the 8-byte delimiter, then the
//! body). Nagle's algorithm holds each chunk until the previous one is acknowledged, and the
//! Runtime API delays that ACK, so every streamed answer waited ~43 ms (measured with
//! `scripts/cold-start.sh`: 47 ms warm against 3.7 ms buffered; docs/performance.md). This
//! loop speaks the same protocol, with the same chunks, through a client with TCP_NODELAY on.
//! Event parsing is still lambda_http's (`request::from_str`), so
//! events map to requests exactly as in buffered mode, stage handling included.
//!
//! Protocol (docs.aws.amazon.com/lambda/latest/dg/runtimes-custom.html, "response streaming"):
//! `GET /2018-06-01/runtime/invocation/next` returns the event and its request id; the answer
//! is `POST .../invocation/{id}/response` with `Lambda-Runtime-Function-Response-Mode:
//! streaming`, chunked, content type `application/vnd.awslambda.http-integration-response`:
//! a JSON prelude (`statusCode`, `headers`, `cookies`), eight NUL bytes, then the body. An
//! event that cannot be parsed is reported with `POST .../invocation/{id}/error`.
//!
//! Tested by the Lambda-mode end-to-end tests (`tests/tests/it/lambda_mode.rs`, REST walk-through
//! through cargo-lambda's emulator) and measured by `scripts/cold-start.sh`.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use tower::ServiceExt;
use tracing::Instrument;

const API_VERSION: &str = "2018-06-01";
/// Separates the JSON prelude from the body in a streamed HTTP integration response.
const DELIMITER: [u8; 8] = [0; 8];

/// Why the loop stopped. Per-invocation problems are reported to Lambda and do not stop it.
#[derive(Debug, thiserror::Error)]
pub enum StreamingRuntimeError {
    #[error("AWS_LAMBDA_RUNTIME_API is not set")]
    NoRuntimeApi,
    #[error("could not build the Runtime API client")]
    Client(#[source] reqwest::Error),
    #[error("Runtime API request failed")]
    RuntimeApi(#[source] reqwest::Error),
    #[error("Runtime API answered without a request id")]
    NoRequestId,
}

/// The JSON prelude of a streamed HTTP integration response. Headers with several values
/// become arrays, as lambda_runtime's `MetadataPrelude` writes them; `Set-Cookie` goes to
/// `cookies`.
pub fn metadata_prelude(status: u16, headers: &HeaderMap) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let mut cookies = Vec::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if name == header::SET_COOKIE {
            cookies.extend(values);
            continue;
        }
        let value = match values.len() {
            1 => serde_json::Value::String(values.into_iter().next().unwrap_or_default()),
            _ => serde_json::Value::from(values),
        };
        out.insert(name.as_str().to_owned(), value);
    }
    serde_json::json!({"statusCode": status, "headers": out, "cookies": cookies})
}

/// Lambda gives `host:port`; emulators (cargo-lambda) give a full URL with a path prefix.
fn runtime_base_url(api: &str) -> String {
    let api = api.trim_end_matches('/');
    if api.starts_with("http://") || api.starts_with("https://") {
        format!("{api}/{API_VERSION}/runtime/invocation")
    } else {
        format!("http://{api}/{API_VERSION}/runtime/invocation")
    }
}

/// Serves `router` for every invocation until the process is stopped.
/// `hooks` run after each response was delivered and before the next event is asked for
/// (the sandbox may be frozen from then on).
pub async fn run(
    router: Router,
    hooks: crate::invocation::InvocationHooks,
) -> Result<(), StreamingRuntimeError> {
    let api =
        std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(|_| StreamingRuntimeError::NoRuntimeApi)?;
    run_at(&runtime_base_url(&api), router, hooks).await
}

/// [`run`] against the Runtime API at `base` (`.../runtime/invocation`).
async fn run_at(
    base: &str,
    router: Router,
    hooks: crate::invocation::InvocationHooks,
) -> Result<(), StreamingRuntimeError> {
    let base = base.to_owned();
    // The one outbound client NOT built by the egress policy: it talks only to the Runtime
    // API, whose address Lambda itself sets (loopback, which the policy denies in Lambda so
    // that no admin- or upstream-supplied URL can reach it). No configured URL goes here.
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .no_proxy()
        // The next-event call blocks while the sandbox is idle (or frozen): no timeout.
        .pool_max_idle_per_host(1)
        .build()
        .map_err(StreamingRuntimeError::Client)?;
    loop {
        let next = next_invocation(&client, &base).await?;
        let request_id = next
            .headers()
            .get("lambda-runtime-aws-request-id")
            .and_then(|v| v.to_str().ok())
            .ok_or(StreamingRuntimeError::NoRequestId)?
            .to_owned();
        let event = next
            .bytes()
            .await
            .map_err(StreamingRuntimeError::RuntimeApi)?;
        let span = tracing::info_span!("invocation", %request_id);
        let handled = serve_one(&client, &base, &request_id, &router, &event)
            .instrument(span.clone())
            .await;
        hooks.run().instrument(span.clone()).await;
        if let Err(e) = handled {
            let _guard = span.enter();
            // The response could not be delivered: say so, so the invocation fails at once
            // instead of running into its timeout. If that fails too, the next one may work.
            tracing::error!(error = %crate::http::error_chain(&e), "could not deliver the response");
            let _ = report_error(
                &client,
                &base,
                &request_id,
                "Runtime.ResponseDeliveryFailed",
                "response not delivered",
            )
            .await;
        }
    }
}

/// Turns one event into a request, serves it and streams the answer back. A panic while
/// parsing the event or handling it (lambda_http's conversion has `expect`s inside) is caught
/// and reported as an invocation error, as lambda_runtime does, instead of killing the
/// process mid-invocation.
async fn serve_one(
    client: &reqwest::Client,
    base: &str,
    request_id: &str,
    router: &Router,
    event: &[u8],
) -> Result<(), reqwest::Error> {
    let handled = std::panic::AssertUnwindSafe(async {
        let request = parse_event(event)?;
        match router.clone().oneshot(request.map(Body::new)).await {
            Ok(r) => Ok::<axum::response::Response, String>(r),
            Err(never) => match never {},
        }
    })
    .catch_unwind()
    .await;
    match handled {
        Ok(Ok(response)) => send_response(client, base, request_id, response).await,
        Ok(Err(message)) => {
            tracing::error!("{message}");
            report_error(client, base, request_id, "Runtime.InvalidEvent", &message).await
        }
        Err(_) => {
            tracing::error!("handler panicked");
            report_error(
                client,
                base,
                request_id,
                "Runtime.HandlerPanic",
                "the handler panicked",
            )
            .await
        }
    }
}

/// The HTTP request an API Gateway event describes. Only the position of a parse error is
/// kept: serde's message can quote the event, and the event carries the caller's
/// Authorization header, which must not reach a log line or Lambda's error record.
fn parse_event(event: &[u8]) -> Result<lambda_http::Request, String> {
    let text = std::str::from_utf8(event).map_err(|_| "the event is not UTF-8".to_owned())?;
    lambda_http::request::from_str(text).map_err(|e| {
        format!(
            "the event is not an API Gateway event (line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

/// `POST .../invocation/{id}/error`.
async fn report_error(
    client: &reqwest::Client,
    base: &str,
    request_id: &str,
    error_type: &str,
    message: &str,
) -> Result<(), reqwest::Error> {
    let body = serde_json::json!({"errorType": error_type, "errorMessage": message});
    client
        .post(format!("{base}/{request_id}/error"))
        .header("Lambda-Runtime-Function-Error-Type", error_type)
        .json(&body)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map(drop)
}

/// Asks for the next event. A pooled connection the Runtime API closed after the previous
/// response (cargo-lambda's emulator does) fails before any answer; that request is simply
/// made again on a new connection, a few times at most.
async fn next_invocation(
    client: &reqwest::Client,
    base: &str,
) -> Result<reqwest::Response, StreamingRuntimeError> {
    let mut attempt = 0;
    loop {
        match client
            .get(format!("{base}/next"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
        {
            Ok(r) => return Ok(r),
            Err(e) if attempt < 3 && (e.is_request() || e.is_connect()) => {
                attempt += 1;
                tracing::debug!(attempt, error = %crate::http::error_chain(&e), "retrying next invocation");
                tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
            }
            Err(e) => return Err(StreamingRuntimeError::RuntimeApi(e)),
        }
    }
}

async fn send_response(
    client: &reqwest::Client,
    base: &str,
    request_id: &str,
    response: axum::response::Response,
) -> Result<(), reqwest::Error> {
    let (parts, body) = response.into_parts();
    let prelude = serde_json::to_vec(&metadata_prelude(parts.status.as_u16(), &parts.headers))
        .unwrap_or_else(|_| b"{\"statusCode\":500}".to_vec());
    // Prelude and delimiter as chunks of their own, as lambda_runtime sends them: cargo-lambda's
    // emulator reads the prelude per chunk. With TCP_NODELAY the extra chunk costs no wait.
    let head = [Bytes::from(prelude), Bytes::from_static(&DELIMITER)];
    let stream = futures_util::stream::iter(head.map(Ok::<Bytes, axum::Error>))
        .chain(body.into_data_stream())
        .map_err(std::io::Error::other);
    client
        .post(format!("{base}/{request_id}/response"))
        .header("Lambda-Runtime-Function-Response-Mode", "streaming")
        .header(
            "Trailer",
            "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
        )
        .header(
            header::CONTENT_TYPE,
            "application/vnd.awslambda.http-integration-response",
        )
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn unparseable_events_are_reported_without_their_content() {
        let event = br#"{"httpMethod":"POST","path":"/mcp/x","headers":{"Authorization":"Bearer mcpgw_SECRET"},"requestContext":42}"#;
        let message = parse_event(event).unwrap_err();
        assert!(!message.contains("mcpgw_SECRET"), "{message}");
        assert!(
            message.starts_with("the event is not an API Gateway event"),
            "{message}"
        );
        assert_eq!(parse_event(b"\xff").unwrap_err(), "the event is not UTF-8");
        let ok = br#"{"version":"2.0","rawPath":"/healthz","rawQueryString":"","headers":{},"requestContext":{"http":{"method":"GET","path":"/healthz","protocol":"HTTP/1.1","sourceIp":"127.0.0.1","userAgent":"t"},"accountId":"1","apiId":"a","domainName":"d","domainPrefix":"d","requestId":"r","routeKey":"$default","stage":"$default","time":"t","timeEpoch":0},"isBase64Encoded":false}"#;
        assert_eq!(parse_event(ok).unwrap().uri().path(), "/healthz");
    }

    /// The end-of-invocation hooks run after the response was delivered and before the next
    /// event is asked for: a fake Runtime API looks into the store when the second `next`
    /// arrives and finds the record the first invocation emitted (and nothing yet when the
    /// response arrives: the flush does not delay it).
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn hooks_flush_the_audit_trail_before_the_next_event_is_asked_for() {
        use crate::audit::{AuditRecord, Auditor, Decision, Event};
        use crate::store::AuditStore;
        use axum::response::IntoResponse;
        use axum::routing::{get, post};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        crate::crypto::install_tls_provider();
        let store = Arc::new(crate::store::sqlite::SqliteStore::in_memory().unwrap());
        let ring = crate::crypto::Keyring::from_json(&crate::crypto::Keyring::generate_document())
            .unwrap();
        let keyring = Arc::new(crate::keyring::KeyringSource::Loaded(Arc::new(ring)));
        let audit = Arc::new(Auditor::new(
            store.clone(),
            keyring,
            std::time::Duration::from_secs(86_400),
        ));
        let emitter = audit.clone();
        let app = Router::new().route(
            "/healthz",
            get(move || {
                emitter.emit(AuditRecord::new(Event::Connect, Decision::Allow));
                async { "ok" }
            }),
        );
        let hooks = crate::invocation::InvocationHooks::default().with(audit.clone());

        let stored = {
            let store = store.clone();
            move || {
                let store = store.clone();
                async move { store.dump_audit(0, i64::MAX).await.unwrap().records.len() }
            }
        };
        let (seen, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(&str, usize)>();
        let nexts = Arc::new(AtomicUsize::new(0));
        let event = r#"{"version":"2.0","rawPath":"/healthz","rawQueryString":"","headers":{},"requestContext":{"http":{"method":"GET","path":"/healthz","protocol":"HTTP/1.1","sourceIp":"127.0.0.1","userAgent":"t"},"accountId":"1","apiId":"a","domainName":"d","domainPrefix":"d","requestId":"r","routeKey":"$default","stage":"$default","time":"t","timeEpoch":0},"isBase64Encoded":false}"#;
        let api = Router::new()
            .route(
                "/2018-06-01/runtime/invocation/next",
                get({
                    let (seen, stored) = (seen.clone(), stored.clone());
                    move || {
                        let (seen, stored, nexts) = (seen.clone(), stored.clone(), nexts.clone());
                        async move {
                            if nexts.fetch_add(1, Ordering::SeqCst) == 0 {
                                return ([("lambda-runtime-aws-request-id", "r1")], event)
                                    .into_response();
                            }
                            let _ = seen.send(("next", stored().await));
                            std::future::pending::<axum::response::Response>().await
                        }
                    }
                }),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(move |body: Bytes| {
                    let (seen, stored) = (seen.clone(), stored.clone());
                    async move {
                        assert!(body.ends_with(b"ok"));
                        let _ = seen.send(("response", stored().await));
                        axum::http::StatusCode::ACCEPTED
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, api).await });
        let base = format!("http://{addr}/2018-06-01/runtime/invocation");
        let runtime = tokio::spawn(async move { run_at(&base, app, hooks).await });

        let within = std::time::Duration::from_secs(10);
        let first = tokio::time::timeout(within, seen_rx.recv()).await.unwrap();
        assert_eq!(
            first,
            Some(("response", 0)),
            "the flush runs after the answer"
        );
        let second = tokio::time::timeout(within, seen_rx.recv()).await.unwrap();
        assert_eq!(second, Some(("next", 1)), "flushed before the next event");
        runtime.abort();
    }

    #[test]
    fn runtime_api_address_forms() {
        assert_eq!(
            runtime_base_url("127.0.0.1:9001"),
            "http://127.0.0.1:9001/2018-06-01/runtime/invocation"
        );
        assert_eq!(
            runtime_base_url("http://127.0.0.1:9000/.rt/mcp-proxy/"),
            "http://127.0.0.1:9000/.rt/mcp-proxy/2018-06-01/runtime/invocation"
        );
    }

    #[test]
    fn prelude_carries_status_headers_and_cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        let p = metadata_prelude(201, &h);
        assert_eq!(p["statusCode"], 201);
        assert_eq!(p["headers"]["content-type"], "text/event-stream");
        assert_eq!(p["headers"]["x-multi"], serde_json::json!(["a", "b"]));
        assert!(p["headers"].get("set-cookie").is_none());
        assert_eq!(p["cookies"], serde_json::json!(["a=1"]));
    }
}
