//! Sampling of flood-prone records (denied requests, failed authentication): at most one
//! record per key per window (10 s) per process, whose `detail.count` says how many events it
//! stands for (itself and those folded in since the previous record of its key). A flood of
//! 20,000 bad requests is a handful of records, never 20,000 store writes.
//!
//! The map is bounded ([`MAX_KEYS`]): when full, keys whose window has passed are dropped;
//! if it is still full (a flood from very many distinct keys), the event is folded into one
//! overflow key per event kind (`endpoint` and `who` `*`). Events folded in after a key's
//! last record are reported with its next record; a key that never comes back loses that
//! tail count (it is in no record, but the first event of every window always is).
//!
//! Bounded keys alone still let many distinct keys (a caller per endpoint, a reason per
//! name) make a record each per window; so a process makes at most [`GLOBAL_CAP`] keyed
//! records per window: beyond it, due records are folded into the overflow key too (whose
//! record, one per event kind per window, says how many it stands for, with
//! `detail.overflow` and no endpoint (`*`) or caller: it stands for many).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{AuditRecord, Auditor, Event};

/// One record per key per this long.
pub const WINDOW: Duration = Duration::from_secs(10);
/// The most keys tracked at once.
pub const MAX_KEYS: usize = 4096;
/// The most records of keys other than the overflow keys a process makes per window.
pub const GLOBAL_CAP: usize = 100;

/// What events are folded by: the kind, the endpoint, and who (a user, or a failure reason
/// for failed authentication; never a credential).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SampleKey {
    pub event: Event,
    pub endpoint: String,
    pub who: String,
}

struct Slot {
    last_record: Instant,
    folded: u64,
}

/// The per-process sampler (in `AppState`).
pub struct Sampler {
    window: Duration,
    max_keys: usize,
    global_cap: usize,
    slots: Mutex<HashMap<SampleKey, Slot>>,
    /// The current window's start and the keyed records made in it (taken under `slots`).
    spent: Mutex<(Option<Instant>, usize)>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new(WINDOW, MAX_KEYS)
    }
}

impl Sampler {
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys,
            global_cap: GLOBAL_CAP,
            slots: Mutex::new(HashMap::new()),
            spent: Mutex::new((None, 0)),
        }
    }

    /// The same with at most `cap` keyed records per window.
    pub fn with_global_cap(mut self, cap: usize) -> Self {
        self.global_cap = cap;
        self
    }

    /// Takes one keyed record from this window's budget: `false` when it is spent.
    fn spend(&self, now: Instant) -> bool {
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        let (start, used) = &mut *spent;
        if start.is_none_or(|s| now.saturating_duration_since(s) >= self.window) {
            *start = Some(now);
            *used = 0;
        }
        if *used < self.global_cap {
            *used += 1;
            true
        } else {
            false
        }
    }

    /// One more event of `key` at `now`: `Some(count)` when a record is due (standing for
    /// `count` events), `None` when it is folded into the next one.
    pub fn count(&self, key: SampleKey, now: Instant) -> Option<u64> {
        self.count_as(key, now).0
    }

    /// [`Sampler::count`], and whether the event went to the overflow key (its record
    /// stands for many keys, so it names none of them).
    fn count_as(&self, key: SampleKey, now: Instant) -> (Option<u64>, bool) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        let overflow = SampleKey {
            event: key.event,
            endpoint: "*".into(),
            who: "*".into(),
        };
        let key = if slots.contains_key(&key) || slots.len() < self.max_keys {
            key
        } else {
            slots.retain(|_, s| now.saturating_duration_since(s.last_record) < window);
            if slots.len() < self.max_keys {
                key
            } else {
                overflow.clone()
            }
        };
        let due = slots
            .get(&key)
            .is_none_or(|s| now.saturating_duration_since(s.last_record) >= window);
        let key = if due && key != overflow && !self.spend(now) {
            overflow.clone()
        } else {
            key
        };
        let folded_away = key == overflow;
        let count = match slots.get_mut(&key) {
            Some(slot) if now.saturating_duration_since(slot.last_record) < window => {
                slot.folded += 1;
                None
            }
            Some(slot) => {
                let count = slot.folded + 1;
                *slot = Slot {
                    last_record: now,
                    folded: 0,
                };
                Some(count)
            }
            None => {
                slots.insert(
                    key,
                    Slot {
                        last_record: now,
                        folded: 0,
                    },
                );
                Some(1)
            }
        };
        (count, folded_away)
    }

    /// Emits `record()` to `auditor` when a record of `key` is due, with `detail.count`.
    pub fn emit(&self, auditor: &Auditor, key: SampleKey, record: impl FnOnce() -> AuditRecord) {
        let (Some(count), overflow) = self.count_as(key, Instant::now()) else {
            return;
        };
        let mut r = record();
        if overflow {
            // It stands for events of many endpoints and callers: it names none.
            r.endpoint = Some("*".into());
            r.principal = None;
        }
        let detail = r.detail.get_or_insert_with(|| serde_json::json!({}));
        if let Some(d) = detail.as_object_mut() {
            d.insert("count".into(), count.into());
            if overflow {
                d.insert("overflow".into(), true.into());
            }
        }
        auditor.emit(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(who: &str) -> SampleKey {
        SampleKey {
            event: Event::AuthFailed,
            endpoint: "e".into(),
            who: who.into(),
        }
    }

    #[test]
    fn a_flood_is_one_record_per_window_counting_what_it_folded() {
        let s = Sampler::new(Duration::from_secs(10), 8);
        let t0 = Instant::now();
        assert_eq!(s.count(key("a"), t0), Some(1));
        for i in 1..1000 {
            assert_eq!(s.count(key("a"), t0 + Duration::from_millis(i)), None);
        }
        // another key is not folded into the first
        assert_eq!(s.count(key("b"), t0), Some(1));
        // the next window's first event stands for itself and the 999 folded
        assert_eq!(s.count(key("a"), t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(s.count(key("a"), t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn a_flood_of_distinct_keys_makes_at_most_the_global_cap_of_records() {
        let s = Sampler::new(Duration::from_secs(10), 4096).with_global_cap(100);
        let t0 = Instant::now();
        let mut records = 0;
        let mut counted = 0;
        for i in 0..10_000u64 {
            if let Some(n) = s.count(key(&format!("name-{i}")), t0 + Duration::from_micros(i)) {
                records += 1;
                counted += n;
            }
        }
        // 100 keyed records and the overflow key's one.
        assert_eq!(records, 101);
        // The next window: the overflow record stands for everything folded into it.
        let next = s.count(key("late"), t0 + Duration::from_secs(10));
        assert_eq!(next, Some(1));
        let folded = s.count(
            SampleKey {
                event: Event::AuthFailed,
                endpoint: "*".into(),
                who: "*".into(),
            },
            t0 + Duration::from_secs(11),
        );
        assert_eq!(counted + folded.unwrap() - 1, 10_000);
    }

    #[test]
    fn the_overflow_record_names_no_endpoint_or_caller() {
        let s = Sampler::new(Duration::from_secs(10), 4096).with_global_cap(1);
        let (auditor, kept) = Auditor::recording();
        for e in ["a", "b", "c"] {
            let key = SampleKey {
                event: Event::Denied,
                endpoint: e.into(),
                who: "u".into(),
            };
            s.emit(&auditor, key, || {
                let mut r = AuditRecord::new(Event::Denied, crate::audit::Decision::Deny);
                r.endpoint = Some(e.into());
                r.principal = Some(crate::audit::events::actor_without_request("u", "api_key"));
                r
            });
        }
        let kept = kept.lock().unwrap();
        assert_eq!(kept.len(), 2, "the first keyed, then the overflow's");
        assert_eq!(kept[0].endpoint.as_deref(), Some("a"));
        assert_eq!(kept[1].endpoint.as_deref(), Some("*"));
        assert!(kept[1].principal.is_none());
        assert_eq!(kept[1].detail.as_ref().unwrap()["overflow"], true);
    }

    #[test]
    fn the_map_stays_bounded_and_overflow_is_still_counted() {
        let s = Sampler::new(Duration::from_secs(10), 4);
        let t0 = Instant::now();
        for i in 0..4 {
            assert_eq!(s.count(key(&i.to_string()), t0), Some(1));
        }
        // full: a new key goes to the overflow key (recorded once, then folded)
        assert_eq!(s.count(key("x"), t0), Some(1));
        assert_eq!(s.count(key("y"), t0), None);
        assert!(s.slots.lock().unwrap().len() <= 5);
        // once the old windows passed, new keys get their own slots again
        let later = t0 + Duration::from_secs(11);
        assert_eq!(s.count(key("z"), later), Some(1));
        assert!(s.slots.lock().unwrap().len() <= 4);
    }
}
