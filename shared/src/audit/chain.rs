//! The hash chain of one writer (process or Lambda instance): every record it emits gets
//! `chain = {writer, seq, prev, hash}` in emit order, where `hash` is SHA-256 over the
//! record's canonical JSON without `chain.hash` (so `writer`, `seq` and `prev` are covered).
//!
//! Canonical JSON is spelled out here rather than left to `serde_json`: object keys sorted by
//! their UTF-8 bytes at every depth, no whitespace, strings and numbers as `serde_json` writes
//! them. `serde_json::Value`'s map is a `BTreeMap` only while no crate in the build turns on
//! `preserve_order` (an AWS crate does for its own tests), so relying on its order would make
//! hashes depend on the dependency graph.

use serde_json::Value;

use super::record::{AuditRecord, ChainLink};

/// Hex SHA-256 of a record's canonical JSON without `chain.hash`. The record is taken as a
/// JSON value so that verify hashes exactly what was stored, unknown fields included (an
/// attacker's added field must change the hash, not be dropped by a typed decode).
pub fn record_hash(record: &Value) -> String {
    let mut v = record.clone();
    if let Some(chain) = v.get_mut("chain").and_then(Value::as_object_mut) {
        chain.remove("hash");
    }
    let mut text = String::with_capacity(512);
    write_canonical(&v, &mut text);
    crate::crypto::sha256_hex(text.as_bytes())
}

/// Appends the canonical JSON of `v` to `out` (see the module docs).
pub fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(k, out);
                out.push(':');
                write_canonical(val, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(s) => push_string(s, out),
        Value::Null | Value::Bool(_) | Value::Number(_) => out.push_str(&v.to_string()),
    }
}

fn push_string(s: &str, out: &mut String) {
    // serde_json's string escaping is deterministic (no key order involved).
    out.push_str(&Value::String(s.to_owned()).to_string());
}

/// A new writer id: `w-<ms since epoch>-<random>`, unique per process start.
pub fn new_writer_id() -> String {
    format!(
        "w-{}-{}",
        super::record::now_ms(),
        crate::crypto::random_token(6)
    )
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

    /// Links `record` as the next in the chain (overwriting any `chain` it carried).
    pub fn link(&mut self, record: &mut AuditRecord) {
        self.seq += 1;
        record.chain = Some(ChainLink {
            writer: self.writer.clone(),
            seq: self.seq,
            prev: std::mem::take(&mut self.head),
            hash: String::new(),
        });
        let hash = match serde_json::to_value(&*record) {
            Ok(v) => record_hash(&v),
            // AuditRecord is plain data and always serializes; an empty hash would show up
            // in verify as `altered`, never silently.
            Err(_) => String::new(),
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
    fn canonical_json_sorts_keys_at_every_depth_and_keeps_array_order() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": true, "x": null}], "c": "é\""}});
        let mut s = String::new();
        write_canonical(&v, &mut s);
        assert_eq!(s, r#"{"a":{"c":"é\"","z":[3,{"x":null,"y":true}]},"b":1}"#);
    }

    #[test]
    fn links_carry_seq_prev_and_a_hash_that_ignores_only_itself() {
        let mut chain = Chain::new("w-1-abc".into());
        let mut a = AuditRecord::new(Event::ToolCall, Decision::Allow);
        let mut b = AuditRecord::new(Event::ToolCall, Decision::Deny);
        chain.link(&mut a);
        chain.link(&mut b);
        let (la, lb) = (a.chain.clone().unwrap(), b.chain.clone().unwrap());
        assert_eq!((la.seq, la.prev.as_str()), (1, ""));
        assert_eq!((lb.seq, lb.prev.clone()), (2, la.hash.clone()));
        assert_eq!(chain.head(), (2, lb.hash.as_str()));
        // The hash is reproducible from the stored JSON...
        let stored = serde_json::to_value(&b).unwrap();
        assert_eq!(record_hash(&stored), lb.hash);
        // ... and any field, the link included, changes it.
        for (path, new) in [
            ("/decision", json!("allow")),
            ("/chain/seq", json!(3)),
            ("/chain/prev", json!("00")),
            ("/chain/writer", json!("w-2")),
        ] {
            let mut v = stored.clone();
            *v.pointer_mut(path).unwrap() = new;
            assert_ne!(record_hash(&v), lb.hash, "{path}");
        }
        let mut added = stored.clone();
        added["extra"] = json!(1);
        assert_ne!(record_hash(&added), lb.hash);
    }

    #[test]
    fn writer_ids_differ() {
        assert_ne!(new_writer_id(), new_writer_id());
        assert!(new_writer_id().starts_with("w-"));
    }
}
