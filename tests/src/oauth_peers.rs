//! Per-user OAuth2 peers a test controls itself: its own `oidc-provider` (token lifetime and
//! options chosen by the test) and the JWT-protected Python MCP server trusting it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::mcp::{McpClient, SESSION};

/// A loopback port for a process the test starts (which binds it itself). Taken from below
/// the kernel's ephemeral range (32768-60999 here), which is where `bind(0)` and every
/// outgoing connection get theirs: a port picked with `bind(0)` and released could be taken
/// by another row's client or callback server before its owner bound it ("address already
/// in use" in the client matrix). Each port is handed out once per process, from a start
/// that differs per process, and only if it can be bound now.
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port below the ephemeral range")
}

pub async fn wait_ready(url: &str, what: &str) -> Result<()> {
    for _ in 0..150 {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().as_u16() < 500)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not start at {url}")
}

pub struct Peers {
    pub issuer: String,
    pub upstream: String,
    /// Killed when the test ends (`kill_on_drop`).
    _children: Vec<tokio::process::Child>,
    _keys: tempfile::TempDir,
}

impl Peers {
    /// How often the provider's token endpoint answered a refresh: (succeeded, refused).
    pub async fn refreshes(&self) -> Result<(u64, u64)> {
        let stats: serde_json::Value = reqwest::get(format!("{}/_stats", self.issuer))
            .await?
            .error_for_status()?
            .json()
            .await?;
        let of = |k: &str| stats["refresh_token"][k].as_u64().unwrap_or(0);
        Ok((of("success"), of("error")))
    }

    /// How often the provider's token endpoint was asked to redeem an authorization code,
    /// whatever it answered.
    pub async fn code_redemptions(&self) -> Result<u64> {
        let stats: serde_json::Value = reqwest::get(format!("{}/_stats", self.issuer))
            .await?
            .error_for_status()?
            .json()
            .await?;
        let of = |k: &str| stats["authorization_code"][k].as_u64().unwrap_or(0);
        Ok(of("success") + of("error"))
    }
}

/// Starts the provider (access tokens living `access_ttl` seconds, `provider_env` on top)
/// and the protected server; `None` when the peers' toolchain is not set up.
pub async fn start(access_ttl: &str, provider_env: &[(&str, &str)]) -> Result<Option<Peers>> {
    mcpgw::crypto::install_tls_provider();
    let (Some(python), Some(node_modules)) = (
        mcpgw::testing::peer_url("MCPGW_TEST_PYTHON"),
        mcpgw::testing::peer_url("MCPGW_TEST_NODE_MODULES"),
    ) else {
        return Ok(None);
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let keys = tempfile::tempdir()?;
    let (oidc_port, up_port) = (free_port()?, free_port()?);
    let issuer = format!("http://127.0.0.1:{oidc_port}");
    let oidc = tokio::process::Command::new("node")
        .arg(root.join("peers/oidc_provider.mjs"))
        .arg(oidc_port.to_string())
        .env("OIDC_KEYS_DIR", keys.path())
        .env("OIDC_ACCESS_TTL", access_ttl)
        .env("MCPGW_TEST_NODE_MODULES", &node_modules)
        .envs(provider_env.iter().copied())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting oidc-provider")?;
    let up = spawn_protected_server(&python, up_port, &issuer)?;
    wait_ready(
        &format!("{issuer}/.well-known/openid-configuration"),
        "oidc-provider",
    )
    .await?;
    let upstream = format!("http://127.0.0.1:{up_port}/mcp");
    wait_ready(
        &format!("http://127.0.0.1:{up_port}/.well-known/oauth-protected-resource/mcp"),
        "the protected server",
    )
    .await?;
    Ok(Some(Peers {
        issuer,
        upstream,
        _children: vec![oidc, up],
        _keys: keys,
    }))
}

fn spawn_protected_server(python: &str, port: u16, issuer: &str) -> Result<tokio::process::Child> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    tokio::process::Command::new(python)
        .arg(root.join("peers/protected_server.py"))
        .args([port.to_string(), issuer.to_owned()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the protected server")
}

/// Another JWT-protected Python MCP server trusting `issuer`, on `port` (chosen earlier, so a
/// test can register it while nothing listens there); ready when this returns, killed when
/// the child is dropped. Its MCP URL is `http://127.0.0.1:{port}/mcp`.
pub async fn start_protected_server(port: u16, issuer: &str) -> Result<tokio::process::Child> {
    let python = mcpgw::testing::peer_url("MCPGW_TEST_PYTHON").context("python")?;
    let child = spawn_protected_server(&python, port, issuer)?;
    wait_ready(
        &format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"),
        "the protected server",
    )
    .await?;
    Ok(child)
}

/// Opens a connect URL in the headless browser (`tests/clients/connect_browser.py`) with
/// `bearer` (empty: none) and logs in at the provider as `login`; returns what it saw.
pub async fn browse(url: &str, bearer: &str, login: &str) -> Result<Value> {
    let python = mcpgw::testing::peer_url("MCPGW_TEST_PYTHON").context("python")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/connect_browser.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .args([url, bearer, login])
        .kill_on_drop(true)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "browser failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Calls the protected server's `whoami` through the MCP endpoint at `mcp_url`: who the
/// upstream saw (`sub`) and a digest of the token it got (`token_sha256`).
pub async fn whoami(mcp_url: &str, key: &str) -> Result<Value> {
    let mut c = McpClient::connect(mcp_url, key, SESSION).await?;
    let r = c.call_tool("whoami", json!({})).await?;
    let result = r.result()?;
    ensure!(result["isError"] != true, "{}", r.raw);
    // the SDK answers a dict as structured content, or as JSON text
    if result["structuredContent"].is_object() {
        return Ok(result["structuredContent"].clone());
    }
    let text = result["content"][0]["text"].as_str().context("no text")?;
    serde_json::from_str(text).with_context(|| format!("whoami said {text}"))
}
