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

/// Tests: the verdict for each call, decided by the test.
#[cfg(feature = "testing")]
pub type TestVerdicts = std::sync::Arc<dyn Fn(&CallKey<'_>) -> Verdict + Send + Sync>;

/// The rate limiter. One per process, in `AppState`.
#[derive(Default)]
pub struct Limits {
    #[cfg(feature = "testing")]
    decided_by_test: Option<TestVerdicts>,
}

impl Limits {
    /// Tests: limits whose every verdict `decide` gives (to drive the request path's
    /// answers and records without rules or a store).
    #[cfg(feature = "testing")]
    pub fn decided_by_test(decide: TestVerdicts) -> Self {
        Self {
            decided_by_test: Some(decide),
        }
    }

    /// Counts `call` against every matching rule.
    pub async fn check(&self, call: &CallKey<'_>) -> Verdict {
        #[cfg(feature = "testing")]
        if let Some(decide) = &self.decided_by_test {
            return decide(call);
        }
        let _ = call;
        Verdict::Pass { would_limit: None }
    }
}
