//! The store port: everything the gateway persists, split by capability, and its two adapters:
//! [`dynamo::DynamoStore`] (one DynamoDB table, production) and [`sqlite::SqliteStore`] (one
//! file, local mode). Both pass the same contract suite (`shared/tests/it/store_contract.rs`).
//!
//! Contract highlights every adapter keeps:
//! - config documents are created only if absent and replaced only if present, or only if
//!   unchanged since they were read (compare-and-swap);
//! - grants are written only if the stored `version` is the one the writer read, so two
//!   concurrent refreshers can never both redeem a rotating refresh token;
//! - an OAuth state is consumed at most once, however many callers race for it;
//! - expired API keys and states read as absent (DynamoDB's TTL deletes lazily, days late);
//! - an API key's `last_used_at` only moves forward;
//! - an ended session stays ended until its own expiry, however often it is ended again;
//! - a server's tool snapshot is replaced whole, last writer wins (it is a cache of tool
//!   definitions, never anything of a user's);
//! - audit records are appended idempotently and never overwritten (see [`audit`]).

pub mod audit;
pub mod dynamo;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use audit::{
    AUDIT_PAGE_MAX, AuditCursor, AuditDump, AuditPage, AuditQuery, AuditSeal, AuditStore,
};

use async_trait::async_trait;
use serde::{Serialize, de::DeserializeOwned};

use crate::clock::UnixTime;
use crate::domain::{ApiKey, Grant, McpServer, OAuthState};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A create found an item with the same key.
    #[error("{kind} '{name}' already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// A replace or conditional write found no item.
    #[error("{kind} '{name}' not found")]
    NotFound { kind: &'static str, name: String },
    /// A grant write lost the optimistic-locking race: re-read and decide again.
    #[error("grant for '{user}' on '{server}' changed since it was read")]
    VersionConflict { user: String, server: String },
    /// A grant write did not carry the next version (the version read plus one, or 1 for a
    /// new grant). A bug in the caller, never caller input: nothing was written.
    #[error(
        "grant write must carry version {expected_next} (the version read plus one), got {got}"
    )]
    InvalidVersion { expected_next: u64, got: u64 },
    /// An item in the store could not be decoded.
    #[error("stored item is corrupt: {0}")]
    Corrupt(String),
    /// The backend refused the write for good (an item too large, a value it cannot take):
    /// writing it again cannot succeed, so callers must not retry it. Names no content.
    #[error("store refused the write: {0}")]
    Rejected(String),
    /// The backend failed (network, throttling, disk).
    #[error("store backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The kinds of named configuration documents. Each kind is its own namespace of names,
/// except that servers and virtual servers share the `/mcp/{endpoint}` namespace (the
/// admin API checks that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigKind {
    Server,
    VirtualServer,
    Team,
    ServerGroup,
    IdentityProvider,
    /// The gateway's own OAuth clients, registered by RFC 7591 (one per issuer).
    ClientRegistration,
    /// Rate limits and quotas (`limits::rule`).
    RateLimit,
}

impl ConfigKind {
    /// Stable tag used in storage keys; never change one that has shipped.
    pub fn tag(self) -> &'static str {
        match self {
            ConfigKind::Server => "SERVER",
            ConfigKind::VirtualServer => "VSERVER",
            ConfigKind::Team => "TEAM",
            ConfigKind::ServerGroup => "SGROUP",
            ConfigKind::IdentityProvider => "IDP",
            ConfigKind::ClientRegistration => "DCR",
            ConfigKind::RateLimit => "RATELIMIT",
        }
    }

    /// Human name used in error messages.
    pub fn label(self) -> &'static str {
        match self {
            ConfigKind::Server => "server",
            ConfigKind::VirtualServer => "virtual server",
            ConfigKind::Team => "team",
            ConfigKind::ServerGroup => "server group",
            ConfigKind::IdentityProvider => "identity provider",
            ConfigKind::ClientRegistration => "client registration",
            ConfigKind::RateLimit => "rate limit",
        }
    }
}

/// Named JSON configuration documents (servers, teams, groups, ...), small and admin-written.
#[async_trait]
pub trait ConfigStore: Send + Sync {
    /// Stores `doc` under `(kind, name)`; `AlreadyExists` if the name is taken.
    async fn create_config(
        &self,
        kind: ConfigKind,
        name: &str,
        doc: &serde_json::Value,
    ) -> StoreResult<()>;
    /// Replaces the document; `NotFound` if there is none.
    async fn replace_config(
        &self,
        kind: ConfigKind,
        name: &str,
        doc: &serde_json::Value,
    ) -> StoreResult<()>;
    /// Replaces the document only if the stored one still equals `expected` (as JSON values),
    /// atomically: a compare-and-swap for a writer that derived `doc` from what it read, such
    /// as the gateway pinning a server's discovered endpoints at first use while another
    /// process does the same or an admin edits the server. `Ok(false)`: nothing was written
    /// because the document changed or was deleted since it was read; read it again.
    async fn replace_config_if_unchanged(
        &self,
        kind: ConfigKind,
        name: &str,
        expected: &serde_json::Value,
        doc: &serde_json::Value,
    ) -> StoreResult<bool>;
    async fn get_config(
        &self,
        kind: ConfigKind,
        name: &str,
    ) -> StoreResult<Option<serde_json::Value>>;
    /// All documents of a kind, ordered by name.
    async fn list_configs(&self, kind: ConfigKind) -> StoreResult<Vec<serde_json::Value>>;
    /// Returns whether a document was deleted.
    async fn delete_config(&self, kind: ConfigKind, name: &str) -> StoreResult<bool>;
}

/// API keys, stored by id with a lookup by hash (the only thing a caller presents).
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key; `AlreadyExists` if the id is taken.
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    /// The unexpired key with this hash, if any.
    async fn find_api_key_by_hash(
        &self,
        key_hash: &str,
        now: UnixTime,
    ) -> StoreResult<Option<ApiKey>>;
    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>>;
    /// Every key (expired ones too, so admins can see and delete them), ordered by id.
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>>;
    /// The keys owned by `owner` (exact match; owners are stored lowercase), ordered by id,
    /// expired ones included. The default filters [`ApiKeyStore::list_api_keys`].
    async fn list_api_keys_for_owner(&self, owner: &str) -> StoreResult<Vec<ApiKey>> {
        let mut keys = self.list_api_keys().await?;
        keys.retain(|k| k.owner == owner);
        Ok(keys)
    }
    async fn delete_api_key(&self, id: &str) -> StoreResult<bool>;
    /// Records that the key was used at `at`: sets `last_used_at` only if `at` is later than
    /// the stored value (or none is stored), and succeeds silently when the key is gone (it
    /// may have been deleted since it authenticated). Reads by id and lists see the new value;
    /// the key returned by [`ApiKeyStore::find_api_key_by_hash`] may not.
    async fn touch_api_key(&self, id: &str, at: UnixTime) -> StoreResult<()>;
}

/// Per-user OAuth grants with optimistic locking.
#[async_trait]
pub trait GrantStore: Send + Sync {
    async fn get_grant(&self, user: &str, server: &str) -> StoreResult<Option<Grant>>;
    /// Writes `grant` only if the stored version is `expected` (`None`: no grant may exist).
    /// `VersionConflict` otherwise, and nothing is written.
    ///
    /// `grant.version` must be the next version: `expected + 1`, or 1 when `expected` is
    /// `None`. Anything else is refused with `InvalidVersion` before the store is touched:
    /// a write that kept the version it read would leave the stored version unchanged, so a
    /// second writer holding the same read would pass the check too (and two refreshers
    /// could both redeem a rotating refresh token). (`Some(u64::MAX)` has no next version and
    /// cannot have been read from a store: `Corrupt`, also before any write.)
    async fn save_grant_if_version(&self, grant: &Grant, expected: Option<u64>) -> StoreResult<()>;
    async fn delete_grant(&self, user: &str, server: &str) -> StoreResult<bool>;
    /// A user's grants, ordered by server.
    async fn list_grants_for_user(&self, user: &str) -> StoreResult<Vec<Grant>>;
    /// Everyone's grants, ordered by user then server, at most `limit` (the admin review;
    /// DynamoDB scans for it, so it stays off every request path).
    async fn list_grants(&self, limit: usize) -> StoreResult<Vec<Grant>>;
    /// Grants whose `refresh_at` is at or before `before`, soonest first, at most `limit`.
    async fn grants_due(&self, before: UnixTime, limit: usize) -> StoreResult<Vec<Grant>>;
}

/// Pending OAuth authorizations.
#[async_trait]
pub trait OAuthStateStore: Send + Sync {
    async fn put_state(&self, state: &OAuthState) -> StoreResult<()>;
    /// Removes and returns the state if it exists and has not expired. Of any number of
    /// concurrent callers, at most one gets `Some`.
    async fn consume_state(&self, id: &str, now: UnixTime) -> StoreResult<Option<OAuthState>>;
}

/// Gateway sessions ended by `DELETE` (tombstones), so every process, not only the one that
/// served the `DELETE`, can tell an ended session from one its upstream merely lost. Keyed by
/// the session id's fingerprint (`mcp::session::fingerprint`); read only when an upstream
/// answers 404 for a session, never on the normal request path.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Records that the session ended; the record lasts until `expires_at` (the session's own
    /// expiry, after which its id is refused anyway) and may disappear once the wall clock
    /// has passed it (DynamoDB's TTL, the SQLite adapter's sweep). Idempotent: ending a
    /// session again succeeds and never moves its `expires_at` back.
    async fn end_session(&self, fingerprint: &str, expires_at: UnixTime) -> StoreResult<()>;
    /// Whether the session was ended and its record is still in force (`now < expires_at`).
    async fn session_ended(&self, fingerprint: &str, now: UnixTime) -> StoreResult<bool>;
}

/// The tool list a server last gave a connected caller: tool definitions only (names,
/// descriptions, schemas), never a credential or anything else of that caller's. Shown,
/// marked and filtered by each viewer's access, to callers who have not connected yet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolSnapshot {
    /// The server's URL when the list was taken: a server pointed elsewhere since has
    /// other tools, and the snapshot is not used.
    pub url: String,
    pub tools: Vec<serde_json::Value>,
    pub taken_at: UnixTime,
}

/// Per-server tool snapshots (see [`ToolSnapshot`]). Written only when the list changed
/// (the writer compares in memory first), read through a process cache: neither is on
/// every request.
#[async_trait]
pub trait ToolSnapshotStore: Send + Sync {
    /// Stores `snapshot` as `server`'s, replacing any (last writer wins).
    async fn put_tool_snapshot(&self, server: &str, snapshot: &ToolSnapshot) -> StoreResult<()>;
    async fn get_tool_snapshot(&self, server: &str) -> StoreResult<Option<ToolSnapshot>>;
}

/// What one counted call did to a rate-limit bucket: the value it left (taken) or found
/// (refused). For a rate that value is the bucket's `tat` in ms ([`crate::gcra`]), for a
/// quota the window's call count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Taken(i64),
    Refused(i64),
}

/// Rate-limit buckets (see `limits`): each one number, changed only by atomic conditional
/// writes, so any number of processes sharing the store never let more through than the
/// limit. Buckets expire on their own once idle (DynamoDB TTL, the SQLite adapter's sweep);
/// an expired bucket reads as absent.
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// One call on the GCRA bucket `key` at `now_us` ([`crate::gcra::take`] with interval
    /// `t_us` and tolerance `tau_us`), atomically. Rates count in MICROseconds (the tat too),
    /// so an interval below a millisecond is exact; quotas and [`Self::peek_bucket`]'s `now`
    /// are milliseconds. `last_tat` is what this process last saw of the bucket: a hint of
    /// which conditional write will succeed, never trusted.
    async fn take_rate(
        &self,
        key: &str,
        now_us: i64,
        t_us: i64,
        tau_us: i64,
        last_tat: Option<i64>,
    ) -> StoreResult<Take>;
    /// One call at `now_ms` on the fixed-window counter `key` (its key names the window),
    /// which allows `count` calls; the bucket expires at `window_end_ms`.
    async fn take_quota(
        &self,
        key: &str,
        now_ms: i64,
        count: u64,
        window_end_ms: i64,
    ) -> StoreResult<Take>;
    /// The bucket's value (a rate's tat in µs, a quota's count) without counting, `None`
    /// when absent or expired; `now_ms` in milliseconds.
    async fn peek_bucket(&self, key: &str, now_ms: i64) -> StoreResult<Option<i64>>;
}

/// Seconds (a TTL) when a GCRA bucket taken at `now_us` is certainly full again: its tat is
/// at most `now + τ + T` after the write.
pub(crate) fn rate_bucket_expiry(now_us: i64, t_us: i64, tau_us: i64) -> UnixTime {
    (now_us + tau_us + t_us) / 1_000_000 + 1
}

/// Everything the gateway persists.
pub trait Store:
    ConfigStore
    + ApiKeyStore
    + GrantStore
    + OAuthStateStore
    + SessionStore
    + ToolSnapshotStore
    + RateLimitStore
    + AuditStore
{
}
impl<
    T: ConfigStore
        + ApiKeyStore
        + GrantStore
        + OAuthStateStore
        + SessionStore
        + ToolSnapshotStore
        + RateLimitStore
        + AuditStore,
> Store for T
{
}

/// The `GrantStore` rule that every grant write carries the next version (`expected + 1`,
/// or 1 for a new grant); checked before the store is touched, so a refused write writes
/// nothing.
pub(crate) fn check_next_version(grant: &Grant, expected: Option<u64>) -> StoreResult<()> {
    let expected_next = match expected {
        None => 1,
        // Versions start at 1 and grow by one per write: no stored grant gets here.
        Some(v) => v.checked_add(1).ok_or_else(|| {
            StoreError::Corrupt(format!("grant version {v} cannot be incremented"))
        })?,
    };
    if grant.version != expected_next {
        return Err(StoreError::InvalidVersion {
            expected_next,
            got: grant.version,
        });
    }
    Ok(())
}

/// Typed access to configuration documents.
#[async_trait]
pub trait ConfigStoreExt: ConfigStore {
    async fn get_typed<T: DeserializeOwned>(
        &self,
        kind: ConfigKind,
        name: &str,
    ) -> StoreResult<Option<T>> {
        match self.get_config(kind, name).await? {
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("{} '{name}': {e}", kind.label()))),
            None => Ok(None),
        }
    }
    async fn list_typed<T: DeserializeOwned>(&self, kind: ConfigKind) -> StoreResult<Vec<T>> {
        self.list_configs(kind)
            .await?
            .into_iter()
            .map(|v| {
                serde_json::from_value(v)
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", kind.label())))
            })
            .collect()
    }
    async fn get_server(&self, name: &str) -> StoreResult<Option<McpServer>> {
        self.get_typed(ConfigKind::Server, name).await
    }
}
impl<S: ConfigStore + ?Sized> ConfigStoreExt for S {}

/// JSON text of a value for a store column or attribute; `what` names it in the error.
pub(crate) fn json_text(value: &impl Serialize, what: &str) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("{what} does not serialize: {e}")))
}

/// Serializes a document for storage; domain types always serialize.
pub fn to_doc<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("domain types serialize to JSON")
}
