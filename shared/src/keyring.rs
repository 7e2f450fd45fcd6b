//! The keyring as a process uses it: loaded at start from the local key file, or fetched on
//! first use from a secret (Lambda) and fetched again when a blob names a key this copy lacks
//! (the secret was rotated after this process loaded it). Built once per process by
//! `state::AppState` and shared by everything that seals (sessions, grants, links).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

use crate::config::KeyringConfig;
use crate::crypto::{Keyring, KeyringError};
use crate::secrets::{Secrets, SecretsError};

/// The keyring, loaded eagerly from a local file or lazily (first use) from a secret.
pub enum KeyringSource {
    /// Loaded at start from the local key file.
    Loaded(Arc<Keyring>),
    /// Fetched from a secret on first use, then kept for the process; fetched again when a
    /// blob names a key this copy lacks (the secret was rotated after this process loaded
    /// it), at most once per [`KEYRING_REFRESH_INTERVAL`].
    Secret {
        reference: crate::secrets::SecretRef,
        secrets: Arc<dyn Secrets>,
        ring: RwLock<Option<Arc<Keyring>>>,
        refreshed: std::sync::Mutex<Option<Instant>>,
    },
}

/// Bound on keyring refetches: a flood of blobs with made-up key ids must not become a flood
/// of Secrets Manager calls.
pub const KEYRING_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Why the keyring could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum KeyringSourceError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

impl KeyringSource {
    pub fn new(config: KeyringConfig, secrets: Arc<dyn Secrets>) -> Result<Self, KeyringError> {
        Ok(match config {
            KeyringConfig::File(path) => {
                Self::Loaded(Arc::new(Keyring::load_or_create_file(&path)?))
            }
            KeyringConfig::Secret(reference) => Self::Secret {
                reference,
                secrets,
                ring: RwLock::new(None),
                refreshed: std::sync::Mutex::new(None),
            },
        })
    }

    /// The keyring if it is loaded already, without waiting or fetching (the audit chain
    /// links records synchronously; before the first fetch they wait for the next flush).
    pub fn cached(&self) -> Option<Arc<Keyring>> {
        match self {
            Self::Loaded(ring) => Some(ring.clone()),
            Self::Secret { ring, .. } => ring.try_read().ok().and_then(|k| k.clone()),
        }
    }

    /// The keyring, fetching it on the first call.
    pub async fn get(&self) -> Result<Arc<Keyring>, KeyringSourceError> {
        match self {
            Self::Loaded(ring) => Ok(ring.clone()),
            Self::Secret {
                reference,
                secrets,
                ring,
                ..
            } => {
                if let Some(k) = ring.read().await.as_ref() {
                    return Ok(k.clone());
                }
                let mut slot = ring.write().await;
                if let Some(k) = slot.as_ref() {
                    return Ok(k.clone());
                }
                let doc = secrets.resolve(reference).await?;
                let k = Arc::new(Keyring::from_json(doc.expose())?);
                *slot = Some(k.clone());
                Ok(k)
            }
        }
    }

    /// A newer keyring after a blob named an unknown key: `None` when there is nothing newer
    /// to fetch (a local key file) or a refetch happened within the last interval.
    pub async fn refresh(&self) -> Option<Arc<Keyring>> {
        let Self::Secret {
            reference,
            secrets,
            ring,
            refreshed,
        } = self
        else {
            return None;
        };
        {
            let mut last = refreshed.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < KEYRING_REFRESH_INTERVAL) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let doc = match secrets.resolve_fresh(reference).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %crate::http::error_chain(&e), "keyring refetch failed");
                return None;
            }
        };
        match Keyring::from_json(doc.expose()) {
            Ok(k) => {
                let k = Arc::new(k);
                *ring.write().await = Some(k.clone());
                Some(k)
            }
            Err(e) => {
                tracing::warn!(error = %e, "refetched keyring document is invalid");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretRef;
    use crate::secrets::env::EnvSecrets;

    fn secrets(vars: &[(&str, &str)]) -> Arc<dyn Secrets> {
        Arc::new(EnvSecrets::from_map(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    #[tokio::test]
    async fn keyring_from_a_secret_is_fetched_on_first_use_and_opens_its_own_blobs() {
        let doc = r#"{"active":"k1","k1":"0123456789abcdef0123456789abcdef-material"}"#;
        let source = KeyringSource::new(
            KeyringConfig::Secret(SecretRef::parse("secret://gw/keyring").unwrap()),
            secrets(&[("MCPGW_SECRET_GW_KEYRING", doc)]),
        )
        .unwrap();
        let ring = source.get().await.unwrap();
        let blob = ring.seal(b"token", b"ctx").unwrap();
        assert_eq!(
            source.get().await.unwrap().open(&blob, b"ctx").unwrap(),
            b"token"
        );
        assert!(
            Arc::ptr_eq(&ring, &source.get().await.unwrap()),
            "fetched once, then reused"
        );
    }

    #[tokio::test]
    async fn missing_or_bad_keyring_secret_is_an_error_not_a_panic() {
        let missing = KeyringSource::new(
            KeyringConfig::Secret(SecretRef::parse("secret://nope").unwrap()),
            secrets(&[]),
        )
        .unwrap();
        assert!(matches!(
            missing.get().await,
            Err(KeyringSourceError::Secrets(_))
        ));
        let bad = KeyringSource::new(
            KeyringConfig::Secret(SecretRef::parse("secret://bad").unwrap()),
            secrets(&[("MCPGW_SECRET_BAD", "not json")]),
        )
        .unwrap();
        assert!(matches!(
            bad.get().await,
            Err(KeyringSourceError::Keyring(_))
        ));
    }
}

#[cfg(test)]
mod keyring_tests {
    use super::*;
    use crate::secrets::{SecretRef, SecretValue};
    use async_trait::async_trait;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A secret whose value the test changes, counting fresh reads.
    struct Rotating {
        doc: Mutex<String>,
        fresh_reads: AtomicUsize,
    }

    #[async_trait]
    impl Secrets for Rotating {
        async fn resolve(&self, _: &SecretRef) -> Result<SecretValue, SecretsError> {
            Ok(SecretValue::new(self.doc.lock().unwrap().clone()))
        }
        async fn resolve_fresh(&self, r: &SecretRef) -> Result<SecretValue, SecretsError> {
            self.fresh_reads.fetch_add(1, Ordering::SeqCst);
            self.resolve(r).await
        }
    }

    #[tokio::test]
    async fn a_rotated_keyring_is_refetched_at_most_once_per_interval() {
        let secrets = Arc::new(Rotating {
            doc: Mutex::new(
                r#"{"active":"k1","k1":"first material, long enough for hkdf"}"#.into(),
            ),
            fresh_reads: AtomicUsize::new(0),
        });
        let reference = SecretRef::parse("secret://gw/keyring").unwrap();
        let source = KeyringSource::new(KeyringConfig::Secret(reference), secrets.clone()).unwrap();
        let old = source.get().await.unwrap();
        assert_eq!(old.active_key_id(), "k1");

        // Another process already seals with k2.
        let doc = r#"{"active":"k2","k1":"first material, long enough for hkdf","k2":"second material, long enough for hkdf"}"#;
        *secrets.doc.lock().unwrap() = doc.into();
        let sealed = Keyring::from_json(doc).unwrap().seal(b"x", b"c").unwrap();
        assert!(matches!(
            old.open(&sealed, b"c"),
            Err(KeyringError::UnknownKey(_))
        ));

        let newer = source.refresh().await.expect("a newer keyring");
        assert_eq!(newer.open(&sealed, b"c").unwrap(), b"x");
        assert_eq!(source.get().await.unwrap().active_key_id(), "k2");
        // A second unknown key within the interval costs no Secrets Manager call.
        assert!(source.refresh().await.is_none());
        assert_eq!(secrets.fresh_reads.load(Ordering::SeqCst), 1);

        let local = KeyringSource::Loaded(newer);
        assert!(
            local.refresh().await.is_none(),
            "a key file has nothing newer"
        );
    }
}
