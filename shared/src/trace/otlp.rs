//! OpenTelemetry spans over OTLP/HTTP with the JSON encoding, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: one server
//! span per `/mcp` request (in the client's trace when it sent one), and a client span for
//! the upstream call when the request made one.
//!
//! Written here rather than taken from the `opentelemetry` crates: the gateway needs one
//! span shape and one encoding, and those crates (SDK, exporter, their runtime glue) would
//! add build time and binary size to every Lambda for that.
//!
//! Off the request path: [`Spans::record`] pushes onto a bounded queue (a full queue drops the
//! span and counts it, `mcpgw_otlp_spans_dropped_total`); a background task posts batches
//! (`POST {endpoint}/v1/traces`, `Content-Type: application/json`) every second or when a
//! batch is full, through the egress policy's client. In Lambda the task is frozen between
//! invocations, so the end-of-invocation hook calls [`Spans::flush`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::config::ConfigError;
use crate::metrics::Metrics;

/// Spans queued at most; more are dropped and counted.
pub const MAX_QUEUE: usize = 2048;
/// Spans per export request at most.
pub const MAX_BATCH: usize = 512;
/// How often the background task exports what is queued.
pub const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// Bound on one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom spans are exported (`OTEL_*` variables, see [`OtlpConfig::from_lookup`]).
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full traces URL (`{OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces`).
    pub traces_url: String,
    /// `OTEL_SERVICE_NAME` (default `mcp-gateway`).
    pub service_name: String,
    /// `OTEL_EXPORTER_OTLP_HEADERS`: sent with every export (may hold a collector's key).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may be a collector's credential: names only.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtlpConfig")
            .field("traces_url", &self.traces_url)
            .field("service_name", &self.service_name)
            .field("headers", &names)
            .finish()
    }
}

impl OtlpConfig {
    /// Reads the standard OpenTelemetry variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used
    /// as is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended), `OTEL_SERVICE_NAME`,
    /// `OTEL_EXPORTER_OTLP_HEADERS` / `_TRACES_HEADERS` (`k=v,...`, values percent-decoded),
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` / `_TRACES_PROTOCOL` (only `http/json` is spoken: any
    /// other value refuses to start rather than export nothing), `OTEL_SDK_DISABLED=true` and
    /// `OTEL_TRACES_EXPORTER=none` (off). `None` when no endpoint is set.
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let err = |var: &'static str, message: &str| ConfigError {
            var,
            message: message.into(),
        };
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || get("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
        {
            return Ok(None);
        }
        let traces_url = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(full), _) => full,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        match url::Url::parse(&traces_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(err(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "expected an http(s) URL, e.g. http://127.0.0.1:4318",
                ));
            }
        }
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(p) = get(var) {
                if p != "http/json" {
                    return Err(err(
                        if var.contains("TRACES") {
                            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                        } else {
                            "OTEL_EXPORTER_OTLP_PROTOCOL"
                        },
                        "the gateway exports OTLP over HTTP with JSON only: http/json",
                    ));
                }
                break;
            }
        }
        let headers = get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| get("OTEL_EXPORTER_OTLP_HEADERS"))
            .map(|v| parse_headers(&v))
            .transpose()
            .map_err(|m| err("OTEL_EXPORTER_OTLP_HEADERS", m))?
            .unwrap_or_default();
        Ok(Some(Self {
            traces_url,
            service_name: get("OTEL_SERVICE_NAME").unwrap_or_else(|| "mcp-gateway".into()),
            headers,
        }))
    }
}

/// `k=v,k2=v2` with percent-encoded values (the OpenTelemetry convention).
fn parse_headers(v: &str) -> Result<Vec<(String, String)>, &'static str> {
    let bad = "expected comma-separated name=value pairs with valid header names";
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, val) = pair.split_once('=').ok_or(bad)?;
            let k = k.trim();
            let val = percent_decode(val.trim()).ok_or(bad)?;
            axum::http::HeaderName::try_from(k).map_err(|_| bad)?;
            axum::http::HeaderValue::try_from(val.as_str()).map_err(|_| bad)?;
            Ok((k.to_owned(), val))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `SPAN_KIND_SERVER` / `SPAN_KIND_CLIENT` of OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server = 2,
    Client = 3,
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    /// String attributes.
    pub attributes: Vec<(&'static str, String)>,
    /// Integer attributes.
    pub int_attributes: Vec<(&'static str, i64)>,
    /// Whether the span ended in an error (OTLP status `ERROR`).
    pub error: bool,
}

impl Span {
    fn to_json(&self) -> Value {
        let mut attributes: Vec<Value> = self
            .attributes
            .iter()
            .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
            .collect();
        // int64 is a decimal string in the protobuf JSON mapping.
        attributes.extend(
            self.int_attributes
                .iter()
                .map(|(k, v)| json!({"key": k, "value": {"intValue": v.to_string()}})),
        );
        let mut span = json!({
            "traceId": super::hex(&self.trace_id),
            "spanId": super::hex(&self.span_id),
            "name": self.name,
            "kind": self.kind as i32,
            "startTimeUnixNano": unix_nanos(self.start).to_string(),
            "endTimeUnixNano": unix_nanos(self.end).to_string(),
            "attributes": attributes,
            // STATUS_CODE_ERROR (2) or UNSET (0): the gateway does not claim OK for others.
            "status": if self.error { json!({"code": 2}) } else { json!({}) },
        });
        if let Some(p) = self.parent_span_id {
            span["parentSpanId"] = super::hex(&p).into();
        }
        span
    }
}

fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The span exporter of one process (in `AppState`); a no-op when OTLP is not configured.
pub struct Spans {
    inner: Option<Arc<Exporter>>,
}

struct Exporter {
    config: OtlpConfig,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    queue: Mutex<VecDeque<Span>>,
    wake: Arc<tokio::sync::Notify>,
    /// The background task, started on the first span (state may be built outside a runtime).
    started: OnceLock<()>,
    /// One export at a time: the background task and [`Spans::flush`] never interleave.
    exporting: tokio::sync::Mutex<()>,
}

impl Spans {
    /// No export.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Exports to `config` (if any) with `http` (the egress policy's client).
    pub fn new(config: Option<OtlpConfig>, http: reqwest::Client, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: config.map(|config| {
                Arc::new(Exporter {
                    config,
                    http,
                    metrics,
                    queue: Mutex::default(),
                    wake: Arc::new(tokio::sync::Notify::new()),
                    started: OnceLock::new(),
                    exporting: tokio::sync::Mutex::new(()),
                })
            }),
        }
    }

    /// Whether spans are exported at all (the proxy builds none otherwise).
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues a finished span; never waits. A full queue drops it (counted).
    pub fn record(&self, span: Span) {
        let Some(e) = &self.inner else {
            return;
        };
        e.start_background();
        let len = {
            let mut q = e.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= MAX_QUEUE {
                drop(q);
                e.metrics.inc_spans_dropped(1);
                return;
            }
            q.push_back(span);
            q.len()
        };
        if len >= MAX_BATCH {
            e.wake.notify_one();
        }
    }

    /// Exports everything queued now (the end of a Lambda invocation; tests).
    pub async fn flush(&self) {
        if let Some(e) = &self.inner {
            e.export_all().await;
        }
    }
}

impl Exporter {
    fn start_background(self: &Arc<Self>) {
        self.started.get_or_init(|| {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            // A weak handle: the task ends when the state (and so the exporter) is gone.
            let weak = Arc::downgrade(self);
            let wake = self.wake.clone();
            rt.spawn(async move {
                loop {
                    let _ = tokio::time::timeout(EXPORT_EVERY, wake.notified()).await;
                    let Some(e) = weak.upgrade() else { break };
                    e.export_all().await;
                }
            });
        });
    }

    async fn export_all(&self) {
        let _one = self.exporting.lock().await;
        loop {
            let batch: Vec<Span> = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                let n = q.len().min(MAX_BATCH);
                q.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            if let Err(e) = self.post(&batch).await {
                self.metrics.inc_span_export_failures();
                tracing::warn!(error = %crate::http::error_chain(&e), spans = batch.len(), "OTLP export failed; spans dropped");
                return;
            }
        }
    }

    async fn post(&self, batch: &[Span]) -> Result<(), ExportError> {
        let body = export_request(&self.config.service_name, batch);
        let mut req = self
            .http
            .post(&self.config.traces_url)
            .timeout(EXPORT_TIMEOUT)
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        for (k, v) in &self.config.headers {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ExportError::Send(e.without_url()))?;
        if !resp.status().is_success() {
            return Err(ExportError::Status(resp.status().as_u16()));
        }
        Ok(())
    }
}

/// Why an export failed (logged; the spans of the batch are dropped).
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("could not reach the OTLP endpoint")]
    Send(#[source] reqwest::Error),
    #[error("the OTLP endpoint answered HTTP {0}")]
    Status(u16),
}

/// An `ExportTraceServiceRequest` in the OTLP JSON mapping.
pub fn export_request(service_name: &str, spans: &[Span]) -> Value {
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": service_name}},
                {"key": "service.version", "value": {"stringValue": env!("CARGO_PKG_VERSION")}},
            ]},
            "scopeSpans": [{
                "scope": {"name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans.iter().map(Span::to_json).collect::<Vec<_>>(),
            }],
        }],
    })
}

/// In Lambda, the invocation's spans are exported before the sandbox may freeze.
#[async_trait::async_trait]
impl crate::invocation::EndOfInvocation for Spans {
    async fn end_of_invocation(&self) {
        self.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn config_from_the_standard_variables() {
        assert_eq!(OtlpConfig::from_lookup(&get(&[])).unwrap(), None);
        let c = OtlpConfig::from_lookup(&get(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
            ("OTEL_SERVICE_NAME", "gw-prod"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=abc%20def, x-b=c"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.service_name, "gw-prod");
        assert_eq!(c.headers[0], ("x-api-key".into(), "abc def".into()));
        assert!(
            !format!("{c:?}").contains("abc"),
            "header values stay out of logs"
        );
        let full = OtlpConfig::from_lookup(&get(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://collector.example/custom",
            ),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(full.traces_url, "https://collector.example/custom");
        assert_eq!(full.service_name, "mcp-gateway");
        for off in [
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:1"),
                ("OTEL_SDK_DISABLED", "true"),
            ][..],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:1"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ],
        ] {
            assert_eq!(OtlpConfig::from_lookup(&get(off)).unwrap(), None);
        }
        for bad in [
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")][..],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:1"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:1"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals"),
            ],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:1"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=%zz"),
            ],
        ] {
            assert!(OtlpConfig::from_lookup(&get(bad)).is_err(), "{bad:?}");
        }
    }

    fn span(i: u8) -> Span {
        Span {
            trace_id: [i; 16],
            span_id: [i; 8],
            parent_span_id: Some([9; 8]),
            name: "POST /mcp/{endpoint}".into(),
            kind: SpanKind::Server,
            start: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            end: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_223_456_789),
            attributes: vec![("mcp.endpoint", "github".into())],
            int_attributes: vec![("http.response.status_code", 200)],
            error: false,
        }
    }

    #[test]
    fn spans_in_the_otlp_json_mapping() {
        let v = export_request("gw", &[span(1)]);
        let s = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "01010101010101010101010101010101");
        assert_eq!(s["spanId"], "0101010101010101");
        assert_eq!(s["parentSpanId"], "0909090909090909");
        assert_eq!(s["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["attributes"][1]["value"]["intValue"], "200");
        assert_eq!(
            v["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "gw"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Arc::new(Metrics::default());
        let http = crate::egress::EgressPolicy::defaults(false)
            .client_builder()
            .build()
            .unwrap();
        let cfg = OtlpConfig {
            // Nothing listens on port 9 (discard): exports fail, the queue is what is tested.
            traces_url: "http://127.0.0.1:9/v1/traces".into(),
            service_name: "t".into(),
            headers: Vec::new(),
        };
        let spans = Spans::new(Some(cfg), http, metrics.clone());
        let started = std::time::Instant::now();
        for i in 0..(MAX_QUEUE + 10) {
            spans.record(span(i as u8));
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "record never waits"
        );
        let text = metrics.render_prometheus();
        let dropped: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("mcpgw_otlp_spans_dropped_total "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(dropped >= 10, "{dropped}");
        spans.flush().await;
        assert!(
            metrics
                .render_prometheus()
                .lines()
                .any(|l| l.starts_with("mcpgw_otlp_export_failures_total ") && !l.ends_with(" 0")),
            "a failed export is counted"
        );
    }
}
