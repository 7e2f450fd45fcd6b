//! token-refresh Lambda: invoked by an EventBridge schedule; runs one sweep per event. Outside
//! Lambda it runs one sweep and exits (handy for cron on a single box).

use anyhow::Context;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = mcpgw::config::Config::from_env()?;
    mcpgw::telemetry::init(config.in_lambda);
    let in_lambda = config.in_lambda;
    let state = mcpgw::state::AppState::build(config)
        .await
        .context("building state")?;
    if !in_lambda {
        let report = token_refresh::sweep(&state).await;
        // What the sweep recorded (refresh failures) reaches the store before the exit.
        state.invocation_hooks().run().await;
        let report = report?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let handler = service_fn(move |_event: LambdaEvent<serde_json::Value>| {
        let state = state.clone();
        async move {
            let report = token_refresh::sweep(&state).await;
            // Before the sandbox may be frozen (see mcpgw::invocation).
            state.invocation_hooks().run().await;
            report.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        }
    });
    lambda_runtime::run(handler)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
