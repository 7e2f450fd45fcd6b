//! Canonical JSON: object members sorted by key, no insignificant whitespace, so equal
//! documents give equal bytes (and equal hashes) whatever order they were written in. Used
//! for the argument HMAC, the admin change hashes, the chain hash and the seals of audit
//! records.
//!
//! Spelled out here rather than left to `serde_json`: `serde_json::Value`'s map is a
//! `BTreeMap` only while no crate in the build turns on `preserve_order` (an AWS crate does
//! for its own tests), so relying on its order would make hashes depend on the dependency
//! graph. Keys sort by their UTF-8 bytes (`str`'s order); strings and numbers are written as
//! `serde_json` writes them (deterministic, no key order involved).

use serde_json::Value;

/// The canonical JSON text of `v`.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

/// Lowercase hex SHA-256 of the canonical JSON of `v` (an admin change's before/after).
pub fn canonical_hash(v: &Value) -> String {
    crate::crypto::sha256_hex(&canonical_json(v))
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut members: Vec<_> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(&Value::String(k.clone()), out);
                out.push(b':');
                write(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(v, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn member_order_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,"x"],"x":null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,"x"]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            String::from_utf8(canonical_json(&a)).unwrap(),
            r#"{"a":{"x":null,"y":[1,"x"]},"b":1}"#
        );
        assert_ne!(canonical_hash(&a), canonical_hash(&json!({"b": 2})));
    }

    #[test]
    fn keys_sort_at_every_depth_and_arrays_keep_their_order() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": true, "x": null}], "c": "é\""}});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":{"c":"é\"","z":[3,{"x":null,"y":true}]},"b":1}"#
        );
    }
}
