//! The observing layer around `/mcp/{endpoint}`: every request gets a valid W3C trace
//! context (the client's `traceparent` when valid, otherwise a new trace; see `mcpgw::trace`),
//! runs inside it (so each upstream request carries the gateway's span as its parent), and
//! is counted when its response head is ready: count and latency by endpoint and status
//! class, errors by reason (`mcpgw::metrics`). With OTLP configured, its span (and the
//! upstream call's) is queued for export.
//!
//! The endpoint label is the name admission resolved as registered and usable
//! (`mcpgw::trace::note_endpoint`), whatever the status; a request that never got that far
//! (bad `Origin`, no credential, unknown or forbidden endpoint, a method the route lacks)
//! counts under `none`: the path's name is the caller's text, and in Lambda each label set
//! is a billed CloudWatch metric.
//!
//! Cheap on purpose (it runs on every request, and the benchmark compares the proxy with a
//! direct call): a header parse, two clock reads, a few atomics under a read lock, and one
//! copy of the endpoint's name. Method, tool and the span's clock read are noted only for
//! requests that export a span. Latency is measured to the response head; an SSE answer's
//! body streams on after it.

use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use mcpgw::http::Relayed;
use mcpgw::metrics::ErrorReason;
use mcpgw::state::AppState;
use mcpgw::trace::otlp::{Span, SpanKind};
use mcpgw::trace::{Notes, TRACEPARENT, TRACESTATE, TraceContext};

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut ctx = TraceContext::from_headers(req.headers());
    if !state.config.trace.forward_tracestate {
        // Dropped here, so neither the upstream nor the handlers see it.
        ctx.tracestate = None;
    }
    // Handlers (and the audit records they write) see the trace the request belongs to;
    // an invalid client value is gone from here on.
    let headers = req.headers_mut();
    // A joined trace's header is already exactly what the gateway would write (the parse
    // accepts only the canonical form, and only a single header): written only when new.
    if ctx.parent_span_id.is_none()
        && let Ok(v) = HeaderValue::from_str(&ctx.inbound_traceparent())
    {
        headers.insert(TRACEPARENT, v);
    }
    // A kept tracestate is already the request's only one; any other is dropped.
    if ctx.tracestate.is_none() {
        headers.remove(TRACESTATE);
    }
    let span = (state.spans.enabled() && ctx.sampled())
        .then(|| (ctx.clone(), req.method().clone(), SystemTime::now()));

    let (resp, notes) = ctx.scope(span.is_some(), next.run(req)).await;

    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    let reason = match resp.extensions().get::<ErrorReason>() {
        Some(r) => Some(r.0),
        None if resp.extensions().get::<Relayed>().is_some() => Some("upstream_http_status"),
        None => None,
    };
    state
        .metrics
        .observe_request(notes.endpoint.as_deref(), status, elapsed, reason);
    if let Some((ctx, method, wall_start)) = span {
        record_spans(
            &state,
            &ctx,
            notes.endpoint.as_deref().unwrap_or("none"),
            method.as_str(),
            status,
            wall_start,
            elapsed,
            &notes,
        );
    }
    resp
}

/// The request's server span and, when it called its upstream, a client span for that call.
#[allow(clippy::too_many_arguments)]
fn record_spans(
    state: &AppState,
    ctx: &TraceContext,
    endpoint: &str,
    method: &str,
    status: u16,
    start: SystemTime,
    elapsed: Duration,
    notes: &Notes,
) {
    let end = start + elapsed;
    let mut attributes = vec![
        ("mcp.endpoint", endpoint.to_owned()),
        ("http.request.method", method.to_owned()),
    ];
    if let Some(m) = &notes.method {
        attributes.push(("mcp.method.name", m.clone()));
    }
    if let Some(t) = &notes.tool {
        attributes.push(("gen_ai.tool.name", t.clone()));
    }
    if let Some(up_start) = notes.upstream_start {
        let up_end = notes
            .upstream_ms
            .map(|ms| up_start + Duration::from_secs_f64(ms.max(0.0) / 1000.0))
            .unwrap_or(end);
        state.spans.record(Span {
            trace_id: ctx.trace_id,
            span_id: mcpgw::trace::new_span_id(),
            parent_span_id: Some(ctx.span_id),
            name: format!("upstream {}", notes.method.as_deref().unwrap_or(method)),
            kind: SpanKind::Client,
            start: up_start,
            end: up_end.max(up_start),
            attributes: attributes.clone(),
            int_attributes: Vec::new(),
            error: false,
        });
    }
    state.spans.record(Span {
        trace_id: ctx.trace_id,
        span_id: ctx.span_id,
        parent_span_id: ctx.parent_span_id,
        name: format!("{method} /mcp/{{endpoint}}"),
        kind: SpanKind::Server,
        start,
        end,
        attributes,
        int_attributes: vec![("http.response.status_code", i64::from(status))],
        error: status >= 500,
    });
}
