//! Rate limits and quotas (`/admin/rate-limits` documents), checked once per counted call
//! (`tools/call`, `resources/read`, `prompts/get`) at the proxy's decision point.

use std::time::Duration;

/// What a counted call is, as the limits match it.
#[derive(Debug, Clone)]
pub struct CallKey<'a> {
    pub principal: &'a crate::identity::Principal,
    pub endpoint: &'a str,
    /// `tools/call`, `resources/read` or `prompts/get`.
    pub method: &'a str,
    /// The name the caller used (a tool's exposed name, alias included; a resource URI; a
    /// prompt name).
    pub name: &'a str,
}

/// The limits' verdict on one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// No rule refuses it. `would_limit`: an `audit`-mode rule that would have (its name).
    Pass { would_limit: Option<String> },
    /// An `enforce`-mode rule refuses it until `retry_after` has passed.
    Limited { rule: String, retry_after: Duration },
}

/// The rate limiter. One per process, in `AppState`.
#[derive(Default)]
pub struct Limits {}

impl Limits {
    /// Counts `call` against every matching rule.
    pub async fn check(&self, _call: &CallKey<'_>) -> Verdict {
        Verdict::Pass { would_limit: None }
    }
}
