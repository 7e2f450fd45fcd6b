//! A value read from the store and cached per process, stale-while-revalidate and
//! single-flight: what the policy snapshot (`policy::cache`) and the rate-limit rules
//! (`limits`) are served from, so a warm request reads nothing from the store.
//!
//! Fresh for `ttl`. For one more `ttl` (at most [`MAX_STALE`]) the previous value still
//! answers while ONE background task re-reads. After that, after an invalidation, or
//! before the first read, the caller re-reads itself; concurrent callers queue behind that
//! one read and take its result instead of each reading the store (no thundering herd when
//! an instance warms up or a TTL expires under load). A failed read hands the caller the
//! last value read (if any), so each user decides whether to fail or to keep deciding on it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, RwLock};

/// The longest a value may answer past its TTL while it is being re-read (the bound is the
/// TTL itself when that is shorter).
pub const MAX_STALE: Duration = Duration::from_secs(30);

struct Entry<T> {
    at: Instant,
    value: Arc<T>,
    /// Forgotten by [`Swr::invalidate`]: never served as fresh or stale again, but still
    /// handed out as the last value when a read fails.
    invalidated: bool,
}

/// A read failed: its error and the last value read before (none before the first read).
pub struct ReadFailed<T, E> {
    pub error: E,
    pub last: Option<Arc<T>>,
}

pub struct Swr<T> {
    ttl: Duration,
    entry: RwLock<Option<Entry<T>>>,
    refreshing: AtomicBool,
    /// Held by the one caller re-reading synchronously.
    reading: Mutex<()>,
    /// Bumped by every invalidation: a read that started before it is not kept after it.
    generation: AtomicU64,
}

impl<T: Send + Sync + 'static> Swr<T> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entry: RwLock::new(None),
            refreshing: AtomicBool::new(false),
            reading: Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// The value, re-read with `read` when it is not fresh. A background re-read's failure
    /// is `read`'s to log: the value it had stays.
    pub async fn get<E, F, Fut>(self: &Arc<Self>, read: F) -> Result<Arc<T>, ReadFailed<T, E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Send + 'static,
    {
        if let Some(e) = self.entry.read().await.as_ref().filter(|e| !e.invalidated) {
            let age = e.at.elapsed();
            if age < self.ttl {
                return Ok(e.value.clone());
            }
            if !self.ttl.is_zero() && age < self.ttl + self.ttl.min(MAX_STALE) {
                if !self.refreshing.swap(true, Ordering::AcqRel) {
                    let generation = self.generation.load(Ordering::Acquire);
                    let (cache, reading) = (self.clone(), read());
                    tokio::spawn(async move {
                        if let Ok(v) = reading.await {
                            cache.keep(generation, v).await;
                        }
                        cache.refreshing.store(false, Ordering::Release);
                    });
                }
                return Ok(e.value.clone());
            }
        }
        let _reading = self.reading.lock().await;
        // Whoever held the lock before may just have read it.
        if let Some(e) = self.entry.read().await.as_ref()
            && !e.invalidated
            && e.at.elapsed() < self.ttl
        {
            return Ok(e.value.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        match read().await {
            Ok(v) => Ok(self.keep(generation, v).await),
            Err(error) => Err(ReadFailed {
                error,
                last: self.entry.read().await.as_ref().map(|e| e.value.clone()),
            }),
        }
    }

    async fn keep(&self, generation: u64, v: T) -> Arc<T> {
        let v = Arc::new(v);
        let mut entry = self.entry.write().await;
        if self.generation.load(Ordering::Acquire) == generation {
            *entry = Some(Entry {
                at: Instant::now(),
                value: v.clone(),
                invalidated: false,
            });
        }
        v
    }

    /// Serves the last value for another `ttl` after a failed read (a reader that prefers
    /// an old value to none; the next re-read is then one TTL away, not one per call).
    pub async fn keep_last(&self) {
        if let Some(e) = self.entry.write().await.as_mut() {
            e.at = Instant::now();
            e.invalidated = false;
        }
    }

    /// Forgets the value (an admin write in this process): the next `get` re-reads.
    pub async fn invalidate(&self) {
        let mut entry = self.entry.write().await;
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(e) = entry.as_mut() {
            e.invalidated = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_first_reads_share_one_store_read() {
        let cache: Arc<Swr<u32>> = Arc::new(Swr::new(Duration::from_secs(60)));
        let reads = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, reads) = (cache.clone(), reads.clone());
                tokio::spawn(async move {
                    cache
                        .get(|| {
                            let reads = reads.clone();
                            async move {
                                reads.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                Ok::<_, ()>(7)
                            }
                        })
                        .await
                        .ok()
                        .map(|v| *v)
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Some(7));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1, "single-flight");
    }

    #[tokio::test]
    async fn a_failed_read_hands_back_the_last_value_and_invalidation_forces_a_read() {
        let cache: Arc<Swr<u32>> = Arc::new(Swr::new(Duration::from_secs(60)));
        let first = cache.get(|| async { Err::<u32, _>("down") }).await;
        assert!(matches!(
            first,
            Err(ReadFailed {
                error: "down",
                last: None
            })
        ));
        assert_eq!(
            *cache.get(|| async { Ok::<_, &str>(1) }).await.ok().unwrap(),
            1
        );
        assert_eq!(
            *cache.get(|| async { Ok::<_, &str>(2) }).await.ok().unwrap(),
            1,
            "fresh"
        );
        cache.invalidate().await;
        match cache.get(|| async { Err::<u32, _>("down") }).await {
            Err(ReadFailed { last: Some(v), .. }) => assert_eq!(*v, 1),
            _ => panic!("the last value is handed back"),
        }
        cache.keep_last().await;
        assert_eq!(
            *cache.get(|| async { Ok::<_, &str>(3) }).await.ok().unwrap(),
            1,
            "kept for a TTL"
        );
    }
}
