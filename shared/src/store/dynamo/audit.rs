//! The DynamoDB adapter's audit items, in the one table:
//!
//! | what         | `pk`                     | `sk`                                   | other attributes |
//! |--------------|--------------------------|----------------------------------------|------------------|
//! | audit record | `AUDIT#{yyyy-mm-dd}`     | `{time_ms:013}#{writer}#{seq:020}#{hash[..16]}` | `time_ms`, `writer`, `seq` (N), `user`?, `endpoint`?, `tool`?, `outcome`?, `decision`, `doc` (S, JSON), `ttl` (N) |
//! | audit seal   | `AUDITSEAL#{yyyy-mm-dd}` | `{time_ms:013}#{writer}#{seq:020}`     | `writer`, `seq`, `head`, `time_ms`, `mac`, `ttl` |
//!
//! One partition per UTC day keeps the admin query a `Query` per day, newest first
//! (`ScanIndexForward=false`), never a `Scan`; filters other than time are
//! `FilterExpression`s on the day's items (`/me/audit` included: a user-keyed copy or an
//! index would double every record's write cost, and the audit trail is read rarely and
//! written on every call). The hash prefix in `sk` makes a retried batch overwrite itself
//! while a different record claiming the same `seq` lands beside it (verify names it).
//! Known limit: one day's records share one partition, about 1,000 writes per second
//! before DynamoDB throttles it (a throttled batch stays buffered and is retried).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};

use super::items::Item;
use super::{DynamoStore, PK, SK, TTL, n, s, sdk_error, until_processed};
use crate::audit::record::AuditRecord;
use crate::store::audit::record_doc;
use crate::store::audit::{
    AUDIT_PAGE_MAX, AuditCursor, AuditDump, AuditFields, AuditPage, AuditQuery, AuditSeal,
    AuditStore,
};
use crate::store::{StoreError, StoreResult};

/// Most items one `BatchWriteItem` takes.
const BATCH_WRITE_MAX: usize = 25;
/// Most `Query` requests one page of the admin query may send (sparse filters over many
/// days return a short page with a cursor rather than reading without bound).
const QUERY_BUDGET: usize = 32;
/// The same for a user's own records (`AuditQuery::own`, `/me/audit`): at most 4 MB read.
const OWN_QUERY_BUDGET: usize = 4;
const DAY_MS: i64 = 86_400_000;
/// The longest range one dump reads (more than the longest retention anyone sets).
const DUMP_MAX_DAYS: i64 = 3_660;

/// The UTC day of `time_ms` as `yyyy-mm-dd`.
fn day(time_ms: i64) -> String {
    let d = time::OffsetDateTime::from_unix_timestamp(time_ms.div_euclid(1000))
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn record_pk(time_ms: i64) -> String {
    format!("AUDIT#{}", day(time_ms))
}

fn seal_pk(time_ms: i64) -> String {
    format!("AUDITSEAL#{}", day(time_ms))
}

/// The `sk` prefix of a position: every record at `(time, writer, seq)` sorts after it.
fn position(time_ms: i64, writer: &str, seq: u64) -> String {
    format!("{:013}#{writer}#{seq:020}#", time_ms.max(0))
}

fn record_item(r: &AuditRecord, keep_ms: i64) -> StoreResult<Option<Item>> {
    let Some(f) = AuditFields::of(r) else {
        return Ok(None);
    };
    let hash_prefix: String = f.hash.chars().take(16).collect();
    let mut item = Item::from([
        (PK.to_owned(), s(record_pk(r.time_ms))),
        (
            SK.to_owned(),
            s(format!(
                "{}{hash_prefix}",
                position(r.time_ms, f.writer, f.seq)
            )),
        ),
        ("time_ms".to_owned(), n(r.time_ms)),
        ("writer".to_owned(), s(f.writer)),
        ("seq".to_owned(), n(f.seq)),
        ("decision".to_owned(), s(f.decision)),
        ("doc".to_owned(), s(record_doc(r)?)),
        (TTL.to_owned(), n(ttl_of(r.time_ms, keep_ms))),
    ]);
    for (name, value) in [
        ("user", f.user),
        ("endpoint", f.endpoint),
        ("tool", f.tool),
        ("outcome", f.outcome),
    ] {
        if let Some(v) = value {
            item.insert(name.to_owned(), s(v));
        }
    }
    Ok(Some(item))
}

/// DynamoDB's TTL is in seconds.
fn ttl_of(time_ms: i64, keep_ms: i64) -> i64 {
    time_ms.saturating_add(keep_ms).div_euclid(1000)
}

fn seal_item(seal: &AuditSeal, keep_ms: i64) -> Item {
    Item::from([
        (PK.to_owned(), s(seal_pk(seal.time_ms))),
        (
            SK.to_owned(),
            s(format!(
                "{:013}#{}#{:020}",
                seal.time_ms.max(0),
                seal.writer,
                seal.seq
            )),
        ),
        ("writer".to_owned(), s(&seal.writer)),
        ("seq".to_owned(), n(seal.seq)),
        ("head".to_owned(), s(&seal.head)),
        ("time_ms".to_owned(), n(seal.time_ms)),
        ("mac".to_owned(), s(&seal.mac)),
        (TTL.to_owned(), n(ttl_of(seal.time_ms, keep_ms))),
    ])
}

fn text(item: &Item, name: &str) -> StoreResult<String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(StoreError::Corrupt(format!("audit item without '{name}'"))),
    }
}

fn number<T: std::str::FromStr>(item: &Item, name: &str) -> StoreResult<T> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("audit item '{name}' is not a number"))),
        _ => Err(StoreError::Corrupt(format!("audit item without '{name}'"))),
    }
}

fn seal_from(item: &Item) -> StoreResult<AuditSeal> {
    Ok(AuditSeal {
        writer: text(item, "writer")?,
        seq: number(item, "seq")?,
        head: text(item, "head")?,
        time_ms: number(item, "time_ms")?,
        mac: text(item, "mac")?,
    })
}

/// The cursor just past an item's `sk` (for a page cut short by the query budget).
fn cursor_of_sk(sk: &str) -> Option<AuditCursor> {
    let mut parts = sk.splitn(2, '#');
    let time_ms = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    // `writer#seq#hash`: the writer may hold '#', seq and hash never do.
    let mut back = rest.rsplitn(3, '#');
    let _hash = back.next()?;
    let seq = back.next()?.parse().ok()?;
    let writer = back.next()?.to_owned();
    Some(AuditCursor {
        time_ms,
        writer,
        seq,
    })
}

impl DynamoStore {
    /// Writes `items` with `BatchWriteItem`s of at most 25 (see [`until_processed`]).
    async fn batch_put(&self, items: Vec<Item>) -> StoreResult<()> {
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let mut requests: Vec<WriteRequest> = Vec::with_capacity(BATCH_WRITE_MAX);
            for item in items.by_ref().take(BATCH_WRITE_MAX) {
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(StoreError::backend)?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            until_processed("BatchWriteItem", requests, |requests| async move {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| {
                        // An item DynamoDB cannot take (too large, a bad value) fails the
                        // whole batch the same way every time: say so, so the auditor
                        // splits the batch instead of retrying it forever.
                        if e.as_service_error()
                            .and_then(|se| aws_sdk_dynamodb::error::ProvideErrorMetadata::code(se))
                            == Some("ValidationException")
                        {
                            StoreError::Rejected(
                                "DynamoDB BatchWriteItem refused an item (ValidationException)"
                                    .into(),
                            )
                        } else {
                            sdk_error("BatchWriteItem", e)
                        }
                    })?;
                let left = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                Ok((Vec::<()>::new(), left))
            })
            .await?;
        }
        Ok(())
    }

    /// Every item of the day partitions `{prefix}{day}` from `since_ms` to `until_ms`, the
    /// range clamped to [`DUMP_MAX_DAYS`] ending at most a day from now (one `Query` per day:
    /// an open range must not become thousands of them).
    async fn audit_days(
        &self,
        prefix: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> StoreResult<Vec<Item>> {
        let until_ms = until_ms.min(crate::audit::record::now_ms() + DAY_MS);
        let since_ms = since_ms
            .max(until_ms.saturating_sub(DUMP_MAX_DAYS * DAY_MS))
            .max(0);
        let mut out = Vec::new();
        if until_ms <= since_ms {
            return Ok(out);
        }
        let mut t = since_ms.div_euclid(DAY_MS) * DAY_MS;
        while t < until_ms {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(format!("{prefix}{}", day(t))))
                .expression_attribute_values(":lo", s(format!("{:013}", since_ms.max(0))))
                .expression_attribute_values(":hi", s(format!("{:013}", until_ms.max(0))));
            out.extend(self.query_all(query, None).await?);
            t += DAY_MS;
        }
        Ok(out)
    }
}

#[async_trait]
impl AuditStore for DynamoStore {
    async fn put_audit(
        &self,
        records: &[AuditRecord],
        seals: &[AuditSeal],
        retention: Duration,
    ) -> StoreResult<()> {
        let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let mut items = Vec::with_capacity(records.len() + seals.len());
        for r in records {
            items.extend(record_item(r, keep)?);
        }
        items.extend(seals.iter().map(|seal| seal_item(seal, keep)));
        self.batch_put(items).await
    }

    async fn query_audit(&self, q: &AuditQuery) -> StoreResult<AuditPage> {
        let limit = q.limit.clamp(1, AUDIT_PAGE_MAX);
        let mut records = Vec::with_capacity(limit);
        if q.until_ms <= q.since_ms {
            return Ok(AuditPage::default());
        }
        // An open upper bound starts at tomorrow's partition, not at the end of time; nothing
        // is stored before 1970 (and day arithmetic stays far from overflow).
        let q = &AuditQuery {
            since_ms: q.since_ms.max(0),
            until_ms: q.until_ms.min(crate::audit::record::now_ms() + DAY_MS),
            ..q.clone()
        };
        if q.until_ms <= q.since_ms {
            return Ok(AuditPage::default());
        }
        let lo = format!("{:013}", q.since_ms.max(0));
        // The newest position still to read: the cursor, else the end of the range.
        let (mut upper_time, mut hi) = match &q.cursor {
            // Before the range: nothing is left to read.
            Some(c) if c.time_ms < q.since_ms => return Ok(AuditPage::default()),
            // A cursor past the range (made up: cursors are caller input) starts at its end.
            Some(c) if c.time_ms < q.until_ms => (c.time_ms, position(c.time_ms, &c.writer, c.seq)),
            Some(_) | None => (q.until_ms - 1, format!("{:013}", q.until_ms.max(0))),
        };
        let mut filter = Vec::new();
        let mut names: Vec<(String, String)> = Vec::new();
        let mut values: Vec<(String, AttributeValue)> = Vec::new();
        for (i, (attr, value)) in [
            ("user", &q.user),
            ("endpoint", &q.endpoint),
            ("tool", &q.tool),
            ("outcome", &q.outcome),
            ("decision", &q.decision),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(v) = value {
                filter.push(format!("#f{i} = :f{i}"));
                names.push((format!("#f{i}"), attr.to_owned()));
                values.push((format!(":f{i}"), s(v)));
            }
        }
        let mut calls = 0;
        let budget = if q.own {
            OWN_QUERY_BUDGET
        } else {
            QUERY_BUDGET
        };
        // Days newest first, from the one holding the upper position down to `since`'s.
        let mut day_start = upper_time.div_euclid(DAY_MS) * DAY_MS;
        'days: while day_start.saturating_add(DAY_MS) > q.since_ms {
            let mut start: Option<Item> = None;
            loop {
                if calls == budget {
                    // Out of budget: continue from where the reads stopped.
                    let next = match &start {
                        Some(key) => key
                            .get(SK)
                            .and_then(|v| v.as_s().ok())
                            .and_then(|sk| cursor_of_sk(sk)),
                        None => Some(AuditCursor {
                            time_ms: upper_time,
                            writer: String::new(),
                            seq: 0,
                        }),
                    };
                    return Ok(AuditPage { records, next });
                }
                calls += 1;
                let mut query = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .consistent_read(!q.own)
                    .scan_index_forward(false)
                    .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
                    .expression_attribute_names("#pk", PK)
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":pk", s(record_pk(day_start)))
                    .expression_attribute_values(":lo", s(&lo))
                    .expression_attribute_values(":hi", s(&hi))
                    .set_exclusive_start_key(start.take())
                    .set_limit(self.page_size);
                if !filter.is_empty() {
                    query = query.filter_expression(filter.join(" AND "));
                    for (k, v) in &names {
                        query = query.expression_attribute_names(k, v);
                    }
                    for (k, v) in &values {
                        query = query.expression_attribute_values(k, v.clone());
                    }
                }
                let page = query.send().await.map_err(|e| sdk_error("Query", e))?;
                for item in page.items.unwrap_or_default() {
                    let doc = text(&item, "doc")?;
                    let record: AuditRecord = serde_json::from_str(&doc)
                        .map_err(|e| StoreError::Corrupt(format!("audit record: {e}")))?;
                    records.push(record);
                    if records.len() == limit {
                        let next = records.last().and_then(AuditCursor::after);
                        return Ok(AuditPage { records, next });
                    }
                }
                match page.last_evaluated_key {
                    Some(key) if !key.is_empty() => start = Some(key),
                    _ => break,
                }
            }
            // The day is read: go on with the one before, from its last millisecond.
            upper_time = day_start;
            day_start = day_start.saturating_sub(DAY_MS);
            hi = format!("{:013}", upper_time.max(0));
            if upper_time <= q.since_ms {
                break 'days;
            }
        }
        Ok(AuditPage {
            records,
            next: None,
        })
    }

    async fn dump_audit(&self, since_ms: i64, until_ms: i64) -> StoreResult<AuditDump> {
        let mut records = Vec::new();
        for item in self.audit_days("AUDIT#", since_ms, until_ms).await? {
            let doc = text(&item, "doc")?;
            // Unparseable text is kept as a string: verify reports it instead of failing.
            records.push(serde_json::from_str(&doc).unwrap_or(serde_json::Value::String(doc)));
        }
        let seals = self
            .audit_days("AUDITSEAL#", since_ms, until_ms)
            .await?
            .iter()
            .map(seal_from)
            .collect::<StoreResult<_>>()?;
        Ok(AuditDump { records, seals })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_positions_sort_as_time_does() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(1_765_065_600_000), "2025-12-07");
        assert_eq!(day(1_765_065_599_999), "2025-12-06");
        let a = position(999, "w-1", 2);
        let b = position(1000, "w-1", 1);
        assert!(a < b);
        let c = cursor_of_sk(&format!("{}abcdef", position(1000, "w#1", 7))).unwrap();
        assert_eq!(
            c,
            AuditCursor {
                time_ms: 1000,
                writer: "w#1".into(),
                seq: 7
            }
        );
    }
}
