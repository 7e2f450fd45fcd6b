//! [`Emulator`]: one `cargo lambda watch` on a loopback port, under a supervisor that stops it
//! (and so its functions) when this process lets go of it, however it ends.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::functions::workspace_root;
use super::process::{process_alive, process_tree, signal};

use crate::oauth_peers::free_port;

/// Runs `cargo lambda watch` (arguments after `$0`) until stdin closes, then stops it with
/// SIGTERM (it stops its function processes itself) and waits for it.
const SUPERVISOR: &str = r#"
"$0" "$@" < /dev/null &
watch=$!
while read -r _; do :; done
kill -TERM "$watch" 2>/dev/null
wait "$watch"
"#;

/// One `cargo lambda watch` serving every function of the workspace on a loopback port.
pub struct Emulator {
    pub port: u16,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    pid: u32,
    log: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// Starts the emulator with `env` for the functions and waits until it answers.
    pub async fn start(cargo_lambda: &Path, env: &[(String, String)]) -> Result<Self> {
        mcpgw::crypto::install_tls_provider();
        let dir = tempfile::tempdir()?;
        let env_file = dir.path().join("functions.env");
        let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&env_file, lines)?;
        let log = dir.path().join("watch.log");
        let log_file = std::fs::File::create(&log)?;
        let port = free_port()?;
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg(cargo_lambda)
            .args([
                "lambda",
                "watch",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
            ])
            .arg(port.to_string())
            .args(["--ignore-changes", "--disable-cors", "--env-file"])
            .arg(&env_file)
            .current_dir(workspace_root())
            .stdin(std::process::Stdio::piped())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // Its own process group: a Ctrl-C in the terminal reaches the test, not the
            // emulator, and the test's cleanup stops it in order.
            .process_group(0);
        // The functions must see only what the template gives them.
        for (k, _) in std::env::vars_os() {
            if let Some(k) = k.to_str()
                && (k.starts_with("MCPGW_") || k.starts_with("AWS_"))
            {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", cargo_lambda.display()))?;
        let pid = child.id().context("emulator exited at once")?;
        let stdin = child.stdin.take();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(600))
            .build()?;
        let emulator = Self {
            port,
            child,
            stdin,
            pid,
            log,
            http,
            _dir: dir,
        };
        emulator.wait_ready().await?;
        Ok(emulator)
    }

    async fn wait_ready(&self) -> Result<()> {
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{}/", self.port);
        loop {
            // The emulator answers `/` with its own 404 ("Default function disabled"); anything
            // else on the port is someone else.
            if let Ok(resp) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && let Ok(body) = resp.json::<Value>().await
                && body["title"] == "Default function disabled"
            {
                return Ok(());
            }
            // The supervisor outlives the emulator (it waits for its stdin to close): the
            // emulator must be its child.
            let watch_gone =
                started.elapsed() > Duration::from_secs(1) && process_tree(self.pid).len() < 2;
            if watch_gone || started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "cargo lambda watch did not start on port {}; its log:\n{}",
                    self.port,
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The emulator's Invoke API URL of `function`.
    pub fn invoke_url(&self, function: &str) -> String {
        format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{function}/invocations",
            self.port
        )
    }

    /// The emulator's function URL of `function` (it builds a payload 2.0 event itself).
    pub fn function_url(&self, function: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}/lambda-url/{function}{path}", self.port)
    }

    /// Invokes `function` with a raw event. A buffered function answers with its JSON result;
    /// a streaming one with the HTTP response its metadata prelude describes, status included
    /// (the emulator decodes the prelude and marks the response
    /// `lambda-runtime-function-response-mode: streaming`).
    pub async fn invoke(&self, function: &str, event: &Value) -> Result<reqwest::Response> {
        self.http
            .post(self.invoke_url(function))
            .header("content-type", "application/json")
            .body(event.to_string())
            .send()
            .await
            .with_context(|| format!("invoking {function}"))
    }

    /// Invokes a buffered `function` and returns its JSON result.
    pub async fn invoke_json(&self, function: &str, event: &Value) -> Result<Value> {
        let resp = self.invoke(function, event).await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!(
                "invoking {function} answered {status}: {text}\nemulator log:\n{}",
                self.log_tail(40)
            );
        }
        serde_json::from_str(&text).with_context(|| format!("{function} returned non-JSON: {text}"))
    }

    /// The supervisor, the emulator and every function process it started.
    pub fn process_ids(&self) -> Vec<u32> {
        process_tree(self.pid)
    }

    /// The last `n` lines of the emulator's output (its own log and the functions').
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- cargo lambda watch on port {} (last 60 lines)\n{}",
                self.port,
                self.log_tail(60)
            );
        }
        let tree = process_tree(self.pid);
        // EOF on the supervisor's stdin: it sends SIGTERM to the emulator and waits for it.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let _ = self.child.try_wait();
            if !tree.iter().any(|p| process_alive(*p)) {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("cargo lambda watch ignored SIGTERM for 15 s: killing its processes");
                signal("-KILL", &format!("-{}", self.pid));
                for pid in tree.iter().filter(|p| process_alive(**p)) {
                    // Each function runs in a session (and group) of its own.
                    signal("-KILL", &format!("-{pid}"));
                    signal("-KILL", &pid.to_string());
                }
                std::thread::sleep(Duration::from_millis(200));
                let _ = self.child.try_wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
