//! mcp-proxy Lambda: builds the shared state once per execution environment, then serves the
//! router (see `mcpgw::runtime::run_http_function`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mcpgw::runtime::run_http_function(mcp_proxy::app).await?;
    Ok(())
}
