//! The Prometheus text exposition format (version 0.0.4) of [`Metrics`]: what local mode's
//! `GET /metrics` answers. Histograms with a request or call count also get a `_total`
//! counter of the same series, so a dashboard needs no `_count` arithmetic.

use std::fmt::Write;

use super::Metrics;
use super::registry::{BUCKETS, Family, Kind};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    /// Every family in the text format.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        for family in self.families() {
            if let Some(total) = total_of(family) {
                counter_of_histogram(&mut out, family, total);
            }
            render(&mut out, family);
        }
        out
    }
}

/// The `_total` counter rendered beside a histogram.
fn total_of(family: &Family) -> Option<(&'static str, &'static str)> {
    match family.name {
        "mcpgw_request_duration_seconds" => Some((
            "mcpgw_requests_total",
            "Requests on /mcp by endpoint and HTTP status class",
        )),
        "mcpgw_call_duration_seconds" => Some((
            "mcpgw_calls_total",
            "Counted calls by endpoint, method, tool and outcome",
        )),
        _ => None,
    }
}

fn counter_of_histogram(out: &mut String, family: &Family, (name, help): (&str, &str)) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for s in family.snapshot() {
        let _ = writeln!(
            out,
            "{name}{} {}",
            labels(family, &s.labels, None),
            s.count()
        );
    }
}

fn render(out: &mut String, family: &Family) {
    let name = family.name;
    let kind = match family.kind {
        Kind::Counter => "counter",
        Kind::Histogram => "histogram",
    };
    let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", family.help);
    let series = family.snapshot();
    if series.is_empty() && family.labels.is_empty() && family.kind == Kind::Counter {
        // An unlabelled counter exists from the start: an alarm or a rate() sees its zero.
        let _ = writeln!(out, "{name} 0");
        return;
    }
    for s in series {
        match family.kind {
            Kind::Counter => {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    labels(family, &s.labels, None),
                    s.count()
                );
            }
            Kind::Histogram => {
                for (le, n) in BUCKETS.iter().zip(s.cumulative_buckets()) {
                    let le = le.to_string();
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {n}",
                        labels(family, &s.labels, Some(&le))
                    );
                }
                let count = s.count();
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {count}",
                    labels(family, &s.labels, Some("+Inf"))
                );
                let plain = labels(family, &s.labels, None);
                let _ = writeln!(out, "{name}_sum{plain} {}", s.sum_seconds());
                let _ = writeln!(out, "{name}_count{plain} {count}");
            }
        }
    }
}

/// `{a="x",b="y"}` (with `le` last for a bucket), or nothing without labels.
fn labels(family: &Family, values: &[Box<str>], le: Option<&str>) -> String {
    if family.labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (l, v)) in family.labels.iter().zip(values).enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{}=\"{}\"", l.name, escape(v));
    }
    if let Some(le) = le {
        if !family.labels.is_empty() {
            s.push(',');
        }
        let _ = write!(s, "le=\"{le}\"");
    }
    s.push('}');
    s
}

/// A label value escaped as the format requires: backslash, double quote and newline.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}
