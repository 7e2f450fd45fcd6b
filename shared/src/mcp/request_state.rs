//! The `requestState` of the gateway's `input_required` results (2026-07-28 multi-round
//! trip), sealed with the keyring (AEAD): the client echoes it on its retry, and it comes
//! back from a possibly hostile client. It is bound (encryption context) to the caller, the
//! endpoint and the bridged session's key, so another user's, another endpoint's or another
//! kind of client's state does not open; it names the call it belongs to (a state cannot
//! carry one tool's answers into another call) and expires.
//!
//! It carries what a retry needs where nothing is held for it (another process, or held too
//! long): which upstream request each input answers (a digest of method and params) and the
//! answers given in earlier rounds, so the call can be sent again and the upstream's repeated
//! requests answered from them.

use crate::clock::UnixTime;
use crate::crypto::Keyring;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest `requestState` opened (before any decryption): earlier rounds' answers included.
pub const MAX_STATE_LEN: usize = 64 * 1024;
/// How long a state may be used: a person may take a while to answer an elicitation.
pub const STATE_TTL_SECS: i64 = 10 * 60;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The held call in the process that made the state (random; meaningless elsewhere).
    pub held: String,
    /// [`call_digest`] of the request it was issued for.
    pub call: String,
    pub expires_at: UnixTime,
    /// The input requests of this round: the key the client answers under, and the
    /// [`request_digest`] of the upstream request it answers.
    pub asked: Vec<(String, String)>,
    /// Earlier rounds' answers: request digest and the client's result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answered: Vec<(String, Value)>,
}

/// Why a presented state is refused (all answer the same: invalid params).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too long, not base64, forged, tampered, or sealed for another caller or client.
    Unreadable,
    Expired,
    /// Issued for another call.
    OtherCall,
}

/// Who the state is bound to: the caller, the endpoint, the bridged session's key.
pub fn binding(user: &str, endpoint: &str, bridge_key: &str) -> String {
    // JSON, so no part can be shifted into another.
    let parts = serde_json::to_string(&(user, endpoint, bridge_key)).unwrap_or_default();
    format!("mcpgw/request-state/v1|{parts}")
}

/// The digest of an upstream request, for matching a repeated one: method and params
/// (canonical JSON: `serde_json` maps are ordered by key).
pub fn request_digest(method: &str, params: Option<&Value>) -> String {
    let canonical = serde_json::to_vec(&(method, params)).unwrap_or_default();
    crate::crypto::sha256_hex(&canonical)
}

/// The digest of a client's call (method and params without `_meta`, `inputResponses` and
/// `requestState`, which change from round to round).
pub fn call_digest(method: &str, params: Option<&serde_json::Map<String, Value>>) -> String {
    let rest: Option<Vec<(&String, &Value)>> = params.map(|p| {
        p.iter()
            .filter(|(k, _)| !matches!(k.as_str(), "_meta" | "inputResponses" | "requestState"))
            .collect()
    });
    let canonical = serde_json::to_vec(&(method, rest)).unwrap_or_default();
    crate::crypto::sha256_hex(&canonical)
}

/// Seals `claims` for `binding`; `None` when the keyring fails or the state would be longer
/// than [`MAX_STATE_LEN`] (the caller then leaves earlier answers out).
pub fn seal(keyring: &Keyring, binding: &str, claims: &Claims) -> Option<String> {
    let plain = serde_json::to_vec(claims).ok()?;
    let sealed = B64.encode(keyring.seal(&plain, binding.as_bytes()).ok()?);
    (sealed.len() <= MAX_STATE_LEN).then_some(sealed)
}

/// Opens a state presented for `binding` and the call `call` at `now`.
pub fn open(
    keyring: &Keyring,
    binding: &str,
    state: &str,
    call: &str,
    now: UnixTime,
) -> Result<Claims, Refused> {
    if state.len() > MAX_STATE_LEN {
        return Err(Refused::Unreadable);
    }
    let blob = B64.decode(state).map_err(|_| Refused::Unreadable)?;
    let plain = keyring
        .open(&blob, binding.as_bytes())
        .map_err(|_| Refused::Unreadable)?;
    let claims: Claims = serde_json::from_slice(&plain).map_err(|_| Refused::Unreadable)?;
    if claims.expires_at <= now {
        return Err(Refused::Expired);
    }
    if claims.call != call {
        return Err(Refused::OtherCall);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keyring() -> Keyring {
        Keyring::from_json(&Keyring::generate_document()).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            held: "h1".into(),
            call: call_digest("tools/call", json!({"name": "t"}).as_object()),
            expires_at: 1_000,
            asked: vec![("input-1".into(), request_digest("roots/list", None))],
            answered: vec![],
        }
    }

    #[test]
    fn a_state_opens_only_for_its_caller_client_call_and_time() {
        let ring = keyring();
        let alice = binding("alice", "ep", "k");
        let c = claims();
        let sealed = seal(&ring, &alice, &c).unwrap();
        // Baseline: the caller it was issued to, for the same call, in time.
        assert_eq!(open(&ring, &alice, &sealed, &c.call, 999), Ok(c.clone()));
        // The call's _meta and the round's fields do not change the call.
        let retry =
            json!({"name": "t", "_meta": {"x": 1}, "inputResponses": {}, "requestState": "s"});
        assert_eq!(call_digest("tools/call", retry.as_object()), c.call);
        for other in [
            binding("bob", "ep", "k"),
            binding("alice", "other", "k"),
            binding("alice", "ep", "another-client"),
        ] {
            assert_eq!(
                open(&ring, &other, &sealed, &c.call, 999),
                Err(Refused::Unreadable)
            );
        }
        let other_call = call_digest("tools/call", json!({"name": "u"}).as_object());
        assert_eq!(
            open(&ring, &alice, &sealed, &other_call, 999),
            Err(Refused::OtherCall)
        );
        assert_eq!(
            open(&ring, &alice, &sealed, &c.call, 1_000),
            Err(Refused::Expired)
        );
        // Another gateway's keyring, a flipped byte, garbage, an oversized state.
        assert!(open(&keyring(), &alice, &sealed, &c.call, 999).is_err());
        let mut bytes = B64.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(open(&ring, &alice, &B64.encode(&bytes), &c.call, 999).is_err());
        assert!(open(&ring, &alice, "not base64!", &c.call, 999).is_err());
        let huge = "A".repeat(MAX_STATE_LEN + 1);
        assert_eq!(
            open(&ring, &alice, &huge, &c.call, 999),
            Err(Refused::Unreadable)
        );
    }

    #[test]
    fn too_large_a_state_is_not_sealed() {
        let mut c = claims();
        c.answered = vec![("d".into(), json!({"big": "x".repeat(MAX_STATE_LEN)}))];
        assert_eq!(seal(&keyring(), "b", &c), None);
    }

    #[test]
    fn digests_are_canonical_and_tell_requests_apart() {
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": [1, 2]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b": [1, 2], "a": 1}"#).unwrap();
        assert_eq!(
            request_digest("sampling/createMessage", Some(&a)),
            request_digest("sampling/createMessage", Some(&b))
        );
        assert_ne!(
            request_digest("sampling/createMessage", Some(&a)),
            request_digest("elicitation/create", Some(&a))
        );
        assert_ne!(
            request_digest("roots/list", None),
            request_digest("roots/list", Some(&json!({})))
        );
    }
}
