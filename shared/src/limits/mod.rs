//! Rate limits and quotas (`/admin/rate-limits` documents, [`rule`]), checked once per counted
//! call (`tools/call`, `resources/read`, `prompts/get`) at the proxy's decision point.
//!
//! Every rule that matches a call applies, and each limit of a rule is its own bucket, keyed
//! by the rule's name, the limit's signature (a changed limit starts afresh) and whose budget
//! it is (`per`; a `team` rule counts the call against each of the caller's teams). Rates are
//! GCRA buckets ([`crate::gcra`]), quotas fixed-window counters; both live in the store
//! ([`RateLimitStore`]) so every process sharing it shares the budget. The rules themselves
//! are read through a per-process cache (never a store read per call; [`crate::swr`], as the
//! policy: stale-while-revalidate, one reader at a time), refreshed after the policy TTL and
//! at once after an admin write in this process; when they cannot be re-read the last list
//! read stays in force (counted and logged), so a store hiccup never lifts an `enforce` or
//! `on_store_error: deny` rule. A call is one conditional store write per bucket; a store
//! that fails (bucket write, or the caller's teams for a team rule) lets the call through
//! unless the rule says `on_store_error: deny`, and is counted ([`Limits::store_errors`])
//! and logged.

pub mod rule;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::gcra;
use crate::http::error_chain;
use crate::identity::Principal;
use crate::policy::Subject;
use crate::policy::cache::PolicyCache;
use crate::store::{ConfigKind, ConfigStoreExt, Store, StoreError, StoreResult, Take};
use crate::swr::{ReadFailed, Swr};
use rule::{Mode, OnStoreError, Per, RateLimitRule, Shape};

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

/// What is left of one limit for one caller (the effective catalog shows it).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Budget {
    pub rule: String,
    pub mode: Mode,
    /// The limit as written, e.g. `5/1m` (`count/window[/burst]`).
    pub limit: String,
    /// Calls still allowed now (the smallest over the caller's teams for a team rule).
    pub remaining: u64,
    /// When the limit is whole again (ms since the epoch).
    pub reset_at_ms: i64,
}

/// The wait a store failure under `on_store_error: deny` answers with.
const STORE_ERROR_WAIT: Duration = Duration::from_secs(1);
/// Bound of the per-process memory of bucket tats (a hint only: forgetting costs one write).
const MAX_REMEMBERED: usize = 10_000;

/// A rule with its limits in the limiter's units.
struct Compiled {
    rule: RateLimitRule,
    limits: Vec<(Shape, String)>,
}

/// Tests: the verdict for each call, decided by the test.
#[cfg(feature = "testing")]
pub type TestVerdicts = std::sync::Arc<dyn Fn(&CallKey<'_>) -> Verdict + Send + Sync>;

/// The rate limiter. One per process, in `AppState`. `Limits::default()` limits nothing (no
/// store); [`Limits::new`] is the real one.
#[derive(Default)]
pub struct Limits {
    inner: Option<Arc<Inner>>,
    #[cfg(feature = "testing")]
    decided_by_test: Option<TestVerdicts>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: Arc<PolicyCache>,
    rules: Arc<Swr<Vec<Compiled>>>,
    /// Last tat seen per rate bucket: which conditional write to try first.
    tats: Mutex<HashMap<String, i64>>,
    store_errors: AtomicU64,
    /// Store failures are counted there too (see `metrics`).
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Whose budgets a call uses: the facts `per` reads.
struct Whose<'a> {
    user: &'a str,
    groups: &'a [String],
    api_key_id: Option<&'a str>,
}

impl<'a> Whose<'a> {
    fn of(p: &'a Principal) -> Self {
        Self {
            user: &p.user,
            groups: &p.groups,
            api_key_id: p.api_key_id.as_deref(),
        }
    }
}

/// One bucket of one call.
struct Bucket<'r> {
    rule: &'r RateLimitRule,
    shape: Shape,
    key: String,
    signature: &'r str,
    /// A team rule's stand-in when the caller's teams could not be read: never taken.
    teams_unreadable: bool,
}

impl Limits {
    /// The limiter over `store`'s rules and buckets; rules are cached for `ttl`, teams come
    /// from the policy cache.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        policy: Arc<PolicyCache>,
        ttl: Duration,
    ) -> Self {
        Self {
            #[cfg(feature = "testing")]
            decided_by_test: None,
            inner: Some(Arc::new(Inner {
                store,
                clock,
                policy,
                rules: Arc::new(Swr::new(ttl)),
                tats: Mutex::new(HashMap::new()),
                store_errors: AtomicU64::new(0),
                metrics: None,
            })),
        }
    }

    /// The same, counting store failures in `metrics` too.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        // Only ever called on a fresh limiter, before its `Inner` is shared.
        if let Some(inner) = self.inner.as_mut().and_then(Arc::get_mut) {
            inner.metrics = Some(metrics);
        }
        self
    }

    /// Tests: limits whose every verdict `decide` gives (to drive the request path's
    /// answers and records without rules or a store).
    #[cfg(feature = "testing")]
    pub fn decided_by_test(decide: TestVerdicts) -> Self {
        Self {
            inner: None,
            decided_by_test: Some(decide),
        }
    }

    /// Store failures met while checking (rules unreadable, bucket writes failed): a counter
    /// for metrics.
    pub fn store_errors(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.store_errors.load(Ordering::Relaxed))
    }

    /// Forgets the cached rules (an admin write in this process).
    pub async fn invalidate(&self) {
        if let Some(i) = &self.inner {
            i.rules.invalidate().await;
        }
    }

    /// Counts `call` against every matching rule.
    pub async fn check(&self, call: &CallKey<'_>) -> Verdict {
        #[cfg(feature = "testing")]
        if let Some(decide) = &self.decided_by_test {
            return decide(call);
        }
        let pass = Verdict::Pass { would_limit: None };
        let Some(inner) = &self.inner else {
            return pass;
        };
        let Some(rules) = Inner::rules(inner).await else {
            // Never read (the store failed on the first read; counted, logged): nothing to
            // judge by, the call passes.
            return pass;
        };
        let whose = Whose::of(call.principal);
        let buckets = inner
            .buckets(&rules, call.endpoint, call.method, call.name, &whose)
            .await;
        if buckets.is_empty() {
            return pass;
        }
        let now = inner.clock.now_ms();
        // One bucket (the common case: one rule) is one write. Several are taken one after
        // another, most specific first, and the first enforce refusal stops the sequence: a
        // refused call must not use up the budgets behind it (a user over their own limit
        // would otherwise keep draining the team's and everyone's). Audit buckets are
        // counted and never stop it.
        let mut would_limit = None;
        for b in &buckets {
            let taken = if b.teams_unreadable {
                // Already counted and logged when the teams were read.
                Err(None)
            } else {
                inner.take(b, now).await.map_err(Some)
            };
            let wait = match taken {
                Ok(None) => continue,
                Ok(Some(wait)) => wait,
                Err(e) => {
                    if let Some(e) = e {
                        inner.store_failed(&e, "rate-limit bucket write failed");
                    }
                    match b.rule.on_store_error {
                        OnStoreError::Allow => continue,
                        OnStoreError::Deny => STORE_ERROR_WAIT,
                    }
                }
            };
            match b.rule.mode {
                Mode::Enforce => {
                    return Verdict::Limited {
                        rule: b.rule.name.clone(),
                        retry_after: wait,
                    };
                }
                Mode::Audit => {
                    would_limit.get_or_insert_with(|| b.rule.name.clone());
                }
            }
        }
        Verdict::Pass { would_limit }
    }

    /// What is left of every limit that applies to `subject` (calling with the API key
    /// `api_key_id`, if any) calling each of `tools` on `endpoint`, without counting (a peek:
    /// one store read per distinct bucket). Store failures leave a tool's list empty.
    pub async fn budgets(
        &self,
        subject: &Subject,
        api_key_id: Option<&str>,
        endpoint: &str,
        tools: &[&str],
    ) -> HashMap<String, Vec<Budget>> {
        let mut out = HashMap::new();
        let Some(inner) = &self.inner else {
            return out;
        };
        let Some(rules) = Inner::rules(inner).await else {
            return out;
        };
        let now = inner.clock.now_ms();
        let mut peeked: HashMap<String, Option<i64>> = HashMap::new();
        let whose = Whose {
            user: &subject.user,
            groups: &subject.groups,
            api_key_id,
        };
        for tool in tools {
            let buckets = inner
                .buckets(&rules, endpoint, "tools/call", tool, &whose)
                .await;
            if buckets.iter().any(|b| b.teams_unreadable) {
                // The store is failing: what is known so far (once logged, not per tool).
                return out;
            }
            let mut list: Vec<Budget> = Vec::new();
            for b in &buckets {
                let key = b.store_key(now);
                let value = match peeked.get(&key) {
                    Some(v) => *v,
                    None => match inner.store.peek_bucket(&key, now).await {
                        Ok(v) => {
                            peeked.insert(key, v);
                            v
                        }
                        Err(e) => {
                            tracing::warn!(error = %error_chain(&e), "rate-limit budget unreadable");
                            continue;
                        }
                    },
                };
                let (remaining, reset_at_ms) = match b.shape {
                    Shape::Rate { t_us, tau_us } => {
                        let now_us = now * 1000;
                        (
                            gcra::remaining(value, now_us, t_us, tau_us),
                            ms_up(gcra::full_at(value, now_us)),
                        )
                    }
                    Shape::Quota { window_ms, count } => (
                        count.saturating_sub(value.unwrap_or(0).max(0) as u64),
                        window_end(now, window_ms),
                    ),
                };
                // A team rule has a bucket per team: the tightest one is what is left.
                match list
                    .iter_mut()
                    .find(|x| x.rule == b.rule.name && x.limit == b.signature)
                {
                    Some(x) if remaining < x.remaining => {
                        (x.remaining, x.reset_at_ms) = (remaining, reset_at_ms)
                    }
                    Some(_) => {}
                    None => list.push(Budget {
                        rule: b.rule.name.clone(),
                        mode: b.rule.mode,
                        limit: b.signature.to_owned(),
                        remaining,
                        reset_at_ms,
                    }),
                }
            }
            if !list.is_empty() {
                out.insert(tool.to_string(), list);
            }
        }
        out
    }
}

impl Bucket<'_> {
    /// The key in the store: a quota's names its current window, so each window counts
    /// from zero without a reset write.
    fn store_key(&self, now: i64) -> String {
        match self.shape {
            Shape::Rate { .. } => self.key.clone(),
            Shape::Quota { window_ms, .. } => {
                format!("{}#{}", self.key, window_end(now, window_ms) - window_ms)
            }
        }
    }
}

/// Microseconds (a rate's clock) as milliseconds, rounded up: a wait or reset time is
/// never early.
fn ms_up(us: i64) -> i64 {
    (us + 999).div_euclid(1000)
}

/// The end of the fixed window holding `now` (windows start at multiples of their length).
fn window_end(now: i64, window_ms: i64) -> i64 {
    now.div_euclid(window_ms) * window_ms + window_ms
}

impl Inner {
    fn store_failed(&self, e: &StoreError, what: &'static str) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.inc_limit_store_failures(1);
        }
        tracing::warn!(error = %error_chain(e), "{what}");
    }

    /// The rules in force: the cached list, re-read when stale; the last list read when a
    /// re-read fails (kept for another TTL, so a failing store is asked once per TTL, not
    /// per call); `None` only before any list was read.
    async fn rules(self: &Arc<Self>) -> Option<Arc<Vec<Compiled>>> {
        let read = self
            .rules
            .get(|| {
                let inner = self.clone();
                async move {
                    let read = inner.read_rules().await;
                    if let Err(e) = &read {
                        inner.store_failed(
                            e,
                            "rate-limit rules unreadable; the last ones read stay in force",
                        );
                    }
                    read
                }
            })
            .await;
        match read {
            Ok(rules) => Some(rules),
            Err(ReadFailed { last, .. }) => {
                if last.is_some() {
                    self.rules.keep_last().await;
                }
                last
            }
        }
    }

    async fn read_rules(&self) -> StoreResult<Vec<Compiled>> {
        let docs: Vec<RateLimitRule> = self.store.list_typed(ConfigKind::RateLimit).await?;
        Ok(docs
            .into_iter()
            .filter_map(|rule| {
                // Documents are validated on write; one that is not (edited in the store by
                // hand) is skipped loudly rather than stopping every other rule.
                let limits: Result<Vec<_>, _> = rule
                    .limits
                    .iter()
                    .map(|l| l.shape().map(|s| (s, l.signature())))
                    .collect();
                match limits {
                    Ok(limits) => Some(Compiled { rule, limits }),
                    Err(e) => {
                        tracing::warn!(rule = %rule.name, error = %e, "invalid rate-limit rule skipped");
                        None
                    }
                }
            })
            .collect())
    }

    /// The buckets a call of `method` naming `name` on `endpoint` by `p` counts against.
    async fn buckets<'r>(
        &self,
        rules: &'r [Compiled],
        endpoint: &str,
        method: &str,
        name: &str,
        p: &Whose<'_>,
    ) -> Vec<Bucket<'r>> {
        // `Err(())`: the teams could not be read (counted and logged once per call).
        let mut teams: Option<Result<Vec<String>, ()>> = None;
        let mut out = Vec::new();
        for c in rules
            .iter()
            .filter(|c| c.rule.matches(endpoint, method, name))
        {
            let mut teams_unreadable = false;
            let whose: Vec<String> = match c.rule.per {
                Per::User => vec![format!("u:{}", p.user)],
                Per::ApiKey => vec![match p.api_key_id {
                    Some(id) => format!("k:{id}"),
                    None => format!("u:{}", p.user),
                }],
                Per::Global => vec!["*".to_owned()],
                Per::Team => {
                    if teams.is_none() {
                        teams = Some(match self.policy.get(&self.store).await {
                            Ok(snap) => {
                                let subject = Subject {
                                    user: p.user.to_owned(),
                                    groups: p.groups.to_vec(),
                                };
                                Ok(snap
                                    .teams_of(&subject)
                                    .into_iter()
                                    .map(|t| format!("t:{t}"))
                                    .collect())
                            }
                            Err(e) => {
                                self.store_failed(&e, "teams unreadable for rate limits");
                                Err(())
                            }
                        });
                    }
                    match teams.clone() {
                        Some(Ok(teams)) => teams,
                        // Whose budget is unknown: one stand-in bucket per limit that is
                        // never written, decided by the rule's `on_store_error`.
                        Some(Err(())) | None => {
                            teams_unreadable = true;
                            vec![String::new()]
                        }
                    }
                }
            };
            for (shape, signature) in &c.limits {
                for who in &whose {
                    out.push(Bucket {
                        rule: &c.rule,
                        shape: *shape,
                        key: format!("{}#{signature}#{who}", c.rule.name),
                        signature,
                        teams_unreadable,
                    });
                }
            }
        }
        // The order calls take buckets in (see `check`): most specific first, then by rule
        // name and key, so every process takes the same buckets in the same order.
        out.sort_by(|a, b| {
            (a.rule.per.specificity(), &a.rule.name, &a.key).cmp(&(
                b.rule.per.specificity(),
                &b.rule.name,
                &b.key,
            ))
        });
        out
    }

    /// Counts one call on `b` at `now`: `None` when allowed, else how long to wait.
    async fn take(&self, b: &Bucket<'_>, now: i64) -> StoreResult<Option<Duration>> {
        let ms = |v: i64| Some(Duration::from_millis(v.max(1) as u64));
        match b.shape {
            Shape::Rate { t_us, tau_us } => {
                let now_us = now * 1000;
                let hint = self.remembered(&b.key);
                let take = self
                    .store
                    .take_rate(&b.key, now_us, t_us, tau_us, hint)
                    .await?;
                let (Take::Taken(tat) | Take::Refused(tat)) = take;
                self.remember(&b.key, tat);
                Ok(match take {
                    Take::Taken(_) => None,
                    Take::Refused(tat) => ms(ms_up(gcra::retry_after(tat, now_us, tau_us))),
                })
            }
            Shape::Quota { window_ms, count } => {
                let end = window_end(now, window_ms);
                let key = b.store_key(now);
                Ok(match self.store.take_quota(&key, now, count, end).await? {
                    Take::Taken(_) => None,
                    Take::Refused(_) => ms(end - now),
                })
            }
        }
    }

    fn remembered(&self, key: &str) -> Option<i64> {
        self.tats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    fn remember(&self, key: &str, tat: i64) {
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        if tats.len() >= MAX_REMEMBERED && !tats.contains_key(key) {
            tats.clear();
        }
        tats.insert(key.to_owned(), tat);
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::identity::AuthMethod;
    use crate::store::sqlite::SqliteStore;
    use crate::testing::ObservedStore;
    use serde_json::json;

    fn who(user: &str, key: Option<&str>) -> Principal {
        Principal {
            user: user.into(),
            email: Some(user.into()),
            subject: user.into(),
            groups: vec![],
            is_admin: false,
            service_account: false,
            method: AuthMethod::Jwt {
                issuer: "i".into(),
                provider: "p".into(),
            },
            api_key_id: key.map(str::to_owned),
        }
    }

    struct Fixture {
        store: Arc<dyn Store>,
        clock: Arc<FixedClock>,
        limits: Limits,
    }

    async fn fixture(store: Arc<dyn Store>, rules: serde_json::Value) -> Fixture {
        for r in rules.as_array().unwrap() {
            let rule: RateLimitRule = serde_json::from_value(r.clone()).unwrap();
            rule.validate().unwrap();
            store
                .create_config(ConfigKind::RateLimit, &rule.name, r)
                .await
                .unwrap();
        }
        let clock = Arc::new(FixedClock::at(1_000_000));
        let limits = Limits::new(
            store.clone(),
            clock.clone(),
            Arc::new(PolicyCache::new(Duration::from_secs(60))),
            Duration::from_secs(60),
        );
        Fixture {
            store,
            clock,
            limits,
        }
    }

    fn sqlite() -> Arc<dyn Store> {
        Arc::new(SqliteStore::in_memory().unwrap())
    }

    async fn call(l: &Limits, p: &Principal, tool: &str) -> Verdict {
        l.check(&CallKey {
            principal: p,
            endpoint: "gh",
            method: "tools/call",
            name: tool,
        })
        .await
    }

    fn limited(v: &Verdict) -> Option<Duration> {
        match v {
            Verdict::Limited { retry_after, .. } => Some(*retry_after),
            Verdict::Pass { .. } => None,
        }
    }

    #[tokio::test]
    async fn per_user_rate_passes_count_then_waits_one_interval() {
        let f = fixture(
            sqlite(),
            json!([{"name":"five","mode":"enforce","per":"user",
                "match":{"tools":["search"]},"limits":[{"count":5,"window":"1m"}]}]),
        )
        .await;
        let (a, b) = (who("a@x.io", None), who("b@x.io", None));
        let mut waits = Vec::new();
        for _ in 0..8 {
            waits.push(limited(&call(&f.limits, &a, "search").await));
        }
        assert_eq!(waits.iter().filter(|w| w.is_none()).count(), 5);
        assert!(
            waits[5..]
                .iter()
                .all(|w| *w == Some(Duration::from_secs(12)))
        );
        assert_eq!(
            call(&f.limits, &a, "other").await,
            Verdict::Pass { would_limit: None },
            "a tool the rule does not name is not counted"
        );
        assert!(
            limited(&call(&f.limits, &b, "search").await).is_none(),
            "per user"
        );
        let budget = f
            .limits
            .budgets(&(&a).into(), None, "gh", &["search", "other"])
            .await;
        assert_eq!(budget["search"][0].remaining, 0);
        assert_eq!(budget["search"][0].reset_at_ms, 1_000_000_000 + 60_000);
        assert!(!budget.contains_key("other"));
        f.clock.advance(12);
        assert!(limited(&call(&f.limits, &a, "search").await).is_none());
        assert!(limited(&call(&f.limits, &a, "search").await).is_some());
    }

    #[tokio::test]
    async fn a_call_refused_by_its_own_bucket_uses_no_shared_budget() {
        // "a-everyone" sorts before "z-user" by name: the order is by specificity first.
        let f = fixture(
            sqlite(),
            json!([
                {"name":"a-everyone","mode":"enforce","per":"global","limits":[{"count":5,"window":"1m"}]},
                {"name":"z-user","mode":"enforce","per":"user","limits":[{"count":1,"window":"1m"}]},
                {"name":"watch","mode":"audit","per":"global","limits":[{"count":3,"window":"1m"}]}
            ]),
        )
        .await;
        let (alice, bob) = (who("alice@x.io", None), who("bob@x.io", None));
        let mut passed = 0;
        for _ in 0..10 {
            match call(&f.limits, &alice, "t").await {
                Verdict::Pass { .. } => passed += 1,
                Verdict::Limited { rule, .. } => assert_eq!(rule, "z-user"),
            }
        }
        assert_eq!(passed, 1, "alice's own limit");
        assert_eq!(
            call(&f.limits, &bob, "t").await,
            Verdict::Pass { would_limit: None },
            "alice's refused calls took nothing from the global budget nor the audit one"
        );
        let b = f.limits.budgets(&(&bob).into(), None, "gh", &["t"]).await;
        let left = |rule: &str| b["t"].iter().find(|x| x.rule == rule).unwrap().remaining;
        assert_eq!((left("a-everyone"), left("watch")), (3, 1));
    }

    #[tokio::test]
    async fn rates_above_one_call_per_millisecond_are_counted_exactly() {
        // 3000/1s paces every 334 µs: whole milliseconds could not express it.
        let f = fixture(
            sqlite(),
            json!([{"name":"fast","mode":"enforce","per":"global","limits":[{"count":3000,"window":"1s"}]}]),
        )
        .await;
        let a = who("a@x.io", None);
        let mut passed = 0;
        for _ in 0..3001 {
            passed += usize::from(limited(&call(&f.limits, &a, "t").await).is_none());
        }
        assert_eq!(passed, 3000);
        let wait = limited(&call(&f.limits, &a, "t").await).unwrap();
        assert_eq!(wait, Duration::from_millis(1), "334 µs, rounded up to 1 ms");
    }

    #[tokio::test]
    async fn audit_mode_counts_without_blocking() {
        let f = fixture(
            sqlite(),
            json!([{"name":"watch","mode":"audit","per":"global","limits":[{"count":2,"window":"10s"}]}]),
        )
        .await;
        let a = who("a@x.io", None);
        let verdicts: Vec<Verdict> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(call(&f.limits, &a, "t").await);
            }
            v
        };
        assert_eq!(verdicts[1], Verdict::Pass { would_limit: None });
        assert_eq!(
            verdicts[2],
            Verdict::Pass {
                would_limit: Some("watch".into())
            }
        );
    }

    #[tokio::test]
    async fn team_rule_is_shared_by_members_and_skips_the_teamless() {
        let store = sqlite();
        store
            .create_config(
                ConfigKind::Team,
                "eng",
                &json!({"name":"eng","members":["a@x.io","b@x.io"]}),
            )
            .await
            .unwrap();
        let f = fixture(
            store,
            json!([{"name":"team3","mode":"enforce","per":"team","limits":[{"count":3,"window":"30s"}]}]),
        )
        .await;
        let (a, b, c) = (
            who("a@x.io", None),
            who("b@x.io", None),
            who("c@x.io", None),
        );
        let mut passed = 0;
        for p in [&a, &b, &a, &b, &a, &b] {
            passed += usize::from(limited(&call(&f.limits, p, "t").await).is_none());
        }
        assert_eq!(passed, 3, "one budget for the team");
        for _ in 0..5 {
            assert!(limited(&call(&f.limits, &c, "t").await).is_none());
        }
    }

    #[tokio::test]
    async fn quota_counts_per_fixed_window_and_api_key() {
        let f = fixture(
            sqlite(),
            json!([{"name":"daily","mode":"enforce","per":"api_key","limits":[{"count":2,"window":"1d"}]}]),
        )
        .await;
        let (k1, k2) = (who("a@x.io", Some("k1")), who("a@x.io", Some("k2")));
        assert!(limited(&call(&f.limits, &k1, "t").await).is_none());
        assert!(limited(&call(&f.limits, &k1, "t").await).is_none());
        let wait = limited(&call(&f.limits, &k1, "t").await).unwrap();
        // 1_000_000 s is 11 days + 49_600 s: the day ends 36_800 s later.
        assert_eq!(wait, Duration::from_secs(86_400 - 1_000_000 % 86_400));
        assert!(
            limited(&call(&f.limits, &k2, "t").await).is_none(),
            "per key"
        );
        let b = f
            .limits
            .budgets(&(&k1).into(), Some("k1"), "gh", &["t"])
            .await;
        assert_eq!(b["t"][0].remaining, 0);
        f.clock.advance(wait.as_secs() as i64);
        assert!(
            limited(&call(&f.limits, &k1, "t").await).is_none(),
            "a new window"
        );
    }

    #[tokio::test]
    async fn store_failures_pass_by_default_deny_when_configured_and_are_counted() {
        let inner = sqlite();
        let store: Arc<dyn Store> = Arc::new(ObservedStore::new(inner.clone(), |c| {
            if c.method == "take_rate" {
                Err(StoreError::Corrupt("down".into()))
            } else {
                Ok(())
            }
        }));
        let f = fixture(
            store,
            json!([{"name":"open","mode":"enforce","per":"user","limits":[{"count":1,"window":"1m"}]}]),
        )
        .await;
        let a = who("a@x.io", None);
        assert!(limited(&call(&f.limits, &a, "t").await).is_none());
        assert!(limited(&call(&f.limits, &a, "t").await).is_none());
        assert_eq!(f.limits.store_errors(), 2);
        f.store
            .replace_config(
                ConfigKind::RateLimit,
                "open",
                &json!({"name":"open","mode":"enforce","per":"user","on_store_error":"deny","limits":[{"count":1,"window":"1m"}]}),
            )
            .await
            .unwrap();
        f.limits.invalidate().await;
        assert_eq!(
            limited(&call(&f.limits, &a, "t").await),
            Some(STORE_ERROR_WAIT)
        );
    }

    /// A store whose `list_configs` fails while `down` is set.
    fn flaky(down: &Arc<std::sync::atomic::AtomicBool>) -> Arc<dyn Store> {
        let down = down.clone();
        Arc::new(ObservedStore::new(sqlite(), move |c| {
            if c.method == "list_configs" && down.load(Ordering::SeqCst) {
                Err(StoreError::Corrupt("down".into()))
            } else {
                Ok(())
            }
        }))
    }

    #[tokio::test]
    async fn rules_that_cannot_be_re_read_stay_in_force() {
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = fixture(
            flaky(&down),
            json!([{"name":"one","mode":"enforce","per":"user","limits":[{"count":1,"window":"1m"}]}]),
        )
        .await;
        // No TTL: every call re-reads, so the failure is met on the second call.
        let limits = Limits::new(
            f.store.clone(),
            f.clock.clone(),
            Arc::new(PolicyCache::new(Duration::ZERO)),
            Duration::ZERO,
        );
        let a = who("a@x.io", None);
        assert!(limited(&call(&limits, &a, "t").await).is_none());
        down.store(true, Ordering::SeqCst);
        assert!(
            limited(&call(&limits, &a, "t").await).is_some(),
            "a failed re-read lifted the rule"
        );
        assert!(limits.store_errors() >= 1, "counted");
        limits.invalidate().await;
        assert!(
            limited(&call(&limits, &a, "t").await).is_some(),
            "nor does an invalidation followed by a failed read"
        );
    }

    #[tokio::test]
    async fn unreadable_teams_are_decided_by_each_rule_on_store_error() {
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let store = flaky(&down);
        store
            .create_config(
                ConfigKind::Team,
                "eng",
                &json!({"name":"eng","members":["a@x.io"]}),
            )
            .await
            .unwrap();
        let f = fixture(
            store,
            json!([
                {"name":"strict","mode":"enforce","per":"team","on_store_error":"deny",
                    "match":{"tools":["s"]},"limits":[{"count":100,"window":"1m"}]},
                {"name":"lenient","mode":"enforce","per":"team",
                    "match":{"tools":["l"]},"limits":[{"count":100,"window":"1m"}]}
            ]),
        )
        .await;
        // Rules cached for a minute, teams re-read every call.
        let limits = Limits::new(
            f.store.clone(),
            f.clock.clone(),
            Arc::new(PolicyCache::new(Duration::ZERO)),
            Duration::from_secs(60),
        );
        let a = who("a@x.io", None);
        assert!(limited(&call(&limits, &a, "s").await).is_none(), "baseline");
        down.store(true, Ordering::SeqCst);
        assert_eq!(
            call(&limits, &a, "s").await,
            Verdict::Limited {
                rule: "strict".into(),
                retry_after: STORE_ERROR_WAIT
            }
        );
        assert!(limited(&call(&limits, &a, "l").await).is_none());
        assert_eq!(limits.store_errors(), 2);
    }

    #[tokio::test]
    async fn rules_are_cached_not_read_per_call() {
        let reads = Arc::new(AtomicU64::new(0));
        let r = reads.clone();
        let store: Arc<dyn Store> = Arc::new(ObservedStore::new(sqlite(), move |c| {
            if c.method == "list_configs" {
                r.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
        let f = fixture(
            store,
            json!([{"name":"r","mode":"enforce","per":"user","limits":[{"count":100,"window":"1m"}]}]),
        )
        .await;
        let a = who("a@x.io", None);
        for _ in 0..10 {
            call(&f.limits, &a, "t").await;
        }
        assert_eq!(reads.load(Ordering::Relaxed), 1);
    }
}
