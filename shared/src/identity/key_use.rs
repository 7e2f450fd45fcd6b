//! Records when API keys are used (`ApiKey::last_used_at`), off the request path.
//!
//! Authentication calls [`KeyUseRecorder::record`] after a key matched; the store write runs
//! in a spawned task, so a request never waits for it and never fails because of it (errors
//! are logged, without the key). Each process writes a key's use at most once per
//! [`KEY_USE_INTERVAL`] seconds, so a busy key costs one small write a minute per process
//! instead of one per request, and `last_used_at` may lag by about that much. In Lambda the
//! task may finish only when the execution environment next runs; the time written is the
//! time of the request either way, and the store never moves it back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::clock::{Clock, UnixTime};
use crate::domain::ApiKey;
use crate::store::Store;

/// Seconds between two recorded uses of one key by one process.
pub const KEY_USE_INTERVAL: i64 = 60;

/// Keys remembered per process before forgetting the ones not used within the interval.
const MAX_TRACKED: usize = 10_000;

/// Writes API key uses to the store, throttled per key.
pub struct KeyUseRecorder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Key id -> the use time this process last wrote (or saw stored) for it.
    recent: Mutex<HashMap<String, UnixTime>>,
}

impl KeyUseRecorder {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            recent: Mutex::default(),
        }
    }

    /// Notes that `key` authenticated a request now. Returns at once; the write (if one is
    /// due) runs in a spawned task.
    pub fn record(&self, key: &ApiKey) {
        let now = self.clock.now();
        if !self.due(key, now) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no async runtime: API key use not recorded");
            return;
        };
        let store = Arc::clone(&self.store);
        let id = key.id.clone();
        runtime.spawn(async move {
            match store.touch_api_key(&id, now).await {
                Ok(()) => tracing::debug!(key_id = %id, "recorded API key use"),
                // The key id is not a secret; the error chain holds no item contents.
                Err(e) => tracing::warn!(
                    key_id = %id,
                    error = %crate::http::error_chain(&e),
                    "could not record API key use"
                ),
            }
        });
    }

    /// Whether a write is due for `key` at `now`; if so, counts it as written.
    fn due(&self, key: &ApiKey, now: UnixTime) -> bool {
        let within = |t: UnixTime| now >= t && now - t < KEY_USE_INTERVAL;
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        // A use recorded by another process (seen in the key as read) counts too.
        let last = recent.get(&key.id).copied().max(key.last_used_at);
        if last.is_some_and(within) {
            return false;
        }
        if recent.len() >= MAX_TRACKED && !recent.contains_key(&key.id) {
            recent.retain(|_, t| within(*t));
            if recent.len() >= MAX_TRACKED {
                // More keys in use at once than tracked: forget them all (more writes, for a
                // minute) rather than grow without bound.
                recent.clear();
            }
        }
        recent.insert(key.id.clone(), now);
        true
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::store::ApiKeyStore;
    use crate::store::sqlite::SqliteStore;

    fn key(id: &str) -> ApiKey {
        let mut k = crate::identity::issue_api_key("a@example.com", id, false, 0, None).record;
        k.id = id.into();
        k
    }

    async fn stored_use(store: &SqliteStore, id: &str) -> Option<UnixTime> {
        store.get_api_key(id).await.unwrap().unwrap().last_used_at
    }

    /// Waits (briefly) for the spawned write to land.
    async fn eventually_used(store: &SqliteStore, id: &str, want: UnixTime) {
        for _ in 0..200 {
            if stored_use(store, id).await == Some(want) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "last_used_at of {id} is {:?}, want {want}",
            stored_use(store, id).await
        );
    }

    #[tokio::test]
    async fn writes_at_most_once_per_interval_per_key() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let clock = Arc::new(FixedClock::at(1_000));
        let (a, b) = (key("a"), key("b"));
        store.create_api_key(&a).await.unwrap();
        store.create_api_key(&b).await.unwrap();
        let rec = KeyUseRecorder::new(store.clone(), clock.clone());

        rec.record(&a);
        eventually_used(&store, "a", 1_000).await;
        assert_eq!(stored_use(&store, "b").await, None, "only the key used");

        // Within the interval: no write, even though the clock moved.
        clock.advance(KEY_USE_INTERVAL - 1);
        rec.record(&a);
        rec.record(&b);
        eventually_used(&store, "b", 1_059).await;
        assert_eq!(stored_use(&store, "a").await, Some(1_000));

        clock.advance(1);
        rec.record(&a);
        eventually_used(&store, "a", 1_060).await;
    }

    #[tokio::test]
    async fn a_recent_stored_use_counts_and_a_deleted_key_is_no_error() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let clock = Arc::new(FixedClock::at(500));
        let mut a = key("a");
        a.last_used_at = Some(480);
        store.create_api_key(&a).await.unwrap();
        let rec = KeyUseRecorder::new(store.clone(), clock.clone());
        rec.record(&a);
        assert!(!rec.recent.lock().unwrap().contains_key("a"));

        // A key deleted after it authenticated: the write finds nothing, quietly.
        let gone = key("gone");
        rec.record(&gone);
        assert_eq!(rec.recent.lock().unwrap().get("gone"), Some(&500));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(store.get_api_key("gone").await.unwrap(), None);
    }

    #[test]
    fn tracking_is_bounded() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let clock = Arc::new(FixedClock::at(0));
        let rec = KeyUseRecorder::new(store, clock);
        for i in 0..(MAX_TRACKED + 10) {
            assert!(rec.due(&key(&format!("k{i}")), 0));
        }
        assert!(rec.recent.lock().unwrap().len() <= MAX_TRACKED);
        // Outside a runtime, record neither panics nor writes.
        rec.record(&key("outside"));
    }
}
