//! Gateway overhead benchmark: the same MCP `tools/call` of the `echo` tool, on the same
//! upstream, sent directly and through the local gateway in alternating rounds of one run.
//!
//!   scripts/bench.sh                       starts the peers, runs this, stops the peers
//!   cargo bench -p e2e --bench gateway     the same against peers you started yourself
//!   cargo test -p e2e --bench gateway      a quick smoke run (debug build, few calls)
//!
//! Upstreams: `echo-fast`, a minimal but correct MCP server written for this bench (in this
//! process, on its own thread and single-threaded runtime), so the gateway's own cost is not
//! hidden behind a slow upstream; and `echo-py`, the Python MCP SDK server
//! (`tests/peers/echo_server.py --json`, `MCPGW_TEST_ECHO_URL`) when it runs.
//!
//! Clients: the session era (`initialize` with 2025-11-25, then every call with the
//! `Mcp-Session-Id` that answer carried: the gateway's own, sealed, when proxied) and the
//! 2026-07-28 era (`server/discover`, then every call with the `_meta` envelope and the
//! `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers). `MCPGW_BENCH_ERAS` picks.
//!
//! For each upstream, era and concurrency (`MCPGW_BENCH_CONCURRENCY`, default `1,32`): a
//! warm-up of each path, then `MCPGW_BENCH_ROUNDS` rounds of `MCPGW_BENCH_CALLS` calls direct
//! and the same number through the gateway, the order flipping every round so drift and noise
//! hit both paths alike. Reported: p50/p99 of each path, the gateway's added latency (gateway
//! minus direct), each path's throughput and their ratio (over all rounds, and the median of
//! the per-round ratios); the CPU time per call of the gateway's, the client's and the
//! upstream's threads (`/proc/*/task/*/schedstat`; the Python server's pid comes from
//! `MCPGW_BENCH_ECHO_PY_PID`, which scripts/bench.sh sets); and how many messages echo-fast
//! received per call through the gateway.
//!
//! The measured gateway is `local::router` on `mcpgw::runtime::serve_listener` (local mode:
//! SQLite, environment secrets) on its own multi-threaded runtime, as if it were its own
//! process; the client (reqwest) runs on another. Its store and secrets ports are wrapped in
//! counting decorators, so the report also states the store reads and secret resolutions per
//! warm call. When moto runs (`MCPGW_TEST_AWS_ENDPOINT`), a second gateway on DynamoDB and the
//! Secrets Manager adapter (Lambda mode) gets sequential calls for the same accounting,
//! including `SecretsManagerSecrets::backend_calls()`.
//!
//! Nothing here asserts a timing: the run fails only on wrong answers. Results also go to
//! `$CARGO_TARGET_DIR/bench/gateway.json` (`gateway-smoke.json` for the smoke run).
//!
//! One module per job: `settings` (knobs, eras), `counting` (the counted store and secrets),
//! `echo_fast` (the upstream), `under_test` (the gateway), `client` (the MCP client), `measure`
//! (CPU time, statistics, one comparison), `report` (tables, targets) and `run` (all of it).

mod client;
mod counting;
mod echo_fast;
mod measure;
mod report;
mod run;
mod settings;
mod under_test;

use std::time::Duration;

use anyhow::Result;

use crate::settings::{CLIENT_THREADS, GATEWAY_THREADS, Settings, cores};

fn main() -> Result<()> {
    // `cargo bench` passes --bench; `cargo test --bench gateway` does not: a smoke run then.
    let bench = std::env::args().any(|a| a == "--bench");
    let settings = Settings::from_env(bench)?;
    mcpgw::crypto::install_tls_provider();
    // Three runtimes, as if three processes: the gateway's (multi-threaded, by default one
    // worker per core like `cargo run -p local`), the client's, and echo-fast's
    // (single-threaded).
    let gateway_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.gateway_workers)
        .thread_name(GATEWAY_THREADS)
        // Blocking threads (SQLite lookups) live for the whole run, so their CPU time stays
        // countable (`cpu_ns`); tokio's default lets idle ones exit after 10 s.
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;
    // On a worker of the client runtime, where reqwest's connection tasks run too.
    let gateway = gateway_rt.handle().clone();
    let result = client_rt.block_on(async { tokio::spawn(run::run(settings, gateway)).await? });
    gateway_rt.shutdown_background();
    client_rt.shutdown_background();
    result
}
