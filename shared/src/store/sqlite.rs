//! SQLite adapter of the store port: one database file, for local mode and unit tests.
//!
//! One [`rusqlite::Connection`] sits behind a std `Mutex`; every call runs on tokio's
//! blocking pool (`spawn_blocking`) so a slow disk never stalls the async runtime. Holding
//! the one connection serializes all statements, and each operation is a single statement
//! (or one transaction), so the conditional writes the contract asks for are atomic:
//! `INSERT .. ON CONFLICT DO NOTHING` for "create if absent", `UPDATE .. WHERE doc = ?` (the
//! text just read) for a config compare-and-swap, `UPDATE .. WHERE version = ?`
//! for optimistic locking (a grant write must carry the next version, checked before the
//! statement runs), `DELETE .. RETURNING` for consume-once, and an upsert that keeps the
//! later expiry for ended sessions.
//!
//! The schema is versioned with `PRAGMA user_version`: [`MIGRATIONS`] is applied in order
//! from the stored version, each step in its own transaction. Never edit a shipped step; add
//! a new one.
//!
//! Tested by the contract suite (`shared/tests/it/store_contract.rs`, the same cases as the
//! DynamoDB adapter) and by the unit tests below (migration, reopening a file).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};

mod audit;

use super::{
    ApiKeyStore, ConfigKind, ConfigStore, GrantStore, OAuthStateStore, RateLimitStore,
    SessionStore, StoreError, StoreResult, Take, ToolSnapshot, ToolSnapshotStore, json_text,
};
use crate::clock::{Clock, SystemClock, UnixTime};
use crate::domain::{ApiKey, Grant, GrantStatus, OAuthState};

/// Schema steps; `user_version` is the number of steps applied.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema. API keys keep the whole key as JSON plus the two columns queried;
    // grants are columns because the version and refresh time are compared in SQL and the
    // sealed tokens are binary.
    r#"
    CREATE TABLE config (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        doc  TEXT NOT NULL,
        PRIMARY KEY (kind, name)
    ) WITHOUT ROWID;

    CREATE TABLE api_keys (
        id         TEXT PRIMARY KEY NOT NULL,
        key_hash   TEXT NOT NULL,
        expires_at INTEGER,
        doc        TEXT NOT NULL
    );
    CREATE INDEX api_keys_by_hash ON api_keys (key_hash);

    CREATE TABLE grants (
        user              TEXT NOT NULL,
        server            TEXT NOT NULL,
        version           INTEGER NOT NULL,
        sealed_tokens     BLOB NOT NULL,
        status            TEXT NOT NULL,
        scopes            TEXT NOT NULL,
        access_expires_at INTEGER,
        refresh_at        INTEGER,
        updated_at        INTEGER NOT NULL,
        PRIMARY KEY (user, server)
    );
    CREATE INDEX grants_by_refresh_at ON grants (refresh_at) WHERE refresh_at IS NOT NULL;

    CREATE TABLE oauth_states (
        id             TEXT PRIMARY KEY NOT NULL,
        user           TEXT NOT NULL,
        server         TEXT NOT NULL,
        sealed_payload BLOB NOT NULL,
        created_at     INTEGER NOT NULL,
        expires_at     INTEGER NOT NULL
    );
    CREATE INDEX oauth_states_by_expiry ON oauth_states (expires_at);
    "#,
    // 2: when a key was last used, written apart from `doc` (which stays as created) so
    // recording a use is one small conditional UPDATE; reads merge it into the key.
    r#"
    ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
    "#,
    // 3: the owner as a column with an index, so listing one owner's keys reads only theirs;
    // existing keys get it from their `doc`.
    r#"
    ALTER TABLE api_keys ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    UPDATE api_keys SET owner =
        COALESCE(CASE WHEN json_valid(doc) THEN json_extract(doc, '$.owner') END, '');
    CREATE INDEX api_keys_by_owner ON api_keys (owner, id);
    "#,
    // 4: sessions ended by DELETE, until the session's own expiry; the index serves the sweep
    // of expired records.
    r#"
    CREATE TABLE ended_sessions (
        fingerprint TEXT PRIMARY KEY NOT NULL,
        expires_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX ended_sessions_by_expiry ON ended_sessions (expires_at);
    "#,
    // 5: a grant's refresh history, shown to its user and admins.
    r#"
    ALTER TABLE grants ADD COLUMN last_refresh_at INTEGER;
    ALTER TABLE grants ADD COLUMN last_error TEXT;
    "#,
    // 6: the refresh lease, so processes sharing the file never redeem one refresh token twice.
    r#"
    ALTER TABLE grants ADD COLUMN refresh_lease_until INTEGER;
    "#,
    // 7: the tool list each server last gave a connected caller (for callers not connected
    // yet), one JSON document per server.
    r#"
    CREATE TABLE tool_snapshots (
        server TEXT PRIMARY KEY NOT NULL,
        doc    TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 8: the audit trail (see `sqlite::audit`): each record's JSON plus the columns queries
    // filter on. `(writer, seq, hash)` is unique so a retried flush stores nothing twice,
    // while a different record claiming a stored `seq` is kept for verify to name.
    r#"
    CREATE TABLE audit_records (
        writer     TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        hash       TEXT NOT NULL,
        time_ms    INTEGER NOT NULL,
        user       TEXT,
        endpoint   TEXT,
        tool       TEXT,
        outcome    TEXT,
        decision   TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        doc        TEXT NOT NULL
    );
    CREATE UNIQUE INDEX audit_records_by_link ON audit_records (writer, seq, hash);
    CREATE INDEX audit_records_by_time ON audit_records (time_ms, writer, seq);
    CREATE INDEX audit_records_by_user ON audit_records (user, time_ms);
    CREATE INDEX audit_records_by_expiry ON audit_records (expires_at);
    CREATE TABLE audit_seals (
        writer     TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        head       TEXT NOT NULL,
        time_ms    INTEGER NOT NULL,
        mac        TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (writer, seq)
    );
    CREATE INDEX audit_seals_by_time ON audit_seals (time_ms);
    "#,
    // 9: rate-limit buckets: a GCRA tat (ms) or a fixed window's count, each with the second
    // after which it is idle and may be swept.
    r#"
    CREATE TABLE rate_buckets (
        key        TEXT PRIMARY KEY NOT NULL,
        value      INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX rate_buckets_by_expiry ON rate_buckets (expires_at);
    "#,
];

const GRANT_COLUMNS: &str = "user, server, version, sealed_tokens, status, scopes, access_expires_at, refresh_at, updated_at, last_refresh_at, last_error, refresh_lease_until";
const STATE_COLUMNS: &str = "id, user, server, sealed_payload, created_at, expires_at";

/// The SQLite store. Cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed, parent directory included) the database at `path`, switches
    /// it to WAL and brings the schema up to date. Blocking: call it at startup.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(StoreError::backend)?;
        }
        let conn = Connection::open(path).map_err(db)?;
        // WAL lets readers (an admin poking at the file with the sqlite3 CLI) run beside the
        // gateway's writes; NORMAL sync is durable across application crashes in WAL mode.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "sqlite store could not switch to WAL journal mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        Self::init(conn)
    }

    /// A private in-memory database, for unit tests.
    pub fn in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory().map_err(db)?)
    }

    fn init(mut conn: Connection) -> StoreResult<Self> {
        // Another process holding the file (a second local gateway, the sqlite3 CLI) makes
        // writes wait briefly instead of failing at once with SQLITE_BUSY.
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held cannot leave a half-applied write behind (every
            // write is one statement or a transaction that rolls back on drop), so a poisoned
            // lock is safe to keep using.
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(StoreError::backend)?
    }

    /// Runs `f` at once on this thread when the connection is free, else like [`Self::call`].
    /// Only for the short writes of the hot path (a rate bucket: one indexed read and one
    /// upsert in WAL mode, no fsync): handing them to the blocking pool cost two thread
    /// switches per counted call, more than the statements themselves (the bench's added
    /// latency). A busy connection (an audit batch being written) still goes to the pool,
    /// so the async thread never waits for another writer.
    async fn call_short<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        // The guard is dropped before any await (a std guard is not `Send`).
        let f = {
            let free = match self.conn.try_lock() {
                Ok(guard) => Some(guard),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            match free {
                Some(mut guard) => return f(&mut guard),
                None => f,
            }
        };
        self.call(f).await
    }

    /// A create or replace of a config document: `sql` takes (kind, name, doc) and changes no
    /// row when the name is taken (create) or absent (replace), which `refused` then names.
    async fn write_config(
        &self,
        kind: ConfigKind,
        name: &str,
        doc: &serde_json::Value,
        sql: &'static str,
        refused: fn(&'static str, String) -> StoreError,
    ) -> StoreResult<()> {
        let (name, doc) = (name.to_owned(), super::json_text(doc, kind.label())?);
        self.call(move |c| {
            let n = c.execute(sql, params![kind.tag(), name, doc]).map_err(db)?;
            if n == 0 {
                return Err(refused(kind.label(), name));
            }
            Ok(())
        })
        .await
    }
}

/// Applies the schema steps not yet recorded in `user_version`.
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db)?;
    let current = usize::try_from(current)
        .map_err(|_| StoreError::Corrupt(format!("sqlite schema version {current} is invalid")))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "sqlite schema version {current} is newer than this build supports ({})",
            MIGRATIONS.len()
        )));
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        // user_version lives in the database header, so it commits (or not) with the step.
        let tx = conn.transaction().map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.pragma_update(None, "user_version", (step + 1) as i64)
            .map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::backend(e)
}

fn from_json_text<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// One owner's keys, through the `api_keys_by_owner` index.
const LIST_KEYS_FOR_OWNER: &str =
    "SELECT doc, last_used_at FROM api_keys WHERE owner = ?1 ORDER BY id";

/// The keys a `SELECT doc, last_used_at ...` statement returns.
fn api_keys_where(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<ApiKey>> {
    let mut stmt = c.prepare_cached(sql).map_err(db)?;
    let rows = stmt
        .query_map(params, |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
    rows.iter()
        .map(|(t, used)| api_key_from_row(t, *used))
        .collect()
}

/// An API key row: its `doc` with the `last_used_at` column merged in (the later of the two).
fn api_key_from_row(doc: &str, last_used_at: Option<UnixTime>) -> StoreResult<ApiKey> {
    let mut key: ApiKey = from_json_text(doc, "API key")?;
    key.last_used_at = key.last_used_at.max(last_used_at);
    Ok(key)
}

fn version_to_sql(v: u64) -> StoreResult<i64> {
    i64::try_from(v)
        .map_err(|_| StoreError::Corrupt("grant version exceeds the range sqlite stores".into()))
}

/// A grant row; conversion errors are collected as `Corrupt` by the caller.
struct GrantRow {
    user: String,
    server: String,
    version: i64,
    sealed_tokens: Vec<u8>,
    status: String,
    scopes: String,
    access_expires_at: Option<i64>,
    refresh_at: Option<i64>,
    updated_at: i64,
    last_refresh_at: Option<i64>,
    last_error: Option<String>,
    refresh_lease_until: Option<i64>,
}

impl GrantRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            user: r.get(0)?,
            server: r.get(1)?,
            version: r.get(2)?,
            sealed_tokens: r.get(3)?,
            status: r.get(4)?,
            scopes: r.get(5)?,
            access_expires_at: r.get(6)?,
            refresh_at: r.get(7)?,
            updated_at: r.get(8)?,
            last_refresh_at: r.get(9)?,
            last_error: r.get(10)?,
            refresh_lease_until: r.get(11)?,
        })
    }

    fn into_grant(self) -> StoreResult<Grant> {
        let version = u64::try_from(self.version)
            .map_err(|_| StoreError::Corrupt("grant has a negative version".into()))?;
        let status = GrantStatus::parse(&self.status).ok_or_else(|| {
            StoreError::Corrupt(format!("grant status '{}' is unknown", self.status))
        })?;
        Ok(Grant {
            scopes: from_json_text(&self.scopes, "grant scopes")?,
            user: self.user,
            server: self.server,
            version,
            sealed_tokens: self.sealed_tokens,
            status,
            access_expires_at: self.access_expires_at,
            refresh_at: self.refresh_at,
            updated_at: self.updated_at,
            last_refresh_at: self.last_refresh_at,
            last_error: self.last_error,
            refresh_lease_until: self.refresh_lease_until,
        })
    }
}

fn read_state(r: &Row<'_>) -> rusqlite::Result<OAuthState> {
    Ok(OAuthState {
        id: r.get(0)?,
        user: r.get(1)?,
        server: r.get(2)?,
        sealed_payload: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
    })
}

#[async_trait]
impl ConfigStore for SqliteStore {
    async fn create_config(
        &self,
        kind: ConfigKind,
        name: &str,
        doc: &serde_json::Value,
    ) -> StoreResult<()> {
        self.write_config(
            kind,
            name,
            doc,
            "INSERT INTO config (kind, name, doc) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            |kind, name| StoreError::AlreadyExists { kind, name },
        )
        .await
    }

    async fn replace_config(
        &self,
        kind: ConfigKind,
        name: &str,
        doc: &serde_json::Value,
    ) -> StoreResult<()> {
        self.write_config(
            kind,
            name,
            doc,
            "UPDATE config SET doc = ?3 WHERE kind = ?1 AND name = ?2",
            |kind, name| StoreError::NotFound { kind, name },
        )
        .await
    }

    async fn replace_config_if_unchanged(
        &self,
        kind: ConfigKind,
        name: &str,
        expected: &serde_json::Value,
        doc: &serde_json::Value,
    ) -> StoreResult<bool> {
        let (name, doc) = (name.to_owned(), super::json_text(doc, kind.label())?);
        let expected = expected.clone();
        self.call(move |c| {
            let stored: Option<String> = c
                .query_row(
                    "SELECT doc FROM config WHERE kind = ?1 AND name = ?2",
                    params![kind.tag(), name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            let Some(stored) = stored else {
                return Ok(false);
            };
            let current: serde_json::Value =
                from_json_text(&stored, &format!("{} '{name}'", kind.label()))?;
            if current != expected {
                return Ok(false);
            }
            // Conditional on the exact text just read: another process sharing the file
            // (its own connection, so not behind this mutex) may have written in between.
            let n = c
                .execute(
                    "UPDATE config SET doc = ?3 WHERE kind = ?1 AND name = ?2 AND doc = ?4",
                    params![kind.tag(), name, doc, stored],
                )
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn get_config(
        &self,
        kind: ConfigKind,
        name: &str,
    ) -> StoreResult<Option<serde_json::Value>> {
        let name = name.to_owned();
        self.call(move |c| {
            let text: Option<String> = c
                .query_row(
                    "SELECT doc FROM config WHERE kind = ?1 AND name = ?2",
                    params![kind.tag(), name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            text.map(|t| from_json_text(&t, &format!("{} '{name}'", kind.label())))
                .transpose()
        })
        .await
    }

    async fn list_configs(&self, kind: ConfigKind) -> StoreResult<Vec<serde_json::Value>> {
        self.call(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT doc FROM config WHERE kind = ?1 ORDER BY name")
                .map_err(db)?;
            let texts = stmt
                .query_map(params![kind.tag()], |r| r.get::<_, String>(0))
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            texts
                .iter()
                .map(|t| from_json_text(t, kind.label()))
                .collect()
        })
        .await
    }

    async fn delete_config(&self, kind: ConfigKind, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        self.call(move |c| {
            let n = c
                .execute(
                    "DELETE FROM config WHERE kind = ?1 AND name = ?2",
                    params![kind.tag(), name],
                )
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }
}

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        let doc = super::json_text(key, "API key")?;
        let (id, hash, expires_at, used, owner) = (
            key.id.clone(),
            key.key_hash.clone(),
            key.expires_at,
            key.last_used_at,
            key.owner.clone(),
        );
        self.call(move |c| {
            let n = c
                .execute(
                    "INSERT INTO api_keys (id, key_hash, expires_at, doc, last_used_at, owner) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    params![id, hash, expires_at, doc, used, owner],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::AlreadyExists {
                    kind: "API key",
                    name: id,
                });
            }
            Ok(())
        })
        .await
    }

    async fn find_api_key_by_hash(
        &self,
        key_hash: &str,
        now: UnixTime,
    ) -> StoreResult<Option<ApiKey>> {
        let hash = key_hash.to_owned();
        self.call(move |c| {
            // Same rule as ApiKey::is_expired: a key is dead from its expires_at second on.
            let row: Option<(String, Option<i64>)> = c
                .query_row(
                    "SELECT doc, last_used_at FROM api_keys WHERE key_hash = ?1 AND (expires_at IS NULL OR expires_at > ?2) \
                     ORDER BY id LIMIT 1",
                    params![hash, now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            row.map(|(t, used)| api_key_from_row(&t, used)).transpose()
        })
        .await
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        let id = id.to_owned();
        self.call(move |c| {
            let row: Option<(String, Option<i64>)> = c
                .query_row(
                    "SELECT doc, last_used_at FROM api_keys WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            row.map(|(t, used)| api_key_from_row(&t, used)).transpose()
        })
        .await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.call(|c| api_keys_where(c, "SELECT doc, last_used_at FROM api_keys ORDER BY id", []))
            .await
    }

    async fn list_api_keys_for_owner(&self, owner: &str) -> StoreResult<Vec<ApiKey>> {
        let owner = owner.to_owned();
        self.call(move |c| {
            // `api_keys_by_owner` (owner, id) finds the rows and gives their order.
            api_keys_where(c, LIST_KEYS_FOR_OWNER, params![owner])
        })
        .await
    }

    async fn delete_api_key(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.call(move |c| {
            Ok(c.execute("DELETE FROM api_keys WHERE id = ?1", params![id])
                .map_err(db)?
                > 0)
        })
        .await
    }

    async fn touch_api_key(&self, id: &str, at: UnixTime) -> StoreResult<()> {
        let id = id.to_owned();
        self.call(move |c| {
            // No row (deleted key) or a later stored time: nothing changes, and that is fine.
            c.execute(
                "UPDATE api_keys SET last_used_at = ?2 \
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                params![id, at],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl GrantStore for SqliteStore {
    async fn get_grant(&self, user: &str, server: &str) -> StoreResult<Option<Grant>> {
        let (user, server) = (user.to_owned(), server.to_owned());
        self.call(move |c| {
            let sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE user = ?1 AND server = ?2");
            let row = c
                .query_row(&sql, params![user, server], GrantRow::read)
                .optional()
                .map_err(db)?;
            row.map(GrantRow::into_grant).transpose()
        })
        .await
    }

    async fn save_grant_if_version(&self, grant: &Grant, expected: Option<u64>) -> StoreResult<()> {
        super::check_next_version(grant, expected)?;
        let g = grant.clone();
        let version = version_to_sql(g.version)?;
        let expected = expected.map(version_to_sql).transpose()?;
        let status = g.status.as_str();
        let scopes = super::json_text(&g.scopes, "grant scopes")?;
        self.call(move |c| {
            let mut values: Vec<&dyn ToSql> = vec![
                &g.user,
                &g.server,
                &version,
                &g.sealed_tokens,
                &status,
                &scopes,
                &g.access_expires_at,
                &g.refresh_at,
                &g.updated_at,
                &g.last_refresh_at,
                &g.last_error,
                &g.refresh_lease_until,
            ];
            // Either statement is the whole check-and-write, so no other writer can slip in
            // between the version comparison and the write.
            let sql = match &expected {
                None => format!(
                    "INSERT INTO grants ({GRANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                     ON CONFLICT DO NOTHING"
                ),
                Some(expected) => {
                    values.push(expected);
                    "UPDATE grants SET version = ?3, sealed_tokens = ?4, status = ?5, scopes = ?6, \
                     access_expires_at = ?7, refresh_at = ?8, updated_at = ?9, \
                     last_refresh_at = ?10, last_error = ?11, refresh_lease_until = ?12 \
                     WHERE user = ?1 AND server = ?2 AND version = ?13"
                        .to_owned()
                }
            };
            let n = c.execute(&sql, values.as_slice()).map_err(db)?;
            if n == 0 {
                return Err(StoreError::VersionConflict { user: g.user, server: g.server });
            }
            Ok(())
        })
        .await
    }

    async fn delete_grant(&self, user: &str, server: &str) -> StoreResult<bool> {
        let (user, server) = (user.to_owned(), server.to_owned());
        self.call(move |c| {
            let n = c
                .execute(
                    "DELETE FROM grants WHERE user = ?1 AND server = ?2",
                    params![user, server],
                )
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_grants_for_user(&self, user: &str) -> StoreResult<Vec<Grant>> {
        let user = user.to_owned();
        self.call(move |c| {
            let sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE user = ?1 ORDER BY server");
            let mut stmt = c.prepare_cached(&sql).map_err(db)?;
            let rows = stmt
                .query_map(params![user], GrantRow::read)
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            rows.into_iter().map(GrantRow::into_grant).collect()
        })
        .await
    }

    async fn list_grants(&self, limit: usize) -> StoreResult<Vec<Grant>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| {
            let sql = format!("SELECT {GRANT_COLUMNS} FROM grants ORDER BY user, server LIMIT ?1");
            let mut stmt = c.prepare_cached(&sql).map_err(db)?;
            let rows = stmt
                .query_map(params![limit], GrantRow::read)
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            rows.into_iter().map(GrantRow::into_grant).collect()
        })
        .await
    }

    async fn grants_due(&self, before: UnixTime, limit: usize) -> StoreResult<Vec<Grant>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| {
            // Ties broken by key so both adapters return the same order.
            let sql = format!(
                "SELECT {GRANT_COLUMNS} FROM grants WHERE refresh_at IS NOT NULL AND refresh_at <= ?1 \
                 ORDER BY refresh_at, user, server LIMIT ?2"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(db)?;
            let rows = stmt
                .query_map(params![before, limit], GrantRow::read)
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            rows.into_iter().map(GrantRow::into_grant).collect()
        })
        .await
    }
}

#[async_trait]
impl OAuthStateStore for SqliteStore {
    /// Stores the state, replacing any state with the same id (ids are random, so a clash
    /// is a retry of the same flow; DynamoDB's PutItem behaves the same way).
    async fn put_state(&self, state: &OAuthState) -> StoreResult<()> {
        let s = state.clone();
        self.call(move |c| {
            c.execute(
                &format!("INSERT OR REPLACE INTO oauth_states ({STATE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![s.id, s.user, s.server, s.sealed_payload, s.created_at, s.expires_at],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn consume_state(&self, id: &str, now: UnixTime) -> StoreResult<Option<OAuthState>> {
        let id = id.to_owned();
        self.call(move |c| {
            // One statement removes and returns the row: whoever runs it first gets the state,
            // everyone after finds nothing.
            let state = c
                .query_row(
                    &format!("DELETE FROM oauth_states WHERE id = ?1 RETURNING {STATE_COLUMNS}"),
                    params![id],
                    read_state,
                )
                .optional()
                .map_err(db)?;
            // SQLite has no TTL: sweep abandoned flows here, the one place that knows `now`.
            // They already read as absent, so removing them changes nothing observable.
            c.execute(
                "DELETE FROM oauth_states WHERE expires_at <= ?1",
                params![now],
            )
            .map_err(db)?;
            Ok(state.filter(|s| !s.is_expired(now)))
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn end_session(&self, fingerprint: &str, expires_at: UnixTime) -> StoreResult<()> {
        let fingerprint = fingerprint.to_owned();
        // SQLite has no TTL: records past their expiry by the wall clock (what DynamoDB's TTL
        // goes by too) are swept here, so the table holds only sessions that could still be
        // presented. They already read as not ended, so removing them changes nothing a caller
        // with a right clock can see.
        let now = SystemClock.now();
        self.call(move |c| {
            c.execute(
                "DELETE FROM ended_sessions WHERE expires_at <= ?1",
                params![now],
            )
            .map_err(db)?;
            c.execute(
                "INSERT INTO ended_sessions (fingerprint, expires_at) VALUES (?1, ?2) \
                 ON CONFLICT (fingerprint) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
                params![fingerprint, expires_at],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn session_ended(&self, fingerprint: &str, now: UnixTime) -> StoreResult<bool> {
        let fingerprint = fingerprint.to_owned();
        self.call(move |c| {
            let found: Option<i64> = c
                .query_row(
                    "SELECT 1 FROM ended_sessions WHERE fingerprint = ?1 AND expires_at > ?2",
                    params![fingerprint, now],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            Ok(found.is_some())
        })
        .await
    }
}

#[async_trait]
impl ToolSnapshotStore for SqliteStore {
    async fn put_tool_snapshot(&self, server: &str, snapshot: &ToolSnapshot) -> StoreResult<()> {
        let (server, doc) = (server.to_owned(), json_text(snapshot, "tool snapshot")?);
        self.call(move |c| {
            c.execute(
                "INSERT INTO tool_snapshots (server, doc) VALUES (?1, ?2) \
                 ON CONFLICT (server) DO UPDATE SET doc = excluded.doc",
                params![server, doc],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn get_tool_snapshot(&self, server: &str) -> StoreResult<Option<ToolSnapshot>> {
        let server = server.to_owned();
        let doc: Option<String> = self
            .call(move |c| {
                c.query_row(
                    "SELECT doc FROM tool_snapshots WHERE server = ?1",
                    params![server],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)
            })
            .await?;
        doc.map(|d| from_json_text(&d, "tool snapshot")).transpose()
    }
}

/// Runs `f` in an IMMEDIATE transaction: it takes the file's write lock before reading, so a
/// bucket's read-decide-write is atomic against other processes sharing the file too (a
/// deferred transaction could read, lose the lock upgrade and fail with SQLITE_BUSY).
fn immediate<T>(
    c: &mut Connection,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
) -> StoreResult<T> {
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)?;
    let out = f(&tx).map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(out)
}

/// The bucket's value unless it has expired (`now_s`).
fn bucket_value(c: &Connection, key: &str, now_s: i64) -> rusqlite::Result<Option<i64>> {
    // Cached statements: this runs on every counted call (the bench's hot path), and
    // compiling the SQL each time cost more than running it.
    c.prepare_cached("SELECT value FROM rate_buckets WHERE key = ?1 AND expires_at > ?2")?
        .query_row(params![key, now_s], |r| r.get(0))
        .optional()
}

fn put_bucket(c: &Connection, key: &str, value: i64, expires_at: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO rate_buckets (key, value, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
    )?
    .execute(params![key, value, expires_at])
    .map(|_| ())
}

/// Every this many bucket writes, idle buckets are swept (SQLite has no TTL).
const SWEEP_EVERY: u64 = 1024;
static BUCKET_WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn maybe_sweep(c: &Connection, now_s: i64) -> rusqlite::Result<()> {
    if BUCKET_WRITES
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .is_multiple_of(SWEEP_EVERY)
    {
        c.execute(
            "DELETE FROM rate_buckets WHERE expires_at <= ?1",
            params![now_s],
        )?;
    }
    Ok(())
}

#[async_trait]
impl RateLimitStore for SqliteStore {
    async fn take_rate(
        &self,
        key: &str,
        now_us: i64,
        t_us: i64,
        tau_us: i64,
        _last_tat: Option<i64>,
    ) -> StoreResult<Take> {
        let key = key.to_owned();
        let expires_at = super::rate_bucket_expiry(now_us, t_us, tau_us);
        self.call_short(move |c| {
            immediate(c, |tx| {
                let now_s = now_us.div_euclid(1_000_000);
                let tat = bucket_value(tx, &key, now_s)?;
                match crate::gcra::take(tat, now_us, t_us, tau_us) {
                    Ok(new) => {
                        maybe_sweep(tx, now_s)?;
                        put_bucket(tx, &key, new, expires_at)?;
                        Ok(Take::Taken(new))
                    }
                    Err(old) => Ok(Take::Refused(old)),
                }
            })
        })
        .await
    }

    async fn take_quota(
        &self,
        key: &str,
        now_ms: i64,
        count: u64,
        window_end_ms: i64,
    ) -> StoreResult<Take> {
        let key = key.to_owned();
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let now_s = now_ms.div_euclid(1000);
        self.call_short(move |c| {
            immediate(c, |tx| {
                let n = bucket_value(tx, &key, now_s)?.unwrap_or(0);
                if n >= count {
                    return Ok(Take::Refused(n));
                }
                maybe_sweep(tx, now_s)?;
                put_bucket(tx, &key, n + 1, window_end_ms.div_euclid(1000) + 1)?;
                Ok(Take::Taken(n + 1))
            })
        })
        .await
    }

    async fn peek_bucket(&self, key: &str, now_ms: i64) -> StoreResult<Option<i64>> {
        let key = key.to_owned();
        self.call(move |c| bucket_value(c, &key, now_ms.div_euclid(1000)).map_err(db))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ApiKeyStore, ConfigStore, GrantStore};

    #[tokio::test]
    async fn open_creates_parent_dir_and_reopens_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/gateway.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .create_config(ConfigKind::Team, "t", &serde_json::json!({"name": "t"}))
            .await
            .unwrap();
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.get_config(ConfigKind::Team, "t").await.unwrap(),
            Some(serde_json::json!({"name": "t"}))
        );
        let conn = store.conn.lock().unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn refuses_a_schema_newer_than_the_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
                .unwrap();
        }
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt(ref m) if m.contains("newer")),
            "{err:?}"
        );
    }

    /// Listing one owner's keys uses the owner index, not a scan of every key.
    #[test]
    fn keys_for_an_owner_are_found_through_the_index() {
        let store = SqliteStore::in_memory().unwrap();
        let conn = store.conn.lock().unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {LIST_KEYS_FOR_OWNER}"))
            .unwrap()
            .query_map(params!["a@example.com"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            plan,
            ["SEARCH api_keys USING INDEX api_keys_by_owner (owner=?)"],
            "no scan, no temporary sort"
        );
    }

    /// A database made by the first schema keeps its keys and gains `last_used_at` and the
    /// owner column (filled from the stored key).
    #[tokio::test]
    async fn upgrades_a_version_1_database_with_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let key = crate::identity::issue_api_key("a@example.com", "old", false, 10, None).record;
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(MIGRATIONS[0]).unwrap();
            tx.pragma_update(None, "user_version", 1).unwrap();
            tx.execute(
                "INSERT INTO api_keys (id, key_hash, expires_at, doc) VALUES (?1, ?2, NULL, ?3)",
                params![key.id, key.key_hash, serde_json::to_string(&key).unwrap()],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get_api_key(&key.id).await.unwrap(), Some(key.clone()));
        store.touch_api_key(&key.id, 99).await.unwrap();
        assert_eq!(
            store
                .find_api_key_by_hash(&key.key_hash, 0)
                .await
                .unwrap()
                .unwrap()
                .last_used_at,
            Some(99)
        );
        let listed = store
            .list_api_keys_for_owner("a@example.com")
            .await
            .unwrap();
        assert_eq!(
            listed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            [key.id.as_str()]
        );
    }

    /// Ending a session sweeps the records already past their expiry, so the table does not
    /// grow with every session ever ended.
    #[tokio::test]
    async fn ending_a_session_sweeps_expired_records() {
        let store = SqliteStore::in_memory().unwrap();
        let now = SystemClock.now();
        store.end_session("gone", now - 1).await.unwrap();
        store.end_session("live", now + 600).await.unwrap();
        store.end_session("next", now + 600).await.unwrap();
        let conn = store.conn.lock().unwrap();
        let mut stmt = conn
            .prepare("SELECT fingerprint FROM ended_sessions ORDER BY fingerprint")
            .unwrap();
        let left: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(left, ["live", "next"]);
    }

    #[tokio::test]
    async fn in_memory_store_round_trips_a_grant() {
        let store = SqliteStore::in_memory().unwrap();
        let g = Grant {
            user: "a@example.com".into(),
            server: "s".into(),
            version: 1,
            sealed_tokens: vec![0, 255, 7],
            status: GrantStatus::NeedsReconsent,
            scopes: vec!["x".into(), "y".into()],
            access_expires_at: Some(10),
            refresh_at: None,
            updated_at: 5,
            last_refresh_at: Some(4),
            last_error: Some("invalid_grant".into()),
            refresh_lease_until: Some(30),
        };
        store.save_grant_if_version(&g, None).await.unwrap();
        assert_eq!(
            store.get_grant("a@example.com", "s").await.unwrap(),
            Some(g)
        );
    }
}
