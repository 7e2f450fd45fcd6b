//! The generic cell rate algorithm, the rate limiter's buckets (`limits`): a bucket is ONE
//! number, the theoretical arrival time `tat` of the next call. The functions take any one
//! time unit; the limiter uses microseconds since the epoch (so an interval under a
//! millisecond is exact). With
//! emission interval `T = window / count` and tolerance `τ = (burst - 1)·T`, a call at `now`
//! is allowed iff `tat ≤ now + τ`, and then `tat := max(tat, now) + T`. A refused call waits `tat − τ − now`. Pure functions over
//! times, so the math is tested without a clock; the store adapters apply [`take`] atomically
//! (SQLite) or as the equivalent conditional writes (DynamoDB).

/// What one call does to a bucket: `Ok(new tat)` when allowed, `Err(old tat)` when refused.
pub fn take(tat: Option<i64>, now: i64, t: i64, tau: i64) -> Result<i64, i64> {
    match tat {
        Some(tat) if tat > now + tau => Err(tat),
        Some(tat) => Ok(tat.max(now) + t),
        None => Ok(now + t),
    }
}

/// How long a call refused on a bucket at `tat` waits (at least one unit).
pub fn retry_after(tat: i64, now: i64, tau: i64) -> i64 {
    (tat - tau - now).max(1)
}

/// Calls a bucket at `tat` would still allow at `now` (at most the burst, `τ/T + 1`).
pub fn remaining(tat: Option<i64>, now: i64, t: i64, tau: i64) -> u64 {
    let tat = tat.unwrap_or(now).max(now);
    let slack = now + tau - tat;
    if slack < 0 { 0 } else { (slack / t + 1) as u64 }
}

/// When a bucket at `tat` is full again (`now` when it already is).
pub fn full_at(tat: Option<i64>, now: i64) -> i64 {
    tat.unwrap_or(now).max(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 5 per minute, burst 5: T = 12 s, τ = 48 s.
    const T: i64 = 12_000;
    const TAU: i64 = 48_000;

    /// Runs `n` calls at `now` from `tat`; returns how many passed and the final tat.
    fn burst(mut tat: Option<i64>, now: i64, n: usize) -> (usize, Option<i64>, Vec<i64>) {
        let (mut passed, mut waits) = (0, Vec::new());
        for _ in 0..n {
            match take(tat, now, T, TAU) {
                Ok(t) => {
                    passed += 1;
                    tat = Some(t);
                }
                Err(old) => waits.push(retry_after(old, now, TAU)),
            }
        }
        (passed, tat, waits)
    }

    #[test]
    fn a_full_bucket_lets_exactly_the_burst_through_then_one_per_interval() {
        let now = 1_000_000;
        let (passed, tat, waits) = burst(None, now, 50);
        assert_eq!(passed, 5);
        assert_eq!(tat, Some(now + 5 * T));
        assert!(
            waits.iter().all(|w| *w == T),
            "the next call is one interval away"
        );
        assert_eq!(remaining(tat, now, T, TAU), 0);
        // Just before the interval: still refused, with the rest of the wait.
        let (p, _, w) = burst(tat, now + T - 1, 1);
        assert_eq!((p, w), (0, vec![1]));
        // At the interval: exactly one more.
        let (p, tat2, _) = burst(tat, now + T, 3);
        assert_eq!(p, 1);
        assert_eq!(tat2, Some(now + 6 * T));
        // After a whole idle window the bucket is full again (and never more than full).
        assert_eq!(remaining(tat2, now + 10 * T, T, TAU), 5);
        assert_eq!(burst(tat2, now + 100 * T, 50).0, 5);
        assert_eq!(full_at(tat2, now), now + 6 * T);
    }

    #[test]
    fn burst_one_is_a_smooth_rate() {
        let (t, tau) = (1_000, 0);
        assert_eq!(take(None, 0, t, tau), Ok(1_000));
        assert_eq!(take(Some(1_000), 500, t, tau), Err(1_000));
        assert_eq!(retry_after(1_000, 500, tau), 500);
        assert_eq!(take(Some(1_000), 1_000, t, tau), Ok(2_000));
        assert_eq!(remaining(Some(1_000), 0, t, tau), 0);
        assert_eq!(remaining(Some(1_000), 1_000, t, tau), 1);
    }

    #[test]
    fn calls_spread_over_a_window_never_exceed_count_plus_burst() {
        // Any window of 60 s sees at most burst + window/T calls (5 + 5), however they come.
        let mut tat = None;
        let mut passed_at = Vec::new();
        for now in (0..600_000).step_by(700) {
            if let Ok(t) = take(tat, now, T, TAU) {
                tat = Some(t);
                passed_at.push(now);
            }
        }
        for (i, start) in passed_at.iter().enumerate() {
            let in_window = passed_at[i..]
                .iter()
                .take_while(|t| **t < start + 60_000)
                .count();
            assert!(in_window <= 10, "{in_window} in a window from {start}");
        }
        // Long-run rate: one per T.
        assert!((passed_at.len() as i64 - (600_000 / T + 5)).abs() <= 1);
    }
}
