//! Counting decorators around the store and secrets ports: the store reads and secret
//! resolutions per warm call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use async_trait::async_trait;
use mcpgw::secrets::aws::SecretsManagerSecrets;
use mcpgw::secrets::{SecretRef, SecretValue, Secrets, SecretsError};
use serde_json::{Value, json};

/// Every store method, and whether the DynamoDB adapter serves it with reads only.
pub(crate) const METHODS: [(&str, bool); 31] = [
    ("create_config", false),
    ("replace_config", false),
    ("get_config", true),
    ("list_configs", true),
    ("delete_config", false),
    ("create_api_key", false),
    ("find_api_key_by_hash", true),
    ("get_api_key", true),
    ("list_api_keys", true),
    ("list_api_keys_for_owner", true),
    ("delete_api_key", false),
    ("touch_api_key", false),
    ("get_grant", true),
    ("save_grant_if_version", false),
    ("delete_grant", false),
    ("list_grants_for_user", true),
    ("grants_due", true),
    ("put_state", false),
    ("consume_state", false), // a DeleteItem
    ("end_session", false),
    ("session_ended", true),
    ("replace_config_if_unchanged", false),
    ("list_grants", true),
    ("put_tool_snapshot", false),
    ("get_tool_snapshot", true),
    // Governance: one rate-limit write per counted call and bucket, audit records batched.
    ("take_rate", false),
    ("take_quota", false),
    ("peek_bucket", true),
    ("put_audit", false),
    ("query_audit", true),
    ("dump_audit", true),
];

#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) store: [AtomicU64; METHODS.len()],
    pub(crate) resolves: AtomicU64,
}

impl Counts {
    pub(crate) fn hit(&self, method: &str) {
        let i = METHODS
            .iter()
            .position(|(m, _)| *m == method)
            .expect("a store method");
        self.store[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The secrets port, counting `resolve` and `resolve_fresh` calls (served from cache or not).
pub(crate) struct CountingSecrets {
    pub(crate) inner: Arc<dyn Secrets>,
    pub(crate) counts: Arc<Counts>,
}

#[async_trait]
impl Secrets for CountingSecrets {
    async fn resolve(&self, reference: &SecretRef) -> Result<SecretValue, SecretsError> {
        self.counts.resolves.fetch_add(1, Ordering::Relaxed);
        self.inner.resolve(reference).await
    }
    async fn resolve_fresh(&self, reference: &SecretRef) -> Result<SecretValue, SecretsError> {
        self.counts.resolves.fetch_add(1, Ordering::Relaxed);
        self.inner.resolve_fresh(reference).await
    }
}

/// The counters of one measured gateway: the decorators', and the Secrets Manager adapter's.
#[derive(Clone)]
pub(crate) struct Counters {
    pub(crate) counts: Arc<Counts>,
    pub(crate) secrets_manager: Option<Arc<SecretsManagerSecrets>>,
}

#[derive(Clone, Copy)]
pub(crate) struct Snapshot {
    pub(crate) store: [u64; METHODS.len()],
    pub(crate) resolves: u64,
    /// `SecretsManagerSecrets::backend_calls()`, when the gateway uses that adapter.
    pub(crate) sm_calls: Option<u64>,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            store: std::array::from_fn(|i| self.counts.store[i].load(Ordering::Relaxed)),
            resolves: self.counts.resolves.load(Ordering::Relaxed),
            sm_calls: self.secrets_manager.as_ref().map(|s| s.backend_calls()),
        }
    }
}

impl Snapshot {
    pub(crate) fn since(&self, before: &Snapshot) -> Snapshot {
        Snapshot {
            store: std::array::from_fn(|i| self.store[i] - before.store[i]),
            resolves: self.resolves - before.resolves,
            sm_calls: self.sm_calls.zip(before.sm_calls).map(|(a, b)| a - b),
        }
    }
    pub(crate) fn count(&self, method: &str) -> u64 {
        METHODS
            .iter()
            .zip(self.store)
            .find(|((m, _), _)| *m == method)
            .map_or(0, |(_, n)| n)
    }
    pub(crate) fn reads(&self) -> u64 {
        METHODS
            .iter()
            .zip(self.store)
            .filter(|((_, read), _)| *read)
            .map(|(_, n)| n)
            .sum()
    }
    /// Reads made while answering requests: all but `get_config`, which `ServerCache` runs
    /// in a background task once an entry is older than its TTL, and `list_configs`, which
    /// the policy and rate-limit rule caches run the same way (`mcpgw::swr`,
    /// stale-while-revalidate: a warm request waits for neither).
    pub(crate) fn request_path_reads(&self) -> u64 {
        self.reads() - self.count("get_config") - self.count("list_configs")
    }
    pub(crate) fn writes(&self) -> u64 {
        METHODS
            .iter()
            .zip(self.store)
            .filter(|((_, read), _)| !*read)
            .map(|(_, n)| n)
            .sum()
    }
    pub(crate) fn by_method(&self) -> BTreeMap<&'static str, u64> {
        METHODS
            .iter()
            .zip(self.store)
            .filter(|(_, n)| *n > 0)
            .map(|((m, _), n)| (*m, n))
            .collect()
    }

    /// Store and secrets traffic of `calls` requests.
    pub(crate) fn json(&self, calls: usize) -> Value {
        let per = |n: u64| n as f64 / calls.max(1) as f64;
        json!({
            "calls": calls,
            "store_reads": self.reads(),
            "request_path_store_reads_per_call": per(self.request_path_reads()),
            "config_refreshes": self.count("get_config"),
            "store_writes": self.writes(),
            // Per counted call: conditional writes of the rate limit, and audit batch
            // writes (each a BatchWriteItem of up to 25 records on DynamoDB).
            "rate_limit_writes_per_call": per(self.count("take_rate") + self.count("take_quota")),
            "audit_batch_writes_per_call": per(self.count("put_audit")),
            "store_calls_by_method": self.by_method(),
            "secret_resolves_per_call": per(self.resolves),
            "secrets_manager_calls": self.sm_calls,
        })
    }
}
