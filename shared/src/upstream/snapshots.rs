//! The tools of a per-user-credential server (`oauth2`, `per_user_token`) as the gateway can
//! list them for a caller who has not connected yet, so a client that lists before it calls
//! sees the tools (marked, see `catalog::marked_for_unconnected`) and the first call gets
//! the connect link. Sources, in order:
//!
//! 1. where the admin set `share_tool_list` (the list is the same for every account), the
//!    snapshot of the list the server last gave a connected caller ([`ToolSnapshot`]):
//!    [`Snapshots::observer`] sees every relayed, complete `tools/list` of such a server and
//!    writes the store only when the list differs from the one this process last wrote or
//!    read (compared in memory, by hash), off the request's path; reads go through a cache
//!    of [`READ_TTL`];
//! 2. the upstream's own answer to an unauthenticated `tools/list` (no credential at all),
//!    bounded by [`ANONYMOUS_TIMEOUT`] and cached for [`ANONYMOUS_TTL`], failures too, so an
//!    upstream that refuses it is asked at most that often;
//! 3. for an `oauth2` server whose admin set `list_tools_with_client_credentials`, the list
//!    the upstream gives the gateway's own client with a machine token (client credentials
//!    grant), bounded and cached the same way.
//!
//! None holds anything of a user's: a snapshot is the upstream's tool definitions only,
//! the unauthenticated list is what anyone could get, and the machine token is the
//! gateway's. Both are unfiltered here; the
//! caller's access policy is applied by whoever shows them, exactly as to a relayed list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Credentials, Upstream, Upstreams, client};
use crate::clock::Clock;
use crate::domain::McpServer;
use crate::http::error_chain;
use crate::store::{Store, ToolSnapshot};

/// How long a snapshot read from the store is reused (a list another process took shows
/// within this).
pub const READ_TTL: Duration = Duration::from_secs(30);
/// How long the upstream's unauthenticated answer (or its refusal) is reused.
pub const ANONYMOUS_TTL: Duration = Duration::from_secs(60);
/// The whole unauthenticated listing (handshake included) gets this long.
pub const ANONYMOUS_TIMEOUT: Duration = Duration::from_secs(3);
/// A list larger than this (as JSON) is not kept: a DynamoDB item holds 400 KB.
pub const MAX_SNAPSHOT_BYTES: usize = 300 * 1024;
/// Bound on the servers remembered in each map (it is only a cache).
const MAX_SERVERS: usize = 4096;
/// The bridged-session slot name of the unauthenticated listing: no principal is named so
/// (principals are emails or `service:` names).
const NOBODY: &str = "\u{0}anonymous";
/// The slot of the listing with the gateway's machine token.
const MACHINE: &str = "\u{0}machine";

type Timed<T> = Mutex<HashMap<String, (Instant, T)>>;

/// The snapshots and unauthenticated lists of one process.
pub struct Snapshots {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Per server: the hash of the snapshot last written or read (url and tools).
    known: Mutex<HashMap<String, String>>,
    read: Timed<Option<ToolSnapshot>>,
    anonymous: Timed<Option<Vec<Value>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bounded<V>(map: &mut HashMap<String, V>) {
    if map.len() >= MAX_SERVERS {
        map.clear();
    }
}

/// The hash a snapshot is compared by, and its JSON size.
fn fingerprint(url: &str, tools: &[Value]) -> (String, usize) {
    let text = serde_json::to_vec(tools).unwrap_or_default();
    let mut data = url.as_bytes().to_vec();
    data.push(b'\n');
    data.extend_from_slice(&text);
    (crate::crypto::sha256_hex(&data), text.len())
}

/// Whether `server`'s callers need a credential of their own (the servers snapshots are
/// for).
pub fn per_user(server: &McpServer) -> bool {
    use crate::domain::UpstreamAuth;
    match server.auth {
        UpstreamAuth::OAuth2 { .. } | UpstreamAuth::PerUserToken { .. } => true,
        UpstreamAuth::None
        | UpstreamAuth::Header { .. }
        | UpstreamAuth::OAuth2ClientCredentials { .. } => false,
    }
}

/// Whether `server`'s lists are kept as its snapshot: a per-user-credential server whose admin
/// said its list is the same for everyone. Only those get an observer, so every other list
/// passes through the relay untouched (an observer makes the relay read each answer).
pub fn kept(server: &McpServer) -> bool {
    per_user(server) && server.share_tool_list
}

impl Snapshots {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            known: Mutex::default(),
            read: Mutex::default(),
            anonymous: Mutex::default(),
        }
    }

    /// What records `server`'s complete lists as connected callers get them.
    pub fn observer(self: &Arc<Self>, server: Arc<McpServer>) -> Observer {
        Observer {
            snapshots: self.clone(),
            server,
        }
    }

    /// Keeps `tools` as `server`'s snapshot when they differ from the last one this process
    /// knows; the write runs detached (the list's answer does not wait for it).
    fn observe(self: &Arc<Self>, server: &McpServer, tools: &[Value]) {
        if !server.share_tool_list {
            // One user's list is never shown to another unless the admin said it is the
            // same for everyone (see `McpServer::share_tool_list`).
            return;
        }
        let (hash, size) = fingerprint(&server.url, tools);
        {
            let mut known = lock(&self.known);
            if known.get(&server.name) == Some(&hash) {
                return;
            }
            bounded(&mut known);
            // Remembered before the write: a list too large, or a write in flight, is not
            // tried again on every list.
            known.insert(server.name.clone(), hash.clone());
        }
        if size > MAX_SNAPSHOT_BYTES {
            tracing::info!(server = %server.name, size, "tool list too large to keep");
            return;
        }
        let snapshot = ToolSnapshot {
            url: server.url.clone(),
            tools: tools.to_vec(),
            taken_at: self.clock.now(),
        };
        {
            let mut read = lock(&self.read);
            bounded(&mut read);
            read.insert(
                server.name.clone(),
                (Instant::now(), Some(snapshot.clone())),
            );
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (me, name) = (self.clone(), server.name.clone());
        rt.spawn(async move {
            match me.store.put_tool_snapshot(&name, &snapshot).await {
                Ok(()) => tracing::debug!(server = %name, "tool snapshot stored"),
                Err(e) => {
                    tracing::warn!(server = %name, error = %error_chain(&e),
                        "could not store the tool snapshot");
                    // Tried again with the next list.
                    let mut known = lock(&me.known);
                    if known.get(&name) == Some(&hash) {
                        known.remove(&name);
                    }
                }
            }
        });
    }

    /// `server`'s snapshot for its current URL, through the read cache.
    async fn snapshot(&self, server: &McpServer) -> Option<Vec<Value>> {
        if !server.share_tool_list {
            return None;
        }
        let cached = lock(&self.read)
            .get(&server.name)
            .filter(|(at, _)| at.elapsed() < READ_TTL)
            .map(|(_, s)| s.clone());
        let snapshot = match cached {
            Some(s) => s,
            None => {
                let read = match self.store.get_tool_snapshot(&server.name).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(server = %server.name, error = %error_chain(&e),
                            "could not read the tool snapshot");
                        return None;
                    }
                };
                if let Some(s) = &read {
                    let mut known = lock(&self.known);
                    bounded(&mut known);
                    known.insert(server.name.clone(), fingerprint(&s.url, &s.tools).0);
                }
                let mut map = lock(&self.read);
                bounded(&mut map);
                map.insert(server.name.clone(), (Instant::now(), read.clone()));
                read
            }
        };
        snapshot.filter(|s| s.url == server.url).map(|s| s.tools)
    }

    /// The upstream's answer to `tools/list` without the caller's credential (`machine`:
    /// with the gateway's machine token, else with none), through its cache.
    async fn anonymous(
        &self,
        upstreams: &Arc<Upstreams>,
        server: &Arc<McpServer>,
        machine: bool,
    ) -> Option<Vec<Value>> {
        let key = format!("{}\n{}\n{machine}", server.name, server.url);
        if let Some((_, tools)) = lock(&self.anonymous)
            .get(&key)
            .filter(|(at, _)| at.elapsed() < ANONYMOUS_TTL)
        {
            return tools.clone();
        }
        let listing = async {
            let (credentials, slot) = if machine {
                let c = Credentials::machine(&upstreams.grants, server)
                    .await
                    .map_err(|e| error_chain(&e))?;
                (c, MACHINE)
            } else {
                (Credentials::none(), NOBODY)
            };
            let up = Upstream {
                server: server.clone(),
                service: upstreams.clone(),
                credentials,
                deadline: tokio::time::Instant::now() + ANONYMOUS_TIMEOUT,
            };
            client::list_tools(&up, slot)
                .await
                .map_err(|e| error_chain(&e))
        };
        let listed = match tokio::time::timeout(ANONYMOUS_TIMEOUT, listing).await {
            Ok(Ok(tools)) => Some(tools),
            Ok(Err(e)) => {
                tracing::debug!(server = %server.name, machine, error = %e,
                    "no tool list without the caller's credential");
                None
            }
            Err(_) => {
                tracing::debug!(server = %server.name, machine,
                    "tool list without the caller's credential timed out");
                None
            }
        };
        let mut map = lock(&self.anonymous);
        bounded(&mut map);
        map.insert(key, (Instant::now(), listed.clone()));
        listed
    }

    /// The tools of `server` the gateway can list without the caller's credential: the
    /// snapshot, else the upstream's unauthenticated list, else the list with the machine
    /// token where the admin allowed it, else none. Unfiltered.
    pub async fn unconnected(
        &self,
        upstreams: &Arc<Upstreams>,
        server: &Arc<McpServer>,
    ) -> Vec<Value> {
        if let Some(tools) = self.snapshot(server).await {
            return tools;
        }
        if let Some(tools) = self.anonymous(upstreams, server, false).await {
            return tools;
        }
        let machine = matches!(
            server.auth,
            crate::domain::UpstreamAuth::OAuth2 {
                list_tools_with_client_credentials: true,
                ..
            }
        );
        if machine && let Some(tools) = self.anonymous(upstreams, server, true).await {
            return tools;
        }
        Vec::new()
    }
}

/// Records one server's complete `tools/list` results (see [`Snapshots::observer`]).
pub struct Observer {
    snapshots: Arc<Snapshots>,
    server: Arc<McpServer>,
}

impl Observer {
    /// A `tools/list` result as the upstream gave it, before any filtering: kept when it is
    /// the whole list (no `nextCursor`).
    pub fn observe(&self, result: &serde_json::Map<String, Value>) {
        if result.get("nextCursor").is_some_and(|c| !c.is_null()) {
            return;
        }
        if let Some(Value::Array(tools)) = result.get("tools") {
            self.snapshots.observe(&self.server, tools);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use crate::store::sqlite::SqliteStore;
    use crate::testing::ObservedStore;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn server(url: &str) -> McpServer {
        serde_json::from_value(json!({"name": "notes", "url": url,
            "auth": {"type": "per_user_token", "header": "Authorization", "format": "{token}"},
            "created_at": 0, "updated_at": 0, "share_tool_list": true}))
        .unwrap()
    }

    /// GIVEN a server whose admin did not say its list is the same for everyone WHEN a
    /// connected user lists THEN nothing is kept and nothing is shown to anyone else (the
    /// baseline with the opt-in is the test below).
    #[tokio::test]
    async fn one_users_list_is_kept_only_where_the_admin_shares_it() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let snapshots = Arc::new(Snapshots::new(store.clone(), clock));
        let mut private = server("http://up/mcp");
        private.share_tool_list = false;
        let private = Arc::new(private);
        let list = json!({"tools": [{"name": "bobs-own-action"}]});
        snapshots
            .observer(private.clone())
            .observe(list.as_object().unwrap());
        settle().await;
        assert_eq!(store.get_tool_snapshot("notes").await.unwrap(), None);
        // Even a snapshot already stored (the admin turned sharing off) is not shown.
        let shared = Arc::new(server("http://up/mcp"));
        snapshots
            .observer(shared.clone())
            .observe(list.as_object().unwrap());
        settle().await;
        assert!(snapshots.snapshot(&shared).await.is_some());
        assert_eq!(snapshots.snapshot(&private).await, None);
    }

    /// Waits for the detached writes to land.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_store_is_written_only_when_the_list_changed() {
        let puts = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let (p, f) = (puts.clone(), failing.clone());
        let store: Arc<dyn Store> = Arc::new(ObservedStore::new(
            Arc::new(SqliteStore::in_memory().unwrap()),
            move |call| {
                if call.method == "put_tool_snapshot" {
                    p.fetch_add(1, Ordering::SeqCst);
                    if f.load(Ordering::SeqCst) {
                        return Err(StoreError::Corrupt("down".into()));
                    }
                }
                Ok(())
            },
        ));
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let snapshots = Arc::new(Snapshots::new(store.clone(), clock));
        let notes = Arc::new(server("http://up/mcp"));
        let observer = snapshots.observer(notes.clone());
        let list = |names: &[&str]| {
            let tools: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
            json!({"tools": tools}).as_object().unwrap().clone()
        };
        // GIVEN a list seen many times THEN one write
        for _ in 0..5 {
            observer.observe(&list(&["a", "b"]));
        }
        settle().await;
        assert_eq!(puts.load(Ordering::SeqCst), 1);
        let stored = store.get_tool_snapshot("notes").await.unwrap().unwrap();
        assert_eq!(
            stored.tools,
            vec![json!({"name": "a"}), json!({"name": "b"})]
        );
        // A page (nextCursor) is not the whole list: not kept.
        let mut page = list(&["a"]);
        page.insert("nextCursor".into(), json!("2"));
        observer.observe(&page);
        settle().await;
        assert_eq!(puts.load(Ordering::SeqCst), 1);
        // WHEN it changes THEN one more
        observer.observe(&list(&["a"]));
        observer.observe(&list(&["a"]));
        settle().await;
        assert_eq!(puts.load(Ordering::SeqCst), 2);
        // A failed write is tried again with the next list, once it succeeds no more.
        failing.store(true, Ordering::SeqCst);
        observer.observe(&list(&["c"]));
        settle().await;
        failing.store(false, Ordering::SeqCst);
        observer.observe(&list(&["c"]));
        observer.observe(&list(&["c"]));
        settle().await;
        assert_eq!(puts.load(Ordering::SeqCst), 4);
        // Shown for the URL it was taken at only.
        assert_eq!(
            snapshots.snapshot(&notes).await,
            Some(vec![json!({"name": "c"})])
        );
        assert_eq!(
            snapshots.snapshot(&server("http://elsewhere/mcp")).await,
            None
        );
    }

    #[test]
    fn the_hash_covers_the_url_and_every_tool() {
        let t = vec![json!({"name": "a"})];
        let (h, size) = fingerprint("http://x", &t);
        assert_eq!(size, serde_json::to_vec(&t).unwrap().len());
        assert_ne!(h, fingerprint("http://y", &t).0);
        assert_ne!(h, fingerprint("http://x", &[json!({"name": "b"})]).0);
        assert_eq!(h, fingerprint("http://x", &t).0);
    }
}
