//! `GET /metrics` in the Prometheus text format (see `mcpgw::metrics`), two ways:
//!
//! - on the gateway's own port for admins (a Prometheus scrape config with
//!   `authorization: {credentials: <admin API key>}`): [`admin_routes`];
//! - with `MCPGW_METRICS_LISTEN=HOST:PORT`, also on a second listener that serves nothing
//!   else and asks for no credential, for a Prometheus on a private network that should not
//!   hold an admin key: [`serve_open`]. Bind it to loopback or a private address: the
//!   metrics name endpoints and tools (never a user).
//!
//! Lambda has no `/metrics`: each execution environment only knows its own share, and the
//! same numbers go to CloudWatch as EMF lines instead.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mcpgw::state::AppState;

/// `/metrics` for callers holding the admin role.
pub fn admin_routes(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(admin_scrape))
        .with_state(state)
}

async fn admin_scrape(_admin: admin_api::Admin, State(state): State<AppState>) -> Response {
    exposition(&state)
}

async fn open_scrape(State(state): State<AppState>) -> Response {
    exposition(&state)
}

fn exposition(state: &AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            mcpgw::metrics::prometheus::CONTENT_TYPE,
        )],
        state.metrics.render_prometheus(),
    )
        .into_response()
}

/// The router of the metrics listener: `/metrics` without a credential, `/healthz`, JSON 404s.
pub fn open_router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let routes = Router::new()
        .route("/metrics", get(open_scrape))
        .with_state(state);
    mcpgw::http::finish(routes, limit)
}

/// Binds `listen` and serves [`open_router`] on it in the background; the bound address.
pub async fn serve_open(state: AppState, listen: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let limits = state.config.server_limits;
    tokio::spawn(async move {
        let served = mcpgw::runtime::serve_listener_with(
            listener,
            open_router(state),
            limits,
            mcpgw::runtime::shutdown_signal(),
        )
        .await;
        if let Err(e) = served {
            tracing::warn!(error = %mcpgw::http::error_chain(&e), "the metrics listener stopped");
        }
    });
    tracing::info!("metrics on http://{addr}/metrics");
    Ok(addr)
}
