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
            assert!(
                !required,
                "{var} is not set but peers are required: run scripts/test-all.sh"
            );
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
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Admin key of states made by `local_state`.
pub const TEST_ADMIN_KEY: &str = "test-admin-key-0123456789";

#[cfg(feature = "sqlite")]
/// A complete in-process state for router tests: SQLite in a temp folder (kept alive by the
/// returned guard), secrets from `secrets` (`MCPGW_SECRET_*` names), the bootstrap admin key
/// [`TEST_ADMIN_KEY`], and extra settings from `vars`.
pub fn local_state(
    secrets: &[(&str, &str)],
    vars: &[(&str, &str)],
) -> (crate::state::AppState, tempfile_guard::TempDir) {
    use std::collections::HashMap;
    use std::sync::Arc;
    let dir = tempfile_guard::TempDir::new();
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.entry("MCPGW_DATA_DIR".into())
        .or_insert_with(|| dir.path().display().to_string());
    env.entry("MCPGW_BOOTSTRAP_ADMIN_KEY".into())
        .or_insert_with(|| TEST_ADMIN_KEY.into());
    let config = crate::config::Config::from_lookup(|k| env.get(k).cloned()).expect("test config");
    let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("test.sqlite3"))
        .expect("sqlite store");
    let secrets = crate::secrets::env::EnvSecrets::from_map(
        secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let state = crate::state::AppState::from_parts(
        config,
        Arc::new(store),
        Arc::new(secrets),
        Arc::new(crate::clock::SystemClock),
    )
    .expect("test state");
    (state, dir)
}

/// A temporary folder removed on drop (kept tiny so the library needs no tempfile dependency).
pub mod tempfile_guard {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(super::unique_name("mcpgw-test"));
            std::fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Default for TempDir {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
