//! Server configurations cached per process, so a warm proxied call does not read them from
//! the store. Built once per process by `state::AppState` and shared by the proxy, the grant
//! functions (whose endpoints are pinned on the server record) and the admin API (whose writes
//! invalidate it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

use crate::domain::McpServer;
use crate::store::{ConfigStoreExt, Store, StoreResult};

/// Server configurations cached per process, so a warm proxied call does not read them from
/// the store. Fresh for `ttl`; after that an entry is still served while one background task
/// per name re-reads it (stale-while-revalidate), so the request path never pays the read and
/// a burst after expiry makes one read, not one per request. Past `ttl + MAX_STALE` (the store
/// kept failing) reads are synchronous again. Admin writes in the same process invalidate at
/// once; other processes (other Lambda functions) see a change within about `ttl`. Unknown
/// names are not cached.
pub struct ServerCache {
    store: Arc<dyn Store>,
    ttl: Duration,
    entries: RwLock<HashMap<String, CacheEntry>>,
    /// Bumped by every invalidation: a load that read the store before an invalidation must
    /// not put its (older) result back afterwards.
    generation: std::sync::atomic::AtomicU64,
}

/// How long past its TTL an entry may still be served while it is being refreshed.
const MAX_STALE: Duration = Duration::from_secs(300);

struct CacheEntry {
    fetched: Instant,
    server: Arc<McpServer>,
    refreshing: Arc<std::sync::atomic::AtomicBool>,
}

impl ServerCache {
    pub fn new(ttl: Duration, store: Arc<dyn Store>) -> Self {
        Self {
            store,
            ttl,
            entries: RwLock::new(HashMap::new()),
            generation: Default::default(),
        }
    }

    /// The server `name`, from the cache when fresh (or while a refresh runs behind it).
    pub async fn get(self: &Arc<Self>, name: &str) -> StoreResult<Option<Arc<McpServer>>> {
        use std::sync::atomic::Ordering;
        if let Some(entry) = self.entries.read().await.get(name) {
            let age = entry.fetched.elapsed();
            if age < self.ttl {
                return Ok(Some(entry.server.clone()));
            }
            // A TTL of zero means no caching at all, not "always serve the previous value".
            if !self.ttl.is_zero() && age < self.ttl + MAX_STALE {
                if !entry.refreshing.swap(true, Ordering::AcqRel) {
                    let (cache, name, flag) =
                        (self.clone(), name.to_owned(), entry.refreshing.clone());
                    tokio::spawn(async move {
                        if let Err(e) = cache.load(&name).await {
                            tracing::warn!(server = %name, error = %crate::http::error_chain(&e), "server config refresh failed");
                        }
                        flag.store(false, Ordering::Release);
                    });
                }
                return Ok(Some(entry.server.clone()));
            }
        }
        self.load(name).await
    }

    /// Reads `name` from the store and caches (or forgets) it.
    async fn load(&self, name: &str) -> StoreResult<Option<Arc<McpServer>>> {
        use std::sync::atomic::Ordering;
        let generation = self.generation.load(Ordering::Acquire);
        let Some(server) = self.store.get_server(name).await? else {
            self.entries.write().await.remove(name);
            return Ok(None);
        };
        let server = Arc::new(server);
        let mut entries = self.entries.write().await;
        if self.generation.load(Ordering::Acquire) != generation {
            // Invalidated while reading: answer this caller, cache nothing possibly stale.
            return Ok(Some(server));
        }
        let entry = CacheEntry {
            fetched: Instant::now(),
            server: server.clone(),
            refreshing: Default::default(),
        };
        entries.insert(name.to_owned(), entry);
        Ok(Some(server))
    }

    /// Forgets `name` at once (an admin write, a pin): the next read goes to the store.
    pub async fn invalidate(&self, name: &str) {
        let mut entries = self.entries.write().await;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        entries.remove(name);
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_cache_serves_warm_reads_without_the_store_and_forgets_on_invalidate() {
        use crate::domain::{McpServer, UpstreamAuth};
        use crate::store::{ConfigKind, to_doc};
        let store: Arc<dyn Store> =
            Arc::new(crate::store::sqlite::SqliteStore::in_memory().unwrap());
        let mut server = McpServer {
            name: "s".into(),
            url: "http://a/mcp".into(),
            description: None,
            auth: UpstreamAuth::None,
            created_at: 0,
            updated_at: 0,
            authorization_server: None,
            share_tool_list: false,
            audit: None,
        };
        store
            .create_config(ConfigKind::Server, "s", &to_doc(&server))
            .await
            .unwrap();
        let cache = Arc::new(ServerCache::new(Duration::from_secs(60), store.clone()));
        assert_eq!(cache.get("s").await.unwrap().unwrap().url, "http://a/mcp");
        server.url = "http://b/mcp".into();
        store
            .replace_config(ConfigKind::Server, "s", &to_doc(&server))
            .await
            .unwrap();
        assert_eq!(
            cache.get("s").await.unwrap().unwrap().url,
            "http://a/mcp",
            "served from cache"
        );
        cache.invalidate("s").await;
        assert_eq!(cache.get("s").await.unwrap().unwrap().url, "http://b/mcp");
        assert!(cache.get("missing").await.unwrap().is_none());

        // A zero TTL caches nothing.
        let uncached = Arc::new(ServerCache::new(Duration::ZERO, store.clone()));
        uncached.get("s").await.unwrap();
        server.url = "http://b2/mcp".into();
        store
            .replace_config(ConfigKind::Server, "s", &to_doc(&server))
            .await
            .unwrap();
        assert_eq!(
            uncached.get("s").await.unwrap().unwrap().url,
            "http://b2/mcp"
        );
        server.url = "http://b/mcp".into();
        store
            .replace_config(ConfigKind::Server, "s", &to_doc(&server))
            .await
            .unwrap();

        // Past the TTL the stale entry answers at once while a refresh runs behind it.
        let expiring = Arc::new(ServerCache::new(Duration::from_millis(1), store.clone()));
        expiring.get("s").await.unwrap();
        server.url = "http://c/mcp".into();
        store
            .replace_config(ConfigKind::Server, "s", &to_doc(&server))
            .await
            .unwrap();
        assert_eq!(
            expiring.get("s").await.unwrap().unwrap().url,
            "http://b/mcp",
            "stale, refreshing"
        );
        let mut seen = String::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            seen = expiring.get("s").await.unwrap().unwrap().url.clone();
            if seen == "http://c/mcp" {
                break;
            }
        }
        assert_eq!(seen, "http://c/mcp", "the background refresh landed");
        // A server deleted behind the cache disappears once a refresh has seen it gone.
        store.delete_config(ConfigKind::Server, "s").await.unwrap();
        let mut gone = false;
        for _ in 0..100 {
            if expiring.get("s").await.unwrap().is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone, "deleted servers drop out of the cache");
    }
}
