//! `cargo run -p local`: the whole gateway on 127.0.0.1:8787 (see `MCPGW_*` in the README).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = mcpgw::config::Config::from_env()?;
    mcpgw::telemetry::init(false);
    local::run(config).await
}
