//! The run: every upstream, era and concurrency, the accounting calls, and the cost of the
//! strict parse per message; writes the JSON report.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, ensure};
use mcpgw::config::Config;
use serde_json::{Value, json};

use crate::client::{Peer, Upstream, credential};
use crate::echo_fast::{echo_fast_received, start_echo_fast};
use crate::measure::{Row, compare, counted_calls, open_counted};
use crate::report::{goals, print_accounting, print_rows, targets};
use crate::settings::{
    ECHO_FAST_THREAD, Era, META_CAPABILITIES, META_CLIENT, META_VERSION, MODERN_VERSION, Settings,
    cores,
};
use crate::under_test::{Backend, Gateway, secret_name};

pub(crate) async fn run(s: Settings, gateway_rt: tokio::runtime::Handle) -> Result<()> {
    let t0 = Instant::now();
    let load_before = loadavg();
    let mut upstreams = vec![Upstream {
        name: "echo-fast",
        url: start_echo_fast(credential("echo-fast"))?,
        cpu: Some(("self".into(), Some(ECHO_FAST_THREAD))),
    }];
    if let Some(url) = mcpgw::testing::peer_url("MCPGW_TEST_ECHO_URL") {
        upstreams.push(Upstream {
            name: "echo-py",
            url,
            // Set by scripts/bench.sh; without it the table shows no upstream CPU.
            cpu: std::env::var("MCPGW_BENCH_ECHO_PY_PID")
                .ok()
                .filter(|p| !p.is_empty())
                .map(|pid| (pid, None)),
        });
    }
    let moto = mcpgw::testing::moto_endpoint();
    let secrets: Vec<(String, String)> = upstreams
        .iter()
        .map(|u| (secret_name(u.name), credential(u.name)))
        .collect();

    let mut backends = vec![Backend::Sqlite];
    if moto.is_some() {
        backends.push(Backend::Dynamo);
    }
    let mut gateways = Vec::new();
    for backend in backends {
        // Built on the gateway's runtime, so its server tasks and SDK clients live there.
        let gw = gateway_rt
            .spawn(Gateway::start(backend, moto.clone(), secrets.clone()))
            .await??;
        for u in &upstreams {
            gw.register(u).await?;
        }
        // MCPGW_BENCH_RATE_LIMIT=0 measures without the rule (audit records stay on).
        if std::env::var("MCPGW_BENCH_RATE_LIMIT").map_or(true, |v| v != "0") {
            gw.add_rate_limit().await?;
        }
        let key = gw.issue_key().await?;
        gateways.push((gw, key));
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;

    println!(
        "gateway bench: {} rounds x {} calls per path, concurrency {:?}, eras {:?}, warm-up {}, \
         {} gateway workers, {} cores, {} build",
        s.rounds,
        s.calls,
        s.concurrency,
        s.eras.iter().map(|e| e.label()).collect::<Vec<_>>(),
        s.warmup,
        s.gateway_workers,
        cores(),
        if s.bench {
            "bench (release)"
        } else {
            "test (debug, smoke)"
        },
    );

    let peer = |path: &'static str, url: String, authorization: String, era: Era| Peer {
        path,
        url,
        authorization,
        era,
        session: None,
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut cold: Vec<Value> = Vec::new();
    let mut dynamo: Vec<Value> = Vec::new();
    let mut errors: Vec<Value> = Vec::new();
    for u in &upstreams {
        for (era_index, &era) in s.eras.iter().enumerate() {
            let scenario = async {
                let mut direct = peer("direct", u.url.clone(), credential(u.name), era);
                direct.open(&client).await?;
                let mut opened = vec![direct.clone()];
                let mut through = Vec::new();
                for (gw, key) in &gateways {
                    let url = format!("{}/mcp/{}", gw.base, u.name);
                    let mut p = peer(gw.backend.label(), url, format!("Bearer {key}"), era);
                    let first_use = era_index == 0;
                    cold.push(
                        open_counted(&client, &mut p, &gw.counters, u.name, first_use).await?,
                    );
                    opened.push(p.clone());
                    through.push((gw, p));
                }
                let (sqlite, gateway) = &through[0];
                for &c in &s.concurrency {
                    let pair = (&direct, gateway);
                    rows.push(compare(&client, &s, u, pair, &sqlite.counters, c).await?);
                }
                for (gw, p) in through.iter().skip(1) {
                    for _ in 0..s.warmup.min(20) {
                        p.call(&client).await?;
                    }
                    let calls = s.calls.min(300);
                    let mut v = counted_calls(&client, p, &gw.counters, calls).await?;
                    v["upstream"] = json!(u.name);
                    v["era"] = json!(era.label());
                    v["path"] = json!(p.path);
                    dynamo.push(v);
                }
                for p in &opened {
                    p.close(&client).await?;
                }
                Ok::<_, anyhow::Error>(())
            };
            if let Err(e) = scenario.await {
                eprintln!("FAILED: {} with a {} client: {e:#}", u.name, era.label());
                errors.push(
                    json!({"upstream": u.name, "era": era.label(), "error": format!("{e:#}")}),
                );
            }
        }
    }

    print_rows(&rows);
    println!(
        "load average (1 min) at start {}, at end {} ({} cores)",
        load_before.map_or("?".into(), |l| format!("{l:.2}")),
        loadavg().map_or("?".into(), |l| format!("{l:.2}")),
        cores()
    );
    print_accounting(&cold, &rows, &dynamo);
    let parse = parse_cost(if s.bench { 20_000 } else { 200 });
    let targets = targets(&rows, s.bench);
    let goals = goals(&dynamo);

    let defaults = Config::from_lookup(|_| None)?;
    let report = json!({
        "bench": "gateway",
        "build": if s.bench { "bench" } else { "test" },
        "cores": cores(),
        "git_rev": std::env::var("MCPGW_BENCH_GIT_REV").ok(),
        "settings": {"rounds": s.rounds, "calls_per_path_per_round": s.calls, "warmup": s.warmup,
                     "concurrency": s.concurrency, "gateway_workers": s.gateway_workers,
                     "eras": s.eras.iter().map(|e| e.label()).collect::<Vec<_>>()},
        "upstreams": upstreams.iter().map(|u| json!({"name": u.name, "url": u.url})).collect::<Vec<_>>(),
        "server_cache_ttl_s": defaults.server_cache_ttl.as_secs(),
        "secrets_cache_ttl_s": defaults.secrets_cache_ttl.as_secs(),
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "cold": cold,
        "dynamodb_gateway": dynamo,
        "targets": targets,
        "goals": goals,
        "errors": errors,
        "elapsed_s": t0.elapsed().as_secs_f64(),
        "loadavg_1min": {"start": load_before, "end": loadavg()},
        "echo_fast_received_total": echo_fast_received(),
        "strict_parse": parse,
    });
    let dir = out_dir();
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(if s.bench {
        "gateway.json"
    } else {
        "gateway-smoke.json"
    });
    std::fs::write(&file, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwritten: {}", file.display());
    drop(gateways);
    ensure!(
        errors.is_empty(),
        "{} of {} scenarios failed (see FAILED above)",
        errors.len(),
        upstreams.len() * s.eras.len()
    );
    Ok(())
}

/// What reading client messages strictly costs (issue 22, item 5), measured in this process
/// alone so the shared cores' load barely shows: `parse_client_message` plus the
/// re-serialization that goes upstream, against the plain `serde_json` parse the gateway made
/// before (when it forwarded the client's own bytes); and the check of an upstream answer
/// (item 8). Microseconds per message, `iters` each.
pub(crate) fn parse_cost(iters: u32) -> Value {
    use std::hint::black_box;
    let envelope = json!({META_VERSION: MODERN_VERSION, META_CAPABILITIES: {},
        META_CLIENT: {"name": "mcpgw-bench", "version": "1"}});
    let items: Vec<Value> = (0..40)
        .map(|i| json!({"k": i, "text": "the quick brown fox jumps over the lazy dog ".repeat(2)}))
        .collect();
    let samples = [
        (
            "session-era tools/call (the bench's)",
            json!({"jsonrpc": "2.0", "id": 12345, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "m-3-12345"}}}),
        ),
        (
            "2026-07-28 tools/call (the bench's)",
            json!({"jsonrpc": "2.0", "id": 12345, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "m-3-12345"}, "_meta": envelope}}),
        ),
        (
            "tools/call with 4 KiB of arguments",
            json!({"jsonrpc": "2.0", "id": 12345, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"items": items}}}),
        ),
    ];
    let mut rows = Vec::new();
    println!("\nstrict parse + re-serialization per client message (us), {iters} iterations each:");
    for (label, message) in samples {
        let bytes = serde_json::to_vec(&message).unwrap_or_default();
        let time = |f: &dyn Fn()| {
            for _ in 0..iters / 10 {
                f();
            }
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
        };
        let before = time(&|| {
            black_box(serde_json::from_slice::<Value>(black_box(&bytes)).ok());
        });
        let now = time(&|| {
            if let Ok(p) = mcpgw::mcp::jsonrpc::parse_client_message(black_box(&bytes)) {
                for m in p.messages() {
                    black_box(m.to_bytes());
                }
            }
        });
        println!(
            "  {label:<40} {:>6} bytes  serde_json {before:>7.2}  strict + re-serialize {now:>7.2}  added {:>+7.2}",
            bytes.len(),
            now - before
        );
        rows.push(
            json!({"message": label, "bytes": bytes.len(), "serde_json_parse_us": before,
            "strict_parse_and_reserialize_us": now, "added_us": now - before}),
        );
    }
    // Item 8's check of each upstream answer (JSON-RPC, and whose response it is), on the
    // echo tool's answer: read without building the answer.
    let answer = json!({"jsonrpc": "2.0", "id": 12345,
        "result": {"content": [{"type": "text", "text": "m-3-12345"}]}});
    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
    let t = Instant::now();
    for _ in 0..iters {
        black_box(mcpgw::mcp::jsonrpc::read_upstream_message(black_box(
            &bytes,
        )));
    }
    let check = t.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
    println!(
        "  {:<40} {:>6} bytes  answer check {check:>7.2}",
        "the echo answer (item 8's check)",
        bytes.len()
    );
    json!({"iterations": iters, "rows": rows,
        "answer_check": {"bytes": bytes.len(), "us": check}})
}

/// `$CARGO_TARGET_DIR/bench`, or the target folder this binary was built in
/// (`<target>/<profile>/deps/gateway-<hash>`).
pub(crate) fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            exe.ancestors().nth(3).map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("bench")
}

/// The 1-minute load average: other work on the machine skews every figure.
pub(crate) fn loadavg() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
