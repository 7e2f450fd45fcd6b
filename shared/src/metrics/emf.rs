//! CloudWatch Embedded Metric Format: what the process observed since the last flush, as JSON
//! lines on stdout, which CloudWatch Logs turns into metrics (no API call, no extra latency).
//! In Lambda the flush runs at the end of each invocation, so each line is one invocation's
//! share.
//!
//! One line per label set that changed: its labels are the line's dimension members, with two
//! dimension sets, every label and a rollup (the closed labels only, or none), so an alarm
//! can watch the total without knowing endpoint or tool names. Counts are deltas;
//! latencies are the observed values in milliseconds (at most 100 per line, EMF's limit for
//! a value array), which CloudWatch aggregates into percentiles.
//!
//! Limits of the format kept here (and checked by the schema test): at most 100 metric
//! definitions per directive, at most 30 dimension keys per dimension set, dimension values
//! are non-empty strings, metric values are numbers or arrays of at most 100 numbers.

use std::io::Write;

use serde_json::{Map, Value, json};

use super::Metrics;
use super::registry::{Family, Kind};

/// The EMF names of a family: its count metric, its latency metric (histograms), and the
/// labels of its rollup dimension set.
struct Names {
    count: &'static str,
    latency: Option<&'static str>,
    rollup: &'static [&'static str],
}

fn names(family: &Family) -> Names {
    let (count, latency, rollup): (_, _, &'static [&'static str]) = match family.name {
        "mcpgw_request_duration_seconds" => ("Requests", Some("RequestLatency"), &["status_class"]),
        "mcpgw_errors_total" => ("Errors", None, &["reason"]),
        "mcpgw_call_duration_seconds" => ("Calls", Some("CallLatency"), &["outcome"]),
        "mcpgw_upstream_duration_seconds" => ("UpstreamCalls", Some("UpstreamLatency"), &[]),
        "mcpgw_denials_total" => ("Denials", None, &[]),
        "mcpgw_rate_limited_total" => ("RateLimited", None, &["mode"]),
        "mcpgw_refreshes_total" => ("Refreshes", None, &["outcome"]),
        "mcpgw_audit_write_failures_total" => ("AuditWriteFailures", None, &[]),
        "mcpgw_limit_store_failures_total" => ("LimitStoreFailures", None, &[]),
        "mcpgw_otlp_spans_dropped_total" => ("SpansDropped", None, &[]),
        _ => ("SpanExportFailures", None, &[]),
    };
    Names {
        count,
        latency: latency.filter(|_| family.kind == Kind::Histogram),
        rollup,
    }
}

impl Metrics {
    /// Writes one EMF line per label set observed since the last flush, and marks them
    /// flushed. Nothing when EMF is off or nothing changed.
    pub fn flush_emf(&self, out: &mut impl Write) -> std::io::Result<()> {
        let Some(namespace) = &self.emf_namespace else {
            return Ok(());
        };
        let now = crate::audit::record::now_ms();
        for line in self.emf_lines(namespace, now) {
            let mut bytes = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            out.write_all(&bytes)?;
        }
        out.flush()
    }

    /// [`Metrics::flush_emf`] to stdout; a closed stdout is ignored (metrics must never fail
    /// an invocation).
    pub fn flush_emf_stdout(&self) {
        let _ = self.flush_emf(&mut std::io::stdout().lock());
    }

    fn emf_lines(&self, namespace: &str, timestamp_ms: i64) -> Vec<Value> {
        let mut lines = Vec::new();
        for family in self.families() {
            let n = names(family);
            for series in family.snapshot() {
                let (count, samples) = series.take_delta();
                if count == 0 {
                    continue;
                }
                let mut line = Map::new();
                let dims: Vec<&str> = family.labels.iter().map(|l| l.name).collect();
                for (label, value) in dims.iter().zip(series.labels.iter()) {
                    line.insert((*label).to_owned(), Value::String(value.to_string()));
                }
                let mut metrics = vec![json!({"Name": n.count, "Unit": "Count"})];
                line.insert(n.count.to_owned(), json!(count));
                if let Some(latency) = n.latency
                    && !samples.is_empty()
                {
                    metrics.push(json!({"Name": latency, "Unit": "Milliseconds"}));
                    line.insert(latency.to_owned(), json!(samples));
                }
                let mut sets = vec![dims.clone()];
                if n.rollup != dims.as_slice() {
                    sets.push(n.rollup.to_vec());
                }
                line.insert(
                    "_aws".into(),
                    json!({
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [{
                            "Namespace": namespace,
                            "Dimensions": sets,
                            "Metrics": metrics,
                        }],
                    }),
                );
                lines.push(Value::Object(line));
            }
        }
        lines
    }
}

/// Every (metric name, dimension set) an EMF line can carry: what an alarm or a dashboard in
/// the SAM template may name (a CloudWatch metric is found only by its exact dimension set).
pub fn metric_dimensions() -> Vec<(&'static str, Vec<&'static str>)> {
    let m = Metrics::default();
    let mut out = Vec::new();
    for family in m.families() {
        let n = names(family);
        let all: Vec<&str> = family.labels.iter().map(|l| l.name).collect();
        for metric in std::iter::once(n.count).chain(n.latency) {
            out.push((metric, all.clone()));
            out.push((metric, n.rollup.to_vec()));
        }
    }
    out
}

/// In Lambda, each invocation's metrics leave as EMF lines before the sandbox may freeze.
#[async_trait::async_trait]
impl crate::invocation::EndOfInvocation for Metrics {
    async fn end_of_invocation(&self) {
        if self.emf_namespace.is_some() {
            self.flush_emf_stdout();
        }
    }
}
