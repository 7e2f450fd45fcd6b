//! What one process remembers about upstreams between requests. Nothing here is needed for
//! correctness (a cold process re-learns it at the price of a round trip); it is kept per
//! process so the hot path touches no store.
//!
//! - each server's era (does it answer `server/discover`?), re-probed after `ERA_TTL`;
//! - upstream sessions the gateway opened itself to bridge stateless clients to a
//!   session-era upstream, per (user, server);
//! - replacement upstream session ids, after an upstream lost a client session and the
//!   gateway re-initialized it transparently;
//! - sessions ended by `DELETE` here (or found ended in the store, where `DELETE` records
//!   every end, after their upstream answered 404), so their ids are refused at once on this
//!   process;
//! - requests in flight to stateless upstreams, so `notifications/cancelled` can stop them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long an upstream's era is trusted before it is probed again (an upgraded server gets
/// the newer era within this time).
pub const ERA_TTL: Duration = Duration::from_secs(3600);
/// Bound on every map here: when full, the oldest half is dropped (it is only a cache).
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// Answers `server/discover` at a version the gateway speaks.
    Modern,
    /// Speaks only the `initialize` handshake.
    Session,
}

/// An upstream session the gateway holds.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSession {
    pub session_id: Option<String>,
    pub version: String,
    /// The upstream's initialize result (capabilities, serverInfo, instructions).
    pub init_result: Value,
}

type Slot = Arc<tokio::sync::Mutex<Option<UpstreamSession>>>;

#[derive(Default)]
pub struct Memory {
    eras: Mutex<HashMap<String, Facts>>,
    bridged: Mutex<HashMap<String, (Slot, Instant)>>,
    rebound: Mutex<HashMap<String, (String, Instant)>>,
    ended: Mutex<HashMap<String, Instant>>,
    in_flight: Mutex<HashMap<String, tokio::sync::watch::Sender<bool>>>,
}

/// What one process learned about one upstream, and when.
#[derive(Default)]
struct Facts {
    /// The `server/discover` probe's verdict.
    era: Option<(Era, Instant)>,
    /// When the upstream last refused `initialize`.
    handshake_refused: Option<Instant>,
}

impl Facts {
    fn last_learned(&self) -> Instant {
        let era = self.era.map(|(_, at)| at);
        era.max(self.handshake_refused).unwrap_or_else(Instant::now)
    }
}

fn bounded<V>(map: &mut HashMap<String, V>, at: impl Fn(&V) -> Instant) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    let mut times: Vec<Instant> = map.values().map(&at).collect();
    times.sort();
    let cutoff = times[times.len() / 2];
    map.retain(|_, v| at(v) > cutoff);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves it consistent (single inserts/removes).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Memory {
    /// Facts are keyed by the server's name and URL, so re-pointing a server learns it again.
    fn key(server: &str, url: &str) -> String {
        format!("{server}\n{url}")
    }

    fn learn(&self, server: &str, url: &str, write: impl FnOnce(&mut Facts)) {
        let mut eras = lock(&self.eras);
        bounded(&mut eras, Facts::last_learned);
        write(eras.entry(Self::key(server, url)).or_default());
    }

    /// The answer of the last `server/discover` probe.
    pub fn era(&self, server: &str, url: &str) -> Option<Era> {
        lock(&self.eras)
            .get(&Self::key(server, url))
            .and_then(|f| f.era)
            .filter(|(_, at)| at.elapsed() < ERA_TTL)
            .map(|(era, _)| era)
    }

    pub fn set_era(&self, server: &str, url: &str, era: Era) {
        self.learn(server, url, |f| f.era = Some((era, Instant::now())));
    }

    /// Forgets what was learned about a server.
    pub fn forget_era(&self, server: &str, url: &str) {
        lock(&self.eras).remove(&Self::key(server, url));
    }

    /// Whether this upstream refused the `initialize` handshake (it speaks only the stateless
    /// era), so handshake clients go straight to `server/discover`.
    pub fn handshake_refused(&self, server: &str, url: &str) -> bool {
        lock(&self.eras)
            .get(&Self::key(server, url))
            .and_then(|f| f.handshake_refused)
            .is_some_and(|at| at.elapsed() < ERA_TTL)
    }

    pub fn set_handshake_refused(&self, server: &str, url: &str) {
        self.learn(server, url, |f| f.handshake_refused = Some(Instant::now()));
    }

    /// The slot for the upstream session bridging `user`'s stateless clients to a
    /// session-era `server`; callers lock it, so concurrent first requests open one upstream
    /// session, not one each. Keyed by user and server only: nothing a caller sends can make
    /// the gateway open more upstream sessions (the first client's capabilities are used;
    /// a stateless-era client cannot take server-to-client requests anyway).
    pub fn bridged_slot(&self, user: &str, server: &str, url: &str) -> Slot {
        let key = crate::crypto::sha256_hex(format!("{user}\n{server}\n{url}").as_bytes());
        let mut map = lock(&self.bridged);
        bounded(&mut map, |(_, at)| *at);
        map.entry(key)
            .or_insert_with(|| (Slot::default(), Instant::now()))
            .0
            .clone()
    }

    pub fn rebound(&self, fingerprint: &str) -> Option<String> {
        lock(&self.rebound).get(fingerprint).map(|(s, _)| s.clone())
    }

    pub fn set_rebound(&self, fingerprint: &str, upstream_session: String) {
        let mut map = lock(&self.rebound);
        bounded(&mut map, |(_, at)| *at);
        map.insert(fingerprint.to_owned(), (upstream_session, Instant::now()));
    }

    pub fn end(&self, fingerprint: &str) {
        let mut map = lock(&self.ended);
        bounded(&mut map, |at| *at);
        map.insert(fingerprint.to_owned(), Instant::now());
        lock(&self.rebound).remove(fingerprint);
    }

    pub fn is_ended(&self, fingerprint: &str) -> bool {
        lock(&self.ended).contains_key(fingerprint)
    }

    /// Registers a request in flight; the receiver turns true when the client cancels it.
    /// The registration lasts as long as the returned guard.
    pub fn track(self: &Arc<Self>, key: String) -> (InFlight, tokio::sync::watch::Receiver<bool>) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        lock(&self.in_flight).insert(key.clone(), tx);
        (
            InFlight {
                memory: self.clone(),
                key,
            },
            rx,
        )
    }

    /// Cancels a tracked request; false when none is in flight here under `key`.
    pub fn cancel(&self, key: &str) -> bool {
        lock(&self.in_flight)
            .get(key)
            .is_some_and(|tx| tx.send(true).is_ok())
    }
}

/// Removes its in-flight registration when dropped.
pub struct InFlight {
    memory: Arc<Memory>,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.memory.in_flight).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eras_sessions_and_cancellation() {
        let m = Arc::new(Memory::default());
        assert_eq!(m.era("s", "http://a"), None);
        m.set_era("s", "http://a", Era::Session);
        assert_eq!(m.era("s", "http://a"), Some(Era::Session));
        assert_eq!(m.era("s", "http://b"), None, "a new URL is probed again");
        assert!(!m.handshake_refused("s", "http://a"));
        m.set_handshake_refused("s", "http://a");
        assert!(m.handshake_refused("s", "http://a"));
        assert_eq!(
            m.era("s", "http://a"),
            Some(Era::Session),
            "facts are kept apart"
        );

        let a = m.bridged_slot("u", "s", "http://a");
        let b = m.bridged_slot("u", "s", "http://a");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &m.bridged_slot("v", "s", "http://a")));
        assert!(!Arc::ptr_eq(&a, &m.bridged_slot("u", "s", "http://b")));

        m.set_rebound("f", "up-2".into());
        assert_eq!(m.rebound("f").as_deref(), Some("up-2"));
        m.end("f");
        assert!(m.is_ended("f") && m.rebound("f").is_none());

        let (guard, rx) = m.track("k".into());
        assert!(m.cancel("k"));
        assert!(*rx.borrow());
        drop(guard);
        assert!(!m.cancel("k"));
    }

    #[test]
    fn maps_stay_bounded() {
        let m = Memory::default();
        for i in 0..(MAX_ENTRIES * 2) {
            m.end(&i.to_string());
        }
        assert!(lock(&m.ended).len() <= MAX_ENTRIES);
    }
}
