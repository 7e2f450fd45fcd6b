//! Time bounds of audit reads as operators type them (RFC 3339 or milliseconds since the
//! epoch) and the default ranges, shared by the admin API and `local audit verify` so both
//! read the same records for the same words: a list reads the retention period back from
//! now (it is paged); a verify holds its whole range in memory, so it reads the last day
//! unless told otherwise and at most [`VERIFY_MAX_DAYS`].

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How far past now an open range reaches: records of another instance whose clock runs a
/// little fast are still included.
const CLOCK_SLACK_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// `text` as milliseconds since the epoch: an integer as it is, else RFC 3339.
pub fn parse_time_ms(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `[since, until)`: `until` defaults to now (plus a minute of clock slack), `since` to the
/// retention period (plus a day) before `until`.
pub fn time_range(since: Option<i64>, until: Option<i64>, retention: Duration) -> (i64, i64) {
    let until = until.unwrap_or_else(|| super::record::now_ms() + CLOCK_SLACK_MS);
    let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let since = since.unwrap_or_else(|| until.saturating_sub(keep).saturating_sub(DAY_MS));
    (since, until)
}

/// The longest range one verify reads (it holds every record of the range in memory).
pub const VERIFY_MAX_DAYS: i64 = 31;

/// Why a verify range was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("since must be before until")]
    Empty,
    #[error("a verify reads at most {VERIFY_MAX_DAYS} days; give a shorter since/until range")]
    TooLong,
}

/// `[since, until)` of a verify: `until` defaults to now (plus clock slack), `since` to a day
/// before `until`; refused when empty or longer than [`VERIFY_MAX_DAYS`].
pub fn verify_range(since: Option<i64>, until: Option<i64>) -> Result<(i64, i64), RangeError> {
    let until = until.unwrap_or_else(|| super::record::now_ms() + CLOCK_SLACK_MS);
    let since = since.unwrap_or_else(|| until.saturating_sub(DAY_MS));
    if since >= until {
        return Err(RangeError::Empty);
    }
    if until.saturating_sub(since) > VERIFY_MAX_DAYS * DAY_MS {
        return Err(RangeError::TooLong);
    }
    Ok((since, until))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_ms_or_rfc3339_and_ranges_default_to_the_retention() {
        assert_eq!(parse_time_ms("1500"), Some(1500));
        assert_eq!(parse_time_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            parse_time_ms("2026-01-01T01:00:00+01:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(parse_time_ms("yesterday"), None);
        let (s, u) = time_range(None, Some(10 * DAY_MS), Duration::from_secs(86_400));
        assert_eq!((s, u), (8 * DAY_MS, 10 * DAY_MS));
        assert_eq!(time_range(Some(5), Some(6), Duration::ZERO), (5, 6));
    }

    #[test]
    fn verify_ranges_default_to_a_day_and_stop_at_31_days() {
        assert_eq!(
            verify_range(None, Some(10 * DAY_MS)),
            Ok((9 * DAY_MS, 10 * DAY_MS))
        );
        let (s, u) = verify_range(None, None).unwrap();
        assert_eq!(u - s, DAY_MS);
        assert_eq!(
            verify_range(Some(0), Some(31 * DAY_MS)),
            Ok((0, 31 * DAY_MS))
        );
        assert_eq!(
            verify_range(Some(0), Some(31 * DAY_MS + 1)),
            Err(RangeError::TooLong)
        );
        assert_eq!(verify_range(Some(0), None), Err(RangeError::TooLong));
        assert_eq!(verify_range(Some(5), Some(5)), Err(RangeError::Empty));
    }
}
