//! The audit part of the store port: chained records and their seals are appended in batches
//! and read back two ways, newest first through filters (the admin and `/me` queries, paged
//! by a cursor) and whole per time range (verify). Both adapters keep:
//! - writing a batch again (a retried flush) stores nothing twice: a record is identified by
//!   `(writer, seq, hash)`, a seal by `(writer, seq)`;
//! - a different record with an existing `(writer, seq)` is stored beside it, never over it,
//!   so verify can name it (`inserted`) instead of the store hiding it;
//! - records and seals expire `retention` after their time (DynamoDB's TTL, the SQLite
//!   adapter's sweep on write), so queries and verify may still see expired ones for a while.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::StoreResult;
use crate::audit::record::AuditRecord;

/// Most records one query page returns.
pub const AUDIT_PAGE_MAX: usize = 100;

/// A writer's chain head at `seq`, sealed with the keyring (see `audit::seal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSeal {
    pub writer: String,
    pub seq: u64,
    /// The `chain.hash` of the writer's record `seq`.
    pub head: String,
    pub time_ms: i64,
    /// The keyring's sealed blob of the four fields above (base64url).
    pub mac: String,
}

/// The longest cursor text [`AuditCursor::decode`] reads (an encoded cursor is about 100).
const CURSOR_MAX_LEN: usize = 256;

/// A position in the newest-first order `(time_ms, writer, seq)`: a page continues strictly
/// after (older than) it. Opaque to callers (base64url JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCursor {
    pub time_ms: i64,
    pub writer: String,
    pub seq: u64,
}

impl AuditCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// `None` for anything [`AuditCursor::encode`] did not make: cursors are caller input,
    /// and the writer ends up in a DynamoDB sort key (at most 1 KB) and a SQL parameter, so
    /// it must be a writer id (`w-<ms>-<token>`, see `audit::chain::is_writer_id`) or empty
    /// (a page cut short between positions), and the text short.
    pub fn decode(text: &str) -> Option<Self> {
        if text.len() > CURSOR_MAX_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let cursor: Self = serde_json::from_slice(&bytes).ok()?;
        (cursor.writer.is_empty() || crate::audit::chain::is_writer_id(&cursor.writer))
            .then_some(cursor)
    }

    /// The cursor just after `record` (which must be chained).
    pub fn after(record: &AuditRecord) -> Option<Self> {
        let c = record.chain.as_ref()?;
        Some(Self {
            time_ms: record.time_ms,
            writer: c.writer.clone(),
            seq: c.seq,
        })
    }
}

/// Filters of a newest-first audit query. Every `Some` must match exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Inclusive lower bound (ms since the epoch).
    pub since_ms: i64,
    /// Exclusive upper bound.
    pub until_ms: i64,
    /// `principal.user`.
    pub user: Option<String>,
    pub endpoint: Option<String>,
    pub tool: Option<String>,
    /// `outcome.status` (`ok`, `is_error`, ...).
    pub outcome: Option<String>,
    /// `decision` (`allow`, `deny`, `limited`, `would_limit`).
    pub decision: Option<String>,
    pub cursor: Option<AuditCursor>,
    /// 1 to [`AUDIT_PAGE_MAX`].
    pub limit: usize,
    /// A user reading their own records (`/me/audit`, open to every user): the DynamoDB
    /// adapter spends a smaller read budget per page and reads eventually consistent (half
    /// the cost), so a user cannot make each request cost much; the page comes back short,
    /// with a cursor, instead.
    pub own: bool,
}

/// One page of a query: newest first; `next` continues it (a page may be short, even empty,
/// while `next` is set: the DynamoDB adapter bounds the reads one page may cost).
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    pub next: Option<AuditCursor>,
}

/// What verify reads: every stored record as its raw JSON (so nothing a typed decode would
/// drop escapes the hash) and every seal, in no particular order.
#[derive(Debug, Clone, Default)]
pub struct AuditDump {
    pub records: Vec<serde_json::Value>,
    pub seals: Vec<AuditSeal>,
}

/// The largest record JSON either adapter stores. The audit path caps the caller-chosen
/// fields well below this; the adapters refuse anything larger anyway (a DynamoDB item
/// holds at most 400 KB, and a record must never be able to block the flush behind it).
pub const AUDIT_RECORD_MAX_BYTES: usize = 64 * 1024;

/// The stored JSON of `r`: [`StoreError::Rejected`] beyond [`AUDIT_RECORD_MAX_BYTES`].
///
/// [`StoreError::Rejected`]: super::StoreError::Rejected
pub(crate) fn record_doc(r: &AuditRecord) -> StoreResult<String> {
    let doc = super::json_text(r, "audit record")?;
    if doc.len() > AUDIT_RECORD_MAX_BYTES {
        return Err(super::StoreError::Rejected(format!(
            "audit record of {} bytes is over the {AUDIT_RECORD_MAX_BYTES}-byte limit",
            doc.len()
        )));
    }
    Ok(doc)
}

/// The indexed query fields of a record, as both adapters store them beside its JSON.
pub(crate) struct AuditFields<'a> {
    pub writer: &'a str,
    pub seq: u64,
    pub hash: &'a str,
    pub user: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub tool: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub decision: &'static str,
}

impl<'a> AuditFields<'a> {
    /// `None` for an unchained record (the auditor chains every record before it is stored).
    pub fn of(r: &'a AuditRecord) -> Option<Self> {
        use crate::audit::record::Decision;
        let chain = r.chain.as_ref()?;
        Some(Self {
            writer: &chain.writer,
            seq: chain.seq,
            hash: &chain.hash,
            user: r.principal.as_ref().map(|p| p.user.as_str()),
            endpoint: r.endpoint.as_deref(),
            tool: r.tool.as_deref(),
            outcome: r.outcome.as_ref().map(|o| o.status.as_str()),
            decision: match r.decision {
                Decision::Allow => "allow",
                Decision::Deny => "deny",
                Decision::Limited => "limited",
                Decision::WouldLimit => "would_limit",
            },
        })
    }
}

/// The audit trail's storage.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends chained records and seals, kept `retention` after their time. Unchained
    /// records are skipped. Either the whole call is stored or it fails (SQLite: one
    /// transaction); on DynamoDB a failure may leave part stored, and writing the same call
    /// again completes it without duplicates.
    async fn put_audit(
        &self,
        records: &[AuditRecord],
        seals: &[AuditSeal],
        retention: std::time::Duration,
    ) -> StoreResult<()>;
    /// Records matching `query`, newest first (see [`AuditPage`]).
    async fn query_audit(&self, query: &AuditQuery) -> StoreResult<AuditPage>;
    /// Every record and seal with `since_ms <= time < until_ms`, for verify.
    async fn dump_audit(&self, since_ms: i64, until_ms: i64) -> StoreResult<AuditDump>;
}
