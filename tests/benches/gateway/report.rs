//! The printed tables and the targets and goals judged in the JSON report.

use serde_json::{Value, json};

use crate::measure::{Row, median};
use crate::under_test::Backend;

pub(crate) fn print_rows(rows: &[Row]) {
    println!(
        "\nlatency in ms, p50/p99 over all rounds; added = gateway - direct; throughput in calls/s; \
         ratio = gateway/direct throughput over all rounds, then the median and range of the \
         per-round ratios"
    );
    println!(
        "upstream   era        conc  calls | dir p50 dir p99 |  gw p50  gw p99 |    +p50    +p99 \
         | dir rps  gw rps | ratio median     range"
    );
    for r in rows {
        let ratios = r.round_ratios();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<10} {:<10} {:>4} {:>6} | {:>7.3} {:>7.3} | {:>7.3} {:>7.3} | {:>+7.3} {:>+7.3} | \
             {:>7.0} {:>7.0} | {:>5.2} {:>6.2} {lo:>4.2}-{hi:<4.2}",
            r.upstream,
            r.era.label(),
            r.concurrency,
            r.gateway.calls,
            r.direct.p50_ms,
            r.direct.p99_ms,
            r.gateway.p50_ms,
            r.gateway.p99_ms,
            r.added_p50(),
            r.added_p99(),
            r.direct.rps,
            r.gateway.rps,
            r.ratio(),
            median(ratios),
        );
    }
    println!(
        "\nCPU time per call in µs, from /proc/*/task/*/schedstat: the gateway's threads, the \
         client's, the upstream's (- = not measured); messages echo-fast received per call\n\
         upstream   era        conc | direct: client upstream | gateway: gateway  client upstream \
         | echo-fast received per call through the gateway"
    );
    for r in rows {
        let [_, d_client, d_up] = r.cpu[0].per_call_us(r.direct.calls);
        let [g_gw, g_client, g_up] = r.cpu[1].per_call_us(r.gateway.calls);
        let up = |v: f64| {
            if r.cpu[0].0[2] == 0 {
                "-".to_owned()
            } else {
                format!("{v:.1}")
            }
        };
        let received = r.received[1]
            .iter()
            .map(|(m, n)| format!("{m} {n:.3}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{:<10} {:<10} {:>4} |         {d_client:>6.1} {:>8} |          {g_gw:>7.1} {g_client:>7.1} \
             {:>8} | {received}",
            r.upstream,
            r.era.label(),
            r.concurrency,
            up(d_up),
            up(g_up),
        );
    }
}

pub(crate) fn print_accounting(cold: &[Value], rows: &[Row], dynamo: &[Value]) {
    let sm = |v: &Value| {
        if v.is_null() {
            "-".to_owned()
        } else {
            v.to_string()
        }
    };
    println!(
        "\nstore and secrets traffic of the measured gateways (request-path reads: every store \
         read but get_config and list_configs, which the server, policy and rule caches run in the \
         background after their TTL; \
         resolves: secrets-port calls, cached or not; SM: GetSecretValue calls)"
    );
    println!("opening a client (totals; * = first use of the endpoint, nothing cached):");
    for c in cold {
        println!(
            "{} {:<10} {:<10} {:<20} {:<46} reads {} resolves/call {:.2} SM {}  {}",
            if c["endpoint_first_use"] == true {
                " *"
            } else {
                "  "
            },
            c["upstream"].as_str().unwrap_or_default(),
            c["era"].as_str().unwrap_or_default(),
            c["path"].as_str().unwrap_or_default(),
            c["requests"].as_str().unwrap_or_default(),
            c["store_reads"],
            c["secret_resolves_per_call"].as_f64().unwrap_or_default(),
            sm(&c["secrets_manager_calls"]),
            c["store_calls_by_method"],
        );
    }
    println!("warm tools/call, per call:");
    for r in rows {
        let a = &r.accounting;
        let calls = r.gateway.calls.max(1) as f64;
        println!(
            "  {:<10} {:<10} {:<20} conc {:<3} request-path reads {:.4} config refreshes {} \
             resolves {:.4}  {:?}",
            r.upstream,
            r.era.label(),
            Backend::Sqlite.label(),
            r.concurrency,
            a.request_path_reads() as f64 / calls,
            a.count("get_config"),
            a.resolves as f64 / calls,
            a.by_method(),
        );
    }
    for d in dynamo {
        println!(
            "  {:<10} {:<10} {:<20} seq      request-path reads {:.4} (max {} in one call) \
             config refreshes {} resolves {:.4} SM {}  p50 {:.3} ms  writes/call: rate limit \
             {:.4} audit batches {:.4}",
            d["upstream"].as_str().unwrap_or_default(),
            d["era"].as_str().unwrap_or_default(),
            d["path"].as_str().unwrap_or_default(),
            d["request_path_store_reads_per_call"]
                .as_f64()
                .unwrap_or_default(),
            d["max_request_path_store_reads_in_one_call"],
            d["config_refreshes"],
            d["secret_resolves_per_call"].as_f64().unwrap_or_default(),
            sm(&d["secrets_manager_calls"]),
            d["latency"]["p50_ms"].as_f64().unwrap_or_default(),
            d["rate_limit_writes_per_call"].as_f64().unwrap_or_default(),
            d["audit_batch_writes_per_call"]
                .as_f64()
                .unwrap_or_default(),
        );
    }
}

/// The latency and throughput targets, judged on release builds only. Reported, never
/// asserted: timings on a shared 2-core machine are noisy.
pub(crate) fn targets(rows: &[Row], judged: bool) -> Value {
    const ADDED_P50_MS: f64 = 0.3;
    const RATIO: f64 = 0.9;
    let verdict = |ok: bool| match (judged, ok) {
        (false, _) => "not judged (debug build)",
        (true, true) => "MET",
        (true, false) => "MISSED",
    };
    println!("\ntargets:");
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.concurrency == 1) {
        let ok = r.added_p50() < ADDED_P50_MS;
        println!(
            "  added p50 < {ADDED_P50_MS} ms at concurrency 1, {} {}: {:+.3} ms (median of \
             rounds {:+.3}): {}",
            r.upstream,
            r.era.label(),
            r.added_p50(),
            median(r.round_added_p50()),
            verdict(ok)
        );
        out.push(
            json!({"target": "added_p50_ms_below", "limit": ADDED_P50_MS,
            "upstream": r.upstream, "era": r.era.label(), "value": r.added_p50(), "met": ok}),
        );
    }
    for r in rows
        .iter()
        .filter(|r| r.concurrency == 32 && r.upstream == "echo-py")
    {
        let ok = r.ratio() >= RATIO;
        println!(
            "  throughput >= {RATIO}x direct at concurrency 32, {} {}: {:.3}x (median of \
             rounds {:.3}x): {}",
            r.upstream,
            r.era.label(),
            r.ratio(),
            median(r.round_ratios()),
            verdict(ok)
        );
        out.push(
            json!({"target": "throughput_ratio_at_least", "limit": RATIO,
            "upstream": r.upstream, "era": r.era.label(), "value": r.ratio(), "met": ok}),
        );
    }
    if !rows
        .iter()
        .any(|r| r.concurrency == 32 && r.upstream == "echo-py")
    {
        println!("  throughput at concurrency 32 against echo-py: not measured");
    }
    json!({"judged": judged, "checks": out})
}

/// The DynamoDB gateway's store and secrets goals (docs/performance.md, section 3 prices
/// them): at most one store read on the request path per warm call (the API-key lookup,
/// none while the key cache serves it) and no Secrets Manager call. Reported, not asserted.
pub(crate) fn goals(dynamo: &[Value]) -> Value {
    if dynamo.is_empty() {
        println!("\ngoals: not checked (no DynamoDB gateway: moto not running)");
        return Value::Null;
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let one_read = dynamo.iter().all(|d| {
        n(&d["max_request_path_store_reads_in_one_call"]) <= 1
            && n(&d["store_calls_by_method"]["find_api_key_by_hash"]) <= n(&d["calls"])
            && d["request_path_store_reads_per_call"]
                .as_f64()
                .is_some_and(|r| r <= 1.0)
    });
    let sm_calls: u64 = dynamo.iter().map(|d| n(&d["secrets_manager_calls"])).sum();
    // DynamoDB writes per counted call: the rate limit's conditional UpdateItem, and the
    // call's share of the audit BatchWriteItem (its one record is one item of a batch).
    let f = |v: &Value| v.as_f64().unwrap_or(f64::MAX);
    let writes = dynamo
        .iter()
        .map(|d| f(&d["rate_limit_writes_per_call"]) + f(&d["audit_batch_writes_per_call"]))
        .fold(0.0, f64::max);
    let met = |ok: bool| if ok { "MET" } else { "MISSED" };
    println!(
        "\ngoals (DynamoDB gateway, warm tools/call):\n  at most 1 request-path store read per \
         call (find_api_key_by_hash; 0 while the key cache serves), in every single call: {}\n  0 Secrets Manager calls: {} \
         ({sm_calls} in all warm calls)\n  at most 2 DynamoDB write requests per counted call \
         (rate limit + audit batch share): {} ({writes:.4} at most)",
        met(one_read),
        met(sm_calls == 0),
        met(writes <= 2.0),
    );
    json!({"one_store_read_per_warm_call_met": one_read,
           "dynamodb_write_requests_per_counted_call": writes,
           "secrets_manager_calls_in_warm_calls": sm_calls,
           "zero_secrets_manager_calls_met": sm_calls == 0})
}
