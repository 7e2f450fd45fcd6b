//! The rate-limit document admins write (`/admin/rate-limits`) and the checks the value alone
//! allows: which calls a rule matches, whose budget a call uses, and its limits.
//!
//! Decisions the issue left open, in one place:
//! - `match` lists that are empty or absent match anything; endpoint and tool entries are the
//!   policy's patterns (`policy::pattern`: exact, `*`, `?`); `tools` names the tool the caller
//!   sees (aliases of virtual servers included) and, being about tools, a rule that lists tools
//!   matches `tools/call` only.
//! - A window shorter than [`QUOTA_FROM_MS`] (one hour) is a rate (GCRA, smooth, `burst`
//!   calls may come at once, `count` by default); one hour or longer is a quota: a fixed
//!   window counter (calendar-free: windows start at multiples of the window since the Unix
//!   epoch), where `burst` means nothing and is refused.
//! - `burst` is 1..=`count`: a larger burst would let more than `count` calls through in one
//!   window, which is what the document says must not happen.
//! - A rate's emission interval is `window / count` rounded UP to whole MICROseconds, so
//!   rounding never lets more than `count` through per window, and a global 100000/1m
//!   (600 µs) is exact. A rate the rounding would make more than 1% stricter than written
//!   (above ~10000 per second, e.g. 600000/1s, paced at 500000/1s) is refused with the counts
//!   that work. A bucket is one DynamoDB item, which takes about 1000 writes/s at most
//!   anyway (see README).

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::domain::validate_name;
use crate::policy::model::{Invalid, check_description, check_list};
use crate::policy::pattern::Pattern;

/// Windows of one hour or more are quotas (fixed-window counters), shorter ones rates (GCRA).
pub const QUOTA_FROM_MS: i64 = 3_600_000;
pub const MIN_WINDOW_MS: i64 = 1_000;
pub const MAX_WINDOW_MS: i64 = 30 * 86_400_000;
/// Most limits per rule and the largest quota count (far below i64, readable in a console).
pub const MAX_LIMITS: usize = 8;
pub const MAX_COUNT: u64 = 1_000_000_000;
/// The only methods that are ever counted.
pub const METHODS: [&str; 3] = ["tools/call", "resources/read", "prompts/get"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A call over the limit is refused.
    Enforce,
    /// A call over the limit is let through and recorded as `would_limit`.
    Audit,
}

/// Whose budget a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    User,
    /// Every team of the caller has its own budget and the call counts against each; a
    /// caller in no team is not limited by the rule (a team rule limits teams).
    Team,
    /// Each API key; a caller signed in without one (a JWT) counts per user instead, so no
    /// credential choice escapes the rule.
    ApiKey,
    Global,
}

impl Per {
    /// Rank in the order a call takes its buckets: the caller's own (user, key) before the
    /// team's before everyone's, so a call refused by its own budget touches no shared one.
    pub fn specificity(self) -> u8 {
        match self {
            Per::User | Per::ApiKey => 0,
            Per::Team => 1,
            Per::Global => 2,
        }
    }
}

/// What happens when the store cannot be asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Let the call through (availability over strictness), counted and logged.
    #[default]
    Allow,
    /// Refuse the call (retry after a second).
    Deny,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
}

/// One limit: `count` calls per `window`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub count: u64,
    /// `{n}s`, `{n}m`, `{n}h` or `{n}d`, 1s to 30d.
    pub window: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

/// A rate-limit rule document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub mode: Mode,
    #[serde(default, rename = "match")]
    pub matches: Match,
    pub per: Per,
    pub limits: Vec<Limit>,
    #[serde(default)]
    pub on_store_error: OnStoreError,
    #[serde(default)]
    pub created_at: UnixTime,
    #[serde(default)]
    pub updated_at: UnixTime,
}

/// A limit in the units the limiter computes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// GCRA in microseconds: emission interval `t_us`, tolerance `tau_us`
    /// (`(burst - 1) * t_us`).
    Rate { t_us: i64, tau_us: i64 },
    /// Fixed window of `window_ms`, at most `count` calls in each.
    Quota { window_ms: i64, count: u64 },
}

/// `"90s"`, `"1m"`, `"12h"`, `"30d"` in milliseconds.
pub fn parse_window(w: &str) -> Result<i64, Invalid> {
    let bad = || format!("window '{w}' must be a whole number and a unit s, m, h or d (1s to 30d)");
    let unit = match w.as_bytes().last() {
        Some(b's') => 1_000,
        Some(b'm') => 60_000,
        Some(b'h') => 3_600_000,
        Some(b'd') => 86_400_000,
        _ => return Err(bad()),
    };
    let digits = &w[..w.len() - 1];
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let ms = digits.parse::<i64>().map_err(|_| bad())? * unit;
    if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&ms) {
        return Err(format!("window '{w}' must be between 1s and 30d"));
    }
    Ok(ms)
}

impl Limit {
    /// The limit as the limiter uses it (validated documents only produce `Ok`).
    pub fn shape(&self) -> Result<Shape, Invalid> {
        let window_ms = parse_window(&self.window)?;
        if self.count == 0 || self.count > MAX_COUNT {
            return Err(format!("count must be 1 to {MAX_COUNT}"));
        }
        if window_ms >= QUOTA_FROM_MS {
            if self.burst.is_some() {
                return Err(format!(
                    "burst applies to windows under 1h; a {} window is a quota counted per fixed window",
                    self.window
                ));
            }
            return Ok(Shape::Quota {
                window_ms,
                count: self.count,
            });
        }
        let count = self.count as i64;
        let window_us = window_ms * 1000;
        if count > window_us {
            return Err(format!(
                "count {count} per {} is more than one call per microsecond",
                self.window
            ));
        }
        let burst = self.burst.unwrap_or(self.count);
        if burst == 0 || burst > self.count {
            return Err(format!("burst must be 1 to count ({})", self.count));
        }
        let t_us = (window_us + count - 1) / count;
        // The interval is whole microseconds: refuse a rule the rounding would quietly make
        // stricter than written (beyond 1%), rather than enforce another limit than the
        // admin's. Only rates far above what one bucket (one DynamoDB item) takes are
        // affected: 600000/1s would pace at 500000/1s.
        if t_us * count * 99 > window_us * 100 {
            let paced = window_us / t_us;
            let exact = window_us / (window_us / count);
            let w = &self.window;
            return Err(format!(
                "count {count} per {w} would be paced at {paced} per {w}: {}; use a count that \
                 divides the window evenly (e.g. {exact} or {paced})",
                "a rate's interval is whole microseconds"
            ));
        }
        Ok(Shape::Rate {
            t_us,
            tau_us: (burst as i64 - 1) * t_us,
        })
    }

    /// Stable text of the limit, part of its buckets' keys: a changed limit starts afresh.
    pub fn signature(&self) -> String {
        match self.burst {
            Some(b) => format!("{}/{}/{b}", self.count, self.window),
            None => format!("{}/{}", self.count, self.window),
        }
    }
}

impl RateLimitRule {
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_name(&self.name).map_err(|m| format!("name: {m}"))?;
        check_description(&self.description)?;
        let m = &self.matches;
        for (what, list) in [("match.endpoints", &m.endpoints), ("match.tools", &m.tools)] {
            check_list(what, list, crate::policy::model::MAX_LIST)?;
            for p in list {
                Pattern::validate(p).map_err(|e| format!("{what}: '{p}': {e}"))?;
            }
        }
        check_list("match.methods", &m.methods, METHODS.len())?;
        if let Some(bad) = m.methods.iter().find(|x| !METHODS.contains(&x.as_str())) {
            return Err(format!(
                "match.methods: '{bad}' is not counted; use {}",
                METHODS.join(", ")
            ));
        }
        if self.limits.is_empty() || self.limits.len() > MAX_LIMITS {
            return Err(format!("limits must hold 1 to {MAX_LIMITS} limits"));
        }
        for (i, l) in self.limits.iter().enumerate() {
            l.shape().map_err(|e| format!("limits[{i}]: {e}"))?;
        }
        Ok(())
    }

    /// Whether the rule applies to a call of `method` on `endpoint` naming `name`.
    ///
    /// Tool names match in any spelling, as deny rules do (`Pattern::matches_any_spelling`):
    /// a limit restricts, and `Search`, `search ` or a full-width `ｓｅａｒｃｈ` reach the
    /// same tool on an upstream that looks names up loosely, so they must use the same
    /// budget. Endpoints are the registered name the path resolved to, never the caller's
    /// spelling, so they match as written.
    pub fn matches(&self, endpoint: &str, method: &str, name: &str) -> bool {
        let m = &self.matches;
        (m.methods.is_empty() || m.methods.iter().any(|x| x == method))
            && (m.endpoints.is_empty()
                || m.endpoints
                    .iter()
                    .any(|p| Pattern::new(p).matches(endpoint)))
            && (m.tools.is_empty()
                || (method == "tools/call"
                    && m.tools
                        .iter()
                        .any(|p| Pattern::new(p).matches_any_spelling(name))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: serde_json::Value) -> Result<RateLimitRule, String> {
        let r: RateLimitRule = serde_json::from_value(v).map_err(|e| e.to_string())?;
        r.validate().map(|_| r)
    }

    #[test]
    fn windows_parse_within_bounds() {
        assert_eq!(parse_window("1s"), Ok(1_000));
        assert_eq!(parse_window("90s"), Ok(90_000));
        assert_eq!(parse_window("30d"), Ok(MAX_WINDOW_MS));
        for bad in [
            "",
            "s",
            "0s",
            "31d",
            "1w",
            "1.5h",
            "-1m",
            " 1m",
            "1M",
            "9999999999d",
        ] {
            assert!(parse_window(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shapes_rates_and_quotas() {
        let l = |count, window: &str, burst| Limit {
            count,
            window: window.into(),
            burst,
        };
        assert_eq!(
            l(5, "1m", None).shape(),
            Ok(Shape::Rate {
                t_us: 12_000_000,
                tau_us: 48_000_000
            })
        );
        assert_eq!(
            l(7, "1m", Some(1)).shape(),
            Ok(Shape::Rate {
                t_us: 8_571_429,
                tau_us: 0
            }),
            "rounded up, never more than count per window"
        );
        assert_eq!(
            l(1000, "1h", None).shape(),
            Ok(Shape::Quota {
                window_ms: 3_600_000,
                count: 1000
            })
        );
        assert!(l(0, "1m", None).shape().is_err());
        assert!(l(5, "1m", Some(6)).shape().is_err());
        assert!(l(5, "1m", Some(0)).shape().is_err());
        assert!(l(5, "1d", Some(2)).shape().is_err(), "no burst on quotas");
        // Above 1000 per second (intervals under a millisecond) rates are exact.
        assert_eq!(
            l(100_000, "1m", None).shape(),
            Ok(Shape::Rate {
                t_us: 600,
                tau_us: 99_999 * 600
            })
        );
        assert_eq!(
            l(1_500, "1s", Some(1)).shape(),
            Ok(Shape::Rate {
                t_us: 667,
                tau_us: 0
            })
        );
        assert!(l(1_000_001, "1s", None).shape().is_err());
        // Rounding to whole µs would enforce another limit than written: refused.
        assert_eq!(
            l(600_000, "1s", None).shape().unwrap_err(),
            "count 600000 per 1s would be paced at 500000 per 1s: a rate's interval is whole \
             microseconds; use a count that divides the window evenly (e.g. 1000000 or 500000)"
        );
        assert!(l(9_999, "1s", None).shape().is_ok(), "within 1%");
    }

    #[test]
    fn documents_validate() {
        let ok = serde_json::json!({"name":"r1","mode":"enforce","per":"user",
            "match":{"endpoints":["gh*"],"tools":["search"],"methods":["tools/call"]},
            "limits":[{"count":5,"window":"1m"},{"count":100,"window":"1d"}]});
        let r = rule(ok.clone()).unwrap();
        assert_eq!(r.on_store_error, OnStoreError::Allow);
        let with = |k: &str, v: serde_json::Value| {
            let mut d = ok.clone();
            d[k] = v;
            rule(d)
        };
        assert!(with("name", "Bad Name".into()).is_err());
        assert!(with("mode", "block".into()).is_err());
        assert!(with("per", "tenant".into()).is_err());
        assert!(with("limits", serde_json::json!([])).is_err());
        assert!(with("match", serde_json::json!({"methods":["tools/list"]})).is_err());
        assert!(with("match", serde_json::json!({"tools":["a b"]})).is_err());
        assert!(with("extra", 1.into()).is_err());
    }

    #[test]
    fn matching() {
        let r = rule(serde_json::json!({"name":"r","mode":"audit","per":"global",
            "match":{"endpoints":["git*"],"tools":["search_*"]},"limits":[{"count":1,"window":"1s"}]}))
        .unwrap();
        assert!(r.matches("github", "tools/call", "search_code"));
        assert!(!r.matches("github", "tools/call", "create_issue"));
        assert!(!r.matches("jira", "tools/call", "search_code"));
        assert!(
            !r.matches("github", "resources/read", "search_x"),
            "a tool list matches tools only"
        );
        let any = rule(serde_json::json!({"name":"r","mode":"audit","per":"global",
            "limits":[{"count":1,"window":"1s"}]}))
        .unwrap();
        assert!(any.matches("x", "prompts/get", "p"));
    }

    #[test]
    fn tool_patterns_match_every_spelling_of_the_name() {
        let r = rule(serde_json::json!({"name":"r","mode":"enforce","per":"user",
            "match":{"tools":["search", "get_*"]},"limits":[{"count":1,"window":"1m"}]}))
        .unwrap();
        for variant in [
            "search",
            "Search",
            "SEARCH",
            "search ",
            "se\u{200b}arch",
            "\u{ff53}\u{ff45}\u{ff41}\u{ff52}\u{ff43}\u{ff48}",
            "Get_Issue",
        ] {
            assert!(r.matches("gh", "tools/call", variant), "{variant:?}");
        }
        for other in ["searches", "research", "sea rch x", "\u{0455}earch"] {
            assert!(!r.matches("gh", "tools/call", other), "{other:?}");
        }
    }
}
