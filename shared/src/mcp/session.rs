//! The gateway's `Mcp-Session-Id`: a sealed (AEAD, keyring) record of who opened the session,
//! for which endpoint, at which version, with which upstream session, until when. Any process
//! can serve any request of the session because everything is in the id; nobody else can use
//! it because the user is checked on every request and the endpoint is bound into the
//! encryption context; nobody can read or alter it because it is sealed.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::UnixTime;
use crate::crypto::{Keyring, KeyringError};

/// Longest session id accepted before any decryption is attempted (client capabilities are
/// small; a few KB is generous and keeps the header under common proxy limits).
pub const MAX_ID_LEN: usize = 8 * 1024;

/// How the gateway reaches the upstream for this session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "era", rename_all = "snake_case")]
pub enum UpstreamLink {
    /// A session-era upstream; `session_id` is the upstream's own (absent when it runs without
    /// sessions), `version` what it negotiated.
    Session {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        version: String,
    },
    /// A stateless-era upstream: every request carries the client's envelope.
    Modern,
    /// A virtual server: the gateway is the server; its upstreams are reached through the
    /// gateway's own per-(user, server) sessions.
    Virtual,
    /// Opened by the gateway alone because the caller had no credential for the upstream yet
    /// (an OAuth2 grant or a stored token): the gateway answers in-band with a connect prompt
    /// until the credential exists, then opens the upstream session with the client's
    /// original parameters.
    Pending,
}

/// What the client said in `initialize`, kept to re-initialize the upstream transparently
/// and to build envelopes for a stateless-era upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInit {
    pub capabilities: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_info: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionClaims {
    pub user: String,
    pub endpoint: String,
    /// The version negotiated with the client.
    pub version: String,
    pub upstream: UpstreamLink,
    /// Which upstream URL the session was opened against ([`upstream_fingerprint`]): an
    /// endpoint re-pointed at another server must not receive the old one's session id.
    pub upstream_url: String,
    pub client: ClientInit,
    pub expires_at: UnixTime,
}

/// A short digest of an upstream URL, for [`SessionClaims::upstream_url`].
pub fn upstream_fingerprint(url: &str) -> String {
    crate::crypto::sha256_hex(url.as_bytes())[..16].to_owned()
}

/// Why a presented session id is not usable. Every variant answers the same 404: the caller
/// learns only that it must initialize again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionRejected {
    #[error("session id is malformed or was not issued by this gateway")]
    Unreadable,
    #[error("session belongs to another caller")]
    OtherCaller,
    #[error("session has expired")]
    Expired,
    /// Sealed with a key this process's keyring lacks: the keyring may have been rotated
    /// since it was loaded (worth one refetch), or the id is forged.
    #[error("session was sealed with an unknown key")]
    UnknownKey,
}

fn context(endpoint: &str) -> Vec<u8> {
    format!("mcpgw/session/v1|{endpoint}").into_bytes()
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Seals `claims` into a session id (URL-safe base64, visible ASCII as the spec requires).
pub fn seal(keyring: &Keyring, claims: &SessionClaims) -> Result<String, KeyringError> {
    let plain = serde_json::to_vec(claims).expect("session claims serialize");
    Ok(B64.encode(keyring.seal(&plain, &context(&claims.endpoint))?))
}

/// Opens a session id presented for `endpoint` by `user` at `now`.
pub fn open(
    keyring: &Keyring,
    id: &str,
    endpoint: &str,
    user: &str,
    now: UnixTime,
) -> Result<SessionClaims, SessionRejected> {
    if id.len() > MAX_ID_LEN {
        return Err(SessionRejected::Unreadable);
    }
    let blob = B64.decode(id).map_err(|_| SessionRejected::Unreadable)?;
    // A session for another endpoint fails here: the endpoint is part of the AEAD context.
    let plain = keyring
        .open(&blob, &context(endpoint))
        .map_err(|e| match e {
            KeyringError::UnknownKey(_) => SessionRejected::UnknownKey,
            _ => SessionRejected::Unreadable,
        })?;
    let claims: SessionClaims =
        serde_json::from_slice(&plain).map_err(|_| SessionRejected::Unreadable)?;
    if claims.endpoint != endpoint {
        return Err(SessionRejected::Unreadable);
    }
    if claims.user != user {
        return Err(SessionRejected::OtherCaller);
    }
    if claims.expires_at <= now {
        return Err(SessionRejected::Expired);
    }
    Ok(claims)
}

/// A short, non-reversible handle for a session id (process-local maps, log lines).
pub fn fingerprint(id: &str) -> String {
    crate::crypto::sha256_hex(id.as_bytes())[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ring() -> Keyring {
        Keyring::from_json(&Keyring::generate_document()).unwrap()
    }

    fn claims() -> SessionClaims {
        SessionClaims {
            user: "alice@example.com".into(),
            endpoint: "docs".into(),
            version: "2025-11-25".into(),
            upstream: UpstreamLink::Session {
                session_id: Some("up-1".into()),
                version: "2025-06-18".into(),
            },
            upstream_url: upstream_fingerprint("http://up.example/mcp"),
            client: ClientInit {
                capabilities: json!({"elicitation": {}}),
                client_info: Some(json!({"name": "c", "version": "1"})),
            },
            expires_at: 1_000,
        }
    }

    #[test]
    fn round_trip_and_every_refusal() {
        let k = ring();
        let id = seal(&k, &claims()).unwrap();
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert!(!id.contains("alice"), "claims are not readable");
        assert_eq!(
            open(&k, &id, "docs", "alice@example.com", 999).unwrap(),
            claims()
        );
        assert_eq!(
            open(&k, &id, "docs", "bob@example.com", 999),
            Err(SessionRejected::OtherCaller)
        );
        assert_eq!(
            open(&k, &id, "other", "alice@example.com", 999),
            Err(SessionRejected::Unreadable)
        );
        assert_eq!(
            open(&k, &id, "docs", "alice@example.com", 1_000),
            Err(SessionRejected::Expired)
        );
        assert_eq!(
            open(&ring(), &id, "docs", "alice@example.com", 999),
            Err(SessionRejected::Unreadable)
        );
        // Flip one character anywhere: never accepted.
        for i in [0, id.len() / 2, id.len() - 1] {
            let mut bytes = id.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(open(&k, &tampered, "docs", "alice@example.com", 999).is_err());
        }
        assert_eq!(
            open(&k, "not base64!", "docs", "alice@example.com", 0),
            Err(SessionRejected::Unreadable)
        );
        assert_eq!(
            open(&k, &"A".repeat(MAX_ID_LEN + 1), "docs", "a", 0),
            Err(SessionRejected::Unreadable)
        );
    }

    #[test]
    fn modern_link_serializes_compactly() {
        let mut c = claims();
        c.upstream = UpstreamLink::Modern;
        let k = ring();
        let id = seal(&k, &c).unwrap();
        assert_eq!(
            open(&k, &id, "docs", "alice@example.com", 0)
                .unwrap()
                .upstream,
            UpstreamLink::Modern
        );
        assert_eq!(fingerprint(&id).len(), 16);
    }
}
