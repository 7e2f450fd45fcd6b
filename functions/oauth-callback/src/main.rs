//! oauth-callback Lambda: builds the shared state once, then serves the OAuth router.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = mcpgw::config::Config::from_env()?;
    mcpgw::telemetry::init(config.in_lambda);
    let listen = config.listen;
    let state = mcpgw::state::AppState::build(config)
        .await
        .context("building state")?;
    mcpgw::runtime::serve(oauth_callback::app(state), listen).await?;
    Ok(())
}
