//! The gateways' clock in the end-to-end tests: the wall clock, which a test moves ahead
//! instead of sleeping. "This token is due for a refresh" then happens at the step the test
//! chooses, however slow the machine is, where a sleep until a deadline races the machine: a
//! loaded one may take longer for the steps before the deadline than the deadline allows.
//! Every gateway of one deployment ([`crate::TestGateway::beside`]) shares one clock.

use std::sync::atomic::{AtomicI64, Ordering};

use mcpgw::clock::{Clock, SystemClock, UnixTime};

/// The wall clock plus an offset the test sets.
#[derive(Debug, Default)]
pub struct TestClock {
    ahead: AtomicI64,
}

impl TestClock {
    /// A clock `secs` ahead of the wall clock.
    pub fn ahead(secs: i64) -> Self {
        Self {
            ahead: AtomicI64::new(secs),
        }
    }

    /// Moves this clock `secs` further ahead.
    pub fn advance(&self, secs: i64) {
        self.ahead.fetch_add(secs, Ordering::SeqCst);
    }

    /// Moves this clock to `at`, if that is ahead of it (a clock never goes back).
    pub fn advance_to(&self, at: UnixTime) {
        self.advance((at - self.now()).max(0));
    }

    /// How far ahead of the wall clock this clock is.
    pub fn offset(&self) -> i64 {
        self.ahead.load(Ordering::SeqCst)
    }
}

impl Clock for TestClock {
    fn now(&self) -> UnixTime {
        SystemClock.now() + self.offset()
    }
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.offset() * 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_runs_with_the_wall_clock_and_only_moves_ahead() {
        let c = TestClock::default();
        let wall = SystemClock.now();
        assert!((wall..=wall + 1).contains(&c.now()));
        c.advance(100);
        assert!((wall + 100..=wall + 101).contains(&c.now()));
        c.advance_to(wall + 1000);
        assert!((wall + 1000..=wall + 1001).contains(&c.now()));
        c.advance_to(wall);
        assert!(c.now() >= wall + 1000, "advance_to never goes back");
        assert_eq!(TestClock::ahead(7).offset(), 7);
    }
}
