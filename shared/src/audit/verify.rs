//! Verify: reads stored records and seals and names every break in each writer's chain.
//!
//! Per writer, records are taken in `seq` order and each is checked against the chain:
//! - `deleted`: a gap in `seq` (or seals naming records that are gone: the chain was cut);
//! - `altered`: the record's keyed hash, recomputed from what is stored with the key its
//!   `chain.kid` names, is not its `chain.hash` (a record naming no key, or a key the keyring
//!   does not hold, cannot be authenticated and is `altered` too);
//! - `reordered`: its `prev` names a record of the chain other than its predecessor, or its
//!   time is earlier than its predecessor's;
//! - `inserted`: a second record claiming a stored `seq`, or a `prev` that names no record;
//! - `seal_forged`: a seal the keyring did not make; `seal_mismatch`: an authentic seal whose
//!   head is not the stored record's hash at that `seq`;
//! - `seal_missing`: see [`SealWindow`];
//! - `unreadable`: stored text that is not a chained record.
//!
//! What the chain proves and does not is in the README ("Audit trail"): the hashes are keyed
//! with the keyring, so whoever can only write the store cannot change, insert or reorder a
//! record without it showing; they can still delete a writer's tail back to a seal (or a
//! whole writer), which looks like an instance that stopped. A compromised writer (or
//! anyone holding the keyring) can write anything.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::chain::keyed_record_hash;
use crate::crypto::Keyring;
use crate::store::{AuditDump, AuditSeal};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    Deleted {
        from_seq: u64,
        to_seq: u64,
    },
    Altered {
        seq: u64,
    },
    Reordered {
        seq: u64,
    },
    Inserted {
        seq: u64,
        reason: &'static str,
    },
    SealForged {
        seq: u64,
    },
    SealMismatch {
        seq: u64,
    },
    /// The writer's record at `seq` was stored more than the seal interval (plus slack)
    /// after its last authentic seal, yet no seal covers it (see [`SealWindow`]).
    SealMissing {
        seq: u64,
    },
    Unreadable {
        count: usize,
    },
}

impl Problem {
    /// The problem's kind as the report spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Deleted { .. } => "deleted",
            Problem::Altered { .. } => "altered",
            Problem::Reordered { .. } => "reordered",
            Problem::Inserted { .. } => "inserted",
            Problem::SealForged { .. } => "seal_forged",
            Problem::SealMismatch { .. } => "seal_mismatch",
            Problem::SealMissing { .. } => "seal_missing",
            Problem::Unreadable { .. } => "unreadable",
        }
    }
}

/// The records after a writer's last authentic seal: present, but nothing proves the chain
/// did not go on past them (truncation cannot be told from an idle writer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unsealed {
    pub from_seq: u64,
    pub to_seq: u64,
}

/// One writer's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriterReport {
    pub writer: String,
    pub records: usize,
    pub first_seq: u64,
    pub last_seq: u64,
    pub seals: usize,
    /// The highest `seq` an authentic seal covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed_through: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsealed: Option<Unsealed>,
    pub problems: Vec<Problem>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No problem in any writer (unsealed tails are not problems).
    pub ok: bool,
    pub records: usize,
    pub writers: Vec<WriterReport>,
    /// Stored text that is not a chained record, across writers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

/// A stored record as verify reads it.
struct Entry {
    seq: u64,
    time_ms: i64,
    prev: String,
    hash: String,
    /// Whether the stored hash is the one recomputed from the stored fields.
    intact: bool,
}

fn entry(v: &Value, ring: &Keyring) -> Option<(String, Entry)> {
    let chain = v.get("chain")?;
    let writer = chain.get("writer")?.as_str()?.to_owned();
    let hash = chain.get("hash")?.as_str()?.to_owned();
    Some((
        writer,
        Entry {
            seq: chain.get("seq")?.as_u64()?,
            time_ms: v.get("time_ms")?.as_i64()?,
            prev: chain.get("prev")?.as_str()?.to_owned(),
            intact: keyed_record_hash(v, ring)
                .is_some_and(|h| crate::crypto::constant_time_eq(h.as_bytes(), hash.as_bytes())),
            hash,
        },
    ))
}

/// Why verify could not run (a problem in the chain is a finding, not an error).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("could not read the audit trail")]
    Store(#[from] crate::store::StoreError),
    #[error("could not load the keyring")]
    Keyring(#[from] crate::keyring::KeyringSourceError),
}

/// Reads the records and seals with `since_ms <= time < until_ms` from `store` and checks
/// them with the keyring (what `local audit verify` and `GET /admin/audit/verify` run).
pub async fn verify_store(
    store: &dyn crate::store::AuditStore,
    keyring: &crate::keyring::KeyringSource,
    since_ms: i64,
    until_ms: i64,
) -> Result<Report, VerifyError> {
    let dump = store.dump_audit(since_ms, until_ms).await?;
    let ring = keyring.get().await?;
    Ok(verify(&dump, &ring))
}

/// When a missing seal is reported (`seal_missing`).
///
/// An auditor seals its head at a flush once [`SealPolicy::interval`] has passed since its
/// last seal, and every stored record was stored by a flush. So a record stored more than the
/// interval (plus [`SealWindow::slack_ms`] for clocks and records emitted during a flush)
/// after its writer's last authentic seal (or, with none, after the writer's first record
/// read) was stored by a flush that sealed it: if no authentic seal covers it, a seal was
/// deleted. Reported only when the range read holds a record or seal of any writer at least
/// [`SealWindow::flush_delay_ms`] after that record, proving the seal's time (at most one
/// invocation after the record) lies inside the range.
///
/// Not reported, because it cannot be told from a stopped writer: a tail within the interval
/// of the last seal (an instance frozen forever, a crash, or the tail deleted back to a
/// seal). Also reported, rightly, when a flush stored records but its seal write failed and
/// the instance then stopped: evidence was lost.
///
/// [`SealPolicy::interval`]: super::SealPolicy
#[derive(Debug, Clone, Copy)]
pub struct SealWindow {
    /// The writers' seal interval.
    pub interval_ms: i64,
    /// Clock and flush-timing slack.
    pub slack_ms: i64,
    /// The longest time from a record to the flush that stores it (a Lambda invocation).
    pub flush_delay_ms: i64,
}

impl Default for SealWindow {
    fn default() -> Self {
        let interval = super::SealPolicy::default().interval;
        Self {
            interval_ms: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX),
            slack_ms: 60_000,
            // Lambda's 15-minute invocation limit, plus a minute.
            flush_delay_ms: 16 * 60_000,
        }
    }
}

/// Checks every chain in `dump` (see the module docs) with the default [`SealWindow`].
pub fn verify(dump: &AuditDump, ring: &Keyring) -> Report {
    verify_with(dump, ring, SealWindow::default())
}

/// [`verify`] with the given [`SealWindow`].
pub fn verify_with(dump: &AuditDump, ring: &Keyring, window: SealWindow) -> Report {
    let mut by_writer: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    let mut unreadable = 0;
    // The latest time in the range read: what proves time passed after a record.
    let mut latest = i64::MIN;
    for s in &dump.seals {
        latest = latest.max(s.time_ms);
    }
    for v in &dump.records {
        match entry(v, ring) {
            Some((w, e)) => {
                latest = latest.max(e.time_ms);
                by_writer.entry(w).or_default().push(e)
            }
            None => unreadable += 1,
        }
    }
    let mut seals: BTreeMap<&str, Vec<&AuditSeal>> = BTreeMap::new();
    for s in &dump.seals {
        seals.entry(s.writer.as_str()).or_default().push(s);
        by_writer.entry(s.writer.clone()).or_default();
    }
    let writers: Vec<WriterReport> = by_writer
        .into_iter()
        .map(|(writer, entries)| {
            let seals = seals.remove(writer.as_str()).unwrap_or_default();
            check_writer(writer, entries, &seals, ring, window, latest)
        })
        .collect();
    let problems = if unreadable > 0 {
        vec![Problem::Unreadable { count: unreadable }]
    } else {
        Vec::new()
    };
    Report {
        ok: problems.is_empty() && writers.iter().all(|w| w.problems.is_empty()),
        records: dump.records.len(),
        writers,
        problems,
    }
}

fn check_writer(
    writer: String,
    mut entries: Vec<Entry>,
    seals: &[&AuditSeal],
    ring: &Keyring,
    window: SealWindow,
    latest: i64,
) -> WriterReport {
    entries.sort_by_key(|e| (e.seq, e.time_ms));
    let mut problems = Vec::new();
    let all_hashes: HashSet<&str> = entries.iter().map(|e| e.hash.as_str()).collect();
    // The record each `seq` stands for: of several claiming one seq, the intact one that
    // links to the chain (the others are `inserted`).
    let mut chosen: BTreeMap<u64, &Entry> = BTreeMap::new();
    let mut groups: BTreeMap<u64, Vec<&Entry>> = BTreeMap::new();
    for e in &entries {
        groups.entry(e.seq).or_default().push(e);
    }
    // Who is referenced as someone's `prev`: the genuine one of a duplicated seq is.
    let referenced: HashSet<&str> = entries.iter().map(|e| e.prev.as_str()).collect();
    let mut prev: Option<&Entry> = None;
    for (&seq, group) in &groups {
        if let Some(p) = prev
            && seq > p.seq + 1
        {
            problems.push(Problem::Deleted {
                from_seq: p.seq + 1,
                to_seq: seq - 1,
            });
        }
        let genuine = group
            .iter()
            .copied()
            .max_by_key(|e| {
                (
                    e.intact,
                    prev.is_some_and(|p| p.hash == e.prev),
                    referenced.contains(e.hash.as_str()),
                )
            })
            .unwrap_or(group[0]);
        for e in group {
            if !std::ptr::eq(*e, genuine) {
                problems.push(Problem::Inserted {
                    seq,
                    reason: "duplicate seq",
                });
            }
        }
        if !genuine.intact {
            problems.push(Problem::Altered { seq });
        }
        match prev {
            Some(p) if p.seq + 1 == seq => {
                if genuine.prev != p.hash {
                    if all_hashes.contains(genuine.prev.as_str()) {
                        problems.push(Problem::Reordered { seq });
                    } else {
                        problems.push(Problem::Inserted {
                            seq,
                            reason: "prev names no record",
                        });
                    }
                } else if genuine.time_ms < p.time_ms {
                    problems.push(Problem::Reordered { seq });
                }
            }
            // After a gap (already `deleted`), or the first record kept: the link cannot
            // be checked, but a link to a stored record out of place is still a reorder.
            Some(_) | None => {
                if all_hashes.contains(genuine.prev.as_str())
                    && prev.is_none_or(|p| p.hash != genuine.prev)
                {
                    problems.push(Problem::Reordered { seq });
                }
            }
        }
        chosen.insert(seq, genuine);
        prev = Some(genuine);
    }
    let (first_seq, last_seq) = (
        chosen.keys().next().copied().unwrap_or(0),
        chosen.keys().next_back().copied().unwrap_or(0),
    );
    let mut sealed_through: Option<u64> = None;
    // The time of the authentic seal with the highest seq.
    let mut last_seal_time: Option<i64> = None;
    for seal in seals {
        if !super::seal::is_authentic(ring, seal) {
            problems.push(Problem::SealForged { seq: seal.seq });
            continue;
        }
        match chosen.get(&seal.seq) {
            Some(e) if e.hash == seal.head => {}
            Some(_) => problems.push(Problem::SealMismatch { seq: seal.seq }),
            // Sealed records past the last one kept: the chain's end was cut off.
            None if seal.seq > last_seq => problems.push(Problem::Deleted {
                from_seq: last_seq + 1,
                to_seq: seal.seq,
            }),
            // Inside the kept range: a gap, already `deleted`; before it: expired or
            // outside the range read.
            None => {}
        }
        if sealed_through.is_none_or(|s| seal.seq >= s) {
            last_seal_time = Some(last_seal_time.map_or(seal.time_ms, |t| t.max(seal.time_ms)));
        }
        sealed_through = sealed_through.max(Some(seal.seq));
    }
    // A tail record that a seal should cover by now (see `SealWindow`).
    let since = last_seal_time.or_else(|| chosen.values().map(|e| e.time_ms).min());
    if let Some(since) = since {
        let due = since
            .saturating_add(window.interval_ms)
            .saturating_add(window.slack_ms);
        let missing = chosen
            .range(sealed_through.map_or(0, |s| s + 1)..)
            .map(|(_, e)| e)
            .find(|e| e.time_ms > due && latest >= e.time_ms.saturating_add(window.flush_delay_ms));
        if let Some(e) = missing {
            problems.push(Problem::SealMissing { seq: e.seq });
        }
    }
    problems.dedup();
    let unsealed = match sealed_through {
        Some(s) if s >= last_seq => None,
        Some(s) => Some(Unsealed {
            from_seq: s + 1,
            to_seq: last_seq,
        }),
        None if chosen.is_empty() => None,
        None => Some(Unsealed {
            from_seq: first_seq,
            to_seq: last_seq,
        }),
    };
    WriterReport {
        writer,
        records: entries.len(),
        first_seq,
        last_seq,
        seals: seals.len(),
        sealed_through,
        unsealed,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{Chain, record_hash};
    use crate::audit::record::{AuditRecord, Decision, Event};

    fn ring() -> Keyring {
        Keyring::from_json(r#"{"active":"k1","k1":"0123456789abcdef0123456789abcdef"}"#).unwrap()
    }

    /// A chain of `n` records one ms apart, sealed at its end.
    fn chain(n: u64, ring: &Keyring) -> (Vec<Value>, Vec<AuditSeal>) {
        spaced_chain(n, 1, ring)
    }

    /// A chain of `n` records `step_ms` apart from time 1000, sealed at its end (the seal's
    /// time that of the last record).
    fn spaced_chain(n: u64, step_ms: i64, ring: &Keyring) -> (Vec<Value>, Vec<AuditSeal>) {
        let mut c = Chain::new("w-test".into());
        let mut out = Vec::new();
        let mut last = 0;
        for i in 0..n {
            let mut r = AuditRecord::new(Event::ToolCall, Decision::Allow);
            r.time_ms = 1_000 + i as i64 * step_ms;
            last = r.time_ms;
            r.tool = Some(format!("t{i}"));
            c.link(&mut r, Some(ring));
            out.push(serde_json::to_value(&r).unwrap());
        }
        let (seq, head) = c.head();
        let seal = super::super::seal::make(ring, "w-test", seq, head, last.max(5_000)).unwrap();
        (out, vec![seal])
    }

    /// A seal of `records`' `seq` (1-based) as its writer would make it at `time_ms`.
    fn seal_at(records: &[Value], seq: u64, time_ms: i64, ring: &Keyring) -> AuditSeal {
        let head = records[seq as usize - 1]["chain"]["hash"].as_str().unwrap();
        super::super::seal::make(ring, "w-test", seq, head, time_ms).unwrap()
    }

    fn kinds(r: &Report) -> Vec<&'static str> {
        r.writers
            .iter()
            .flat_map(|w| w.problems.iter().map(Problem::kind))
            .collect()
    }

    fn check(records: Vec<Value>, seals: Vec<AuditSeal>, ring: &Keyring) -> Report {
        verify(&AuditDump { records, seals }, ring)
    }

    #[test]
    fn an_intact_sealed_chain_verifies_in_any_storage_order() {
        let ring = ring();
        let (mut records, seals) = chain(6, &ring);
        records.reverse();
        let r = check(records, seals, &ring);
        assert!(r.ok, "{r:?}");
        assert_eq!(r.writers[0].sealed_through, Some(6));
        assert_eq!(r.writers[0].unsealed, None);
    }

    #[test]
    fn each_tampering_is_named() {
        let ring = ring();
        // Deleted.
        let (mut rs, seals) = chain(6, &ring);
        rs.remove(2);
        let r = check(rs, seals, &ring);
        assert!(!r.ok);
        assert_eq!(
            r.writers[0].problems,
            [Problem::Deleted {
                from_seq: 3,
                to_seq: 3
            }]
        );
        // Altered.
        let (mut rs, seals) = chain(6, &ring);
        rs[1]["tool"] = "other".into();
        assert_eq!(kinds(&check(rs, seals, &ring)), ["altered"]);
        // Reordered: records 3 and 4 swap places (each relabelled with the other's seq).
        let (mut rs, seals) = chain(6, &ring);
        rs.swap(2, 3);
        rs[2]["chain"]["seq"] = 3.into();
        rs[3]["chain"]["seq"] = 4.into();
        assert!(kinds(&check(rs, seals, &ring)).contains(&"reordered"));
        // Inserted: a forged record claiming seq 4, its own hash made consistent.
        let (mut rs, seals) = chain(6, &ring);
        let mut forged = rs[3].clone();
        forged["tool"] = "forged".into();
        let h = record_hash(&forged);
        forged["chain"]["hash"] = h.into();
        rs.push(forged);
        assert_eq!(
            check(rs, seals, &ring).writers[0].problems,
            [Problem::Inserted {
                seq: 4,
                reason: "duplicate seq"
            }]
        );
        // The tail cut off after the seal was made.
        let (mut rs, seals) = chain(6, &ring);
        rs.truncate(4);
        assert_eq!(
            check(rs, seals, &ring).writers[0].problems,
            [Problem::Deleted {
                from_seq: 5,
                to_seq: 6
            }]
        );
    }

    #[test]
    fn seals_are_checked_and_the_unsealed_tail_reported() {
        let ring = ring();
        let (rs, mut seals) = chain(6, &ring);
        // A seal at 3 from another keyring is forged; the tail after the genuine seal...
        let other = Keyring::from_json(&Keyring::generate_document()).unwrap();
        let head3 = rs[2]["chain"]["hash"].as_str().unwrap();
        seals.push(super::super::seal::make(&other, "w-test", 3, head3, 1).unwrap());
        // ... and an authentic seal whose head is not the stored record's.
        seals.push(super::super::seal::make(&ring, "w-test", 2, head3, 1).unwrap());
        let r = check(rs.clone(), seals, &ring);
        assert_eq!(kinds(&r), ["seal_forged", "seal_mismatch"]);
        // Without seals the whole chain is unsealed, but not a problem.
        let r = check(rs, Vec::new(), &ring);
        assert!(r.ok);
        assert_eq!(
            r.writers[0].unsealed,
            Some(Unsealed {
                from_seq: 1,
                to_seq: 6
            })
        );
    }

    #[test]
    fn a_chain_rewritten_without_the_keyring_is_altered_even_without_its_seals() {
        // The review's attack: change record 2, recompute every hash from 2 on with the
        // public (unkeyed) hash function, keep or drop the key id, delete the seals.
        let ring = ring();
        for drop_kid in [false, true] {
            let (mut rs, _seals) = chain(6, &ring);
            rs[1]["tool"] = "exfiltrate".into();
            for i in 1..rs.len() {
                if i > 1 {
                    rs[i]["chain"]["prev"] = rs[i - 1]["chain"]["hash"].clone();
                }
                if drop_kid {
                    rs[i]["chain"].as_object_mut().unwrap().remove("kid");
                }
                let h = record_hash(&rs[i]);
                rs[i]["chain"]["hash"] = h.into();
            }
            let r = check(rs, Vec::new(), &ring);
            assert!(!r.ok, "{r:?}");
            assert_eq!(
                r.writers[0].problems,
                (2..=6)
                    .map(|seq| Problem::Altered { seq })
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn records_linked_before_a_rotation_verify_after_it() {
        let old = Keyring::from_json(r#"{"active":"k1","k1":"0123456789abcdef0123456789abcdef"}"#)
            .unwrap();
        let rotated = Keyring::from_json(
            r#"{"active":"k2","k1":"0123456789abcdef0123456789abcdef","k2":"fedcba9876543210fedcba9876543210"}"#,
        )
        .unwrap();
        let (rs, seals) = chain(3, &old);
        assert!(check(rs.clone(), seals.clone(), &rotated).ok);
        // Without the old key they cannot be authenticated.
        let fresh = Keyring::from_json(&Keyring::generate_document()).unwrap();
        assert!(kinds(&check(rs, Vec::new(), &fresh)).contains(&"altered"));
    }

    #[test]
    fn a_deleted_seal_is_missing_when_later_records_prove_it_was_made() {
        let ring = ring();
        let window = SealWindow::default();
        // Records a minute apart; the writer sealed at 2 (time of record 2) and at its end.
        let step = 60_000;
        let (rs, end_seal) = spaced_chain(30, step, &ring);
        let at2 = seal_at(&rs, 2, rs[1]["time_ms"].as_i64().unwrap(), &ring);
        let full = check(rs.clone(), vec![at2.clone(), end_seal[0].clone()], &ring);
        assert!(full.ok, "{full:?}");
        // Seals >= 2 deleted: record 3+ were stored more than interval + slack after the
        // seal at 2... the first one past it is named, since later records prove time passed.
        let r = check(rs.clone(), vec![at2.clone()], &ring);
        let first_due = rs
            .iter()
            .find(|v| {
                v["time_ms"].as_i64().unwrap() > at2.time_ms + window.interval_ms + window.slack_ms
            })
            .unwrap()["chain"]["seq"]
            .as_u64()
            .unwrap();
        assert_eq!(
            r.writers[0].problems,
            [Problem::SealMissing { seq: first_due }]
        );
        assert!(!r.ok);
        // No seal at all: measured from the first record.
        let r = check(rs.clone(), Vec::new(), &ring);
        assert!(kinds(&r).contains(&"seal_missing"), "{r:?}");
        // Nothing after the late records proves the seal's time is inside the range read:
        // the same tail, cut where the range would end, is not a problem.
        let cut = rs[..4].to_vec();
        let r = check(cut, vec![at2], &ring);
        assert!(r.ok, "{r:?}");
    }

    #[test]
    fn a_frozen_writers_unsealed_tail_within_the_interval_is_no_problem() {
        let ring = ring();
        // Sealed at 3; records 4-6 within the interval; then the instance froze forever,
        // while another writer kept writing for hours.
        let (rs, _) = spaced_chain(6, 5_000, &ring);
        let at3 = seal_at(&rs, 3, rs[2]["time_ms"].as_i64().unwrap(), &ring);
        let mut other = Chain::new("w-other".into());
        let mut later = AuditRecord::new(Event::ToolCall, Decision::Allow);
        later.time_ms = 10 * 3_600_000;
        other.link(&mut later, Some(&ring));
        let mut all = rs;
        all.push(serde_json::to_value(&later).unwrap());
        let r = check(all, vec![at3], &ring);
        assert!(r.ok, "{r:?}");
        let w = r.writers.iter().find(|w| w.writer == "w-test").unwrap();
        assert_eq!(
            w.unsealed,
            Some(Unsealed {
                from_seq: 4,
                to_seq: 6
            })
        );
    }

    #[test]
    fn unreadable_rows_are_counted() {
        let ring = ring();
        let (mut rs, seals) = chain(2, &ring);
        rs.push(Value::String("garbage".into()));
        let r = check(rs, seals, &ring);
        assert!(!r.ok);
        assert_eq!(r.problems, [Problem::Unreadable { count: 1 }]);
    }
}
