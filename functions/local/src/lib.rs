//! The whole gateway in one process: every function's routes on one port, the embedded
//! SQLite store (or DynamoDB with `MCPGW_STORE=dynamodb`), and the token-refresh sweep on a
//! timer. `main.rs` only calls [`run`]; end-to-end tests call [`router`] on their own state.

pub mod cli;
pub mod scrape;

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::response::Redirect;
use axum::routing::get;
use mcpgw::config::{BootstrapAdmin, Config};
use mcpgw::state::AppState;

/// How often the local refresh sweep runs (the Lambda schedule runs every 5 minutes).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Every function's routes on one router, with the common layers applied once, and `/`
/// sending a browser to the console (in AWS the API routes no `/`: only local mode has one
/// address a person opens).
pub fn router(state: AppState) -> Router {
    let console = format!("{}/console", state.config.public_path());
    let routes = Router::new()
        .route("/", get(move || async move { Redirect::to(&console) }))
        .merge(mcp_proxy::routes(state.clone()))
        .merge(admin_api::routes(state.clone()))
        .merge(oauth_callback::routes(state.clone()))
        .merge(scrape::admin_routes(state.clone()));
    mcpgw::http::finish(routes, state.config.max_body_bytes)
}

/// Runs the token-refresh sweep every [`SWEEP_EVERY`] until the process ends.
pub fn spawn_sweeper(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            if let Err(e) = token_refresh::sweep(&state).await {
                tracing::warn!(error = %mcpgw::http::error_chain(&e), "token refresh sweep failed");
            }
        }
    })
}

/// `local audit verify`: checks the audit trail in `config`'s store over `[since, until)`
/// (defaults: the last day; at most 31 days, since verify holds the range in memory) and
/// prints the report as JSON; whether it found no problem.
pub async fn audit_verify(
    config: Config,
    since: Option<i64>,
    until: Option<i64>,
) -> anyhow::Result<bool> {
    let (since, until) =
        mcpgw::audit::range::verify_range(since, until).context("the verify range")?;
    let state = AppState::build(config).await.context("building state")?;
    let report =
        mcpgw::audit::verify::verify_store(state.store.as_ref(), &state.keyring, since, until)
            .await
            .context("verifying the audit trail")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report.ok)
}

/// Starts the gateway from `config` and serves until SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (listen, limits) = (config.listen, config.server_limits);
    let generate_admin = config.bootstrap_admin == BootstrapAdmin::GenerateIfAbsent;
    let state = AppState::build(config).await.context("building state")?;
    if generate_admin
        && let Some(key) =
            mcpgw::identity::ensure_generated_bootstrap_key(state.store.as_ref(), state.clock.now())
                .await
                .context("creating the bootstrap admin key")?
    {
        // Printed once, to stdout only: only its hash is kept.
        println!("bootstrap admin key (shown once, keep it safe): {key}");
    }
    spawn_sweeper(state.clone());
    if let Some(addr) = state.config.metrics.listen {
        scrape::serve_open(state.clone(), addr)
            .await
            .with_context(|| {
                format!("binding the metrics listener {addr} (MCPGW_METRICS_LISTEN)")
            })?;
    }
    let audit = state.audit.clone();
    let hooks = state.invocation_hooks();
    mcpgw::runtime::serve(router(state), hooks, listen, limits).await?;
    // Whatever the background flusher has not written yet, and a seal of the chain's end.
    audit.flush_and_seal().await;
    Ok(())
}
