//! The secrets port: resolves `secret://name[#field]` references to values. Adapters: AWS
//! Secrets Manager with a TTL cache ([`aws::SecretsManagerSecrets`]) and environment variables
//! for local mode ([`env::EnvSecrets`]). Values are wrapped in [`SecretValue`], whose `Debug`
//! and `Display` print a placeholder, so a secret cannot reach a log line by accident.

pub mod aws;
pub mod env;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A reference to a secret: `secret://<name>` or `secret://<name>#<json-field>`. The name is a
/// Secrets Manager name or ARN in AWS, or the suffix of `MCPGW_SECRET_<NAME>` locally.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    name: String,
    field: Option<String>,
}

const SCHEME: &str = "secret://";

impl SecretRef {
    pub fn parse(s: &str) -> Result<Self, SecretsError> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| SecretsError::BadReference(format!("must start with {SCHEME}")))?;
        let (name, field) = match rest.split_once('#') {
            Some((n, f)) => (n, Some(f)),
            None => (rest, None),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 2048
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-:".contains(&b));
        if !name_ok {
            return Err(SecretsError::BadReference(
                "secret name must be non-empty and use letters, digits and /_+=.@-:".into(),
            ));
        }
        if field.is_some_and(|f| f.is_empty()) {
            return Err(SecretsError::BadReference("empty field after '#'".into()));
        }
        Ok(Self {
            name: name.to_owned(),
            field: field.map(str::to_owned),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{SCHEME}{}#{field}", self.name),
            None => write!(f, "{SCHEME}{}", self.name),
        }
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Which secrets server configurations may reference. In AWS the functions' IAM role can read
/// both operator secrets (`mcpgw/*`) and the gateway's own (keyring, bootstrap admin key), and
/// IAM cannot tell the uses apart; so a server's `secret://` reference must name a secret under
/// the operator prefix, or an admin could make the proxy send the keyring to an upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretScope {
    prefix: Option<String>,
    /// The gateway's own secrets (keyring, bootstrap admin key): never allowed, whatever the
    /// prefix, so even an unrestricted scope cannot hand them to an upstream.
    reserved: Vec<String>,
}

impl SecretScope {
    /// Every reference is allowed (local mode, where secrets are env vars the operator set).
    pub fn unrestricted() -> Self {
        Self {
            prefix: None,
            reserved: Vec::new(),
        }
    }

    /// Only names starting with `prefix` (or ARNs whose secret name does) are allowed.
    pub fn prefixed(prefix: impl Into<String>) -> Self {
        Self {
            prefix: Some(prefix.into()),
            reserved: Vec::new(),
        }
    }

    /// Also refuses the secret `reference` names (with any `#field`).
    pub fn reserve(mut self, reference: &SecretRef) -> Self {
        self.reserved.push(reference.name().to_owned());
        self
    }

    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// Whether a server configuration may use `reference`.
    pub fn permits(&self, reference: &SecretRef) -> bool {
        if self.reserved.iter().any(|r| r == reference.name()) {
            return false;
        }
        let Some(prefix) = &self.prefix else {
            return true;
        };
        let name = reference.name();
        // arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME-SUFFIX
        let name = match name.strip_prefix("arn:") {
            Some(rest) => {
                let parts: Vec<&str> = rest.splitn(6, ':').collect();
                match parts.as_slice() {
                    [_, "secretsmanager", _, _, "secret", n] => *n,
                    _ => return false,
                }
            }
            None => name,
        };
        name.starts_with(prefix.as_str())
    }
}

/// A secret value. Never printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The value itself; call only where it leaves the process (an upstream header, a cipher).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a secret could not be resolved. Messages name the secret, never its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("invalid secret reference: {0}")]
    BadReference(String),
    #[error("secret '{0}' not found")]
    NotFound(String),
    #[error("secret '{name}' has no field '{field}'")]
    FieldMissing { name: String, field: String },
    #[error("secret '{0}' is not a JSON object, so a field cannot be selected")]
    NotJson(String),
    #[error("secret '{0}' has no string value")]
    NoString(String),
    #[error("secrets backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Resolves secret references.
#[async_trait]
pub trait Secrets: Send + Sync {
    async fn resolve(&self, reference: &SecretRef) -> Result<SecretValue, SecretsError>;

    /// Resolves bypassing any cache (and refreshing it): for a value known to be stale, such
    /// as a keyring that lacks a key another process already seals with.
    async fn resolve_fresh(&self, reference: &SecretRef) -> Result<SecretValue, SecretsError> {
        self.resolve(reference).await
    }
}

/// Applies the `#field` selection to a secret's raw string: the whole string without a field,
/// else the named member of the JSON object (strings as they are, other JSON as text).
pub(crate) fn select_field(reference: &SecretRef, raw: &str) -> Result<SecretValue, SecretsError> {
    let Some(field) = reference.field() else {
        return Ok(SecretValue::new(raw));
    };
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw).map_err(|_| SecretsError::NotJson(reference.name().into()))?;
    match obj.get(field) {
        Some(serde_json::Value::String(s)) => Ok(SecretValue::new(s.clone())),
        Some(other) => Ok(SecretValue::new(other.to_string())),
        None => Err(SecretsError::FieldMissing {
            name: reference.name().into(),
            field: field.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_references() {
        let r = SecretRef::parse("secret://prod/echo-key#token").unwrap();
        assert_eq!((r.name(), r.field()), ("prod/echo-key", Some("token")));
        assert_eq!(r.to_string(), "secret://prod/echo-key#token");
        let arn = "secret://arn:aws:secretsmanager:eu-west-1:123:secret:k-AbC";
        assert_eq!(SecretRef::parse(arn).unwrap().to_string(), arn);
        for bad in [
            "plain",
            "secret://",
            "secret://a b",
            "secret://x#",
            "http://x",
        ] {
            assert!(SecretRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scope_limits_references_to_the_operator_prefix() {
        let scope = SecretScope::prefixed("mcpgw/");
        let ok = |s: &str| scope.permits(&SecretRef::parse(s).unwrap());
        assert!(ok("secret://mcpgw/github#token"));
        assert!(ok(
            "secret://arn:aws:secretsmanager:eu-west-1:123456789012:secret:mcpgw/github-AbCdEf"
        ));
        assert!(!ok("secret://KeyringSecret-abc"));
        assert!(!ok(
            "secret://arn:aws:secretsmanager:eu-west-1:123456789012:secret:KeyringSecret-AbCdEf"
        ));
        assert!(!ok(
            "secret://arn:aws:secretsmanager:eu-west-1:123456789012:mcpgw/x"
        ));
        assert!(!ok("secret://other/mcpgw/x"));
        assert!(
            SecretScope::unrestricted().permits(&SecretRef::parse("secret://anything").unwrap())
        );
        let keyring = SecretRef::parse("secret://gw-keyring").unwrap();
        let open = SecretScope::unrestricted().reserve(&keyring);
        assert!(!open.permits(&SecretRef::parse("secret://gw-keyring#k1").unwrap()));
        assert!(open.permits(&SecretRef::parse("secret://other").unwrap()));
    }

    #[test]
    fn secret_values_do_not_print() {
        let v = SecretValue::new("hunter2");
        assert!(!format!("{v:?} {v}").contains("hunter2"));
        assert_eq!(v.expose(), "hunter2");
    }

    #[test]
    fn field_selection() {
        let r = SecretRef::parse("secret://s#token").unwrap();
        assert_eq!(
            select_field(&r, r#"{"token":"t","n":1}"#).unwrap().expose(),
            "t"
        );
        let n = SecretRef::parse("secret://s#n").unwrap();
        assert_eq!(
            select_field(&n, r#"{"token":"t","n":1}"#).unwrap().expose(),
            "1"
        );
        let m = SecretRef::parse("secret://s#missing").unwrap();
        assert!(matches!(
            select_field(&m, "{}"),
            Err(SecretsError::FieldMissing { .. })
        ));
        assert!(matches!(
            select_field(&r, "not json"),
            Err(SecretsError::NotJson(_))
        ));
        let whole = SecretRef::parse("secret://s").unwrap();
        assert_eq!(select_field(&whole, "raw").unwrap().expose(), "raw");
    }
}
