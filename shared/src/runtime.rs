//! Runs a router: under the Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set (buffered,
//! or streamed when `MCPGW_LAMBDA_STREAMING=1`, for a REST API with response streaming),
//! otherwise as a plain HTTP server on `MCPGW_LISTEN` until SIGINT/SIGTERM.

use std::net::SocketAddr;

use axum::Router;

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

/// Serves `router` in Lambda or on `listen`.
pub async fn serve(router: Router, listen: SocketAddr) -> Result<(), RuntimeError> {
    if in_lambda() {
        let streaming = std::env::var("MCPGW_LAMBDA_STREAMING").is_ok_and(|v| v == "1");
        // Streaming uses the gateway's own Runtime API loop (TCP_NODELAY; see
        // lambda_streaming.rs); buffered responses go through lambda_http.
        return if streaming {
            crate::lambda_streaming::run(router)
                .await
                .map_err(|e| RuntimeError::Lambda(crate::http::error_chain(&e)))
        } else {
            lambda_http::run(router)
                .await
                .map_err(|e| RuntimeError::Lambda(e.to_string()))
        };
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| RuntimeError::Bind(listen, e))?;
    let addr = listener.local_addr().map_err(RuntimeError::Serve)?;
    tracing::info!("listening on http://{addr}");
    serve_listener(listener, router, shutdown_signal()).await
}

/// How long open connections may take to finish after SIGINT/SIGTERM.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `router` on a bound listener until `shutdown` resolves. Tests pass their own
/// listener and a future that never resolves, so the test process keeps its signal handling.
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RuntimeError> {
    // Nagle's algorithm would hold the small writes of a streamed (SSE) answer until the
    // client's delayed ACK: about 40 ms per response, measured in the benchmark.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    // Graceful shutdown waits for open connections, and a GET SSE stream may never end:
    // after the signal, connections get DRAIN_TIMEOUT to finish, then the server stops.
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(listener, router).with_graceful_shutdown(signal);
    tokio::select! {
        result = server => result.map_err(RuntimeError::Serve),
        _ = async {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; stopping anyway");
            Ok(())
        }
    }
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
    let listen = config.listen;
    let state = crate::state::AppState::build(config).await?;
    serve(app(state), listen).await?;
    Ok(())
}
