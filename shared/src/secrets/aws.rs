//! Secrets from AWS Secrets Manager, with a per-secret TTL cache.
//!
//! Why a cache: a Lambda container serves many requests, and each request may resolve several
//! `secret://name#field` references to the same secret (client id, client secret, API key).
//! GetSecretValue costs money and ~10-50 ms, so the raw `SecretString` of each secret is kept
//! for `ttl` and every field is selected from the cached copy. The TTL bounds how long a
//! rotated secret can stay stale in a warm container.
//!
//! Why single-flight: when a warm container receives a burst of concurrent requests right after
//! an entry expires, only one of them should call Secrets Manager; the others wait for that call
//! and use its result.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;

use super::{SecretRef, SecretValue, Secrets, SecretsError, select_field};

/// A cached raw secret string (the whole `SecretString`, before field selection).
struct Cached {
    raw: SecretValue,
    fetched_at: Instant,
}

/// One slot per secret name. The async mutex is what makes the fetch single-flight: whoever
/// holds it is the only one fetching; later arrivals wait on it and then find a fresh value.
type Slot = Arc<AsyncMutex<Option<Cached>>>;

/// Resolves `secret://<name or ARN>[#field]` with GetSecretValue (AWSCURRENT), caching the raw
/// string of each secret for `ttl`.
pub struct SecretsManagerSecrets {
    client: Client,
    ttl: Duration,
    /// Name -> slot. A std mutex is enough here: it is held only to look up or insert a slot,
    /// never across an await. The map grows with the number of distinct secret names, which
    /// the gateway's configuration bounds.
    slots: StdMutex<HashMap<String, Slot>>,
    backend_calls: AtomicU64,
}

impl SecretsManagerSecrets {
    /// `ttl` is how long a fetched secret is served from memory; `Duration::ZERO` disables the
    /// cache (every resolve calls Secrets Manager).
    pub fn new(client: Client, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            slots: StdMutex::new(HashMap::new()),
            backend_calls: AtomicU64::new(0),
        }
    }

    /// How many GetSecretValue calls this instance has made, successful or not. Lets tests and
    /// benchmarks prove that the cache and single-flight work.
    pub fn backend_calls(&self) -> u64 {
        self.backend_calls.load(Ordering::Relaxed)
    }

    fn slot(&self, name: &str) -> Slot {
        // A poisoned lock only means another thread panicked while inserting; the map itself
        // is still consistent, so keep going rather than failing every later resolve.
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(name.to_owned()).or_default().clone()
    }

    /// The raw `SecretString` of `name`, from the cache when fresh, else from Secrets Manager.
    async fn raw(&self, name: &str) -> Result<SecretValue, SecretsError> {
        let slot = self.slot(name);
        // Held across the fetch on purpose (single-flight, see the module docs).
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && c.fetched_at.elapsed() < self.ttl
        {
            return Ok(c.raw.clone());
        }
        // Errors are not cached: a secret created (or a permission granted) after a failure
        // should be picked up by the next request, not after a TTL.
        let raw = self.fetch(name).await?;
        *cached = Some(Cached {
            raw: raw.clone(),
            fetched_at: Instant::now(),
        });
        Ok(raw)
    }

    /// Fetches `name` now and replaces the cached copy.
    async fn refetch(&self, name: &str) -> Result<SecretValue, SecretsError> {
        let slot = self.slot(name);
        let mut cached = slot.lock().await;
        let raw = self.fetch(name).await?;
        *cached = Some(Cached {
            raw: raw.clone(),
            fetched_at: Instant::now(),
        });
        Ok(raw)
    }

    async fn fetch(&self, name: &str) -> Result<SecretValue, SecretsError> {
        self.backend_calls.fetch_add(1, Ordering::Relaxed);
        let out = self
            .client
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .map_err(|e| map_sdk_error(name, e))?;
        match out.secret_string {
            Some(s) => Ok(SecretValue::new(s)),
            // Binary secrets (SecretBinary) are not supported: references resolve to strings.
            None => Err(SecretsError::NoString(name.to_owned())),
        }
    }
}

/// Turns an SDK error into a [`SecretsError`] whose text cannot hold a secret value.
///
/// The SDK error itself is not kept as the source: for a response that failed to parse it
/// carries the raw HTTP response, whose body (and so its `Debug`) may contain the secret.
/// Only the kind, the AWS error code and AWS's message are kept; none of these echo values.
fn map_sdk_error<R>(name: &str, err: SdkError<GetSecretValueError, R>) -> SecretsError {
    let detail = match &err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            if e.is_resource_not_found_exception() {
                return SecretsError::NotFound(name.to_owned());
            }
            format!(
                "service error {}: {}",
                e.code().unwrap_or("unknown"),
                e.message().unwrap_or("no message")
            )
        }
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        // Connection-level failures (DNS, TLS, refused): the source says which, no body exists.
        SdkError::DispatchFailure(f) => {
            let kind = if f.is_timeout() {
                "timeout"
            } else if f.is_io() {
                "io"
            } else {
                "other"
            };
            format!("dispatch failure ({kind})")
        }
        SdkError::ResponseError(_) => "unparseable response".to_owned(),
        SdkError::ConstructionFailure(_) => "request construction failed".to_owned(),
        _ => "unknown SDK error".to_owned(),
    };
    SecretsError::Backend(Box::new(BackendError {
        name: name.to_owned(),
        detail,
    }))
}

/// The redacted cause of a [`SecretsError::Backend`].
#[derive(Debug)]
struct BackendError {
    name: String,
    detail: String,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GetSecretValue for '{}' failed: {}",
            self.name, self.detail
        )
    }
}

impl std::error::Error for BackendError {}

/// Shows the configuration and counters, never cached values.
impl fmt::Debug for SecretsManagerSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsManagerSecrets")
            .field("ttl", &self.ttl)
            .field("backend_calls", &self.backend_calls())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Secrets for SecretsManagerSecrets {
    async fn resolve(&self, reference: &SecretRef) -> Result<SecretValue, SecretsError> {
        let raw = self.raw(reference.name()).await?;
        select_field(reference, raw.expose())
    }

    async fn resolve_fresh(&self, reference: &SecretRef) -> Result<SecretValue, SecretsError> {
        let raw = self.refetch(reference.name()).await?;
        select_field(reference, raw.expose())
    }
}
