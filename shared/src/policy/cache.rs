//! The policy snapshot cached per process, so a warm `/mcp` request reads nothing from the
//! store to decide. Fresh for `ttl` (`MCPGW_POLICY_CACHE_SECONDS`); for one more `ttl` (at most
//! [`MAX_STALE`]) the previous snapshot still answers while one background task re-reads
//! (stale-while-revalidate), after which reads are synchronous again. So no decision is taken
//! on a policy older than twice the TTL: a Lambda instance thawed after a long idle spell
//! (its background refresh frozen with it) re-reads before it answers, and a store that keeps
//! failing fails the request rather than deciding on an old policy forever. Admin writes in
//! the same process invalidate at once. Every load that finds a different policy bumps
//! [`PolicyCache::changes`], which open server-to-client streams watch to send
//! `notifications/tools/list_changed`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Snapshot;
use crate::store::{ConfigKind, ConfigStoreExt, Store, StoreResult};
use crate::swr::{ReadFailed, Swr};

/// The longest a snapshot may answer past its TTL while it is being re-read.
pub use crate::swr::MAX_STALE;

pub struct PolicyCache {
    /// Freshness, stale-while-revalidate and single-flight reads (shared with the limits).
    snapshot: Arc<Swr<Snapshot>>,
    changes: watch::Sender<u64>,
    last_digest: std::sync::Mutex<Option<String>>,
}

impl PolicyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            snapshot: Arc::new(Swr::new(ttl)),
            changes: watch::channel(0).0,
            last_digest: Default::default(),
        }
    }

    /// A receiver that changes whenever this process sees a different policy.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The current snapshot. A failed read fails the request: no decision is taken on a
    /// policy older than twice the TTL.
    pub async fn get(self: &Arc<Self>, store: &Arc<dyn Store>) -> StoreResult<Arc<Snapshot>> {
        self.snapshot
            .get(|| {
                let (cache, store) = (self.clone(), store.clone());
                async move {
                    let read = cache.load(store.as_ref()).await;
                    if let Err(e) = &read {
                        tracing::warn!(error = %crate::http::error_chain(e), "policy refresh failed");
                    }
                    read
                }
            })
            .await
            .map_err(|ReadFailed { error, .. }| error)
    }

    async fn load(&self, store: &dyn Store) -> StoreResult<Snapshot> {
        let (teams, groups, virtuals) = tokio::try_join!(
            store.list_typed(ConfigKind::Team),
            store.list_typed(ConfigKind::ServerGroup),
            store.list_typed(ConfigKind::VirtualServer),
        )?;
        let snap = Snapshot::new(teams, groups, virtuals);
        let mut last = self.last_digest.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_deref() != Some(snap.digest.as_str()) {
            if last.is_some() {
                self.changes.send_modify(|n| *n += 1);
            }
            *last = Some(snap.digest.clone());
        }
        Ok(snap)
    }

    /// Forgets the snapshot (an admin write in this process); the next load reads the store
    /// and, if the policy differs, tells watchers.
    pub async fn invalidate(&self) {
        self.snapshot.invalidate().await;
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::store::to_doc;

    #[tokio::test]
    async fn serves_from_memory_sees_invalidations_and_reports_changes() {
        let store: Arc<dyn Store> =
            Arc::new(crate::store::sqlite::SqliteStore::in_memory().unwrap());
        let cache = Arc::new(PolicyCache::new(Duration::from_secs(60)));
        let mut changes = cache.changes();
        assert!(cache.get(&store).await.unwrap().teams.is_empty());
        let team: super::super::Team =
            serde_json::from_value(serde_json::json!({"name":"eng","members":["a@x.io"]})).unwrap();
        store
            .create_config(ConfigKind::Team, "eng", &to_doc(&team))
            .await
            .unwrap();
        assert!(cache.get(&store).await.unwrap().teams.is_empty(), "cached");
        assert!(!changes.has_changed().unwrap());
        cache.invalidate().await;
        assert_eq!(cache.get(&store).await.unwrap().teams.len(), 1);
        assert!(
            changes.has_changed().unwrap(),
            "a different policy is announced"
        );
        changes.mark_unchanged();
        cache.invalidate().await;
        cache.get(&store).await.unwrap();
        assert!(
            !changes.has_changed().unwrap(),
            "the same policy re-read is no change"
        );
    }
}
