//! schemathesis (PyPI, pinned in `scripts/peers.sh`) against a live gateway's
//! `/admin/openapi.json`, as an admin: generated requests for every documented operation
//! (examples, coverage, fuzzing and stateful phases; seeded, so a failure replays) must never
//! get a 5xx, and every answer must match the document (status code, content type, body
//! schema). Two servers and a team exist first, so documents that name them can be saved.

use anyhow::{Context, Result, ensure};
use e2e::{StoreKind, TestGateway};
use reqwest::Method;
use serde_json::json;

/// Examples per operation and phase: ~2,500 requests, under a minute here.
const MAX_EXAMPLES: &str = "30";

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() -> Result<()> {
    let (Some(python), Some(everything), Some(echo)) = (
        mcpgw::testing::peer_url("MCPGW_TEST_PYTHON"),
        mcpgw::testing::peer_url("MCPGW_TEST_EVERYTHING_URL"),
        mcpgw::testing::peer_url("MCPGW_TEST_ECHO_URL"),
    ) else {
        return Ok(());
    };
    let gw = TestGateway::start(StoreKind::Sqlite, &[]).await?;
    for (name, url) in [("everything", &everything), ("echo", &echo)] {
        let (s, body) = gw
            .admin(
                Method::POST,
                "/admin/servers",
                Some(json!({"name": name, "url": url, "auth": {"type": "none"}})),
            )
            .await?;
        ensure!(s == 201, "registering {name}: {s} {body}");
    }
    let (s, body) = gw
        .admin(
            Method::POST,
            "/admin/teams",
            Some(json!({"name": "eng", "members": ["a@example.com"]})),
        )
        .await?;
    ensure!(s == 201, "team: {s} {body}");

    let (s, doc) = gw.admin(Method::GET, "/admin/openapi.json", None).await?;
    ensure!(s == 200, "the document: {s}");
    let operations: usize = doc["paths"]
        .as_object()
        .context("no paths")?
        .values()
        .map(|ops| ops.as_object().map_or(0, |o| o.len()))
        .sum();

    let seed = std::env::var("MCPGW_TEST_SEED").unwrap_or_else(|_| "20261205".into());
    let reports = tempfile::tempdir()?;
    let run = tokio::process::Command::new(&python)
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("{}/admin/openapi.json", gw.base))
        .args(["--header", &format!("Authorization: Bearer {}", gw.admin_key)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", &seed, "--workers", "2"])
        .args(["--request-timeout", "20", "--no-color", "--report-dir"])
        .arg(reports.path())
        // schemathesis keeps a cache in its working directory: not in the checkout
        .current_dir(reports.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), run)
        .await
        .context("schemathesis ran for more than 5 minutes")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "schemathesis (seed {seed}) failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // a run that tested nothing would also exit 0: every selected operation was tested, and
    // the selection is (nearly: schemathesis' own count differs by one) the whole document
    let number_after = |label: &str| -> Option<usize> {
        let rest = &stdout[stdout.find(label)? + label.len()..];
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let (selected, tested) = (number_after("Selected:"), number_after("Tested:"));
    ensure!(
        selected == tested && tested.is_some_and(|n| n + 1 >= operations),
        "schemathesis tested {tested:?} of {selected:?} selected operations ({operations} documented):\n{stdout}"
    );
    Ok(())
}
