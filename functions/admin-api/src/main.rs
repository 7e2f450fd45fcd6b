//! admin-api Lambda: builds the shared state once, then serves the admin router.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = mcpgw::config::Config::from_env()?;
    mcpgw::telemetry::init(config.in_lambda);
    let listen = config.listen;
    let state = mcpgw::state::AppState::build(config)
        .await
        .context("building state")?;
    mcpgw::runtime::serve(admin_api::app(state), listen).await?;
    Ok(())
}
