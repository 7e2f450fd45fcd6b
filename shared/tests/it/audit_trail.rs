//! The audit trail end to end in the library: the `Auditor` writing through a real store
//! (SQLite file, DynamoDB in moto), a store outage (records kept, retried, counted), the
//! local background flush, and the tamper test: a stored chain is altered, reordered, cut
//! and added to behind the gateway's back (direct SQL on SQLite, the SDK on DynamoDB), and
//! verify names each, after verifying the untouched chain clean.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use mcpgw::audit::chain::record_hash;
use mcpgw::audit::verify::{Report, verify_store};
use mcpgw::audit::{Actor, AuditRecord, Auditor, Decision, Event};
use mcpgw::crypto::Keyring;
use mcpgw::keyring::KeyringSource;
use mcpgw::store::{AuditStore, Store, StoreError};
use serde_json::Value;

const KEEP: Duration = Duration::from_secs(86_400);

/// A day around now: the range verify reads (DynamoDB reads it one day partition at a time).
#[allow(non_snake_case)]
fn SINCE() -> i64 {
    mcpgw::audit::record::now_ms() - 86_400_000
}
#[allow(non_snake_case)]
fn UNTIL() -> i64 {
    mcpgw::audit::record::now_ms() + 86_400_000
}

fn keyring() -> Arc<KeyringSource> {
    let ring = Keyring::from_json(&Keyring::generate_document()).unwrap();
    Arc::new(KeyringSource::Loaded(Arc::new(ring)))
}

fn record(i: u64) -> AuditRecord {
    let mut r = AuditRecord::new(Event::ToolCall, Decision::Allow);
    // Strictly increasing times, so a swap is visible in time as well as in links.
    r.time_ms += i as i64;
    r.tool = Some(format!("tool{i}"));
    r.principal = Some(Actor {
        user: "alice@example.com".into(),
        auth: "api_key".into(),
        key_id: Some("k1".into()),
        provider: None,
    });
    r
}

/// Emits `n` records through an auditor on `store` and flushes with a seal.
async fn emit_chain(store: Arc<dyn Store>, keyring: Arc<KeyringSource>, n: u64) -> String {
    let audit = Auditor::new(store, keyring, KEEP);
    for i in 1..=n {
        audit.emit(record(i));
    }
    audit.flush_and_seal().await;
    assert_eq!(audit.buffered(), 0);
    assert_eq!(audit.write_failures(), 0);
    audit.writer()
}

fn kinds(report: &Report) -> Vec<&'static str> {
    report
        .writers
        .iter()
        .flat_map(|w| w.problems.iter().map(|p| p.kind()))
        .collect()
}

/// The four tamperings, on seqs 2 (alter), 4 and 5 (swap), 7 (delete) and 9 (a forged
/// second record claiming its seq, with a self-consistent hash).
trait Tamper {
    async fn doc(&self, seq: u64) -> Value;
    async fn set_doc(&self, seq: u64, doc: &Value);
    async fn delete(&self, seq: u64);
    async fn insert(&self, doc: &Value);
    /// Deletes every seal with `seq >= from`.
    async fn delete_seals_from(&self, from: u64);
}

/// The review's attack on a store-only attacker's terms: record 2 altered, every hash from
/// 2 on recomputed with the public (unkeyed) hash so the links are consistent, and the seals
/// from 2 on deleted. The keyed chain names the rewritten records.
async fn rehash_and_verify(t: &impl Tamper, store: &dyn AuditStore, keyring: &KeyringSource) {
    let mut prev = t.doc(1).await["chain"]["hash"].clone();
    for seq in 2..=12 {
        let mut doc = t.doc(seq).await;
        if seq == 2 {
            doc["tool"] = "exfiltrate".into();
        }
        doc["chain"]["prev"] = prev;
        let hash = record_hash(&doc);
        doc["chain"]["hash"] = hash.into();
        prev = doc["chain"]["hash"].clone();
        t.set_doc(seq, &doc).await;
    }
    t.delete_seals_from(2).await;
    let r = verify_store(store, keyring, SINCE(), UNTIL())
        .await
        .unwrap();
    assert!(!r.ok, "{r:?}");
    assert_eq!(kinds(&r), ["altered"; 11], "{r:?}");
    assert_eq!(r.writers[0].seals, 0);
}

async fn tamper_and_verify(t: &impl Tamper, store: &dyn AuditStore, keyring: &KeyringSource) {
    let clean = verify_store(store, keyring, SINCE(), UNTIL())
        .await
        .unwrap();
    assert!(clean.ok, "{clean:?}");
    assert_eq!(clean.writers[0].sealed_through, Some(12));

    let mut altered = t.doc(2).await;
    altered["tool"] = "exfiltrate".into();
    t.set_doc(2, &altered).await;
    let r = verify_store(store, keyring, SINCE(), UNTIL())
        .await
        .unwrap();
    assert_eq!(kinds(&r), ["altered"], "{r:?}");

    let (mut four, mut five) = (t.doc(4).await, t.doc(5).await);
    four["chain"]["seq"] = 5.into();
    five["chain"]["seq"] = 4.into();
    t.set_doc(4, &five).await;
    t.set_doc(5, &four).await;
    let r = verify_store(store, keyring, SINCE(), UNTIL())
        .await
        .unwrap();
    assert!(kinds(&r).contains(&"reordered"), "{r:?}");

    t.delete(7).await;
    let r = verify_store(store, keyring, SINCE(), UNTIL())
        .await
        .unwrap();
    assert!(kinds(&r).contains(&"deleted"), "{r:?}");

    let mut forged = t.doc(9).await;
    forged["tool"] = "forged".into();
    let hash = record_hash(&forged);
    forged["chain"]["hash"] = hash.into();
    t.insert(&forged).await;
    let r = verify_store(store, keyring, SINCE(), UNTIL())
        .await
        .unwrap();
    let found = kinds(&r);
    for kind in ["altered", "reordered", "deleted", "inserted"] {
        assert!(found.contains(&kind), "{kind} not named: {r:?}");
    }
    assert!(!r.ok);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["writers"][0]["problems"][0]["kind"], "altered");
}

/// Review H1: a record the store cannot take (a 300 KB tool name) is dropped and counted,
/// never retried in front of the 30 normal records behind it, nor of later flushes.
async fn an_oversized_record_is_dropped_not_retried(store: Arc<dyn Store>) {
    let audit = Auditor::new(store.clone(), keyring(), KEEP);
    let mut huge = record(0);
    huge.tool = Some("x".repeat(300 * 1024));
    audit.emit(huge);
    for i in 1..=30 {
        audit.emit(record(i));
    }
    audit.flush().await;
    assert_eq!(audit.rejected(), 1);
    assert_eq!(audit.buffered(), 0);
    let dump = store.dump_audit(SINCE(), UNTIL()).await.unwrap();
    assert_eq!(dump.records.len(), 30);
    assert!(
        dump.records
            .iter()
            .all(|r| r["tool"] != Value::Null && r["tool"].as_str().unwrap().len() < 100)
    );
    // Later flushes go through; the refused record is not tried again.
    for i in 31..=35 {
        audit.emit(record(i));
    }
    audit.flush().await;
    assert_eq!(audit.rejected(), 1);
    assert_eq!(
        store
            .dump_audit(SINCE(), UNTIL())
            .await
            .unwrap()
            .records
            .len(),
        35
    );
}

/// Review H2: latencies are unrounded floats whose last digit a plain parse may change;
/// stored and read back, they must hash the same (serde_json's `float_roundtrip`).
async fn float_latencies_verify(store: Arc<dyn Store>) {
    let keyring = keyring();
    let audit = Auditor::new(store.clone(), keyring.clone(), KEEP);
    for (i, (latency, upstream)) in [
        (2123.8429889999998, 2001.2345678901234),
        (0.1 + 0.2, 1e-7),
        (123456.78901234567, 0.30000000000000004),
        (f64::MAX, f64::MIN_POSITIVE),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = record(i as u64);
        r.latency_ms = Some(latency);
        r.upstream_ms = Some(upstream);
        audit.emit(r);
    }
    audit.flush_and_seal().await;
    let dump = store.dump_audit(SINCE(), UNTIL()).await.unwrap();
    assert!(
        dump.records
            .iter()
            .any(|r| r["latency_ms"].as_f64() == Some(2123.8429889999998))
    );
    let r = verify_store(store.as_ref(), &keyring, SINCE(), UNTIL())
        .await
        .unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.records, 4);
}

/// Lambda fetches the keyring on first use: records emitted before that wait unchained and
/// are chained, in emit order, by the next flush (which fetches it); after that, records are
/// chained at emit. A keyring that cannot be fetched chains nothing: those records are
/// counted as dropped, never stored unauthenticated.
async fn records_before_the_keyring_wait_for_the_flush(store: Arc<dyn Store>) {
    use mcpgw::config::KeyringConfig;
    use mcpgw::secrets::SecretRef;
    use mcpgw::secrets::env::EnvSecrets;
    let secret = |doc: Option<String>| {
        Arc::new(EnvSecrets::from_map(
            doc.map(|d| ("MCPGW_SECRET_GW_KEYRING".to_owned(), d))
                .into_iter()
                .collect(),
        ))
    };
    let source = |doc| {
        Arc::new(
            KeyringSource::new(
                KeyringConfig::Secret(SecretRef::parse("secret://gw/keyring").unwrap()),
                secret(doc),
            )
            .unwrap(),
        )
    };
    let keyring = source(Some(Keyring::generate_document()));
    let audit = Auditor::new(store.clone(), keyring.clone(), KEEP);
    for i in 1..=3 {
        audit.emit(record(i));
    }
    assert!(keyring.cached().is_none());
    assert_eq!(audit.buffered(), 0, "nothing chained before the keyring");
    audit.flush().await;
    audit.emit(record(4));
    assert_eq!(
        audit.buffered(),
        1,
        "chained at emit once the keyring is loaded"
    );
    audit.flush_and_seal().await;
    let r = verify_store(store.as_ref(), &keyring, SINCE(), UNTIL())
        .await
        .unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!((r.records, r.writers[0].sealed_through), (4, Some(4)));
    assert_eq!(audit.dropped(), 0);

    let unreachable = Auditor::new(store.clone(), source(None), KEEP);
    unreachable.emit(record(5));
    unreachable.flush().await;
    assert_eq!(unreachable.dropped(), 1);
    assert_eq!(
        store
            .dump_audit(SINCE(), UNTIL())
            .await
            .unwrap()
            .records
            .len(),
        4
    );
}

mod sqlite {
    use super::*;
    use rusqlite::{Connection, params};

    struct Sql(std::path::PathBuf);

    impl Sql {
        fn conn(&self) -> Connection {
            Connection::open(&self.0).unwrap()
        }
    }

    impl Tamper for Sql {
        async fn doc(&self, seq: u64) -> Value {
            let text: String = self
                .conn()
                .query_row(
                    "SELECT doc FROM audit_records WHERE seq = ?1",
                    params![seq as i64],
                    |r| r.get(0),
                )
                .unwrap();
            serde_json::from_str(&text).unwrap()
        }
        async fn set_doc(&self, seq: u64, doc: &Value) {
            let n = self
                .conn()
                .execute(
                    "UPDATE audit_records SET doc = ?1 WHERE seq = ?2",
                    params![doc.to_string(), seq as i64],
                )
                .unwrap();
            assert_eq!(n, 1);
        }
        async fn delete(&self, seq: u64) {
            let n = self
                .conn()
                .execute(
                    "DELETE FROM audit_records WHERE seq = ?1",
                    params![seq as i64],
                )
                .unwrap();
            assert_eq!(n, 1);
        }
        async fn insert(&self, doc: &Value) {
            self.conn()
                .execute(
                    "INSERT INTO audit_records (writer, seq, hash, time_ms, decision, expires_at, doc) \
                     VALUES (?1, ?2, ?3, ?4, 'allow', ?5, ?6)",
                    params![
                        doc["chain"]["writer"].as_str().unwrap(),
                        doc["chain"]["seq"].as_i64().unwrap(),
                        doc["chain"]["hash"].as_str().unwrap(),
                        doc["time_ms"].as_i64().unwrap(),
                        i64::MAX,
                        doc.to_string()
                    ],
                )
                .unwrap();
        }
        async fn delete_seals_from(&self, from: u64) {
            self.conn()
                .execute(
                    "DELETE FROM audit_seals WHERE seq >= ?1",
                    params![from as i64],
                )
                .unwrap();
        }
    }

    #[tokio::test]
    async fn float_latencies_verify_ok() {
        let store = Arc::new(mcpgw::store::sqlite::SqliteStore::in_memory().unwrap());
        float_latencies_verify(store).await;
    }

    #[tokio::test]
    async fn records_before_the_keyring_are_chained_at_the_flush() {
        let store = Arc::new(mcpgw::store::sqlite::SqliteStore::in_memory().unwrap());
        records_before_the_keyring_wait_for_the_flush(store).await;
    }

    #[tokio::test]
    async fn an_oversized_record_is_dropped_and_counted() {
        let store = Arc::new(mcpgw::store::sqlite::SqliteStore::in_memory().unwrap());
        an_oversized_record_is_dropped_not_retried(store).await;
    }

    #[tokio::test]
    async fn a_chain_rewritten_without_the_keyring_is_named_by_verify() {
        let (_dir, path, store, keyring) = chain_of_12().await;
        rehash_and_verify(&Sql(path), store.as_ref(), &keyring).await;
    }

    /// A SQLite file holding a sealed chain of 12 records (the directory lives as long as
    /// the returned guard).
    async fn chain_of_12() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        Arc<mcpgw::store::sqlite::SqliteStore>,
        Arc<KeyringSource>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let store = Arc::new(mcpgw::store::sqlite::SqliteStore::open(&path).unwrap());
        let keyring = keyring();
        emit_chain(store.clone(), keyring.clone(), 12).await;
        (dir, path, store, keyring)
    }

    #[tokio::test]
    async fn tampering_with_stored_records_is_named_by_verify() {
        let (_dir, path, store, keyring) = chain_of_12().await;
        tamper_and_verify(&Sql(path), store.as_ref(), &keyring).await;
    }

    /// SQLite has no TTL: rows past their retention are swept when the next batch is
    /// written, and only those.
    #[tokio::test]
    async fn expired_records_are_swept_on_write() {
        let store = Arc::new(mcpgw::store::sqlite::SqliteStore::in_memory().unwrap());
        let mut old = record(1);
        old.time_ms -= 10_000;
        let mut chain = mcpgw::audit::chain::Chain::new("w-old".into());
        chain.link(&mut old, None);
        store
            .put_audit(&[old], &[], Duration::from_secs(1))
            .await
            .unwrap();
        let mut fresh = record(2);
        chain.link(&mut fresh, None);
        store.put_audit(&[fresh.clone()], &[], KEEP).await.unwrap();
        let dump = store.dump_audit(0, i64::MAX).await.unwrap();
        assert_eq!(dump.records, [serde_json::to_value(&fresh).unwrap()]);
    }

    /// A store outage: stdout has the records already; the store writes fail, are counted,
    /// and the records stay buffered and arrive, in one unbroken chain, once it is back.
    #[tokio::test]
    async fn an_outage_keeps_records_for_the_next_flush_and_counts_failures() {
        let inner: Arc<dyn Store> =
            Arc::new(mcpgw::store::sqlite::SqliteStore::in_memory().unwrap());
        let down = Arc::new(AtomicBool::new(true));
        let flag = down.clone();
        let store: Arc<dyn Store> = Arc::new(mcpgw::testing::ObservedStore::new(
            inner.clone(),
            move |call| {
                if call.method == "put_audit" && flag.load(Ordering::SeqCst) {
                    return Err(StoreError::backend(std::io::Error::other("store down")));
                }
                Ok(())
            },
        ));
        let keyring = keyring();
        let audit = Auditor::new(store, keyring.clone(), KEEP);
        for i in 1..=30 {
            audit.emit(record(i));
        }
        audit.flush().await;
        assert_eq!(audit.write_failures(), 1);
        assert_eq!(audit.buffered(), 30);
        for i in 31..=40 {
            audit.emit(record(i));
        }
        audit.flush().await;
        assert_eq!(audit.write_failures(), 2);
        assert_eq!(audit.buffered(), 40);
        assert!(
            inner
                .dump_audit(0, i64::MAX)
                .await
                .unwrap()
                .records
                .is_empty()
        );

        down.store(false, Ordering::SeqCst);
        audit.flush_and_seal().await;
        assert_eq!(audit.write_failures(), 2);
        assert_eq!(audit.buffered(), 0);
        assert_eq!(audit.dropped(), 0);
        let report = verify_store(inner.as_ref(), &keyring, 0, i64::MAX)
            .await
            .unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.records, 40);
        assert_eq!(report.writers[0].sealed_through, Some(40));
    }

    /// Locally the background task writes without anyone calling flush: a full batch at
    /// once, a lone record within about a second.
    #[tokio::test]
    async fn the_background_flush_writes_without_a_flush_call() {
        let store = Arc::new(mcpgw::store::sqlite::SqliteStore::in_memory().unwrap());
        let audit = Arc::new(Auditor::new(store.clone(), keyring(), KEEP));
        audit.spawn_background_flush();
        audit.emit(record(1));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let n = store.dump_audit(0, i64::MAX).await.unwrap().records.len();
            if n == 1 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "not flushed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

mod dynamo {
    use super::*;
    use std::collections::HashMap;

    type Item = HashMap<String, AttributeValue>;

    struct Sdk {
        client: aws_sdk_dynamodb::Client,
        table: String,
    }

    impl Sdk {
        /// Every item of the table (a test may scan; the gateway never does).
        async fn all_items(&self) -> Vec<Item> {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .send()
                .await
                .unwrap();
            out.items.unwrap_or_default()
        }

        /// The audit record items.
        async fn items(&self) -> Vec<Item> {
            self.all_items()
                .await
                .into_iter()
                .filter(|i| {
                    i.get("pk")
                        .and_then(|v| v.as_s().ok())
                        .is_some_and(|pk| pk.starts_with("AUDIT#"))
                })
                .collect()
        }

        async fn delete_item(&self, item: &Item) {
            self.client
                .delete_item()
                .table_name(&self.table)
                .key("pk", item["pk"].clone())
                .key("sk", item["sk"].clone())
                .send()
                .await
                .unwrap();
        }

        async fn item(&self, seq: u64) -> Item {
            self.items()
                .await
                .into_iter()
                .find(|i| i["seq"].as_n().ok() == Some(&seq.to_string()))
                .unwrap()
        }
    }

    impl Tamper for Sdk {
        async fn doc(&self, seq: u64) -> Value {
            serde_json::from_str(self.item(seq).await["doc"].as_s().unwrap()).unwrap()
        }
        async fn set_doc(&self, seq: u64, doc: &Value) {
            let mut item = self.item(seq).await;
            item.insert("doc".into(), AttributeValue::S(doc.to_string()));
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .unwrap();
        }
        async fn delete(&self, seq: u64) {
            self.delete_item(&self.item(seq).await).await;
        }
        async fn insert(&self, doc: &Value) {
            let seq = doc["chain"]["seq"].as_u64().unwrap();
            let mut item = self.item(seq).await;
            let sk = format!("{}-forged", item["sk"].as_s().unwrap());
            item.insert("sk".into(), AttributeValue::S(sk));
            item.insert("doc".into(), AttributeValue::S(doc.to_string()));
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .unwrap();
        }
        async fn delete_seals_from(&self, from: u64) {
            for item in self.all_items().await {
                let is_seal = item["pk"]
                    .as_s()
                    .is_ok_and(|pk| pk.starts_with("AUDITSEAL#"));
                let seq: u64 = item
                    .get("seq")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                if is_seal && seq >= from {
                    self.delete_item(&item).await;
                }
            }
        }
    }

    async fn table() -> Option<(aws_sdk_dynamodb::Client, String)> {
        let endpoint = mcpgw::testing::moto_endpoint()?;
        let client = aws_sdk_dynamodb::Client::new(&mcpgw::aws::emulator_sdk_config(&endpoint));
        let table = mcpgw::testing::unique_name("mcpgw-audit");
        mcpgw::store::dynamo::create_table(&client, &table)
            .await
            .unwrap();
        Some((client, table))
    }

    /// Review M7: `/me/audit` (an `own` query) reads at most 4 query pages per request,
    /// eventually consistent, and answers a short page with a cursor; an admin's query
    /// reads up to 32. One-item query pages make each page one `Query`.
    #[tokio::test]
    async fn a_users_own_query_reads_a_small_budget_per_page() {
        let Some((client, table)) = table().await else {
            return;
        };
        let store =
            Arc::new(mcpgw::store::dynamo::DynamoStore::new(client, table).with_page_size(1));
        let audit = Auditor::new(store.clone(), keyring(), KEEP);
        for i in 1..=12 {
            audit.emit(record(i));
        }
        audit.flush().await;
        let q = mcpgw::store::AuditQuery {
            since_ms: SINCE(),
            until_ms: UNTIL(),
            user: Some("alice@example.com".into()),
            limit: 100,
            ..Default::default()
        };
        let admin = store.query_audit(&q).await.unwrap();
        assert_eq!(admin.records.len(), 12);
        let own = mcpgw::store::AuditQuery {
            own: true,
            ..q.clone()
        };
        let first = store.query_audit(&own).await.unwrap();
        assert!(first.records.len() <= 4, "{}", first.records.len());
        assert!(first.next.is_some());
        // Following the cursors still reads every record once.
        let mut seen = first.records.len();
        let mut next = first.next;
        while let Some(cursor) = next {
            let page = store
                .query_audit(&mcpgw::store::AuditQuery {
                    cursor: Some(cursor),
                    ..own.clone()
                })
                .await
                .unwrap();
            seen += page.records.len();
            next = page.next;
        }
        assert_eq!(seen, 12);
    }

    #[tokio::test]
    async fn float_latencies_verify_ok() {
        if let Some(store) = store().await {
            float_latencies_verify(store).await;
        }
    }

    #[tokio::test]
    async fn an_oversized_record_is_dropped_and_counted() {
        if let Some(store) = store().await {
            an_oversized_record_is_dropped_not_retried(store).await;
        }
    }

    /// A DynamoDB store on a new table in moto.
    async fn store() -> Option<Arc<dyn Store>> {
        let (client, table) = table().await?;
        Some(Arc::new(mcpgw::store::dynamo::DynamoStore::new(
            client, table,
        )))
    }

    #[tokio::test]
    async fn a_chain_rewritten_without_the_keyring_is_named_by_verify() {
        let Some((client, table)) = table().await else {
            return;
        };
        let store = Arc::new(mcpgw::store::dynamo::DynamoStore::new(
            client.clone(),
            table.clone(),
        ));
        let keyring = keyring();
        emit_chain(store.clone(), keyring.clone(), 12).await;
        rehash_and_verify(&Sdk { client, table }, store.as_ref(), &keyring).await;
    }

    #[tokio::test]
    async fn tampering_with_stored_items_is_named_by_verify() {
        let Some(endpoint) = mcpgw::testing::moto_endpoint() else {
            return;
        };
        let client = aws_sdk_dynamodb::Client::new(&mcpgw::aws::emulator_sdk_config(&endpoint));
        let table = mcpgw::testing::unique_name("mcpgw-audit");
        mcpgw::store::dynamo::create_table(&client, &table)
            .await
            .unwrap();
        let store = Arc::new(mcpgw::store::dynamo::DynamoStore::new(
            client.clone(),
            table.clone(),
        ));
        let keyring = keyring();
        emit_chain(store.clone(), keyring.clone(), 12).await;
        // The record items carry a TTL of their time plus the retention.
        let item = Sdk {
            client: client.clone(),
            table: table.clone(),
        }
        .item(1)
        .await;
        let time: i64 = item["time_ms"].as_n().unwrap().parse().unwrap();
        let ttl: i64 = item["ttl"].as_n().unwrap().parse().unwrap();
        assert_eq!(ttl, (time + KEEP.as_millis() as i64) / 1000);
        tamper_and_verify(&Sdk { client, table }, store.as_ref(), &keyring).await;
    }
}
