//! What the gateway counts, for an operator to graph and alarm on: requests on `/mcp` (count
//! and latency by endpoint and HTTP status class), errors by reason, counted calls by
//! endpoint, method, tool and outcome (with gateway and upstream latency), denials, rate
//! limited calls, token refreshes, audit write and limit store failures.
//!
//! Labels are endpoint, method, tool, outcome, reason, status class and mode: never a user,
//! key or anything else that names a person, and never a name only the caller vouches for
//! (in Lambda each label set is a CloudWatch metric, billed per month):
//! - the endpoint is the registered one the request was admitted to (the caller resolves it;
//!   anything else is `none`);
//! - a tool or prompt name is a label once an allowed call of it on that endpoint ended `ok`
//!   (the upstream ran it: see [`KnownNames`]); until then, and for hidden, unknown or
//!   refused names, it counts as [`registry::OTHER`]. An `isError` result proves nothing (the
//!   MCP SDKs answer an unknown tool with one);
//! - a resource URI never is (it may carry a user's data).
//!
//! Each family still holds at most [`registry::MAX_SERIES`] label sets (see [`registry`]).
//!
//! Two expositions of the same [`Metrics`]: [`Metrics::render_prometheus`] (local mode's
//! `GET /metrics`, see [`prometheus`]) and [`Metrics::flush_emf`] (CloudWatch Embedded Metric
//! Format lines on stdout in Lambda, what an invocation observed, see [`emf`]).
//!
//! Sources: the proxy's observing layer calls [`Metrics::observe_request`]; the audit trail
//! calls [`Metrics::observe_record`] for every record; the token-refresh sweep calls
//! [`Metrics::refreshed`]; the audit store and the limit store report their failures with
//! [`Metrics::inc_audit_write_failures`] and [`Metrics::inc_limit_store_failures`].

pub mod emf;
pub mod prometheus;
pub mod registry;

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::Duration;

use crate::audit::{AuditRecord, Decision, Event};
use registry::{Family, Kind, Label, OTHER, closed, open};

/// Metric settings read from the environment (see `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The CloudWatch namespace of EMF lines; `None`: no EMF (outside Lambda by default).
    pub emf_namespace: Option<String>,
    /// `MCPGW_METRICS_LISTEN`: a second local listener that serves only `GET /metrics`,
    /// without authentication (for a Prometheus on a private network).
    pub listen: Option<std::net::SocketAddr>,
}

/// The default EMF namespace (`MCPGW_METRICS_NAMESPACE` overrides; the SAM template sets
/// `MCPGateway/<stack name>`).
pub const DEFAULT_NAMESPACE: &str = "MCPGateway";

impl MetricsConfig {
    /// Reads `MCPGW_METRICS_NAMESPACE`, `MCPGW_EMF` (`1`/`0`, default on in Lambda) and
    /// `MCPGW_METRICS_LISTEN`.
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        in_lambda: bool,
    ) -> Result<Self, crate::config::ConfigError> {
        let bad = |var: &'static str, message: &str| crate::config::ConfigError {
            var,
            message: message.into(),
        };
        let emf = match get("MCPGW_EMF").as_deref() {
            Some("1" | "true") => true,
            Some("0" | "false") => false,
            Some(_) => return Err(bad("MCPGW_EMF", "expected 1 or 0")),
            None => in_lambda,
        };
        let namespace = get("MCPGW_METRICS_NAMESPACE").unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        if namespace.is_empty()
            || namespace.len() > 255
            || !namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c))
        {
            return Err(bad(
                "MCPGW_METRICS_NAMESPACE",
                "1-255 characters: letters, digits and . - _ / # : space",
            ));
        }
        let listen = get("MCPGW_METRICS_LISTEN")
            .map(|v| {
                v.parse().map_err(|_| {
                    bad(
                        "MCPGW_METRICS_LISTEN",
                        "expected HOST:PORT, e.g. 127.0.0.1:9464",
                    )
                })
            })
            .transpose()?;
        Ok(Self {
            emf_namespace: emf.then_some(namespace),
            listen,
        })
    }
}

/// How a scheduled token refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    Refreshed,
    Failed,
    /// Another process had it, or it no longer needed a refresh.
    Skipped,
}

impl RefreshOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refreshed => "refreshed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// A response extension naming why a request failed (an `ErrorCode` or the proxy's upstream
/// `Reason`): the observing layer counts errors by it. Static strings only, so the reasons
/// are a closed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorReason(pub &'static str);

static REQUEST_LABELS: [Label; 2] = [open("endpoint"), closed("status_class")];
static ERROR_LABELS: [Label; 2] = [open("endpoint"), closed("reason")];
static CALL_LABELS: [Label; 4] = [
    open("endpoint"),
    closed("method"),
    open("tool"),
    closed("outcome"),
];
static UPSTREAM_LABELS: [Label; 3] = [open("endpoint"), closed("method"), open("tool")];
static DENIAL_LABELS: [Label; 2] = [open("endpoint"), open("reason")];
static LIMITED_LABELS: [Label; 3] = [open("endpoint"), open("tool"), closed("mode")];
static REFRESH_LABELS: [Label; 1] = [closed("outcome")];
static NO_LABELS: [Label; 0] = [];

/// The registry of one process (in `AppState`).
pub struct Metrics {
    pub(crate) emf_namespace: Option<String>,
    pub(crate) requests: Family,
    pub(crate) errors: Family,
    pub(crate) calls: Family,
    pub(crate) upstream: Family,
    pub(crate) denials: Family,
    pub(crate) rate_limited: Family,
    pub(crate) refreshes: Family,
    pub(crate) audit_write_failures: Family,
    pub(crate) limit_store_failures: Family,
    pub(crate) spans_dropped: Family,
    pub(crate) span_export_failures: Family,
    known: KnownNames,
}

/// Endpoint -> names, per counted method with a name label (0: tools, 1: prompts).
type NamesByEndpoint = HashMap<Box<str>, [HashSet<Box<str>>; 2]>;

/// The tool and prompt names per endpoint that an upstream ran (an allowed call ended `ok`),
/// the only ones that become labels. Learning is a write lock once per name; asking is a
/// read lock and two hash lookups, no allocation. At most [`KnownNames::MAX`] names in all:
/// an upstream that answers `ok` to any name cannot grow it (or the families) past that.
#[derive(Default)]
struct KnownNames {
    by_endpoint: RwLock<NamesByEndpoint>,
    len: std::sync::atomic::AtomicUsize,
}

impl KnownNames {
    const MAX: usize = registry::MAX_SERIES;

    /// The label of `name` on `endpoint` for a call of `method` (0 tools, 1 prompts): the
    /// name when known, learned when `ran` (the upstream answered `ok`), else [`OTHER`].
    fn label<'a>(&self, endpoint: &str, method: usize, name: &'a str, ran: bool) -> &'a str {
        {
            let map = self.by_endpoint.read().unwrap_or_else(|e| e.into_inner());
            if map.get(endpoint).is_some_and(|m| m[method].contains(name)) {
                return name;
            }
        }
        use std::sync::atomic::Ordering::Relaxed;
        if !ran || self.len.load(Relaxed) >= Self::MAX {
            return OTHER;
        }
        let mut map = self.by_endpoint.write().unwrap_or_else(|e| e.into_inner());
        let names = &mut map.entry(endpoint.into()).or_default()[method];
        if self.len.load(Relaxed) < Self::MAX && names.insert(name.into()) {
            self.len.fetch_add(1, Relaxed);
        }
        name
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&MetricsConfig::default())
    }
}

impl Metrics {
    pub fn new(config: &MetricsConfig) -> Self {
        // Latency samples are kept between flushes only for EMF (a mutex per observation).
        let emf = config.emf_namespace.is_some();
        let hist = |name, help, labels| Family::new(name, help, Kind::Histogram, labels, emf);
        let counter = |name, help, labels| Family::new(name, help, Kind::Counter, labels, emf);
        Self {
            emf_namespace: config.emf_namespace.clone(),
            requests: hist(
                "mcpgw_request_duration_seconds",
                "Requests on /mcp: time to the response head, by endpoint and HTTP status class",
                &REQUEST_LABELS,
            ),
            errors: counter(
                "mcpgw_errors_total",
                "Requests on /mcp the gateway answered with an error, by reason",
                &ERROR_LABELS,
            ),
            calls: hist(
                "mcpgw_call_duration_seconds",
                "Counted calls (tools/call, resources/read, prompts/get): gateway latency by outcome",
                &CALL_LABELS,
            ),
            upstream: hist(
                "mcpgw_upstream_duration_seconds",
                "Time counted calls waited on the upstream",
                &UPSTREAM_LABELS,
            ),
            denials: counter(
                "mcpgw_denials_total",
                "Requests refused by access control or authentication, by the rule that refused",
                &DENIAL_LABELS,
            ),
            rate_limited: counter(
                "mcpgw_rate_limited_total",
                "Calls a rate limit refused (mode enforce) or would have (mode audit)",
                &LIMITED_LABELS,
            ),
            refreshes: counter(
                "mcpgw_refreshes_total",
                "Scheduled OAuth token refreshes by outcome",
                &REFRESH_LABELS,
            ),
            audit_write_failures: counter(
                "mcpgw_audit_write_failures_total",
                "Audit records the store could not take (they are still on stdout)",
                &NO_LABELS,
            ),
            limit_store_failures: counter(
                "mcpgw_limit_store_failures_total",
                "Rate limit checks the limit store could not answer",
                &NO_LABELS,
            ),
            spans_dropped: counter(
                "mcpgw_otlp_spans_dropped_total",
                "Spans dropped because the OTLP export queue was full",
                &NO_LABELS,
            ),
            span_export_failures: counter(
                "mcpgw_otlp_export_failures_total",
                "OTLP export requests that failed",
                &NO_LABELS,
            ),
            known: KnownNames::default(),
        }
    }

    /// One request on `/mcp/{endpoint}` answered with `status` after `elapsed`; `reason`
    /// from the response's [`ErrorReason`], if any. `endpoint` is the registered endpoint the
    /// request was admitted to, `None` when it was not (whatever its status: a bad `Origin`,
    /// no credential, an unknown name): anyone can send those with any name.
    pub fn observe_request(
        &self,
        endpoint: Option<&str>,
        status: u16,
        elapsed: Duration,
        reason: Option<&'static str>,
    ) {
        let endpoint = endpoint.unwrap_or("none");
        let class = status_class(status);
        self.requests
            .observe(&[endpoint, class], elapsed.as_secs_f64());
        if status >= 400 {
            let reason = reason.unwrap_or(if status >= 500 {
                "http_5xx"
            } else {
                "http_4xx"
            });
            self.errors.inc(&[endpoint, reason], 1);
        }
    }

    /// Counts what an audit record says (called by the audit trail for every record).
    pub fn observe_record(&self, r: &AuditRecord) {
        let endpoint = r.endpoint.as_deref().unwrap_or("none");
        let method = match r.event {
            Event::ToolCall => "tools/call",
            Event::ResourceRead => "resources/read",
            Event::PromptGet => "prompts/get",
            Event::Denied => {
                // An endpoint the caller may not use, or one that does not exist (the caller
                // cannot tell, and neither may the label): any authenticated caller picks it.
                self.denials
                    .inc(&["none", r.rule.as_deref().unwrap_or("endpoint_access")], 1);
                return;
            }
            Event::AuthFailed => {
                // Sampled records carry how many failures they stand for.
                let n = r
                    .detail
                    .as_ref()
                    .and_then(|d| d.get("count"))
                    .and_then(|c| c.as_u64())
                    .unwrap_or(1);
                self.denials.inc(&["none", "auth_failed"], n);
                return;
            }
            // Refresh outcomes are counted by the sweep itself ([`Metrics::refreshed`]), which
            // sees successes too; counting its failure records here would count them twice.
            Event::RefreshFailed
            | Event::Connect
            | Event::Disconnect
            | Event::Revoke
            | Event::AdminChange => return,
        };
        // A resource URI may carry a user's data (a path, an id): never a label. A tool or
        // prompt name only once the upstream ran it (see `KnownNames`).
        let ran =
            matches!(r.decision, Decision::Allow | Decision::WouldLimit) && outcome_of(r) == "ok";
        let tool = match (r.event, r.tool.as_deref()) {
            (Event::ResourceRead, _) | (_, None) => "none",
            (Event::PromptGet, Some(name)) => self.known.label(endpoint, 1, name, ran),
            (_, Some(name)) => self.known.label(endpoint, 0, name, ran),
        };
        let outcome = match r.decision {
            Decision::Deny => {
                // Refused calls are denials; the tool name of a hidden or unknown tool is the
                // caller's invention, so it is not kept.
                self.denials
                    .inc(&[endpoint, r.rule.as_deref().unwrap_or("denied")], 1);
                return;
            }
            Decision::Limited => {
                self.rate_limited.inc(&[endpoint, tool, "enforce"], 1);
                "limited"
            }
            Decision::WouldLimit => {
                self.rate_limited.inc(&[endpoint, tool, "audit"], 1);
                outcome_of(r)
            }
            Decision::Allow => outcome_of(r),
        };
        let latency = r.latency_ms.unwrap_or(0.0) / 1000.0;
        self.calls
            .observe(&[endpoint, method, tool, outcome], latency);
        if let Some(up) = r.upstream_ms {
            self.upstream
                .observe(&[endpoint, method, tool], up / 1000.0);
        }
    }

    /// `n` scheduled refreshes ended with `outcome`.
    pub fn refreshed(&self, outcome: RefreshOutcome, n: u64) {
        if n > 0 {
            self.refreshes.inc(&[outcome.as_str()], n);
        }
    }

    /// `n` audit records could not be written to the store.
    pub fn inc_audit_write_failures(&self, n: u64) {
        self.audit_write_failures.inc(&[], n);
    }

    /// `n` rate-limit checks failed on the limit store.
    pub fn inc_limit_store_failures(&self, n: u64) {
        self.limit_store_failures.inc(&[], n);
    }

    /// `n` spans were dropped (export queue full).
    pub fn inc_spans_dropped(&self, n: u64) {
        self.spans_dropped.inc(&[], n);
    }

    /// An OTLP export request failed.
    pub fn inc_span_export_failures(&self) {
        self.span_export_failures.inc(&[], 1);
    }

    /// Every family, in exposition order.
    pub(crate) fn families(&self) -> [&Family; 11] {
        [
            &self.requests,
            &self.errors,
            &self.calls,
            &self.upstream,
            &self.denials,
            &self.rate_limited,
            &self.refreshes,
            &self.audit_write_failures,
            &self.limit_store_failures,
            &self.spans_dropped,
            &self.span_export_failures,
        ]
    }
}

/// `1xx` .. `5xx`.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A record's outcome as one of a fixed list (the record's text is the emitter's, so an
/// unexpected value cannot become a new label).
fn outcome_of(r: &AuditRecord) -> &'static str {
    match r.outcome.as_ref().map(|o| o.status.as_str()) {
        Some("ok") => "ok",
        Some("is_error") => "is_error",
        Some("rpc_error") => "rpc_error",
        Some("http_error") => "http_error",
        Some("no_answer") => "no_answer",
        Some(_) => "other",
        None => "unknown",
    }
}

#[cfg(test)]
mod tests;
