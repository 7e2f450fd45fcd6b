//! One admitted request to a registered server, its credential resolved: what the eras
//! forward with.

use axum::http::HeaderMap;
use mcpgw::identity::Principal;
use mcpgw::state::AppState;
use mcpgw::upstream::Upstream;

use crate::adapt::Adapt;

/// Who, which endpoint, its upstream, the client's headers, and what access control changes.
pub struct Call<'a> {
    pub state: &'a AppState,
    pub upstream: Upstream,
    /// The caller (the whole principal: limits and audit records name how they
    /// authenticated).
    pub principal: Principal,
    pub endpoint: String,
    pub headers: HeaderMap,
    /// What access control changes in the answer.
    pub adapt: Adapt,
}

impl Call<'_> {
    /// The caller's user name.
    pub fn user(&self) -> &str {
        &self.principal.user
    }

    /// Client headers that may travel upstream for this era: the MCP routing headers and
    /// `Last-Event-ID`, never the session id or version (the gateway sets those) and never
    /// a credential. `stateless`: the 2026-07-28 era, whose routing headers were checked
    /// against the body; otherwise they are not the client's to send (the gateway sets them
    /// from the body when the upstream needs them), so none can route differently upstream
    /// from what was authorized.
    pub fn forwarded(&self, stateless: bool) -> HeaderMap {
        let mut h = mcpgw::upstream::forwarded_request_headers(&self.headers);
        h.remove("mcp-session-id");
        if !stateless {
            for name in ["mcp-protocol-version", "mcp-method", "mcp-name"] {
                h.remove(name);
            }
        }
        h
    }
}
