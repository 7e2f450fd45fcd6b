//! `/admin/rate-limits`: rate-limit and quota rules (`mcpgw::limits::rule`), served by the
//! access documents' generic CRUD (`access.rs`): the same parsing, 422s, timestamps and
//! cache invalidation (a write here is in force in this process at once, elsewhere after the
//! policy TTL). What is particular is here: an exact endpoint a rule names must exist.

use mcpgw::http::ApiError;
use mcpgw::limits::rule::RateLimitRule;
use mcpgw::policy::Snapshot;
use mcpgw::policy::pattern::Pattern;
use mcpgw::state::AppState;
use mcpgw::store::ConfigKind;

use crate::access::{PolicyDoc, server_exists, unknown_server};

impl PolicyDoc for RateLimitRule {
    const KIND: ConfigKind = ConfigKind::RateLimit;
    const PATH: &'static str = "/admin/rate-limits";
    const LIST_KEY: &'static str = "rate_limits";
    fn name(&self) -> &str {
        &self.name
    }
    fn stamps(&mut self) -> (&mut i64, &mut i64) {
        (&mut self.created_at, &mut self.updated_at)
    }
    fn validate(&self) -> Result<(), String> {
        RateLimitRule::validate(self)
    }
    async fn check_refs(
        &self,
        state: &AppState,
        _: &str,
        snap: &Snapshot,
    ) -> Result<Vec<String>, ApiError> {
        // A misspelt endpoint would silently limit nothing. Patterns and tool names are not
        // checked: tools come and go upstream, and a rule may be written before its tool.
        for e in &self.matches.endpoints {
            if Pattern::new(e).is_exact()
                && !snap.virtual_servers.contains_key(e)
                && !server_exists(state, e).await?
            {
                return Err(unknown_server("match.endpoints", e));
            }
        }
        Ok(Vec::new())
    }
    fn referrers(_: &Snapshot, _: &str) -> Vec<String> {
        Vec::new()
    }
}
