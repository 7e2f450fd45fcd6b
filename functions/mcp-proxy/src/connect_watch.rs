//! The stream held open for a caller who has not connected a server yet (a session-era
//! client's GET stream, a 2026-07-28 client's `subscriptions/listen`), which tells the
//! client once they have connected, in whatever process that happened: the OAuth callback
//! (or the stored token) may be served by another Lambda or process than the one holding
//! the stream.
//!
//! - In this process, storing the credential wakes the stream at once
//!   (`Grants::announce_connected`).
//! - Other processes write it to the store, which the stream reads every [`POLL`] while held
//!   (the caller's grant, and whether their session was ended by a `DELETE` elsewhere).
//! - A comment (`: keep-alive`) every [`KEEP_ALIVE`] keeps idle proxies from closing it.
//! - It ends after its messages for the connection are sent, when the session ends or
//!   expires, after [`MAX_HOLD`] (the client opens another), or when the client goes away.
//!   At most [`MAX_HELD`] are held per process, [`MAX_HELD_PER_USER`] of them for one
//!   caller; past that a GET is refused as if no stream were offered (405), so a flood of
//!   streams cannot turn into a flood of store reads, and one caller cannot take every
//!   stream from everyone else.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;

use crate::answers::event_stream;
use mcpgw::domain::GrantStatus;
use mcpgw::mcp::sse;
use mcpgw::state::AppState;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio::time::{Instant, Interval};

/// How often a held stream reads the store for a connection made in another process.
pub const POLL: Duration = Duration::from_secs(2);
/// How often an idle held stream sends a comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The longest a stream is held.
pub const MAX_HOLD: Duration = Duration::from_secs(3600);
/// Held streams per process.
pub const MAX_HELD: usize = 1024;

/// Held streams per process for one caller (a user's clients, each with a stream per
/// server it has not connected, fit well within).
pub const MAX_HELD_PER_USER: usize = 16;

static HELD: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(MAX_HELD)));
/// Held streams by caller.
static HELD_BY_USER: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Mutex::default);

fn by_user() -> std::sync::MutexGuard<'static, HashMap<String, usize>> {
    // Single increments and decrements: consistent even after a panic elsewhere.
    HELD_BY_USER.lock().unwrap_or_else(|e| e.into_inner())
}

/// One of a caller's [`MAX_HELD_PER_USER`] streams, given back when dropped.
struct UserPermit(String);

impl UserPermit {
    fn take(user: &str) -> Option<Self> {
        let mut held = by_user();
        let n = held.entry(user.to_owned()).or_default();
        if *n >= MAX_HELD_PER_USER {
            return None;
        }
        *n += 1;
        Some(Self(user.to_owned()))
    }
}

impl Drop for UserPermit {
    fn drop(&mut self) {
        let mut held = by_user();
        if let Some(n) = held.get_mut(&self.0) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.0);
            }
        }
    }
}

/// What one held stream waits for and says.
pub struct Watch {
    pub state: AppState,
    pub user: String,
    pub server: String,
    /// The gateway session the stream belongs to (its fingerprint and expiry): the stream
    /// ends with it.
    pub session: Option<(String, i64)>,
    /// Sent at once (a listen's acknowledgement).
    pub first: Vec<Value>,
    /// Sent once the caller has connected; then the stream ends.
    pub on_connect: Vec<Value>,
}

/// The event stream for `watch`, or `None` when this process holds too many already.
pub fn respond(watch: Watch) -> Option<Response> {
    let user_permit = UserPermit::take(&watch.user)?;
    let permit = HELD.clone().try_acquire_owned().ok()?;
    let now = Instant::now();
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keep = tokio::time::interval_at(now + KEEP_ALIVE, KEEP_ALIVE);
    keep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let held = Held {
        connections: watch.state.grants.connections(),
        queue: watch
            .first
            .iter()
            .map(|m| Bytes::from(sse::message_event(m)))
            .collect(),
        watch,
        poll,
        keep,
        deadline: now + MAX_HOLD,
        done: false,
        _permit: permit,
        _user_permit: user_permit,
    };
    let stream = futures_util::stream::unfold(held, |mut h| async move {
        h.next().await.map(|b| (Ok::<_, std::io::Error>(b), h))
    });
    Some(event_stream(Body::from_stream(stream)))
}

struct Held {
    watch: Watch,
    connections: broadcast::Receiver<(String, String)>,
    queue: VecDeque<Bytes>,
    poll: Interval,
    keep: Interval,
    deadline: Instant,
    done: bool,
    _permit: OwnedSemaphorePermit,
    _user_permit: UserPermit,
}

/// What a look at the store found.
enum Seen {
    Connected,
    Waiting,
    /// The session was ended or expired: the stream ends, saying nothing.
    Over,
}

impl Held {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.queue.pop_front() {
                return Some(b);
            }
            if self.done {
                return None;
            }
            let look = tokio::select! {
                got = self.connections.recv() => match got {
                    Ok((user, server)) => user == self.watch.user && server == self.watch.server,
                    // Fell behind: whatever was missed, the store says.
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => {
                        // Not while the process runs; the poll still looks.
                        self.connections = self.watch.state.grants.connections();
                        false
                    }
                },
                _ = self.poll.tick() => true,
                _ = self.keep.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
                _ = tokio::time::sleep_until(self.deadline) => {
                    self.done = true;
                    continue;
                }
            };
            if !look {
                continue;
            }
            match self.look().await {
                Seen::Connected => {
                    tracing::info!(server = %self.watch.server, "caller connected; held stream told");
                    let told = self.watch.on_connect.iter();
                    self.queue
                        .extend(told.map(|m| Bytes::from(sse::message_event(m))));
                    self.done = true;
                }
                Seen::Waiting => {}
                Seen::Over => self.done = true,
            }
        }
    }

    /// Whether the caller has connected (an active grant or stored token), or the session
    /// is over. A store that cannot say now is asked again at the next poll.
    async fn look(&self) -> Seen {
        let state = &self.watch.state;
        if let Some((fingerprint, expires_at)) = &self.watch.session {
            let now = state.clock.now();
            if now >= *expires_at
                || state.mcp.is_ended(fingerprint)
                || state
                    .store
                    .session_ended(fingerprint, now)
                    .await
                    .unwrap_or(false)
            {
                return Seen::Over;
            }
        }
        match state
            .store
            .get_grant(&self.watch.user, &self.watch.server)
            .await
        {
            Ok(Some(g)) => match g.status {
                GrantStatus::Active => Seen::Connected,
                GrantStatus::NeedsReconsent => Seen::Waiting,
            },
            Ok(None) => Seen::Waiting,
            Err(e) => {
                tracing::debug!(error = %mcpgw::http::error_chain(&e), "could not read the grant");
                Seen::Waiting
            }
        }
    }
}
