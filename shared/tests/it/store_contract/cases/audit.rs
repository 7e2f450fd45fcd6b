//! Contract cases of the audit store: newest-first queries with filters and cursors across
//! day partitions, idempotent batch writes that still keep a forged second claim to a
//! `seq`, and a dump that verify accepts.

use std::sync::Arc;
use std::time::Duration;

use mcpgw::audit::chain::Chain;
use mcpgw::audit::record::{Actor, AuditRecord, Decision, Event, Outcome};
use mcpgw::crypto::Keyring;
use mcpgw::store::{AuditCursor, AuditQuery, AuditSeal, Store};

/// Long enough that the fixed times below are not swept as expired.
const KEEP: Duration = Duration::from_secs(3650 * 86_400);
/// 2025-12-07T23:59:59.990Z: records straddle a UTC day boundary.
const T0: i64 = 1_765_151_999_990;

/// `n` records of `writer`, 1 ms apart from `t0`, users/tools/outcomes cycling.
/// The keyring the records' chains are keyed with.
fn ring() -> Keyring {
    Keyring::from_json(r#"{"active":"k1","k1":"0123456789abcdef0123456789abcdef"}"#).unwrap()
}

fn records(writer: &str, t0: i64, n: u64) -> Vec<AuditRecord> {
    let ring = ring();
    let mut chain = Chain::new(writer.into());
    (0..n)
        .map(|i| {
            let mut r = AuditRecord::new(
                Event::ToolCall,
                if i % 5 == 4 {
                    Decision::Deny
                } else {
                    Decision::Allow
                },
            );
            r.time_ms = t0 + i as i64;
            r.principal = Some(Actor {
                user: ["alice@example.com", "bob@example.com"][(i % 2) as usize].into(),
                auth: "api_key".into(),
                key_id: Some("k1".into()),
                provider: None,
            });
            r.endpoint = Some(["github", "jira", "docs"][(i % 3) as usize].into());
            r.tool = Some(format!("tool{}", i % 4));
            r.outcome = Some(Outcome {
                status: if i % 3 == 2 { "is_error" } else { "ok" }.into(),
                code: None,
                http_status: None,
            });
            chain.link(&mut r, Some(&ring));
            r
        })
        .collect()
}

fn key(r: &AuditRecord) -> (i64, String, u64) {
    let c = r.chain.as_ref().unwrap();
    (r.time_ms, c.writer.clone(), c.seq)
}

/// Every page of `q`, following cursors.
async fn all_pages(store: &Arc<dyn Store>, mut q: AuditQuery) -> Vec<(i64, String, u64)> {
    let mut out = Vec::new();
    for _ in 0..100 {
        let page = store.query_audit(&q).await.unwrap();
        assert!(page.records.len() <= q.limit);
        out.extend(page.records.iter().map(key));
        match page.next {
            Some(c) => {
                // Cursors are opaque text to callers.
                q.cursor = Some(AuditCursor::decode(&c.encode()).unwrap());
            }
            None => return out,
        }
    }
    panic!("pages never end");
}

pub async fn audit_query_is_newest_first_filtered_and_paged(store: Arc<dyn Store>) {
    let mut all = records("w-1-a", T0, 24);
    all.extend(records("w-2-b", T0 + 3, 12));
    for batch in all.chunks(25) {
        store.put_audit(batch, &[], KEEP).await.unwrap();
    }
    let q = AuditQuery {
        since_ms: T0 - 1_000,
        until_ms: T0 + 1_000,
        limit: 7,
        ..AuditQuery::default()
    };
    let mut expected: Vec<_> = all.iter().map(key).collect();
    expected.sort();
    expected.reverse();
    assert_eq!(all_pages(&store, q.clone()).await, expected);

    // Each filter, alone and combined, against the same filter in memory.
    type Pick = fn(&AuditRecord) -> bool;
    let cases: Vec<(AuditQuery, Pick)> = vec![
        (
            AuditQuery {
                user: Some("alice@example.com".into()),
                ..q.clone()
            },
            |r| r.principal.as_ref().unwrap().user == "alice@example.com",
        ),
        (
            AuditQuery {
                endpoint: Some("jira".into()),
                tool: Some("tool1".into()),
                ..q.clone()
            },
            |r| r.endpoint.as_deref() == Some("jira") && r.tool.as_deref() == Some("tool1"),
        ),
        (
            AuditQuery {
                outcome: Some("is_error".into()),
                ..q.clone()
            },
            |r| r.outcome.as_ref().unwrap().status == "is_error",
        ),
        (
            AuditQuery {
                decision: Some("deny".into()),
                limit: 2,
                ..q.clone()
            },
            |r| r.decision == Decision::Deny,
        ),
        (
            // A time window inside the range: since inclusive, until exclusive.
            AuditQuery {
                since_ms: T0 + 5,
                until_ms: T0 + 12,
                ..q.clone()
            },
            |r| (T0 + 5..T0 + 12).contains(&r.time_ms),
        ),
    ];
    for (query, pick) in cases {
        let mut want: Vec<_> = all.iter().filter(|r| pick(r)).map(key).collect();
        want.sort();
        want.reverse();
        assert!(!want.is_empty());
        assert_eq!(all_pages(&store, query.clone()).await, want, "{query:?}");
    }
    // Made-up cursors (they are caller input) at the ends of time: from the top, or nothing.
    let future = AuditCursor {
        time_ms: i64::MAX,
        writer: "w".into(),
        seq: u64::MAX,
    };
    assert_eq!(
        all_pages(
            &store,
            AuditQuery {
                cursor: Some(future),
                ..q.clone()
            }
        )
        .await,
        expected
    );
    let past = AuditCursor {
        time_ms: i64::MIN,
        writer: String::new(),
        seq: 0,
    };
    assert!(
        all_pages(
            &store,
            AuditQuery {
                cursor: Some(past),
                ..q.clone()
            }
        )
        .await
        .is_empty()
    );
    // Nothing outside the range.
    let none = AuditQuery {
        since_ms: T0 + 1_000,
        until_ms: T0 + 2_000,
        ..q.clone()
    };
    assert!(all_pages(&store, none).await.is_empty());
    // Records come back as stored.
    let page = store
        .query_audit(&AuditQuery {
            limit: 1,
            ..q.clone()
        })
        .await
        .unwrap();
    let newest = all.iter().max_by_key(|r| key(r)).unwrap();
    assert_eq!(&page.records[0], newest);
}

pub async fn audit_put_is_idempotent_and_keeps_a_second_claim(store: Arc<dyn Store>) {
    let rs = records("w-3-idem", T0, 5);
    store.put_audit(&rs, &[], KEEP).await.unwrap();
    // A retried flush writes the same batch again.
    store.put_audit(&rs, &[], KEEP).await.unwrap();
    let dump = store.dump_audit(T0 - 10, T0 + 10).await.unwrap();
    assert_eq!(dump.records.len(), 5);
    // A different record claiming seq 3 is kept beside the first.
    let mut forged = rs[2].clone();
    forged.tool = Some("forged".into());
    forged.chain.as_mut().unwrap().hash = "f".repeat(64);
    store.put_audit(&[forged], &[], KEEP).await.unwrap();
    let dump = store.dump_audit(T0 - 10, T0 + 10).await.unwrap();
    assert_eq!(dump.records.len(), 6);
    // An unchained record is not stored.
    let mut loose = AuditRecord::new(Event::Connect, Decision::Allow);
    loose.time_ms = T0;
    store.put_audit(&[loose], &[], KEEP).await.unwrap();
    assert_eq!(
        store
            .dump_audit(T0 - 10, T0 + 10)
            .await
            .unwrap()
            .records
            .len(),
        6
    );
}

pub async fn audit_dump_round_trips_records_and_seals_for_verify(store: Arc<dyn Store>) {
    let ring = ring();
    let rs = records("w-4-dump", T0, 30);
    let last = rs.last().unwrap().chain.clone().unwrap();
    let seal = mcpgw::audit::seal::make(&ring, "w-4-dump", last.seq, &last.hash, T0 + 40).unwrap();
    for (i, batch) in rs.chunks(25).enumerate() {
        let seals: &[AuditSeal] = if i == 1 {
            std::slice::from_ref(&seal)
        } else {
            &[]
        };
        store.put_audit(batch, seals, KEEP).await.unwrap();
    }
    let dump = store.dump_audit(T0 - 10, T0 + 100).await.unwrap();
    assert_eq!(dump.records.len(), 30);
    assert_eq!(dump.seals, [seal]);
    let report = mcpgw::audit::verify::verify(&dump, &ring);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.writers[0].sealed_through, Some(30));
    // The range bounds the dump: since inclusive, until exclusive.
    let part = store.dump_audit(T0 + 10, T0 + 20).await.unwrap();
    assert_eq!(part.records.len(), 10);
    assert!(part.seals.is_empty());
}
