//! Verify: reads stored records and seals and names every break in each writer's chain.
//!
//! Per writer, records are taken in `seq` order and each is checked against the chain:
//! - `deleted`: a gap in `seq` (or seals naming records that are gone: the chain was cut);
//! - `altered`: the record's hash, recomputed from what is stored, is not its `chain.hash`;
//! - `reordered`: its `prev` names a record of the chain other than its predecessor, or its
//!   time is earlier than its predecessor's;
//! - `inserted`: a second record claiming a stored `seq`, or a `prev` that names no record;
//! - `seal_forged`: a seal the keyring did not make; `seal_mismatch`: an authentic seal whose
//!   head is not the stored record's hash at that `seq`;
//! - `unreadable`: stored text that is not a chained record.
//!
//! What the chain proves and does not is in the README ("Audit trail"): the hashes are not
//! keyed, so whoever can write the store can rewrite the unsealed tail consistently; seals
//! bound that to the records after the last seal. A writer's whole chain deleted leaves
//! nothing to compare with.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::chain::record_hash;
use crate::crypto::Keyring;
use crate::store::{AuditDump, AuditSeal};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    Deleted { from_seq: u64, to_seq: u64 },
    Altered { seq: u64 },
    Reordered { seq: u64 },
    Inserted { seq: u64, reason: &'static str },
    SealForged { seq: u64 },
    SealMismatch { seq: u64 },
    Unreadable { count: usize },
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

fn entry(v: &Value) -> Option<(String, Entry)> {
    let chain = v.get("chain")?;
    let writer = chain.get("writer")?.as_str()?.to_owned();
    let hash = chain.get("hash")?.as_str()?.to_owned();
    Some((
        writer,
        Entry {
            seq: chain.get("seq")?.as_u64()?,
            time_ms: v.get("time_ms")?.as_i64()?,
            prev: chain.get("prev")?.as_str()?.to_owned(),
            intact: record_hash(v) == hash,
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

/// Checks every chain in `dump` (see the module docs).
pub fn verify(dump: &AuditDump, ring: &Keyring) -> Report {
    let mut by_writer: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    let mut unreadable = 0;
    for v in &dump.records {
        match entry(v) {
            Some((w, e)) => by_writer.entry(w).or_default().push(e),
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
            check_writer(writer, entries, &seals, ring)
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
        sealed_through = sealed_through.max(Some(seal.seq));
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
    use crate::audit::chain::Chain;
    use crate::audit::record::{AuditRecord, Decision, Event};

    fn ring() -> Keyring {
        Keyring::from_json(r#"{"active":"k1","k1":"0123456789abcdef0123456789abcdef"}"#).unwrap()
    }

    /// A chain of `n` records one ms apart, sealed at its end.
    fn chain(n: u64, ring: &Keyring) -> (Vec<Value>, Vec<AuditSeal>) {
        let mut c = Chain::new("w-test".into());
        let mut out = Vec::new();
        for i in 0..n {
            let mut r = AuditRecord::new(Event::ToolCall, Decision::Allow);
            r.time_ms = 1_000 + i as i64;
            r.tool = Some(format!("t{i}"));
            c.link(&mut r);
            out.push(serde_json::to_value(&r).unwrap());
        }
        let (seq, head) = c.head();
        let seal = super::super::seal::make(ring, "w-test", seq, head, 5_000).unwrap();
        (out, vec![seal])
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
    fn unreadable_rows_are_counted() {
        let ring = ring();
        let (mut rs, seals) = chain(2, &ring);
        rs.push(Value::String("garbage".into()));
        let r = check(rs, seals, &ring);
        assert!(!r.ok);
        assert_eq!(r.problems, [Problem::Unreadable { count: 1 }]);
    }
}
