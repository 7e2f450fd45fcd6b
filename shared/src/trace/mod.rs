//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) for `/mcp` requests: the
//! client's `traceparent` is joined when it is valid, a new trace is started when it is not,
//! and the gateway's own span (a fresh span id in the same trace) is what the upstream sees
//! as its parent. `tracestate` travels with it only when well-formed, and only when
//! [`TraceConfig::forward_tracestate`] (`MCPGW_TRACESTATE_FORWARD`, on by default) allows.
//!
//! The proxy's observing layer parses the inbound headers once ([`TraceContext::from_headers`]),
//! rewrites the request's `traceparent` to the trace it joined, and runs the request inside
//! [`TraceContext::scope`]; every upstream request made on that task adds
//! [`current_upstream_headers`] (see `upstream::Upstream::headers`). Client values are never
//! forwarded as they came: only what this module parsed and re-serialized goes upstream.
//!
//! [`otlp`] exports the gateway's spans when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

pub mod otlp;

use std::cell::{Cell, RefCell};
use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderValue};

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";
/// Longest `tracestate` passed on (the spec's limit for what a vendor must propagate).
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// At most this many list members in a `tracestate` (the spec's limit).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// Trace settings read from the environment (see `config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// `MCPGW_TRACESTATE_FORWARD` (`1`/`0`, default `1`): whether a client's well-formed
    /// `tracestate` goes upstream. On by default because the W3C spec asks intermediaries to
    /// propagate it and APM vendors (the enterprise's own upstreams) need it to keep their
    /// sampling decision across the hop; `0` for gateways in front of third-party upstreams,
    /// which then never see the client's vendor entries (the `traceparent` with the gateway's
    /// span always goes: it says nothing but ids the gateway chose or validated).
    pub forward_tracestate: bool,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            forward_tracestate: true,
        }
    }
}

impl TraceConfig {
    /// Reads `MCPGW_TRACESTATE_FORWARD`.
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, crate::config::ConfigError> {
        let forward_tracestate = match get("MCPGW_TRACESTATE_FORWARD").as_deref() {
            None | Some("1" | "true") => true,
            Some("0" | "false") => false,
            Some(_) => {
                return Err(crate::config::ConfigError {
                    var: "MCPGW_TRACESTATE_FORWARD",
                    message: "expected 1 or 0".into(),
                });
            }
        };
        Ok(Self { forward_tracestate })
    }
}

/// The trace context of one request as the gateway handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The client's span (the parent of the gateway's), when the client sent a valid one.
    pub parent_span_id: Option<[u8; 8]>,
    /// The gateway's own span for this request.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled). A new trace is sampled.
    pub flags: u8,
    /// The client's `tracestate`, when well-formed.
    pub tracestate: Option<HeaderValue>,
}

/// A parsed `traceparent`: trace id, parent (span) id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Parses a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase hex,
    /// neither id all zeros. Anything else (other versions included: the gateway cannot know
    /// what a future version's extra fields mean, so it starts its own trace) is `None`.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() != 55 || &value[..3] != b"00-" || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flags = [0u8; 1];
        hex_decode(&value[3..35], &mut trace_id)?;
        hex_decode(&value[36..52], &mut span_id)?;
        hex_decode(&value[53..55], &mut flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags: flags[0],
        })
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        hex_push(&mut s, &self.trace_id);
        s.push('-');
        hex_push(&mut s, &self.span_id);
        s.push('-');
        hex_push(&mut s, &[self.flags]);
        s
    }
}

impl TraceContext {
    /// The context of a request with `headers`: the client's trace when its `traceparent` is
    /// valid (the gateway's span becomes its child), otherwise a new sampled trace. Only one
    /// `traceparent` may be present; two are invalid (the spec: a receiver cannot tell which
    /// one counts).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut all = headers.get_all(TRACEPARENT).iter();
        let parent = match (all.next(), all.next()) {
            (Some(v), None) => TraceParent::parse(v.as_bytes()),
            _ => None,
        };
        match parent {
            Some(p) => Self {
                trace_id: p.trace_id,
                parent_span_id: Some(p.span_id),
                span_id: new_span_id(),
                flags: p.flags,
                tracestate: valid_tracestate(headers),
            },
            // A tracestate without a valid traceparent is discarded (the spec says so).
            None => Self {
                trace_id: new_trace_id(),
                parent_span_id: None,
                span_id: new_span_id(),
                flags: 0x01,
                tracestate: None,
            },
        }
    }

    /// Whether the trace is sampled (flag bit 0): only sampled spans are exported.
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 1
    }

    /// The `traceparent` of the trace the request belongs to, as the request carries it after
    /// the gateway: the client's own (re-serialized) when it was valid, else the new trace's
    /// with the gateway's span id.
    pub fn inbound_traceparent(&self) -> String {
        TraceParent {
            trace_id: self.trace_id,
            span_id: self.parent_span_id.unwrap_or(self.span_id),
            flags: self.flags,
        }
        .to_header()
    }

    /// The `traceparent` the upstream receives: the same trace, the gateway's span as parent.
    pub fn upstream_traceparent(&self) -> String {
        TraceParent {
            trace_id: self.trace_id,
            span_id: self.span_id,
            flags: self.flags,
        }
        .to_header()
    }

    /// Inserts `traceparent` (and `tracestate`) for the upstream into `headers`, replacing any.
    pub fn insert_upstream_headers(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.upstream_traceparent()) {
            headers.insert(TRACEPARENT, v);
        }
        headers.remove(TRACESTATE);
        if let Some(state) = &self.tracestate {
            headers.insert(TRACESTATE, state.clone());
        }
    }

    /// Runs `fut` with this context as the task's current one (see
    /// [`current_upstream_headers`]), and returns what was noted about the request meanwhile:
    /// always the endpoint it was admitted to ([`note_endpoint`]), and with `for_span` what
    /// its span needs (method, tool, upstream timing; not copied for requests without a span).
    pub async fn scope<F: std::future::Future>(self, for_span: bool, fut: F) -> (F::Output, Notes) {
        let current = Current {
            ctx: self,
            for_span,
            notes: RefCell::default(),
        };
        CURRENT
            .scope(current, async {
                let out = fut.await;
                (out, CURRENT.with(|c| c.notes.take()))
            })
            .await
    }

    /// The trace id in lowercase hex (OTLP's JSON form).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

/// What the request's task learned: the registered endpoint it was admitted to (the only
/// endpoint name a metric or span may carry: the path's name is the caller's text), and for
/// its span the MCP method and tool (from its audit record), and when it first called the
/// upstream and for how long.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notes {
    pub endpoint: Option<String>,
    pub method: Option<String>,
    pub tool: Option<String>,
    pub upstream_start: Option<SystemTime>,
    pub upstream_ms: Option<f64>,
}

struct Current {
    ctx: TraceContext,
    /// Whether the request has a span to fill (see [`TraceContext::scope`]).
    for_span: bool,
    notes: RefCell<Notes>,
}

tokio::task_local! {
    static CURRENT: Current;
}

/// The current task's trace context, if a request is being served on it.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| c.ctx.clone()).ok()
}

/// Adds the current request's trace headers for an upstream to `headers` (nothing outside a
/// request), and notes when the request first called its upstream. Called for every upstream
/// request the gateway makes on a request's task.
pub fn current_upstream_headers(headers: &mut HeaderMap) {
    let _ = CURRENT.try_with(|c| {
        c.ctx.insert_upstream_headers(headers);
        if !c.for_span {
            return;
        }
        let mut notes = c.notes.borrow_mut();
        if notes.upstream_start.is_none() {
            notes.upstream_start = Some(SystemTime::now());
        }
    });
}

/// Notes what an audit record says about the current request (its method, tool and
/// upstream time) for the request's span. A resource URI is not noted (it may carry a
/// user's data). Nothing outside a request.
pub fn note_record(r: &crate::audit::AuditRecord) {
    let _ = CURRENT.try_with(|c| {
        if !c.for_span {
            return;
        }
        let mut notes = c.notes.borrow_mut();
        notes.method = r.method.clone();
        notes.tool = match r.event {
            crate::audit::Event::ResourceRead => None,
            // Records carry it cut already; cut here too, so no caller's text reaches a
            // span (and the OTLP queue) uncut whoever built the record.
            _ => r.tool.as_deref().map(crate::audit::record::capped),
        };
        if r.upstream_ms.is_some() {
            notes.upstream_ms = r.upstream_ms;
        }
    });
}

/// Notes that the current request was admitted to the registered endpoint `name` (called
/// once by the proxy's admission, after the endpoint was found and the caller may use it).
/// Nothing outside a request.
pub fn note_endpoint(name: &str) {
    let _ = CURRENT.try_with(|c| c.notes.borrow_mut().endpoint = Some(name.to_owned()));
}

/// The client's `tracestate` when there is exactly one, at most [`MAX_TRACESTATE_BYTES`], and
/// each list member is `key=value` in the spec's grammar.
pub fn valid_tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut all = headers.get_all(TRACESTATE).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return None;
    };
    is_valid_tracestate(v.as_bytes()).then(|| v.clone())
}

fn is_valid_tracestate(v: &[u8]) -> bool {
    if v.is_empty() || v.len() > MAX_TRACESTATE_BYTES {
        return false;
    }
    let Ok(text) = std::str::from_utf8(v) else {
        return false;
    };
    let mut members = 0;
    for member in text.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            // Empty list members are allowed and ignored.
            continue;
        }
        members += 1;
        let Some((key, value)) = member.split_once('=') else {
            return false;
        };
        if !valid_key(key) || !valid_value(value) {
            return false;
        }
    }
    members > 0 && members <= MAX_TRACESTATE_MEMBERS
}

/// `simple-key` or `tenant-id@system-id` of the spec (lowercase letters, digits, `_-*/`).
fn valid_key(key: &str) -> bool {
    let part = |s: &str, max: usize, first_digit_ok: bool| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && (b[0].is_ascii_lowercase() || (first_digit_ok && b[0].is_ascii_digit()))
            && b.iter().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b'-' | b'*' | b'/')
            })
    };
    match key.split_once('@') {
        None => part(key, 256, false),
        Some((tenant, system)) => part(tenant, 241, true) && part(system, 14, false),
    }
}

/// 1-256 printable ASCII characters except `,` and `=`, not ending in a space.
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b[b.len() - 1] != b' '
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

thread_local! {
    /// Per-thread id generator state, seeded from the system random number generator once.
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 8];
    // A failed seed still yields distinct ids per thread through the address and time mix.
    let _ = SystemRandom::new().fill(&mut b);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    u64::from_le_bytes(b) ^ t ^ (&b as *const _ as u64)
}

/// SplitMix64: ids need to be unique and unpredictable enough to not collide, not secret
/// (they travel in headers); a system call per request would cost more than the rest of the
/// layer together.
fn next_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// A new span id (never all zeros).
pub fn new_span_id() -> [u8; 8] {
    loop {
        let v = next_u64();
        if v != 0 {
            return v.to_be_bytes();
        }
    }
}

/// A new trace id (never all zeros).
pub fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&new_span_id());
    id[8..].copy_from_slice(&next_u64().to_be_bytes());
    id
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    hex_push(&mut s, bytes);
    s
}

fn hex_push(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
}

/// Lowercase hex only (the spec forbids uppercase in `traceparent`).
fn hex_decode(src: &[u8], out: &mut [u8]) -> Option<()> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, pair) in src.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_valid_traceparent_is_joined_as_the_parent_of_the_gateways_span() {
        let c = TraceContext::from_headers(&headers(&[
            (TRACEPARENT, VALID),
            (TRACESTATE, "congo=t61rcWkgMzE"),
        ]));
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            c.parent_span_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_ne!(c.span_id, c.parent_span_id.unwrap());
        assert_eq!(c.inbound_traceparent(), VALID);
        let up = c.upstream_traceparent();
        assert!(
            up.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{up}"
        );
        assert!(up.ends_with("-01"));
        assert_eq!(
            TraceParent::parse(up.as_bytes()).unwrap().span_id,
            c.span_id
        );
        let mut out = HeaderMap::new();
        c.insert_upstream_headers(&mut out);
        assert_eq!(out[TRACESTATE], "congo=t61rcWkgMzE");
        assert_eq!(out[TRACEPARENT], up.as_str());
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace_and_drop_the_tracestate() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bx-01",
        ] {
            let c =
                TraceContext::from_headers(&headers(&[(TRACEPARENT, bad), (TRACESTATE, "a=b")]));
            assert_ne!(
                c.trace_id_hex(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad}"
            );
            assert_eq!(c.parent_span_id, None, "{bad}");
            assert_eq!(c.tracestate, None, "{bad}");
            assert!(c.sampled());
            assert!(TraceParent::parse(c.inbound_traceparent().as_bytes()).is_some());
        }
        // Two traceparents: which one counts is unknowable, so neither does.
        let two =
            TraceContext::from_headers(&headers(&[(TRACEPARENT, VALID), (TRACEPARENT, VALID)]));
        assert_eq!(two.parent_span_id, None);
        // None at all: a new trace, a different one each time.
        let (a, b) = (
            TraceContext::from_headers(&HeaderMap::new()),
            TraceContext::from_headers(&HeaderMap::new()),
        );
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.trace_id, [0; 16]);
    }

    #[test]
    fn the_sampled_flag_is_kept() {
        let c =
            TraceContext::from_headers(&headers(&[(TRACEPARENT, &VALID.replace("-01", "-00"))]));
        assert!(!c.sampled());
        assert!(c.upstream_traceparent().ends_with("-00"));
    }

    #[test]
    fn tracestate_rules() {
        for ok in [
            "congo=t61rcWkgMzE",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            "tenant1@vendor=x, b=y",
            "a=b,,c=d",
            "a-b_c*d/e=~!",
        ] {
            assert!(is_valid_tracestate(ok.as_bytes()), "{ok}");
        }
        let long = format!("a={}", "x".repeat(MAX_TRACESTATE_BYTES));
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        for bad in [
            "",
            "novalue",
            "A=b",
            "a=b=c",
            "a=\u{e9}",
            "1a=b",
            "a@toolongsystemid1=b",
            long.as_str(),
            &many.join(","),
        ] {
            assert!(!is_valid_tracestate(bad.as_bytes()), "{bad}");
        }
        // Two tracestate headers are refused (joining them is allowed by the spec, but
        // one well-formed value is all the gateway forwards).
        assert!(valid_tracestate(&headers(&[(TRACESTATE, "a=b"), (TRACESTATE, "c=d")])).is_none());
    }

    #[tokio::test]
    async fn the_scope_adds_headers_only_inside_a_request() {
        let mut outside = HeaderMap::new();
        current_upstream_headers(&mut outside);
        assert!(outside.is_empty());
        let c = TraceContext::from_headers(&headers(&[(TRACEPARENT, VALID)]));
        let want = c.upstream_traceparent();
        let (inside, notes) = c
            .scope(true, async {
                let mut h = HeaderMap::new();
                h.insert(TRACEPARENT, HeaderValue::from_static("client-chosen"));
                current_upstream_headers(&mut h);
                let mut r = crate::audit::AuditRecord::new(
                    crate::audit::Event::ToolCall,
                    crate::audit::Decision::Allow,
                );
                r.tool = Some("search".into());
                r.upstream_ms = Some(4.0);
                note_record(&r);
                h
            })
            .await;
        assert_eq!(inside[TRACEPARENT], want.as_str());
        assert_eq!(notes.tool.as_deref(), Some("search"));
        assert_eq!(notes.upstream_ms, Some(4.0));
        assert!(notes.upstream_start.is_some());
    }

    #[tokio::test]
    async fn without_a_span_only_the_endpoint_is_noted() {
        let c = TraceContext::from_headers(&headers(&[(TRACEPARENT, VALID)]));
        let ((), notes) = c
            .scope(false, async {
                note_endpoint("github");
                let mut r = crate::audit::AuditRecord::new(
                    crate::audit::Event::ToolCall,
                    crate::audit::Decision::Allow,
                );
                r.tool = Some("search".into());
                note_record(&r);
                current_upstream_headers(&mut HeaderMap::new());
            })
            .await;
        assert_eq!(
            notes,
            Notes {
                endpoint: Some("github".into()),
                ..Notes::default()
            }
        );
        // Outside a request nothing is noted, and nothing fails.
        note_endpoint("github");
    }

    #[test]
    fn tracestate_forwarding_is_configurable() {
        let get = |v: Option<&'static str>| {
            move |k: &str| {
                (k == "MCPGW_TRACESTATE_FORWARD")
                    .then_some(v)
                    .flatten()
                    .map(String::from)
            }
        };
        assert!(
            TraceConfig::from_lookup(&get(None))
                .unwrap()
                .forward_tracestate
        );
        assert!(
            TraceConfig::from_lookup(&get(Some("1")))
                .unwrap()
                .forward_tracestate
        );
        assert!(
            !TraceConfig::from_lookup(&get(Some("0")))
                .unwrap()
                .forward_tracestate
        );
        assert!(
            !TraceConfig::from_lookup(&get(Some("false")))
                .unwrap()
                .forward_tracestate
        );
        let err = TraceConfig::from_lookup(&get(Some("no"))).unwrap_err();
        assert_eq!(err.var, "MCPGW_TRACESTATE_FORWARD");
    }
    #[tokio::test]
    async fn a_huge_tool_name_is_noted_cut() {
        let c = TraceContext::from_headers(&headers(&[(TRACEPARENT, VALID)]));
        let ((), notes) = c
            .scope(true, async {
                let mut r = crate::audit::AuditRecord::new(
                    crate::audit::Event::ToolCall,
                    crate::audit::Decision::Allow,
                );
                r.tool = Some("t".repeat(300_000));
                note_record(&r);
            })
            .await;
        let tool = notes.tool.unwrap();
        assert!(
            tool.len() <= crate::audit::record::MAX_TEXT_BYTES + 20,
            "{}",
            tool.len()
        );
        assert!(tool.ends_with(crate::audit::record::TRUNCATED_MARK));
    }
}
