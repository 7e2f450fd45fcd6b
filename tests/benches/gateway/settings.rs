//! What a run measures: the knobs (`MCPGW_BENCH_*`), the protocol eras and their constants.

use anyhow::{Context, Result, bail};

pub(crate) const SESSION_VERSION: &str = "2025-11-25";
/// Versions of the initialize handshake the echo server accepts.
pub(crate) const SESSION_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
pub(crate) const MODERN_VERSION: &str = "2026-07-28";
pub(crate) const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub(crate) const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub(crate) const META_CLIENT: &str = "io.modelcontextprotocol/clientInfo";
pub(crate) const META_SERVER: &str = "io.modelcontextprotocol/serverInfo";

/// Which handshake and request shape the bench's MCP client uses.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Era {
    /// `initialize` (2025-11-25) and an `Mcp-Session-Id` on every later request.
    Session,
    /// 2026-07-28: `server/discover`, then self-contained requests with a `_meta` envelope.
    Modern,
}

impl Era {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Era::Session => SESSION_VERSION,
            Era::Modern => MODERN_VERSION,
        }
    }
}

pub(crate) struct Settings {
    pub(crate) bench: bool,
    pub(crate) rounds: usize,
    /// Calls per path per round.
    pub(crate) calls: usize,
    /// Warm-up calls per path before each series (at least 2 × concurrency).
    pub(crate) warmup: usize,
    pub(crate) concurrency: Vec<usize>,
    pub(crate) eras: Vec<Era>,
    /// Worker threads of the gateway's runtime (local mode: one per core).
    pub(crate) gateway_workers: usize,
}

pub(crate) fn env_num(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

impl Settings {
    pub(crate) fn from_env(bench: bool) -> Result<Self> {
        let list = |var: &str, default: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let concurrency = list("MCPGW_BENCH_CONCURRENCY", "1,32")
            .split(',')
            .map(|c| c.trim().parse::<usize>().ok().filter(|&n| n > 0))
            .collect::<Option<Vec<_>>>()
            .context("MCPGW_BENCH_CONCURRENCY: a comma-separated list of positive numbers")?;
        let eras = list("MCPGW_BENCH_ERAS", "session,2026-07-28")
            .split(',')
            .map(|e| match e.trim() {
                "session" | "2025-11-25" => Ok(Era::Session),
                "modern" | "2026-07-28" => Ok(Era::Modern),
                other => bail!("MCPGW_BENCH_ERAS: unknown era {other:?} (session, 2026-07-28)"),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            bench,
            rounds: env_num("MCPGW_BENCH_ROUNDS", if bench { 10 } else { 2 }),
            calls: env_num("MCPGW_BENCH_CALLS", if bench { 1000 } else { 40 }),
            warmup: env_num("MCPGW_BENCH_WARMUP", if bench { 200 } else { 4 }),
            gateway_workers: env_num("MCPGW_BENCH_GATEWAY_WORKERS", cores()),
            concurrency,
            eras,
        })
    }
}

/// The cores this process may use: the default worker count of each runtime.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Names of this process's threads, per role, so their CPU time can be told apart.
pub(crate) const GATEWAY_THREADS: &str = "mcpgw-gateway";
pub(crate) const CLIENT_THREADS: &str = "mcpgw-client";
pub(crate) const ECHO_FAST_THREAD: &str = "mcpgw-echo-fast";
