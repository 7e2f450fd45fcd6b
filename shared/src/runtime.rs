//! Runs a router: under the Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set (buffered,
//! or streamed when `MCPGW_LAMBDA_STREAMING=1`, for a REST API with response streaming),
//! otherwise as a plain HTTP server on `MCPGW_LISTEN` until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::Semaphore;

use crate::config::ServerLimits;
use crate::http::BodyReadTimeout;

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("could not bind {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("server failed")]
    Serve(#[source] std::io::Error),
    #[error("lambda runtime failed: {0}")]
    Lambda(String),
}

/// Whether this process runs inside Lambda (or its emulator).
pub fn in_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// Serves `router` in Lambda or on `listen` (with `limits` on the local server). In Lambda,
/// `hooks` run at the end of every invocation (see `invocation`); outside it, not at all.
pub async fn serve(
    router: Router,
    hooks: crate::invocation::InvocationHooks,
    listen: SocketAddr,
    limits: ServerLimits,
) -> Result<(), RuntimeError> {
    if in_lambda() {
        let streaming = std::env::var("MCPGW_LAMBDA_STREAMING").is_ok_and(|v| v == "1");
        // Streaming uses the gateway's own Runtime API loop (TCP_NODELAY; see
        // lambda_streaming.rs); buffered responses go through lambda_http.
        return if streaming {
            crate::lambda_streaming::run(router, hooks)
                .await
                .map_err(|e| RuntimeError::Lambda(crate::http::error_chain(&e)))
        } else {
            lambda_http::run(crate::invocation::flush_layer(router, hooks))
                .await
                .map_err(|e| RuntimeError::Lambda(e.to_string()))
        };
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| RuntimeError::Bind(listen, e))?;
    let addr = listener.local_addr().map_err(RuntimeError::Serve)?;
    tracing::info!("listening on http://{addr}");
    serve_listener_with(listener, router, limits, shutdown_signal()).await
}

/// How long open connections may take to finish after SIGINT/SIGTERM.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `router` on a bound listener until `shutdown` resolves, with the default
/// [`ServerLimits`]. Tests pass their own listener and a future that never resolves, so the
/// test process keeps its signal handling.
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RuntimeError> {
    serve_listener_with(listener, router, ServerLimits::default(), shutdown).await
}

/// [`serve_listener`] with explicit limits.
pub async fn serve_listener_with(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RuntimeError> {
    use hyper_util::rt::{TokioIo, TokioTimer};

    let body_timeout = limits.body_read_timeout;
    let router = router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            next.run(req.map(|b| body_with_deadline(b, body_timeout)))
        },
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Told to every connection when shutdown begins: each finishes its request and closes.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first, then accept: at the cap the listener is simply not read.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Nagle's algorithm would hold the small writes of a streamed (SSE) answer until the
        // client's delayed ACK: about 40 ms per response, measured in the benchmark.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(tcp), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => log_connection_end(result),
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    log_connection_end(conn.await);
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every slot back means every connection has ended. A GET SSE stream may never end:
    // connections get DRAIN_TIMEOUT to finish, then the server stops anyway.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    Ok(())
}

/// Connection errors are the client's doing (a reset, a header timeout): logged quietly.
fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        if e.is_timeout() {
            tracing::debug!("closed a connection whose request head did not arrive in time");
        } else {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// A request body that fails with [`BodyReadTimeout`] once `timeout` has passed without its
/// end having arrived, however slowly bytes keep coming.
fn body_with_deadline(body: axum::body::Body, timeout: Duration) -> axum::body::Body {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + timeout;
    let stream =
        futures_util::stream::unfold(Some(body.into_data_stream()), move |state| async move {
            let mut data = state?;
            match tokio::time::timeout_at(deadline, data.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(data))),
                Ok(Some(Err(e))) => Some((Err(axum::BoxError::from(e)), None)),
                Ok(None) => None,
                Err(_) => Some((Err(axum::BoxError::from(BodyReadTimeout(timeout))), None)),
            }
        });
    axum::body::Body::from_stream(stream.boxed())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// Why an HTTP function could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Startup(#[from] crate::state::StartupError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The whole `main` of an HTTP function: read config, set up logging, build the state once,
/// then serve `app(state)` under Lambda (or on `MCPGW_LISTEN` outside it).
pub async fn run_http_function(
    app: fn(crate::state::AppState) -> Router,
) -> Result<(), FunctionError> {
    let config = crate::config::Config::from_env()?;
    crate::telemetry::init(config.in_lambda);
    let (listen, limits) = (config.listen, config.server_limits);
    let state = crate::state::AppState::build(config).await?;
    let hooks = state.invocation_hooks();
    serve(app(state), hooks, listen, limits).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The local server's limits, against raw TCP clients that misbehave the way a slowloris
    //! attack does, each beside a well-behaved client that must still be served.
    use super::*;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: ServerLimits) -> SocketAddr {
        let routes = Router::new().route(
            "/echo",
            post(|body: axum::body::Body| async move {
                crate::http::read_body(body, 1024)
                    .await
                    .map(|b| b.len().to_string())
            }),
        );
        let app = crate::http::finish(routes, 1024);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_listener_with(
            listener,
            app,
            limits,
            std::future::pending(),
        ));
        addr
    }

    /// Reads until the server closes the connection (or `within` passes: `None`).
    async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> Option<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        let read = async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(within, read).await.ok()?;
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    async fn healthz(addr: SocketAddr) -> String {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        read_until_closed(&mut tcp, Duration::from_secs(5))
            .await
            .expect("a well-behaved request is answered")
    }

    fn limits(header: u64, body: u64, max: usize) -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_millis(header),
            body_read_timeout: Duration::from_millis(body),
            max_connections: max,
        }
    }

    #[tokio::test]
    async fn clients_trickling_their_headers_are_disconnected_while_others_are_served() {
        let addr = start(limits(800, 30_000, 64)).await;
        let mut slow = Vec::new();
        for _ in 0..20 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
            slow.push(tcp);
        }
        // Each keeps sending a header byte every 200 ms: progress, but never a whole head.
        let trickle = tokio::spawn(async move {
            let mut closed = 0;
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                closed = 0;
                for tcp in &mut slow {
                    if tcp.write_all(b"x").await.is_err() {
                        closed += 1;
                        continue;
                    }
                    let mut probe = [0u8; 256];
                    let probed =
                        tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut probe)).await;
                    if let Ok(Ok(0) | Err(_)) = probed {
                        closed += 1;
                    }
                }
                if closed == 20 {
                    break;
                }
            }
            closed
        });
        assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));
        assert_eq!(
            trickle.await.unwrap(),
            20,
            "every trickling connection is closed by the header timeout"
        );
        assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
        let addr = start(limits(500, 30_000, 64)).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // Kept alive, then silent: the server ends it (a 408 head or a plain close).
        assert!(
            read_until_closed(&mut tcp, Duration::from_secs(5))
                .await
                .is_some(),
            "the idle connection is still open"
        );
    }

    #[tokio::test]
    async fn a_body_trickling_past_its_deadline_answers_408_and_a_prompt_one_is_read() {
        let addr = start(limits(10_000, 700, 64)).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n")
            .await
            .unwrap();
        let mut answer = None;
        for _ in 0..50 {
            let _ = tcp.write_all(b"y").await;
            let mut buf = [0u8; 1024];
            if let Ok(Ok(n @ 1..)) =
                tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await
            {
                answer = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                break;
            }
        }
        let answer = answer.expect("the server answered before the body was complete");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");

        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
        )
        .await
        .unwrap();
        let answer = read_until_closed(&mut tcp, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with('5'), "{answer}");
    }

    #[tokio::test]
    async fn beyond_the_connection_cap_clients_wait_until_a_slot_frees_up() {
        let addr = start(limits(30_000, 30_000, 2)).await;
        let mut held: Vec<TcpStream> = Vec::new();
        for _ in 0..2 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
            held.push(tcp);
        }
        let waiting = tokio::spawn(healthz(addr));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiting.is_finished(),
            "a third connection was served beyond the cap of 2"
        );
        drop(held.pop());
        let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("served once a slot freed up")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
