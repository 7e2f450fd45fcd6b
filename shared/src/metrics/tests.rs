//! The metrics from their sources, the EMF lines against the format's rules, and the
//! Prometheus text's shape. (The e2e crate's `observability.rs` parses both with the
//! published EMF schema and Prometheus' own parser.)

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::audit::{AuditRecord, Decision, Event, Outcome};

fn emf_metrics() -> Metrics {
    Metrics::new(&MetricsConfig {
        emf_namespace: Some("MCPGateway/test".into()),
        listen: None,
    })
}

fn call(tool: &str, decision: Decision, status: &str) -> AuditRecord {
    let mut r = AuditRecord::new(Event::ToolCall, decision);
    r.endpoint = Some("github".into());
    r.tool = Some(tool.into());
    r.method = Some("tools/call".into());
    r.outcome = Some(Outcome {
        status: status.into(),
        code: None,
        http_status: Some(200),
    });
    r.latency_ms = Some(12.5);
    r.upstream_ms = Some(10.0);
    r.principal = Some(crate::audit::Actor {
        user: "alice@example.com".into(),
        auth: "api_key".into(),
        key_id: Some("key-123".into()),
        provider: None,
    });
    r
}

fn emf_lines(m: &Metrics) -> Vec<Value> {
    let mut out = Vec::new();
    m.flush_emf(&mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect()
}

/// The EMF specification's rules (the published JSON schema and the prose around it):
/// `_aws.Timestamp` an integer, `CloudWatchMetrics` directives with a 1-255 character
/// namespace, at least one dimension set of at most 30 keys each naming a string member of
/// the root, at most 100 metric definitions with a name and a valid unit, each naming a
/// number or an array of at most 100 numbers on the root.
pub(crate) fn check_emf_line(line: &Value) -> Result<(), String> {
    const UNITS: &[&str] = &[
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];
    let root = line.as_object().ok_or("root is not an object")?;
    let aws = root
        .get("_aws")
        .and_then(Value::as_object)
        .ok_or("no _aws object")?;
    if !aws
        .get("Timestamp")
        .is_some_and(|t| t.is_i64() || t.is_u64())
    {
        return Err("Timestamp is not an integer".into());
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .ok_or("CloudWatchMetrics is not an array")?;
    for d in directives {
        let ns = d["Namespace"].as_str().ok_or("no Namespace")?;
        if ns.is_empty() || ns.len() > 255 {
            return Err(format!("namespace length {}", ns.len()));
        }
        let sets = d["Dimensions"].as_array().ok_or("no Dimensions")?;
        if sets.is_empty() {
            return Err("Dimensions is empty".into());
        }
        for set in sets {
            let set = set.as_array().ok_or("a dimension set is not an array")?;
            if set.len() > 30 {
                return Err(format!("{} dimension keys", set.len()));
            }
            for key in set {
                let key = key.as_str().ok_or("a dimension key is not a string")?;
                match root.get(key) {
                    Some(Value::String(v)) if !v.is_empty() => {}
                    other => return Err(format!("dimension {key} has value {other:?}")),
                }
            }
        }
        let metrics = d["Metrics"].as_array().ok_or("no Metrics")?;
        if metrics.len() > 100 {
            return Err(format!("{} metric definitions", metrics.len()));
        }
        for m in metrics {
            let name = m["Name"].as_str().ok_or("a metric has no Name")?;
            if name.is_empty() || name.len() > 255 {
                return Err("metric name length".into());
            }
            if let Some(unit) = m.get("Unit")
                && !unit.as_str().is_some_and(|u| UNITS.contains(&u))
            {
                return Err(format!("unit {unit}"));
            }
            match root.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(values))
                    if values.len() <= 100 && values.iter().all(Value::is_number) => {}
                other => return Err(format!("metric {name} has value {other:?}")),
            }
        }
    }
    Ok(())
}

#[test]
fn records_become_calls_denials_and_limits_without_a_user() {
    let m = emf_metrics();
    m.observe_record(&call("search", Decision::Allow, "ok"));
    m.observe_record(&call("search", Decision::Allow, "is_error"));
    let mut limited = call("search", Decision::Limited, "ok");
    limited.upstream_ms = None;
    m.observe_record(&limited);
    m.observe_record(&call("search", Decision::WouldLimit, "ok"));
    m.observe_record(&call("hidden-one", Decision::Deny, "ok"));
    let mut auth = AuditRecord::new(Event::AuthFailed, Decision::Deny);
    auth.endpoint = Some("invented-by-anyone".into());
    auth.detail = Some(json!({"count": 7}));
    m.observe_record(&auth);
    let mut read = AuditRecord::new(Event::ResourceRead, Decision::Allow);
    read.endpoint = Some("files".into());
    read.tool = Some("file:///home/alice/secret-plans.txt".into());
    m.observe_record(&read);
    let mut refresh = AuditRecord::new(Event::RefreshFailed, Decision::Allow);
    refresh.endpoint = Some("github".into());
    m.observe_record(&refresh);

    let text = m.render_prometheus();
    assert!(
        !text.contains("mcpgw_refreshes_total{"),
        "the sweep counts refreshes, not records"
    );
    for want in [
        r#"mcpgw_calls_total{endpoint="github",method="tools/call",tool="search",outcome="ok"} 2"#,
        r#"mcpgw_calls_total{endpoint="github",method="tools/call",tool="search",outcome="is_error"} 1"#,
        r#"mcpgw_calls_total{endpoint="github",method="tools/call",tool="search",outcome="limited"} 1"#,
        r#"mcpgw_rate_limited_total{endpoint="github",tool="search",mode="enforce"} 1"#,
        r#"mcpgw_rate_limited_total{endpoint="github",tool="search",mode="audit"} 1"#,
        r#"mcpgw_denials_total{endpoint="none",reason="auth_failed"} 7"#,
        r#"mcpgw_denials_total{endpoint="github",reason="denied"} 1"#,
        r#"mcpgw_calls_total{endpoint="files",method="resources/read",tool="none",outcome="unknown"} 1"#,
        r#"mcpgw_upstream_duration_seconds_count{endpoint="github",method="tools/call",tool="search"} 3"#,
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    let lines = serde_json::to_string(&emf_lines(&m)).unwrap();
    for never in [
        "alice",
        "key-123",
        "secret-plans",
        "hidden-one",
        "invented-by-anyone",
    ] {
        assert!(!text.contains(never), "{never} in the metrics");
        assert!(!lines.contains(never), "{never} in the EMF lines");
    }
}

#[test]
fn requests_count_by_status_class_and_errors_by_reason() {
    let m = Metrics::default();
    m.observe_request(Some("github"), 200, Duration::from_micros(800), None);
    m.observe_request(
        Some("github"),
        502,
        Duration::from_millis(30),
        Some("upstream_unavailable"),
    );
    m.observe_request(Some("github"), 500, Duration::from_millis(1), None);
    // Not admitted (the caller resolves the endpoint): counted under `none`.
    m.observe_request(None, 404, Duration::from_millis(1), Some("not_found"));
    m.observe_request(None, 401, Duration::from_millis(1), Some("unauthorized"));
    let text = m.render_prometheus();
    for want in [
        r#"mcpgw_requests_total{endpoint="github",status_class="2xx"} 1"#,
        r#"mcpgw_requests_total{endpoint="github",status_class="5xx"} 2"#,
        r#"mcpgw_requests_total{endpoint="none",status_class="4xx"} 2"#,
        r#"mcpgw_errors_total{endpoint="github",reason="upstream_unavailable"} 1"#,
        r#"mcpgw_errors_total{endpoint="github",reason="http_5xx"} 1"#,
        r#"mcpgw_errors_total{endpoint="none",reason="not_found"} 1"#,
        r#"mcpgw_request_duration_seconds_bucket{endpoint="github",status_class="2xx",le="0.001"} 1"#,
        r#"mcpgw_request_duration_seconds_bucket{endpoint="github",status_class="2xx",le="+Inf"} 1"#,
        "mcpgw_audit_write_failures_total 0",
        "# TYPE mcpgw_request_duration_seconds histogram",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
}

#[test]
fn emf_lines_follow_the_format_and_carry_one_flush_each() {
    let m = emf_metrics();
    assert!(
        emf_lines(&m).is_empty(),
        "nothing observed, nothing written"
    );
    for _ in 0..150 {
        m.observe_record(&call("search", Decision::Allow, "ok"));
    }
    m.observe_request(Some("github"), 200, Duration::from_millis(3), None);
    m.inc_audit_write_failures(2);
    m.refreshed(RefreshOutcome::Refreshed, 4);
    let lines = emf_lines(&m);
    for line in &lines {
        check_emf_line(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let find = |metric: &str| {
        lines
            .iter()
            .find(|l| l.get(metric).is_some())
            .unwrap_or_else(|| panic!("no {metric} line in {lines:?}"))
    };
    let calls = find("Calls");
    assert_eq!(calls["Calls"], 150, "the count is exact");
    assert_eq!(
        calls["CallLatency"].as_array().unwrap().len(),
        100,
        "samples are capped"
    );
    assert_eq!(calls["CallLatency"][0], 12.5);
    assert_eq!(
        calls["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["endpoint", "method", "tool", "outcome"], ["outcome"]])
    );
    assert_eq!(
        calls["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "MCPGateway/test"
    );
    assert_eq!(
        find("AuditWriteFailures")["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([[]])
    );
    assert_eq!(find("Refreshes")["outcome"], "refreshed");
    assert_eq!(find("Requests")["status_class"], "2xx");
    // The next flush carries only what happened since.
    assert!(emf_lines(&m).is_empty());
    m.inc_audit_write_failures(1);
    let again = emf_lines(&m);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["AuditWriteFailures"], 1);
}

#[test]
fn the_rule_check_catches_what_cloudwatch_refuses() {
    let good = json!({"_aws": {"Timestamp": 1, "CloudWatchMetrics": [{"Namespace": "n",
        "Dimensions": [["d"]], "Metrics": [{"Name": "m", "Unit": "Count"}]}]}, "d": "x", "m": 1});
    check_emf_line(&good).unwrap();
    let mut too_many_dims = good.clone();
    let keys: Vec<String> = (0..31).map(|i| format!("d{i}")).collect();
    for k in &keys {
        too_many_dims[k] = json!("v");
    }
    too_many_dims["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([keys]);
    assert!(check_emf_line(&too_many_dims).is_err());
    let mut too_many_metrics = good.clone();
    let defs: Vec<Value> = (0..101)
        .map(|i| {
            too_many_metrics[format!("m{i}")] = json!(1);
            json!({"Name": format!("m{i}")})
        })
        .collect();
    too_many_metrics["_aws"]["CloudWatchMetrics"][0]["Metrics"] = json!(defs);
    assert!(check_emf_line(&too_many_metrics).is_err());
    for (path, bad) in [
        ("d", json!("")),
        ("m", json!("1")),
        ("m", json!(vec![1; 101])),
    ] {
        let mut l = good.clone();
        l[path] = bad;
        assert!(check_emf_line(&l).is_err(), "{l}");
    }
    let mut unit = good.clone();
    unit["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("Requests");
    assert!(check_emf_line(&unit).is_err());
}

#[test]
fn config_reads_the_namespace_and_listen_address() {
    let get = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let c = MetricsConfig::from_lookup(&get(&[]), true).unwrap();
    assert_eq!(c.emf_namespace.as_deref(), Some(DEFAULT_NAMESPACE));
    assert_eq!(
        MetricsConfig::from_lookup(&get(&[]), false)
            .unwrap()
            .emf_namespace,
        None
    );
    let c = MetricsConfig::from_lookup(
        &get(&[
            ("MCPGW_METRICS_NAMESPACE", "MCPGateway/prod"),
            ("MCPGW_METRICS_LISTEN", "127.0.0.1:9464"),
        ]),
        true,
    )
    .unwrap();
    assert_eq!(c.emf_namespace.as_deref(), Some("MCPGateway/prod"));
    assert_eq!(c.listen, Some("127.0.0.1:9464".parse().unwrap()));
    for bad in [
        &[("MCPGW_METRICS_NAMESPACE", "no\"quotes")][..],
        &[("MCPGW_METRICS_LISTEN", "9464")],
        &[("MCPGW_EMF", "yes")],
    ] {
        assert!(
            MetricsConfig::from_lookup(&get(bad), true).is_err(),
            "{bad:?}"
        );
    }
}

/// What upstreams answer a name they do not know (the TypeScript and Python SDKs: an
/// `isError` result; others: JSON-RPC -32602), a refused call and a hidden tool: none of it
/// proves the name exists, so a thousand invented names are one `other` series per outcome.
#[test]
fn invented_tool_names_are_never_labels() {
    let m = emf_metrics();
    for i in 0..1000 {
        let status = if i % 2 == 0 { "is_error" } else { "rpc_error" };
        m.observe_record(&call(&format!("invented-{i}"), Decision::Allow, status));
        m.observe_record(&call(
            &format!("limited-{i}"),
            Decision::Limited,
            "is_error",
        ));
        m.observe_record(&call(&format!("hidden-{i}"), Decision::Deny, "ok"));
        let mut prompt = call(&format!("prompt-{i}"), Decision::Allow, "rpc_error");
        prompt.event = Event::PromptGet;
        m.observe_record(&prompt);
    }
    let tools: Vec<String> = m
        .calls
        .snapshot()
        .iter()
        .map(|s| format!("{} {}/{}", s.labels[1], s.labels[2], s.labels[3]))
        .collect();
    assert_eq!(
        tools,
        [
            "prompts/get other/rpc_error",
            "tools/call other/is_error",
            "tools/call other/limited",
            "tools/call other/rpc_error"
        ],
        "one series per method and outcome, none per name"
    );
    assert_eq!(m.rate_limited.len(), 1);
    assert_eq!(
        m.calls.overflowed(),
        0,
        "nothing reached the family's bound"
    );
    let text = m.render_prometheus();
    let lines = serde_json::to_string(&emf_lines(&m)).unwrap();
    for never in ["invented-", "limited-", "hidden-", "prompt-"] {
        assert!(!text.contains(never), "{never} in the metrics");
        assert!(!lines.contains(never), "{never} in the EMF lines");
    }
    assert!(text.contains(
        r#"mcpgw_calls_total{endpoint="github",method="tools/call",tool="other",outcome="rpc_error"} 500"#
    ));
}

/// The legitimate baseline: a tool the upstream ran (`ok`) is a label from then on, for every
/// outcome and refusal of it, on that endpoint only (the same name elsewhere is not known).
#[test]
fn a_tool_the_upstream_ran_keeps_its_label() {
    let m = Metrics::default();
    m.observe_record(&call("search", Decision::Allow, "is_error"));
    m.observe_record(&call("search", Decision::WouldLimit, "ok"));
    m.observe_record(&call("search", Decision::Allow, "is_error"));
    m.observe_record(&call("search", Decision::Limited, "is_error"));
    m.observe_record(&call("search", Decision::Allow, "no_answer"));
    let mut elsewhere = call("search", Decision::Allow, "is_error");
    elsewhere.endpoint = Some("other-endpoint".into());
    m.observe_record(&elsewhere);
    let text = m.render_prometheus();
    for want in [
        r#"mcpgw_calls_total{endpoint="github",method="tools/call",tool="other",outcome="is_error"} 1"#,
        r#"mcpgw_calls_total{endpoint="github",method="tools/call",tool="search",outcome="ok"} 1"#,
        r#"mcpgw_calls_total{endpoint="github",method="tools/call",tool="search",outcome="is_error"} 1"#,
        r#"mcpgw_calls_total{endpoint="github",method="tools/call",tool="search",outcome="limited"} 1"#,
        r#"mcpgw_calls_total{endpoint="github",method="tools/call",tool="search",outcome="no_answer"} 1"#,
        r#"mcpgw_rate_limited_total{endpoint="github",tool="search",mode="enforce"} 1"#,
        r#"mcpgw_rate_limited_total{endpoint="github",tool="search",mode="audit"} 1"#,
        r#"mcpgw_calls_total{endpoint="other-endpoint",method="tools/call",tool="other",outcome="is_error"} 1"#,
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
}

/// An upstream that answers `ok` to any name teaches at most `KnownNames::MAX` names.
#[test]
fn known_names_are_bounded() {
    let known = KnownNames::default();
    let names: Vec<String> = (0..KnownNames::MAX + 50).map(|i| format!("t{i}")).collect();
    let labelled = names
        .iter()
        .filter(|n| known.label("e", 0, n, true) != registry::OTHER)
        .count();
    assert_eq!(labelled, KnownNames::MAX);
    assert_eq!(known.label("e", 0, "t0", false), "t0", "learned names stay");
    assert_eq!(
        known.label("e", 1, "t0", false),
        registry::OTHER,
        "per method"
    );
}

/// A denied endpoint is one the caller may not use or one that does not exist: any
/// authenticated caller chooses its name, so it is no label.
#[test]
fn denied_endpoints_are_not_labels() {
    let m = Metrics::default();
    let mut r = AuditRecord::new(Event::Denied, Decision::Deny);
    r.endpoint = Some("probe-1234".into());
    r.rule = Some("endpoint_access".into());
    m.observe_record(&r);
    let text = m.render_prometheus();
    assert!(
        text.contains(r#"mcpgw_denials_total{endpoint="none",reason="endpoint_access"} 1"#),
        "{text}"
    );
    assert!(!text.contains("probe-1234"));
}
