//! Keyring, hashing and randomness, all on aws-lc-rs (the one crypto stack in the tree).
//!
//! The keyring seals OAuth tokens and flow state at rest with AES-256-GCM. Every blob names
//! the key id that sealed it, so after a rotation (new active key, old keys kept) old blobs
//! still open. Keys are derived with HKDF-SHA256 from the key material strings, which lets a
//! CloudFormation-generated password serve as key material.
//!
//! Keyring document (Secrets Manager secret or local key file), flat so CloudFormation's
//! `GenerateSecretString` can produce it:
//! `{"active":"k1","k1":"<at least 32 characters of random material>","k0":"<older key>"}`.

use std::collections::HashMap;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use aws_lc_rs::hkdf;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Blob layout: `MAGIC | kid_len (1 byte) | kid | nonce (12) | ciphertext+tag`.
const MAGIC: &[u8; 4] = b"mgk1";
const MIN_MATERIAL_LEN: usize = 32;
const HKDF_SALT: &[u8] = b"mcp-gateway keyring v1";

/// Why sealing or opening failed. Never carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("keyring document is invalid: {0}")]
    BadDocument(String),
    #[error("sealed blob is malformed")]
    Malformed,
    #[error("sealed blob was made with unknown key '{0}'")]
    UnknownKey(String),
    #[error("sealed blob failed authentication (tampered, or sealed for another context)")]
    Tampered,
    /// The key file could not be read or created; names the file, so an operator can tell
    /// which setting (`MCPGW_DATA_DIR`) points where.
    #[error("keyring file {} could not be read or written", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("crypto backend failed")]
    Crypto,
}

/// A set of AEAD keys by id, one of them active for sealing.
pub struct Keyring {
    active: String,
    keys: HashMap<String, LessSafeKey>,
    /// Keys audit records' argument hashes (derived from the active key's material, so a
    /// rotation starts a new hash space; see [`Keyring::audit_mac_hex`]).
    audit_mac: hmac::Key,
    /// Keys the audit records' chain hashes, one per key id (see
    /// [`Keyring::audit_chain_mac_hex`]): every key, not only the active one, so records
    /// linked before a rotation still verify after it.
    chain_macs: HashMap<String, hmac::Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &ids)
            .finish()
    }
}

fn derive_key(kid: &str, material: &str) -> Result<LessSafeKey, KeyringError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT);
    let prk = salt.extract(material.as_bytes());
    let info = [kid.as_bytes()];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| KeyringError::Crypto)?;
    let unbound: UnboundKey = okm.into();
    Ok(LessSafeKey::new(unbound))
}

/// The audit argument HMAC key of key `kid`: HKDF of its material under a label of its own,
/// so it is independent of the sealing key.
fn derive_mac_key(kid: &str, material: &str) -> Result<hmac::Key, KeyringError> {
    derive_labelled_mac_key(b"audit-arguments-hmac ", kid, material)
}

/// An HMAC key of key `kid` under `label`: HKDF of its material, independent of the sealing
/// key and of keys under other labels.
fn derive_labelled_mac_key(
    label: &[u8],
    kid: &str,
    material: &str,
) -> Result<hmac::Key, KeyringError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT);
    let prk = salt.extract(material.as_bytes());
    let info = [label, kid.as_bytes()];
    let okm = prk
        .expand(&info, hmac::HMAC_SHA256)
        .map_err(|_| KeyringError::Crypto)?;
    Ok(hmac::Key::from(okm))
}

impl Keyring {
    /// Lowercase hex HMAC-SHA256 of `data` under the audit argument key. Keyed because a
    /// plain hash of short arguments (a user id, a yes/no) is found by hashing guesses; this
    /// one only by someone holding the keyring. Equal arguments give equal hashes while the
    /// active key stays the same.
    pub fn audit_mac_hex(&self, data: &[u8]) -> String {
        let tag = hmac::sign(&self.audit_mac, data);
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Lowercase hex HMAC-SHA256 of `data` under the audit chain key of key `kid` (any key
    /// of the ring); `None` when the ring has no such key. Keyed so that whoever can only
    /// write the store cannot recompute a chain after changing a record.
    pub fn audit_chain_mac_hex(&self, kid: &str, data: &[u8]) -> Option<String> {
        let tag = hmac::sign(self.chain_macs.get(kid)?, data);
        Some(tag.as_ref().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Parses a keyring document (see the module docs).
    pub fn from_json(doc: &str) -> Result<Self, KeyringError> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(doc)
            .map_err(|_| KeyringError::BadDocument("not a JSON object".into()))?;
        let active = map
            .get("active")
            .and_then(|v| v.as_str())
            .ok_or_else(|| KeyringError::BadDocument("missing \"active\" key id".into()))?
            .to_owned();
        let mut keys = HashMap::new();
        let mut audit_mac = None;
        let mut chain_macs = HashMap::new();
        for (kid, v) in &map {
            if kid == "active" {
                continue;
            }
            let material = v
                .as_str()
                .ok_or_else(|| KeyringError::BadDocument(format!("key '{kid}' is not a string")))?;
            if material.len() < MIN_MATERIAL_LEN {
                return Err(KeyringError::BadDocument(format!(
                    "key '{kid}' needs at least {MIN_MATERIAL_LEN} characters of material"
                )));
            }
            if kid.is_empty() || kid.len() > 64 {
                return Err(KeyringError::BadDocument(
                    "key ids must be 1 to 64 characters".into(),
                ));
            }
            keys.insert(kid.clone(), derive_key(kid, material)?);
            chain_macs.insert(
                kid.clone(),
                derive_labelled_mac_key(b"audit-chain-hmac ", kid, material)?,
            );
            if *kid == active {
                audit_mac = Some(derive_mac_key(kid, material)?);
            }
        }
        let Some(audit_mac) = audit_mac.filter(|_| keys.contains_key(&active)) else {
            return Err(KeyringError::BadDocument(format!(
                "active key '{active}' is not in the keyring"
            )));
        };
        Ok(Self {
            active,
            keys,
            audit_mac,
            chain_macs,
        })
    }

    /// A new keyring document with one random key, `k1`, active.
    pub fn generate_document() -> String {
        serde_json::json!({"active": "k1", "k1": random_token(32)}).to_string()
    }

    /// Loads the key file at `path`, creating it (mode 0600) with a fresh key if absent.
    pub fn load_or_create_file(path: &Path) -> Result<Self, KeyringError> {
        match std::fs::read_to_string(path) {
            Ok(doc) => Self::from_json(&doc),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Self::generate_document();
                write_private_file(path, doc.as_bytes()).map_err(|source| KeyringError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_json(&doc)
            }
            Err(source) => Err(KeyringError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Encrypts `plaintext` with the active key. `context` is authenticated but not stored:
    /// the same context must be given to [`Keyring::open`], which binds a blob to its owner
    /// (a grant sealed for alice cannot be replayed as bob's).
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let key = &self.keys[&self.active];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeyringError::Crypto)?;
        let mut out = Vec::with_capacity(
            MAGIC.len() + 1 + self.active.len() + NONCE_LEN + plaintext.len() + 16,
        );
        out.extend_from_slice(MAGIC);
        out.push(self.active.len() as u8);
        out.extend_from_slice(self.active.as_bytes());
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut body,
        )
        .map_err(|_| KeyringError::Crypto)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts a blob made by [`Keyring::seal`] with any key still in the ring.
    pub fn open(&self, blob: &[u8], context: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let rest = blob
            .strip_prefix(MAGIC.as_slice())
            .ok_or(KeyringError::Malformed)?;
        let (&kid_len, rest) = rest.split_first().ok_or(KeyringError::Malformed)?;
        let kid_len = kid_len as usize;
        if rest.len() < kid_len + NONCE_LEN + 16 {
            return Err(KeyringError::Malformed);
        }
        let (kid, rest) = rest.split_at(kid_len);
        let kid = std::str::from_utf8(kid).map_err(|_| KeyringError::Malformed)?;
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| KeyringError::UnknownKey(kid.to_owned()))?;
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyringError::Malformed)?;
        let mut buf = ciphertext.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .map_err(|_| KeyringError::Tampered)?;
        Ok(plain.to_vec())
    }
}

/// Creates `dir` (and parents) accessible by its owner only; an existing folder is left as it
/// is, so an operator's own choice of permissions stands.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes a file readable by its owner only, creating parent folders.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Selects aws-lc-rs as rustls' crypto provider for the process (reqwest and the AWS SDK
/// share rustls; without a chosen provider reqwest panics). Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// `n` random bytes, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // The system RNG failing is not recoverable; aws-lc-rs reports it only when the OS has no
    // entropy source at all.
    SystemRandom::new()
        .fill(&mut buf)
        .expect("system random number generator");
    URL_SAFE_NO_PAD.encode(buf)
}

/// Lowercase hex SHA-256. API keys carry 256 bits of entropy, so a plain hash (no salt, no
/// slow KDF) is enough to make a leaked table useless, and it keeps lookup to one index read.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A PKCE pair (RFC 7636): a random verifier and its S256 challenge.
pub fn pkce_s256() -> (String, String) {
    let verifier = random_token(32);
    let challenge = s256_challenge(&verifier);
    (verifier, challenge)
}

/// The S256 code challenge of `verifier`.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref())
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s256_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let (v, c) = pkce_s256();
        assert_eq!(s256_challenge(&v), c);
        assert!(v.len() >= 43);
    }

    fn ring(doc: serde_json::Value) -> Keyring {
        Keyring::from_json(&doc.to_string()).unwrap()
    }
    const M1: &str = "material-one-material-one-material-one";
    const M2: &str = "material-two-material-two-material-two";

    #[test]
    fn seal_then_open_round_trips_with_context() {
        let k = ring(serde_json::json!({"active":"k1","k1":M1}));
        let blob = k.seal(b"refresh-token", b"grant:alice:gh").unwrap();
        assert!(
            !blob.windows(13).any(|w| w == b"refresh-token"),
            "plaintext must not appear"
        );
        assert_eq!(k.open(&blob, b"grant:alice:gh").unwrap(), b"refresh-token");
        assert!(matches!(
            k.open(&blob, b"grant:bob:gh"),
            Err(KeyringError::Tampered)
        ));
    }

    #[test]
    fn old_keys_open_after_rotation_and_new_blobs_use_new_key() {
        let old = ring(serde_json::json!({"active":"k1","k1":M1}));
        let blob = old.seal(b"x", b"").unwrap();
        let rotated = ring(serde_json::json!({"active":"k2","k1":M1,"k2":M2}));
        assert_eq!(rotated.open(&blob, b"").unwrap(), b"x");
        let fresh = rotated.seal(b"y", b"").unwrap();
        assert!(matches!(old.open(&fresh, b""), Err(KeyringError::UnknownKey(k)) if k == "k2"));
    }

    #[test]
    fn tampered_and_foreign_blobs_are_rejected() {
        let k = ring(serde_json::json!({"active":"k1","k1":M1}));
        let mut blob = k.seal(b"secret", b"").unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        assert!(matches!(k.open(&blob, b""), Err(KeyringError::Tampered)));
        // Same key id, different material: a foreign keyring's blob.
        let other = ring(serde_json::json!({"active":"k1","k1":M2}));
        let foreign = other.seal(b"secret", b"").unwrap();
        assert!(matches!(k.open(&foreign, b""), Err(KeyringError::Tampered)));
        for junk in [&b""[..], b"mgk1", b"garbage", b"mgk1\x05k1"] {
            assert!(
                matches!(k.open(junk, b""), Err(KeyringError::Malformed)),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn bad_documents_are_rejected() {
        for doc in [
            "[]",
            "{}",
            r#"{"active":"k1"}"#,
            r#"{"active":"k1","k1":"short"}"#,
            r#"{"active":"k2","k1":"material-one-material-one-material-one"}"#,
        ] {
            assert!(Keyring::from_json(doc).is_err(), "{doc}");
        }
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/keyring.json");
        let k1 = Keyring::load_or_create_file(&path).unwrap();
        let blob = k1.seal(b"v", b"").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let k2 = Keyring::load_or_create_file(&path).unwrap();
        assert_eq!(k2.open(&blob, b"").unwrap(), b"v");
    }

    #[test]
    fn private_dirs_are_owner_only_and_existing_ones_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("a/b");
        create_private_dir(&new).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&new).unwrap().permissions().mode() & 0o777,
                0o700
            );
            std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o750)).unwrap();
            create_private_dir(&new).unwrap();
            assert_eq!(
                std::fs::metadata(&new).unwrap().permissions().mode() & 0o777,
                0o750
            );
        }
    }

    #[test]
    fn hashing_and_tokens() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (a, b) = (random_token(32), random_token(32));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"samE"));
        assert!(!constant_time_eq(b"same", b"sam"));
    }
}
