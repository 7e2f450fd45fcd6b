//! Helpers for tests that need real peers (moto, MCP servers). The test command
//! (`scripts/test-all.sh`) starts the peers and exports their addresses; with
//! `MCPGW_REQUIRE_PEERS=1` (set by that script and in CI) a missing peer fails the test
//! instead of skipping it, so CI can never pass by silently skipping.

/// The address of an external peer from `var`, or `None` (after saying so) when the peer is
/// not running and peers are optional.
pub fn peer_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let required = std::env::var("MCPGW_REQUIRE_PEERS").is_ok_and(|v| v == "1")
                || std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!required, "{var} is not set but peers are required: run scripts/test-all.sh");
            eprintln!("skipping: {var} not set (run scripts/test-all.sh to start the peers)");
            None
        }
    }
}

/// moto's endpoint (`MCPGW_TEST_AWS_ENDPOINT`).
pub fn moto_endpoint() -> Option<String> {
    peer_url("MCPGW_TEST_AWS_ENDPOINT")
}

/// A name unique to this process and call, so tests sharing one moto never collide.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}
