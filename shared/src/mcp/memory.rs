//! What one process remembers about upstreams between requests. Nothing here is needed for
//! correctness (a cold process re-learns it at the price of a round trip); it is kept per
//! process so the hot path touches no store.
//!
//! - each server's era (does it answer `server/discover`?), re-probed after `ERA_TTL`;
//! - upstream sessions the gateway opened itself to bridge stateless clients to a
//!   session-era upstream, per (user, server, URL, what the client declares: [`bridge_key`]),
//!   at most [`BRIDGED_PER_USER`] per user and server, closed after [`BRIDGED_IDLE`] unused;
//! - replacement upstream session ids, after an upstream lost a client session and the
//!   gateway re-initialized it transparently;
//! - sessions ended by `DELETE` here (or found ended in the store, where `DELETE` records
//!   every end, after their upstream answered 404), so their ids are refused at once on this
//!   process;
//! - requests in flight to stateless upstreams, so `notifications/cancelled` can stop them;
//! - requests the gateway sent a session-era client for a stateless upstream's
//!   `input_required` round, awaiting the client's answer (posted into its session);
//! - bridged calls held for a 2026-07-28 client's input (opaque here: the proxy's), for at
//!   most [`HELD_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long an upstream's era is trusted before it is probed again (an upgraded server gets
/// the newer era within this time).
pub const ERA_TTL: Duration = Duration::from_secs(3600);
/// Bound on every map here: when full, the oldest half is dropped (it is only a cache).
const MAX_ENTRIES: usize = 4096;
/// Bridged upstream sessions one user may hold to one server in one process, across kinds of
/// client (each distinct declaration is one). Past it a new kind of client is refused until
/// one of the user's sessions there has been idle for [`BRIDGED_IDLE`]: a caller varying what
/// it declares cannot make the gateway open (and close) an upstream session per request.
/// Per server, not per user alone: the gateway's own sessions (a virtual server's members,
/// the catalog, the unauthenticated listings under one pseudo-user) take one per server, and
/// a user of more than this many session-era servers must not be refused some of them.
pub const BRIDGED_PER_USER: usize = 16;
/// A bridged upstream session unused this long is closed upstream (`DELETE`) when the map is
/// next swept; the next request opens a fresh one (one `initialize` round trip).
pub const BRIDGED_IDLE: Duration = Duration::from_secs(10 * 60);
/// How long a call waiting for its client's input is held (an upstream's own wait for an
/// answer is commonly 60 s); dropped after, which cancels it upstream.
pub const HELD_TTL: Duration = Duration::from_secs(60);
/// Calls held at once per process; past it the oldest half is dropped.
const MAX_HELD: usize = 1024;
/// Calls held at once per user; past it the user's own oldest is dropped, so one caller
/// cannot fill [`MAX_HELD`] and have everyone else's held calls dropped.
pub const HELD_PER_USER: usize = 32;
/// Answers awaited at once from one user's clients (each of their calls to a stateless
/// upstream waits for at most 16 per round), so one caller cannot fill the process's map and
/// have every other caller's input rounds fail.
pub const ASKED_PER_USER: usize = 64;
/// How often the bridged map is swept for idle sessions (on a request, never by a timer).
const BRIDGED_SWEEP: Duration = Duration::from_secs(60);

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

/// Ends an upstream session (best effort, detached): set by whoever opened it, since only
/// they hold the credential it takes.
pub type Closer = Box<dyn FnOnce() + Send + Sync>;

/// An upstream session bridging stateless clients, and how to end it.
pub struct BridgedSession {
    pub session: UpstreamSession,
    pub close: Closer,
}

pub type Slot = Arc<tokio::sync::Mutex<Option<BridgedSession>>>;

/// A call held for a client's input: the proxy's own type, opaque here.
pub type HeldCall = Box<dyn std::any::Any + Send>;

/// A held call, whose it is and since when.
struct Holding {
    call: HeldCall,
    user: String,
    at: Instant,
    /// Order of holding (instants may tie).
    seq: u64,
}

/// The bridged sessions and their users, for the per-user cap and the idle sweep.
struct BridgedMap {
    slots: HashMap<String, BridgedEntry>,
    swept: Instant,
}

impl Default for BridgedMap {
    fn default() -> Self {
        Self {
            slots: HashMap::new(),
            swept: Instant::now(),
        }
    }
}

struct BridgedEntry {
    slot: Slot,
    user: String,
    server: String,
    used: Instant,
}

/// Closes the session in an evicted slot unless a request is opening or replacing it right
/// now (then that request owns it; an evicted slot is never found again).
fn close_evicted(slot: &Slot) {
    if let Ok(mut held) = slot.try_lock()
        && let Some(b) = held.take()
    {
        (b.close)();
    }
}

/// What identifies a bridged upstream session: who, which server at which URL, and
/// everything the upstream sees of the client in `initialize` (the envelope's protocol
/// version, its capabilities and its clientInfo), hashed. `serde_json` maps are ordered by
/// key (no `preserve_order`), so the serialization is canonical: two clients declaring the
/// same capabilities in another key order share a session (see the unit test).
pub fn bridge_key(
    user: &str,
    server: &str,
    url: &str,
    version: &str,
    capabilities: &Value,
    client_info: Option<&Value>,
) -> String {
    let canonical = serde_json::to_vec(&(user, server, url, version, capabilities, client_info))
        .unwrap_or_default();
    crate::crypto::sha256_hex(&canonical)
}

#[derive(Default)]
pub struct Memory {
    eras: Mutex<HashMap<String, Facts>>,
    bridged: Mutex<BridgedMap>,
    rebound: Mutex<HashMap<String, (String, Instant)>>,
    ended: Mutex<HashMap<String, Instant>>,
    in_flight: Mutex<HashMap<String, tokio::sync::watch::Sender<bool>>>,
    held: Mutex<HashMap<String, Holding>>,
    held_seq: std::sync::atomic::AtomicU64,
    /// By key: whose answer is awaited (the caller), and where it goes.
    asked: Mutex<HashMap<String, (String, tokio::sync::oneshot::Sender<Value>)>>,
    /// Locks taken while a session opened before its caller connected opens its upstream
    /// session ([`Memory::settling`]), striped by session so memory stays fixed.
    settling: [tokio::sync::Mutex<()>; SETTLE_STRIPES],
}

/// How many locks [`Memory::settling`] spreads sessions over: settling happens once per such
/// session, so sessions sharing a stripe rarely wait on each other.
const SETTLE_STRIPES: usize = 32;

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
    /// Held while the session `fingerprint` opens its first upstream session after its caller
    /// connected: concurrent first requests of the session then open one upstream session
    /// (the second finds it in [`Memory::rebound`]), not one each with all but the last
    /// orphaned upstream.
    pub async fn settling(&self, fingerprint: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = fingerprint
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        self.settling[stripe % SETTLE_STRIPES].lock().await
    }

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

    /// The slot for the upstream session bridging `user`'s stateless clients that declare
    /// the same things (`key`, from [`bridge_key`]) to the session-era `server`; callers lock
    /// it, so concurrent first requests open one upstream session, not one each. `None`: the
    /// user already holds [`BRIDGED_PER_USER`] sessions to that server none of which is idle.
    /// Idle ones ([`BRIDGED_IDLE`]) are evicted and closed upstream (best effort).
    pub fn bridged_slot(&self, user: &str, server: &str, key: &str) -> Option<Slot> {
        let now = Instant::now();
        let mut evicted = Vec::new();
        let slot = {
            let mut map = lock(&self.bridged);
            let known = map.slots.contains_key(key);
            // Swept now and then on the hot path; always before a new slot (a cold path:
            // opening the session is a round trip anyway).
            if !known || now.duration_since(map.swept) > BRIDGED_SWEEP {
                map.swept = now;
                map.slots.retain(|_, e| {
                    let keep = now.duration_since(e.used) < BRIDGED_IDLE;
                    if !keep {
                        evicted.push(e.slot.clone());
                    }
                    keep
                });
            }
            if let Some(e) = map.slots.get_mut(key) {
                e.used = now;
                Some(e.slot.clone())
            } else if map
                .slots
                .values()
                .filter(|e| e.user == user && e.server == server)
                .count()
                >= BRIDGED_PER_USER
            {
                None
            } else {
                if map.slots.len() >= MAX_ENTRIES {
                    let mut times: Vec<Instant> = map.slots.values().map(|e| e.used).collect();
                    times.sort();
                    let cutoff = times[times.len() / 2];
                    let old: Vec<String> = map
                        .slots
                        .iter()
                        .filter(|(_, e)| e.used <= cutoff)
                        .map(|(k, _)| k.clone())
                        .collect();
                    evicted.extend(
                        old.iter()
                            .filter_map(|k| map.slots.remove(k))
                            .map(|e| e.slot),
                    );
                }
                let slot = Slot::default();
                map.slots.insert(
                    key.to_owned(),
                    BridgedEntry {
                        slot: slot.clone(),
                        user: user.to_owned(),
                        server: server.to_owned(),
                        used: now,
                    },
                );
                Some(slot)
            }
        };
        for e in &evicted {
            close_evicted(e);
        }
        slot
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

    /// Holds `user`'s call under `key` for at most [`HELD_TTL`]; what is dropped to make
    /// room (the user's own oldest past [`HELD_PER_USER`], the oldest half past
    /// [`MAX_HELD`]), or expired, is dropped here (its owner's `Drop` cancels it).
    pub fn hold(&self, user: &str, key: String, call: HeldCall) {
        let mut map = lock(&self.held);
        map.retain(|_, h| h.at.elapsed() < HELD_TTL);
        let own: Vec<(&String, u64)> = map
            .iter()
            .filter(|(_, h)| h.user == user)
            .map(|(k, h)| (k, h.seq))
            .collect();
        if own.len() >= HELD_PER_USER
            && let Some(oldest) = own
                .iter()
                .min_by_key(|(_, seq)| *seq)
                .map(|(k, _)| (*k).clone())
        {
            map.remove(&oldest);
        }
        if map.len() >= MAX_HELD {
            let mut times: Vec<Instant> = map.values().map(|h| h.at).collect();
            times.sort();
            let cutoff = times[times.len() / 2];
            map.retain(|_, h| h.at > cutoff);
        }
        let seq = self
            .held_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let user = user.to_owned();
        map.insert(
            key,
            Holding {
                call,
                user,
                at: Instant::now(),
                seq,
            },
        );
    }

    /// Takes the call held under `key`, if it is still held.
    pub fn take_held(&self, key: &str) -> Option<HeldCall> {
        let mut map = lock(&self.held);
        map.retain(|_, h| h.at.elapsed() < HELD_TTL);
        map.remove(key).map(|h| h.call)
    }

    /// Awaits the answer `user`'s client posts to a request the gateway sent it (`key`: its
    /// session and the request id); the registration ends with the receiver. Past
    /// [`ASKED_PER_USER`] for this user (or the process's bound), nothing is registered: the
    /// receiver ends at once, as if the client had not answered.
    pub fn expect_answer(&self, user: &str, key: String) -> tokio::sync::oneshot::Receiver<Value> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut map = lock(&self.asked);
        // Receivers gone (rounds over) leave senders behind: dropped before the map grows.
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, tx)| !tx.is_closed());
        }
        let users = map
            .values()
            .filter(|(u, tx)| u == user && !tx.is_closed())
            .count();
        if map.len() < MAX_ENTRIES && users < ASKED_PER_USER {
            map.insert(key, (user.to_owned(), tx));
        }
        rx
    }

    /// Delivers a client's answer; false when nothing awaits it here.
    pub fn give_answer(&self, key: &str, answer: Value) -> bool {
        lock(&self.asked)
            .remove(key)
            .is_some_and(|(_, tx)| tx.send(answer).is_ok())
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

        let key = |user, url| bridge_key(user, "s", url, "2026-07-28", &Value::Null, None);
        let slot = |user, url| m.bridged_slot(user, "s", &key(user, url)).unwrap();
        let a = slot("u", "http://a");
        assert!(Arc::ptr_eq(&a, &slot("u", "http://a")));
        assert!(!Arc::ptr_eq(&a, &slot("v", "http://a")));
        assert!(!Arc::ptr_eq(&a, &slot("u", "http://b")));

        m.set_rebound("f", "up-2".into());
        assert_eq!(m.rebound("f").as_deref(), Some("up-2"));
        m.end("f");
        assert!(m.is_ended("f") && m.rebound("f").is_none());

        m.hold("u", "h".into(), Box::new(7u8));
        assert!(m.take_held("other").is_none());
        assert_eq!(
            m.take_held("h")
                .and_then(|b| b.downcast::<u8>().ok())
                .as_deref(),
            Some(&7)
        );
        assert!(m.take_held("h").is_none(), "taken once");

        let answer = m.expect_answer("u", "s\nask-1".into());
        assert!(
            !m.give_answer("other\nask-1", Value::Null),
            "another session's id"
        );
        assert!(m.give_answer("s\nask-1", Value::from(1)));
        assert_eq!(answer.blocking_recv().unwrap(), Value::from(1));
        assert!(!m.give_answer("s\nask-1", Value::Null), "answered once");

        let (guard, rx) = m.track("k".into());
        assert!(m.cancel("k"));
        assert!(*rx.borrow());
        drop(guard);
        assert!(!m.cancel("k"));
    }

    #[test]
    fn the_bridge_key_is_what_the_upstream_sees() {
        use serde_json::json;
        let key = |caps: &Value, info: Option<&Value>, version: &str| {
            bridge_key("alice", "s", "http://a", version, caps, info)
        };
        let roots = json!({"roots": {"listChanged": true}, "sampling": {}});
        let base = key(&roots, None, "2026-07-28");
        // Canonical: another key order is the same declaration.
        let reordered: Value =
            serde_json::from_str(r#"{"sampling": {}, "roots": {"listChanged": true}}"#).unwrap();
        assert_eq!(key(&reordered, None, "2026-07-28"), base);
        // Anything the upstream would see differently is another session.
        assert_ne!(key(&json!({"sampling": {}}), None, "2026-07-28"), base);
        assert_ne!(
            key(&json!({"roots": {}, "sampling": {}}), None, "2026-07-28"),
            base
        );
        assert_ne!(key(&roots, None, "2099-01-01"), base);
        assert_ne!(
            key(
                &roots,
                Some(&json!({"name": "c", "version": "1"})),
                "2026-07-28"
            ),
            base
        );
        assert_ne!(
            bridge_key("bob", "s", "http://a", "2026-07-28", &roots, None),
            base
        );
        // No field can be shifted into another (the parts are a JSON array, not joined text).
        assert_ne!(
            bridge_key("a\nb", "s", "u", "v", &Value::Null, None),
            bridge_key("a", "b\ns", "u", "v", &Value::Null, None)
        );
    }

    fn closing(slot: &Slot, closed: &Arc<std::sync::atomic::AtomicUsize>) {
        let closed = closed.clone();
        *slot.try_lock().unwrap() = Some(BridgedSession {
            session: UpstreamSession {
                session_id: Some("up".into()),
                version: "2025-11-25".into(),
                init_result: Value::Null,
            },
            close: Box::new(move || {
                closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }),
        });
    }

    #[test]
    fn bridged_sessions_are_capped_per_user() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let m = Memory::default();
        let closed = Arc::new(AtomicUsize::new(0));
        for i in 0..BRIDGED_PER_USER {
            closing(
                &m.bridged_slot("alice", "s", &format!("k{i}")).unwrap(),
                &closed,
            );
        }
        // A new kind of client past the cap is refused; known ones, other users and alice's
        // sessions to other servers are not.
        assert!(m.bridged_slot("alice", "s", "one-more").is_none());
        assert!(m.bridged_slot("alice", "s", "k3").is_some());
        assert!(m.bridged_slot("bob", "s", "b0").is_some());
        assert!(m.bridged_slot("alice", "t", "t0").is_some());
        assert_eq!(closed.load(Ordering::SeqCst), 0, "nothing live was closed");
        // Once one of alice's is idle, it is closed and the new one gets its place.
        {
            let mut map = lock(&m.bridged);
            map.slots.get_mut("k0").unwrap().used =
                Instant::now() - BRIDGED_IDLE - Duration::from_secs(1);
        }
        assert!(m.bridged_slot("alice", "s", "one-more").is_some());
        assert_eq!(closed.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn idle_bridged_sessions_are_closed() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let m = Memory::default();
        let closed = Arc::new(AtomicUsize::new(0));
        let idle = m.bridged_slot("alice", "s", "idle").unwrap();
        closing(&idle, &closed);
        let busy = m.bridged_slot("alice", "s", "busy").unwrap();
        closing(&busy, &closed);
        {
            let mut map = lock(&m.bridged);
            let long_ago = Instant::now() - BRIDGED_IDLE - Duration::from_secs(1);
            map.slots.get_mut("idle").unwrap().used = long_ago;
            map.swept = long_ago;
        }
        // Any request sweeps once the sweep interval passed, even one for a known slot.
        assert!(Arc::ptr_eq(
            &busy,
            &m.bridged_slot("alice", "s", "busy").unwrap()
        ));
        assert_eq!(closed.load(Ordering::SeqCst), 1);
        assert!(idle.try_lock().unwrap().is_none());
        assert!(busy.try_lock().unwrap().is_some());
    }

    /// GIVEN a user of more session-era servers than one server's cap (a virtual server's
    /// members, the catalog, each with the gateway's own session) THEN each gets its session;
    /// the cap is on the kinds of client of one user at one server (test above).
    #[test]
    fn a_user_of_many_servers_is_bridged_to_every_one() {
        let m = Memory::default();
        for i in 0..=BRIDGED_PER_USER * 2 {
            let server = format!("server-{i}");
            let key = bridge_key("alice", &server, "u", "gateway", &Value::Null, None);
            assert!(m.bridged_slot("alice", &server, &key).is_some(), "{server}");
        }
    }

    /// Attack: one user holding calls without end (each answered `input_required`, never
    /// retried) drops only their own oldest, never another user's held call.
    #[test]
    fn one_users_held_calls_do_not_push_out_anothers() {
        let m = Memory::default();
        m.hold("bob", "bobs".into(), Box::new(1u8));
        for i in 0..MAX_HELD * 2 {
            m.hold("mallory", format!("m{i}"), Box::new(0u8));
        }
        assert!(m.take_held("bobs").is_some(), "bob's call was dropped");
        // The user's own newest are kept, up to the cap.
        let last = MAX_HELD * 2 - 1;
        assert!(m.take_held(&format!("m{last}")).is_some());
        assert!(m.take_held("m0").is_none());
        assert!(lock(&m.held).len() < HELD_PER_USER);
    }

    /// Attack: one user's clients leaving the gateway's requests unanswered (their rounds
    /// wait to the deadline) fill only their own share; another user's answer is awaited.
    #[test]
    fn one_users_unanswered_requests_do_not_crowd_out_anothers() {
        let m = Memory::default();
        let mallorys: Vec<_> = (0..MAX_ENTRIES * 2)
            .map(|i| m.expect_answer("mallory", format!("m\n{i}")))
            .collect();
        let bobs = m.expect_answer("bob", "b\nask-1".into());
        assert!(
            m.give_answer("b\nask-1", Value::from(1)),
            "bob's was not awaited"
        );
        assert_eq!(bobs.blocking_recv().unwrap(), Value::from(1));
        // Mallory's own first ones are awaited, up to her share.
        assert!(m.give_answer("m\n0", Value::Null));
        assert!(!m.give_answer(&format!("m\n{ASKED_PER_USER}"), Value::Null));
        drop(mallorys);
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
