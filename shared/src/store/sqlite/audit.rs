//! The SQLite adapter's audit tables (migration 8): `audit_records` (JSON `doc` plus the
//! columns queries filter on, newest-first through `audit_records_by_time`) and
//! `audit_seals`. A batch is one transaction; rows past `expires_at` are swept by the same
//! transaction (SQLite has no TTL; the expiry index keeps the sweep cheap).

use async_trait::async_trait;
use rusqlite::{ToSql, params};

use super::{SqliteStore, db, from_json_text};
use crate::audit::record::AuditRecord;
use crate::store::StoreResult;
use crate::store::audit::record_doc;
use crate::store::audit::{
    AUDIT_PAGE_MAX, AuditCursor, AuditDump, AuditFields, AuditPage, AuditQuery, AuditSeal,
    AuditStore,
};

/// A record row to insert: its fields and JSON.
struct Row {
    writer: String,
    seq: i64,
    hash: String,
    time_ms: i64,
    user: Option<String>,
    endpoint: Option<String>,
    tool: Option<String>,
    outcome: Option<String>,
    decision: &'static str,
    doc: String,
}

fn seq_sql(seq: u64) -> i64 {
    // Sequence numbers count records of one process: they never come near 2^63.
    i64::try_from(seq).unwrap_or(i64::MAX)
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn put_audit(
        &self,
        records: &[AuditRecord],
        seals: &[AuditSeal],
        retention: std::time::Duration,
    ) -> StoreResult<()> {
        let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let mut rows = Vec::with_capacity(records.len());
        for r in records {
            let Some(f) = AuditFields::of(r) else {
                continue;
            };
            rows.push(Row {
                writer: f.writer.to_owned(),
                seq: seq_sql(f.seq),
                hash: f.hash.to_owned(),
                time_ms: r.time_ms,
                user: f.user.map(str::to_owned),
                endpoint: f.endpoint.map(str::to_owned),
                tool: f.tool.map(str::to_owned),
                outcome: f.outcome.map(str::to_owned),
                decision: f.decision,
                doc: record_doc(r)?,
            });
        }
        let seals = seals.to_vec();
        let now = crate::audit::record::now_ms();
        self.call(move |c| {
            let tx = c.transaction().map_err(db)?;
            {
                let mut put = tx
                    .prepare_cached(
                        "INSERT INTO audit_records (writer, seq, hash, time_ms, user, endpoint, \
                         tool, outcome, decision, expires_at, doc) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                         ON CONFLICT (writer, seq, hash) DO NOTHING",
                    )
                    .map_err(db)?;
                for r in &rows {
                    put.execute(params![
                        r.writer,
                        r.seq,
                        r.hash,
                        r.time_ms,
                        r.user,
                        r.endpoint,
                        r.tool,
                        r.outcome,
                        r.decision,
                        r.time_ms.saturating_add(keep),
                        r.doc
                    ])
                    .map_err(db)?;
                }
                let mut seal = tx
                    .prepare_cached(
                        "INSERT INTO audit_seals (writer, seq, head, time_ms, mac, expires_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (writer, seq) DO NOTHING",
                    )
                    .map_err(db)?;
                for s in &seals {
                    seal.execute(params![
                        s.writer,
                        seq_sql(s.seq),
                        s.head,
                        s.time_ms,
                        s.mac,
                        s.time_ms.saturating_add(keep)
                    ])
                    .map_err(db)?;
                }
            }
            tx.execute(
                "DELETE FROM audit_records WHERE expires_at < ?1",
                params![now],
            )
            .map_err(db)?;
            tx.execute(
                "DELETE FROM audit_seals WHERE expires_at < ?1",
                params![now],
            )
            .map_err(db)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn query_audit(&self, q: &AuditQuery) -> StoreResult<AuditPage> {
        let limit = q.limit.clamp(1, AUDIT_PAGE_MAX);
        let mut sql =
            String::from("SELECT doc FROM audit_records WHERE time_ms >= ? AND time_ms < ?");
        let mut args: Vec<Box<dyn ToSql + Send>> = vec![Box::new(q.since_ms), Box::new(q.until_ms)];
        for (column, value) in [
            ("user", &q.user),
            ("endpoint", &q.endpoint),
            ("tool", &q.tool),
            ("outcome", &q.outcome),
            ("decision", &q.decision),
        ] {
            if let Some(v) = value {
                sql.push_str(&format!(" AND {column} = ?"));
                args.push(Box::new(v.clone()));
            }
        }
        if let Some(c) = &q.cursor {
            sql.push_str(" AND (time_ms, writer, seq) < (?, ?, ?)");
            args.push(Box::new(c.time_ms));
            args.push(Box::new(c.writer.clone()));
            args.push(Box::new(seq_sql(c.seq)));
        }
        // One more than the page shows whether there is a next page.
        sql.push_str(&format!(
            " ORDER BY time_ms DESC, writer DESC, seq DESC LIMIT {}",
            limit + 1
        ));
        let docs: Vec<String> = self
            .call(move |c| {
                let mut stmt = c.prepare(&sql).map_err(db)?;
                let params: Vec<&dyn ToSql> =
                    args.iter().map(|a| a.as_ref() as &dyn ToSql).collect();
                let rows = stmt
                    .query_map(params.as_slice(), |r| r.get::<_, String>(0))
                    .map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)
            })
            .await?;
        let more = docs.len() > limit;
        let mut records = Vec::with_capacity(limit);
        for d in docs.iter().take(limit) {
            records.push(from_json_text::<AuditRecord>(d, "audit record")?);
        }
        let next = if more {
            records.last().and_then(AuditCursor::after)
        } else {
            None
        };
        Ok(AuditPage { records, next })
    }

    async fn dump_audit(&self, since_ms: i64, until_ms: i64) -> StoreResult<AuditDump> {
        let (docs, seals) = self
            .call(move |c| {
                let mut stmt = c
                    .prepare("SELECT doc FROM audit_records WHERE time_ms >= ?1 AND time_ms < ?2")
                    .map_err(db)?;
                let docs: Vec<String> = stmt
                    .query_map(params![since_ms, until_ms], |r| r.get(0))
                    .map_err(db)?
                    .collect::<Result<_, _>>()
                    .map_err(db)?;
                let mut stmt = c
                    .prepare(
                        "SELECT writer, seq, head, time_ms, mac FROM audit_seals \
                         WHERE time_ms >= ?1 AND time_ms < ?2",
                    )
                    .map_err(db)?;
                let seals: Vec<AuditSeal> = stmt
                    .query_map(params![since_ms, until_ms], |r| {
                        Ok(AuditSeal {
                            writer: r.get(0)?,
                            seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                            head: r.get(2)?,
                            time_ms: r.get(3)?,
                            mac: r.get(4)?,
                        })
                    })
                    .map_err(db)?
                    .collect::<Result<_, _>>()
                    .map_err(db)?;
                Ok((docs, seals))
            })
            .await?;
        // Unparseable text is kept as a string: verify reports it instead of failing.
        let records = docs
            .into_iter()
            .map(|d| serde_json::from_str(&d).unwrap_or(serde_json::Value::String(d)))
            .collect();
        Ok(AuditDump { records, seals })
    }
}
