//! The `local` binary as a user runs it: starts on a free port with a fresh data folder,
//! prints the bootstrap admin key exactly once (first start only), keeps it valid across
//! restarts, creates its key file private, answers /healthz, sends `/` to the console, and
//! stops on SIGTERM; `--help` and `--version` print and exit without serving, other arguments
//! and a data folder that cannot be created fail naming what was wrong; and it sheds clients
//! that trickle their requests (slowloris) while serving the others. `audit verify` checks
//! the data folder's audit trail and exits 1 naming what was tampered with.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Gateway {
    child: Child,
    base: String,
    lines: Vec<String>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary and waits for its `listening on http://ADDR` line.
fn start(data_dir: &std::path::Path) -> Gateway {
    start_with(data_dir, &[])
}

fn start_with(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Gateway {
    let child = Command::new(env!("CARGO_BIN_EXE_local"))
        .envs(env.iter().copied())
        .env("MCPGW_LISTEN", "127.0.0.1:0")
        .env("MCPGW_DATA_DIR", data_dir.join("data"))
        .env_remove("MCPGW_BOOTSTRAP_ADMIN_KEY")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn local");
    let mut child = child;
    let stdout = child.stdout.take().unwrap();
    // Own the child at once, so every exit path (a failed assertion too) kills and reaps it.
    let mut gw = Gateway {
        child,
        base: String::new(),
        lines: Vec::new(),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("gateway did not report listening");
        let found = line
            .split("listening on ")
            .nth(1)
            .map(|s| s.trim().to_owned());
        gw.lines.push(line);
        if let Some(base) = found {
            gw.base = base;
            return gw;
        }
    }
}

/// Runs the binary with `args` (data folder `data_dir`) to its exit, which must come within
/// 30 s: a binary that started serving instead never exits and fails here.
fn run_to_exit(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_local"))
        .args(args)
        .env("MCPGW_LISTEN", "127.0.0.1:0")
        .env("MCPGW_DATA_DIR", data_dir)
        .env_remove("MCPGW_BOOTSTRAP_ADMIN_KEY")
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn local");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "local {args:?} did not exit (it served?): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn bootstrap_key(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find_map(|l| {
            l.split("bootstrap admin key (shown once, keep it safe): ")
                .nth(1)
        })
        .map(|k| k.trim().to_owned())
}

#[tokio::test]
async fn first_start_prints_admin_key_once_and_it_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    mcpgw::crypto::install_tls_provider();
    let http = reqwest::Client::new();

    let gw = start(dir.path());
    let key = bootstrap_key(&gw.lines).expect("first start prints the bootstrap admin key");
    assert!(key.starts_with("mcpgw_"));
    let health = http
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let list = http
        .get(format!("{}/admin/servers", gw.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(
            meta("data/keyring.json"),
            0o600,
            "the keyring file is private"
        );
        assert_eq!(meta("data"), 0o700, "the data folder is private");
    }
    // SIGTERM stops it cleanly (exit status 0).
    let mut gw = gw;
    let pid = gw.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = gw.child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    drop(gw);

    let gw2 = start(dir.path());
    assert_eq!(
        bootstrap_key(&gw2.lines),
        None,
        "the key is printed on the first start only"
    );
    let list = http
        .get(format!("{}/admin/servers", gw2.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        list.status(),
        200,
        "the generated key stays valid after a restart"
    );
    let bad = http
        .get(format!("{}/admin/servers", gw2.base))
        .bearer_auth("mcpgw_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
}

/// 200 clients each sending a header byte every second would hold 200 connections forever
/// without a header-read timeout (and, beyond the connection cap, starve everyone). With
/// `MCPGW_HEADER_READ_TIMEOUT_SECONDS=1` and a cap of 64, every one of them is disconnected
/// and a well-behaved request is still answered meanwhile.
#[tokio::test]
async fn trickling_clients_are_disconnected_and_others_still_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(
        dir.path(),
        &[
            ("MCPGW_HEADER_READ_TIMEOUT_SECONDS", "1"),
            ("MCPGW_MAX_CONNECTIONS", "64"),
        ],
    );
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        slow.push(tcp);
    }
    let trickle = tokio::spawn(async move {
        let mut open = slow.len();
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            open = 0;
            for tcp in &mut slow {
                let _ = tcp.write_all(b"x").await;
                let mut probe = [0u8; 256];
                match tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut probe)).await {
                    Ok(Ok(0) | Err(_)) => {}
                    _ => open += 1,
                }
            }
            if open == 0 {
                break;
            }
        }
        open
    });
    mcpgw::crypto::install_tls_provider();
    let health = reqwest::Client::new()
        .get(format!("{}/healthz", gw.base))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("a well-behaved client is served while 200 trickle");
    assert_eq!(health.status(), 200);
    assert_eq!(
        trickle.await.unwrap(),
        0,
        "trickling connections still open"
    );
}

/// `--help` and `--version` print to stdout and exit 0 before anything starts (no data
/// folder is created); an unknown argument is refused by name with exit status 2.
#[test]
fn help_and_version_print_and_exit_without_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for flag in ["--help", "-h"] {
        let out = run_to_exit(&[flag], &data);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{flag}: {:?}", out.status);
        assert!(text.contains("Usage: local"), "{flag}: {text}");
        assert!(text.contains("MCPGW_DATA_DIR"), "{flag}: {text}");
    }
    for flag in ["--version", "-V"] {
        let out = run_to_exit(&[flag], &data);
        assert!(out.status.success(), "{flag}: {:?}", out.status);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("local {}", env!("CARGO_PKG_VERSION"))
        );
    }
    let out = run_to_exit(&["--port", "9000"], &data);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'--port'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!data.exists(), "nothing started: no data folder");
}

/// A data folder that cannot be created (here a file stands where a parent folder should be)
/// stops the start with an error naming that folder, not only the OS error.
#[test]
fn a_data_folder_that_cannot_be_created_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"").unwrap();
    let data = file.join("data");
    let out = run_to_exit(&[], &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "could not create the data folder {}",
            data.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("MCPGW_DATA_DIR"), "{stderr}");
}

/// A person opening the gateway's address lands on the console.
#[tokio::test]
async fn the_root_sends_a_browser_to_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path());
    mcpgw::crypto::install_tls_provider();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(format!("{}/", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console");
    // and following it ends on the console's sign-in page
    let page = reqwest::get(format!("{}/", gw.base)).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.url().path().starts_with("/console/login"),
        "{}",
        page.url()
    );
}

/// `local audit verify` over a data folder whose audit trail a gateway wrote: a clean chain
/// exits 0 with `"ok": true`; after a forged record claiming a stored seq (a self-consistent
/// hash, written straight to the store) it exits 1 and names it `inserted`.
#[tokio::test]
async fn audit_verify_reports_the_data_folders_audit_trail() {
    use mcpgw::audit::{AuditRecord, Auditor, Decision, Event};
    use mcpgw::store::AuditStore;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    mcpgw::crypto::create_private_dir(&data).unwrap();
    let store =
        Arc::new(mcpgw::store::sqlite::SqliteStore::open(&data.join("gateway.sqlite3")).unwrap());
    let ring = mcpgw::crypto::Keyring::load_or_create_file(&data.join("keyring.json")).unwrap();
    let keyring = Arc::new(mcpgw::keyring::KeyringSource::Loaded(Arc::new(ring)));
    let audit = Auditor::new(store.clone(), keyring, Duration::from_secs(86_400));
    let mut second = None;
    for i in 0..3 {
        let mut r = AuditRecord::new(Event::ToolCall, Decision::Allow);
        r.tool = Some(format!("t{i}"));
        audit.emit(r);
    }
    audit.flush_and_seal().await;

    let verify = || {
        Command::new(env!("CARGO_BIN_EXE_local"))
            .args(["audit", "verify"])
            .env("MCPGW_DATA_DIR", &data)
            .env_remove("MCPGW_BOOTSTRAP_ADMIN_KEY")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run local audit verify")
    };
    let clean = verify();
    let report: serde_json::Value = serde_json::from_slice(&clean.stdout).unwrap();
    assert!(clean.status.success(), "{report}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["records"], 3);

    let dump = store.dump_audit(0, i64::MAX).await.unwrap();
    for r in dump.records {
        if r["chain"]["seq"] == 2 {
            second = Some(r);
        }
    }
    let mut forged: AuditRecord = serde_json::from_value(second.unwrap()).unwrap();
    forged.tool = Some("forged".into());
    let hash = mcpgw::audit::chain::record_hash(&serde_json::to_value(&forged).unwrap());
    forged.chain.as_mut().unwrap().hash = hash;
    store
        .put_audit(&[forged], &[], Duration::from_secs(86_400))
        .await
        .unwrap();
    let tampered = verify();
    assert_eq!(tampered.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&tampered.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["writers"][0]["problems"][0]["kind"], "inserted",
        "{report}"
    );
    // A malformed range is a usage error, not a report.
    let usage = Command::new(env!("CARGO_BIN_EXE_local"))
        .args(["audit", "verify", "--since", "soon"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}
