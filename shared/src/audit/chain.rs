//! The hash chain of one writer (process or Lambda instance): every record it emits gets
//! `chain = {writer, seq, prev, kid, hash}` in emit order, where `hash` is HMAC-SHA256 over
//! the record's canonical JSON without `chain.hash` (so `writer`, `seq`, `prev` and `kid` are
//! covered), under the chain key of keyring key `kid` (`Keyring::audit_chain_mac_hex`).
//!
//! Keyed, not a plain hash: whoever can write the store but does not hold the keyring cannot
//! change a record and recompute the hashes after it, so every change shows as `altered` in
//! verify, seals or not. The key id in the link lets verify pick the right key after a
//! rotation. Canonical JSON is [`super::canonical_json`] (keys sorted at every depth).

use serde_json::Value;

use super::record::{AuditRecord, ChainLink};
use crate::crypto::Keyring;

/// The canonical JSON of a stored record without `chain.hash`: what the chain hash covers.
/// The record is taken as a JSON value so that verify hashes exactly what was stored,
/// unknown fields included (an attacker's added field must change the hash, not be dropped
/// by a typed decode).
fn hashed_text(record: &Value) -> Vec<u8> {
    let mut v = record.clone();
    if let Some(chain) = v.get_mut("chain").and_then(Value::as_object_mut) {
        chain.remove("hash");
    }
    super::canonical_json(&v)
}

/// Hex SHA-256 of a record's canonical JSON without `chain.hash`: the unkeyed hash of an
/// auditor without a store (and what an attacker without the keyring can compute).
pub fn record_hash(record: &Value) -> String {
    crate::crypto::sha256_hex(&hashed_text(record))
}

/// The keyed hash a record's `chain.hash` must equal: HMAC under the chain key of the key
/// its `chain.kid` names. `None` when the record names no key or one `ring` lacks: such a
/// record cannot be authenticated.
pub fn keyed_record_hash(record: &Value, ring: &Keyring) -> Option<String> {
    let kid = record.get("chain")?.get("kid")?.as_str()?;
    ring.audit_chain_mac_hex(kid, &hashed_text(record))
}

/// A new writer id: `w-<ms since epoch>-<random>`, unique per process start.
pub fn new_writer_id() -> String {
    format!(
        "w-{}-{}",
        super::record::now_ms(),
        crate::crypto::random_token(6)
    )
}

/// Whether `text` has the shape of a writer id made by [`new_writer_id`]: `w-`, 1 to 20
/// digits, `-`, 1 to 32 base64url characters.
pub fn is_writer_id(text: &str) -> bool {
    let Some((ms, token)) = text
        .strip_prefix("w-")
        .and_then(|rest| rest.split_once('-'))
    else {
        return false;
    };
    (1..=20).contains(&ms.len())
        && ms.bytes().all(|b| b.is_ascii_digit())
        && (1..=32).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The running state of one writer's chain.
#[derive(Debug)]
pub struct Chain {
    writer: String,
    seq: u64,
    head: String,
}

impl Chain {
    pub fn new(writer: String) -> Self {
        Self {
            writer,
            seq: 0,
            head: String::new(),
        }
    }

    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// The last link's `(seq, hash)`; `(0, "")` before the first record.
    pub fn head(&self) -> (u64, &str) {
        (self.seq, &self.head)
    }

    /// Links `record` as the next in the chain (overwriting any `chain` it carried), keyed
    /// with `ring`'s active key; unkeyed without a ring (an auditor without a store).
    pub fn link(&mut self, record: &mut AuditRecord, ring: Option<&Keyring>) {
        self.seq += 1;
        record.chain = Some(ChainLink {
            writer: self.writer.clone(),
            seq: self.seq,
            prev: std::mem::take(&mut self.head),
            kid: ring.map(|r| r.active_key_id().to_owned()),
            hash: String::new(),
        });
        let hash = match (serde_json::to_value(&*record), ring) {
            (Ok(v), Some(ring)) => keyed_record_hash(&v, ring).unwrap_or_default(),
            (Ok(v), None) => record_hash(&v),
            // AuditRecord is plain data and always serializes; an empty hash would show up
            // in verify as `altered`, never silently.
            (Err(_), _) => String::new(),
        };
        if let Some(c) = record.chain.as_mut() {
            c.hash.clone_from(&hash);
        }
        self.head = hash;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Decision, Event};
    use serde_json::json;

    #[test]
    fn links_carry_seq_prev_and_a_keyed_hash_that_ignores_only_itself() {
        let ring = Keyring::from_json(&Keyring::generate_document()).unwrap();
        let mut chain = Chain::new("w-1-abc".into());
        let mut a = AuditRecord::new(Event::ToolCall, Decision::Allow);
        let mut b = AuditRecord::new(Event::ToolCall, Decision::Deny);
        chain.link(&mut a, Some(&ring));
        chain.link(&mut b, Some(&ring));
        let (la, lb) = (a.chain.clone().unwrap(), b.chain.clone().unwrap());
        assert_eq!((la.seq, la.prev.as_str()), (1, ""));
        assert_eq!((lb.seq, lb.prev.clone()), (2, la.hash.clone()));
        assert_eq!(chain.head(), (2, lb.hash.as_str()));
        assert_eq!(lb.kid.as_deref(), Some("k1"));
        // The hash is reproducible from the stored JSON with the keyring only: not with
        // the plain hash, nor with another keyring...
        let stored = serde_json::to_value(&b).unwrap();
        assert_eq!(keyed_record_hash(&stored, &ring), Some(lb.hash.clone()));
        assert_ne!(record_hash(&stored), lb.hash);
        let other = Keyring::from_json(&Keyring::generate_document()).unwrap();
        assert_ne!(keyed_record_hash(&stored, &other), Some(lb.hash.clone()));
        // ... and any field, the link included, changes it.
        for (path, new) in [
            ("/decision", json!("allow")),
            ("/chain/seq", json!(3)),
            ("/chain/prev", json!("00")),
            ("/chain/writer", json!("w-2")),
            ("/chain/kid", json!("k2")),
        ] {
            let mut v = stored.clone();
            *v.pointer_mut(path).unwrap() = new;
            assert_ne!(
                keyed_record_hash(&v, &ring),
                Some(lb.hash.clone()),
                "{path}"
            );
        }
        let mut added = stored.clone();
        added["extra"] = json!(1);
        assert_ne!(keyed_record_hash(&added, &ring), Some(lb.hash.clone()));
        let mut unkeyed = stored.clone();
        unkeyed["chain"].as_object_mut().unwrap().remove("kid");
        assert_eq!(keyed_record_hash(&unkeyed, &ring), None);
    }

    #[test]
    fn writer_ids_differ_and_have_their_shape() {
        assert_ne!(new_writer_id(), new_writer_id());
        assert!(is_writer_id(&new_writer_id()));
        for bad in [
            "",
            "w-",
            "w-1-",
            "w--abc",
            "w-x-abc",
            "x-1-abc",
            "w-1-a#b",
            "w-1-a b",
            "w-123456789012345678901-a",
        ] {
            assert!(!is_writer_id(bad), "{bad}");
        }
        assert!(!is_writer_id(&format!("w-1-{}", "a".repeat(33))));
    }
}
