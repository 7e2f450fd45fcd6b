//! Headless Chromium for the tests: `tests/clients/browser.py` (Playwright for Python on
//! Debian's `chromium`) runs a list of steps in one browser context and reports what it saw.
//! Screenshots go to `$MCPGW_ARTIFACTS/<name>/` (default: `$CARGO_TARGET_DIR/artifacts`, which
//! `scripts/test-all.sh` keeps outside the clone), kept after the run as the tests' artifacts.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

/// Whether a browser is set up (`MCPGW_TEST_CHROMIUM`); required under CI.
pub fn available() -> bool {
    mcpgw::testing::peer_url("MCPGW_TEST_CHROMIUM").is_some()
}

/// Where the screenshots of `name` go.
pub fn screenshots(name: &str) -> PathBuf {
    let root = std::env::var("MCPGW_ARTIFACTS")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("artifacts")))
        .unwrap_or_else(|_| std::env::temp_dir().join("mcpgw-artifacts"));
    root.join(name)
}

/// Runs `steps` in one browser context; the runner's report. Fails when a step failed or a
/// page broke its Content-Security-Policy.
pub async fn run(name: &str, steps: Value) -> Result<Value> {
    let python = mcpgw::testing::peer_url("MCPGW_TEST_PYTHON").context("python")?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("steps.json");
    let shots = screenshots(name);
    std::fs::create_dir_all(&shots)?;
    std::fs::write(
        &script,
        serde_json::to_vec(&json!({"screenshots": shots, "steps": steps}))?,
    )?;
    let runner = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/browser.py");
    let out = tokio::process::Command::new(python)
        .arg(runner)
        .arg(&script)
        .kill_on_drop(true)
        .output()
        .await?;
    let report: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "browser runner said: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if report["ok"] != true {
        bail!("browser: {}", report);
    }
    ensure!(
        report["csp_violations"]
            .as_array()
            .is_none_or(|v| v.is_empty()),
        "no page of the console breaks its own CSP: {report}"
    );
    Ok(report)
}
