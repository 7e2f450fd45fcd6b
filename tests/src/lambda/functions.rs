//! The function binaries: where `cargo-lambda` is, and building the four functions the way
//! the emulator runs them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::FUNCTIONS;

pub(super) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn peers_required() -> bool {
    std::env::var("MCPGW_REQUIRE_PEERS").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The `cargo-lambda` binary: on `PATH`, else beside `MCPGW_TEST_PYTHON` (scripts/peers.sh
/// installs it into the same venv). `None` (after saying why) when it is missing and peers are
/// optional; a panic when they are required.
pub fn cargo_lambda() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("cargo-lambda"))
            .find(|c| c.is_file())
    });
    let beside_python = || {
        let python = PathBuf::from(std::env::var_os("MCPGW_TEST_PYTHON")?);
        Some(python.parent()?.join("cargo-lambda")).filter(|c| c.is_file())
    };
    if let Some(found) = on_path.or_else(beside_python) {
        return Some(found);
    }
    let why = "cargo-lambda is not on PATH nor beside MCPGW_TEST_PYTHON: install it with \
               `pip install cargo-lambda` (scripts/peers.sh setup does, into ~/.cache/mcp-gateway/venv) \
               and put that venv's bin folder on PATH";
    assert!(!peers_required(), "{why}");
    eprintln!("skipping: {why}");
    None
}

/// Builds the four function binaries (debug), the way `cargo lambda watch` will run them, so
/// the first invocation of each does not compile. Returns how long it took.
pub async fn build_functions() -> Result<Duration> {
    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // One `cargo build --bin NAME` per function, exactly what the emulator's `cargo run --bin
    // NAME` builds: building them together could unify dependency features differently and
    // leave the emulator a different artifact to compile.
    for f in FUNCTIONS {
        let out = tokio::process::Command::new(&cargo)
            .args(["build", "--manifest-path", "Cargo.toml", "--bin", f])
            .current_dir(workspace_root())
            .kill_on_drop(true)
            .output()
            .await
            .context("running cargo build")?;
        if !out.status.success() {
            bail!(
                "cargo build --bin {f} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(started.elapsed())
}
