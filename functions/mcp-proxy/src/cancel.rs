//! Cancellation towards the upstream: a request the client abandoned (it disconnected, or the
//! call outlived its deadline) is cancelled with `notifications/cancelled` in a session-era
//! upstream session (stateless upstreams stop when the connection closes). The client's own
//! `notifications/cancelled` in a bridged session reaches the call through
//! `mcp::memory::Memory::cancel`, which the relay watches.

use axum::http::HeaderMap;
use mcpgw::upstream::Upstream;
use serde_json::Value;

/// Sends `notifications/cancelled` upstream when dropped armed: the client disconnected (or
/// the call outlived its deadline) before the answer was complete. Session-era upstreams
/// keep working on a request whose stream closed; stateless ones stop on the close itself.
pub struct CancelOnDrop {
    upstream: Upstream,
    headers: HeaderMap,
    request_id: Value,
    armed: bool,
}

impl CancelOnDrop {
    /// Armed for `request_id`, sent in the upstream session `headers` name.
    pub fn new(upstream: &Upstream, headers: HeaderMap, request_id: Value) -> Self {
        Self {
            upstream: upstream.clone(),
            headers,
            request_id,
            armed: true,
        }
    }

    /// The upstream the request went to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The upstream session it runs in (where answers to the upstream's requests go).
    pub fn session_headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The request is settled another way (retried, answered): nothing to cancel.
    pub fn disarm(mut self) {
        self.armed = false;
    }

    /// The answer is complete: nothing to cancel when this is dropped.
    pub fn settle(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.upstream.cancel_later(
                std::mem::take(&mut self.headers),
                self.request_id.take(),
                "the client disconnected or the call timed out",
            );
        }
    }
}
