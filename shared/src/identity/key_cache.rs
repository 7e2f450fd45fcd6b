//! A short-lived positive cache of API keys by hash, so a warm request makes no store read.
//! Revocation still takes effect within seconds: entries live at most the TTL (default 5 s),
//! deletes made in this process drop them at once, and expiry is checked on every hit.
//! Unknown keys are never cached (a new key works at once; junk cannot fill the cache).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::UnixTime;
use crate::domain::ApiKey;

/// Bound on cached keys; past it the cache is cleared (it refills from the store).
const MAX_KEYS: usize = 10_000;

pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (ApiKey, Instant)>>,
}

impl KeyCache {
    /// `Duration::ZERO` disables the cache.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ApiKey, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached key for `hash`, if fresh and unexpired at `now`.
    pub fn get(&self, hash: &str, now: UnixTime) -> Option<ApiKey> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.lock();
        let (key, at) = entries.get(hash)?;
        let live = at.elapsed() < self.ttl && key.expires_at.is_none_or(|e| e > now);
        live.then(|| key.clone())
    }

    pub fn put(&self, key: &ApiKey) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_KEYS {
            entries.clear();
        }
        entries.insert(key.key_hash.clone(), (key.clone(), Instant::now()));
    }

    /// Drops a key (deleted in this process).
    pub fn forget(&self, key_id: &str) {
        self.lock().retain(|_, (k, _)| k.id != key_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, expires_at: Option<UnixTime>) -> ApiKey {
        ApiKey {
            id: id.into(),
            owner: "a@example.com".into(),
            name: "n".into(),
            key_hash: format!("hash-{id}"),
            admin: false,
            created_at: 0,
            expires_at,
            last_used_at: None,
        }
    }

    #[test]
    fn hits_until_ttl_expiry_or_forget() {
        let c = KeyCache::new(Duration::from_millis(50));
        c.put(&key("k1", None));
        c.put(&key("k2", Some(100)));
        assert!(c.get("hash-k1", 0).is_some());
        assert!(c.get("hash-k2", 99).is_some());
        assert!(
            c.get("hash-k2", 100).is_none(),
            "expired keys are not served"
        );
        c.forget("k1");
        assert!(c.get("hash-k1", 0).is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            c.get("hash-k2", 0).is_none(),
            "entries live at most the TTL"
        );

        let off = KeyCache::new(Duration::ZERO);
        off.put(&key("k1", None));
        assert!(off.get("hash-k1", 0).is_none());
    }
}
