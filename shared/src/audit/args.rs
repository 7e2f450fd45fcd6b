//! What a record keeps of a call's arguments: always their keyed hash (the keyring's
//! `audit_mac_hex` of their canonical JSON), and, where the server opts in
//! ([`crate::domain::ServerAudit`]), the arguments themselves, with configured keys redacted
//! at any depth (case-insensitive) and cut to the server's size cap.

use serde_json::{Map, Value, json};

use super::canonical_json;
use crate::domain::ServerAudit;

/// What replaces a redacted member's value.
pub const REDACTED: &str = "[redacted]";

/// The arguments as the record keeps them under `settings` (`None`: not captured).
pub fn captured(args: &Value, settings: &ServerAudit) -> Option<Value> {
    if !settings.capture_arguments {
        return None;
    }
    let keys: Vec<String> = settings
        .redact_keys
        .iter()
        .map(|k| k.to_lowercase())
        .collect();
    let kept = redact(args, &keys);
    let text = canonical_json(&kept);
    if text.len() <= settings.max_bytes {
        return Some(kept);
    }
    // Over the cap: the canonical text's start, cut on a character boundary, and marked.
    let text = String::from_utf8_lossy(&text);
    let mut end = settings.max_bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(json!({"truncated": true, "bytes": text.len(), "prefix": &text[..end]}))
}

fn redact(v: &Value, keys: &[String]) -> Value {
    match v {
        Value::Object(map) => {
            let out: Map<String, Value> = map
                .iter()
                .map(|(k, v)| {
                    let v = if keys.contains(&k.to_lowercase()) {
                        Value::from(REDACTED)
                    } else {
                        redact(v, keys)
                    };
                    (k.clone(), v)
                })
                .collect();
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| redact(v, keys)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_bytes: usize, keys: &[&str]) -> ServerAudit {
        ServerAudit {
            capture_arguments: true,
            max_bytes,
            redact_keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn configured_keys_are_redacted_at_any_depth_in_any_case() {
        let args = json!({"Password": "p1", "q": "find",
            "nested": [{"token": "t1", "x": {"PASSWORD": "p2"}}]});
        let kept = captured(&args, &settings(4096, &["password", "TOKEN"])).unwrap();
        assert_eq!(
            kept,
            json!({"Password": REDACTED, "q": "find",
                "nested": [{"token": REDACTED, "x": {"PASSWORD": REDACTED}}]})
        );
        let off = ServerAudit {
            capture_arguments: false,
            ..settings(4096, &[])
        };
        assert_eq!(captured(&args, &off), None);
    }

    #[test]
    fn over_the_cap_is_cut_and_marked() {
        let args = json!({"text": "é".repeat(100)});
        let kept = captured(&args, &settings(31, &[])).unwrap();
        assert_eq!(kept["truncated"], true);
        assert!(kept["prefix"].as_str().unwrap().len() <= 31);
        assert!(kept["bytes"].as_u64().unwrap() > 200);
        // BASELINE: within the cap, kept whole.
        let small = json!({"a": 1});
        assert_eq!(captured(&small, &settings(31, &[])), Some(small));
    }

    #[test]
    fn settings_are_bounded() {
        assert!(settings(16384, &["k"]).validate().is_ok());
        assert!(settings(16385, &[]).validate().is_err());
        assert!(settings(0, &[]).validate().is_err());
        assert!(settings(10, &[""]).validate().is_err());
        assert!(settings(10, &["a\nb"]).validate().is_err());
    }
}
