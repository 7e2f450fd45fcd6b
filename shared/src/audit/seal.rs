//! Seals: a writer's chain head `{writer, seq, head, time_ms}` sealed with the keyring's
//! AEAD (AES-256-GCM, the same `Keyring::seal` that protects tokens at rest) under its own
//! context, so a seal is a MAC only the keyring's holder can make: the plaintext is the
//! canonical JSON of the four fields, and verify opens the blob and compares. (Sealing a
//! small JSON reuses the one key-handling path, rotation included, instead of deriving a
//! second HMAC key from the same material.)

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::crypto::{Keyring, KeyringError};
use crate::store::AuditSeal;

/// The AEAD context of seals: a blob sealed for anything else does not open as a seal.
const SEAL_CONTEXT: &[u8] = b"mcpgw audit seal v1";

fn plaintext(writer: &str, seq: u64, head: &str, time_ms: i64) -> Vec<u8> {
    super::canonical_json(&json!({"writer": writer, "seq": seq, "head": head, "time_ms": time_ms}))
}

/// Seals the chain head `(seq, head)` of `writer` at `time_ms`.
pub fn make(
    ring: &Keyring,
    writer: &str,
    seq: u64,
    head: &str,
    time_ms: i64,
) -> Result<AuditSeal, KeyringError> {
    let blob = ring.seal(&plaintext(writer, seq, head, time_ms), SEAL_CONTEXT)?;
    Ok(AuditSeal {
        writer: writer.to_owned(),
        seq,
        head: head.to_owned(),
        time_ms,
        mac: URL_SAFE_NO_PAD.encode(blob),
    })
}

/// Whether `seal` was made by [`make`] with a key of `ring`, for exactly its fields.
pub fn is_authentic(ring: &Keyring, seal: &AuditSeal) -> bool {
    let Ok(blob) = URL_SAFE_NO_PAD.decode(&seal.mac) else {
        return false;
    };
    match ring.open(&blob, SEAL_CONTEXT) {
        Ok(plain) => plain == plaintext(&seal.writer, seal.seq, &seal.head, seal.time_ms),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_checks_only_with_its_own_fields_and_keyring() {
        let ring = Keyring::from_json(&Keyring::generate_document()).unwrap();
        let other = Keyring::from_json(&Keyring::generate_document()).unwrap();
        let seal = make(&ring, "w-1", 7, "abc", 1000).unwrap();
        assert!(is_authentic(&ring, &seal));
        assert!(!is_authentic(&other, &seal));
        for forged in [
            AuditSeal {
                seq: 8,
                ..seal.clone()
            },
            AuditSeal {
                head: "abd".into(),
                ..seal.clone()
            },
            AuditSeal {
                writer: "w-2".into(),
                ..seal.clone()
            },
            AuditSeal {
                time_ms: 1,
                ..seal.clone()
            },
            AuditSeal {
                mac: "AAAA".into(),
                ..seal.clone()
            },
        ] {
            assert!(!is_authentic(&ring, &forged), "{forged:?}");
        }
    }
}
