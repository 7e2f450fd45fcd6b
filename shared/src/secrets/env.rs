//! Secrets from environment variables, for local mode: `secret://<name>[#field]` reads
//! `MCPGW_SECRET_<NAME>`, where `<NAME>` is the name upper-cased with each of `-` `.` `/` `:`
//! replaced by `_` (so `secret://prod/echo-key` reads `MCPGW_SECRET_PROD_ECHO_KEY`).

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;

use super::{SecretRef, SecretValue, Secrets, SecretsError, select_field};

/// Prefix of the variables this adapter reads; anything else in the environment is ignored,
/// so the snapshot never holds unrelated (possibly sensitive) variables.
const PREFIX: &str = "MCPGW_SECRET_";

/// Resolves secrets from a snapshot of `MCPGW_SECRET_*` variables.
///
/// The snapshot is taken once, at construction: the process environment is not read again,
/// because reading it while another thread writes it is unsound, and because a fixed map makes
/// the adapter behave the same for the life of the process.
pub struct EnvSecrets {
    /// Variable name -> value. Values are held as [`SecretValue`] so even the map cannot be
    /// printed by accident.
    vars: HashMap<String, SecretValue>,
}

impl EnvSecrets {
    /// Snapshots the `MCPGW_SECRET_*` variables of the process environment. Variables whose
    /// name or value is not UTF-8 are skipped (they could never be matched anyway).
    pub fn from_env() -> Self {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(PREFIX));
        Self::build(vars)
    }

    /// Builds the adapter from an explicit map of variable names (`MCPGW_SECRET_...`) to values,
    /// as they would appear in the environment. For tests: mutating the real environment is
    /// `unsafe` in edition 2024 and races with other tests.
    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Self::build(vars)
    }

    fn build(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k, SecretValue::new(v)))
                .collect(),
        }
    }

    /// The variable a secret name is read from: `MCPGW_SECRET_` + the name upper-cased, with
    /// the separators that are legal in Secrets Manager names but not in shell variable names
    /// (`-` `.` `/` `:`) turned into `_`.
    pub fn var_name(secret_name: &str) -> String {
        let mangled: String = secret_name
            .chars()
            .map(|c| match c {
                '-' | '.' | '/' | ':' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        format!("{PREFIX}{mangled}")
    }
}

/// Lists the variable names only, never the values.
impl fmt::Debug for EnvSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("EnvSecrets").field("vars", &names).finish()
    }
}

#[async_trait]
impl Secrets for EnvSecrets {
    async fn resolve(&self, reference: &SecretRef) -> Result<SecretValue, SecretsError> {
        let raw = self
            .vars
            .get(&Self::var_name(reference.name()))
            .ok_or_else(|| SecretsError::NotFound(reference.name().to_owned()))?;
        select_field(reference, raw.expose())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> EnvSecrets {
        EnvSecrets::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    async fn resolve(s: &EnvSecrets, r: &str) -> Result<SecretValue, SecretsError> {
        s.resolve(&SecretRef::parse(r).unwrap()).await
    }

    #[test]
    fn var_names_are_mangled() {
        assert_eq!(
            EnvSecrets::var_name("prod/echo-key"),
            "MCPGW_SECRET_PROD_ECHO_KEY"
        );
        assert_eq!(EnvSecrets::var_name("a.b:c"), "MCPGW_SECRET_A_B_C");
        assert_eq!(
            EnvSecrets::var_name("Already_OK9"),
            "MCPGW_SECRET_ALREADY_OK9"
        );
    }

    #[tokio::test]
    async fn resolves_plain_values_and_fields() {
        let s = secrets(&[
            ("MCPGW_SECRET_PROD_ECHO_KEY", "plain-value"),
            (
                "MCPGW_SECRET_OAUTH",
                r#"{"client_id":"cid","client_secret":"cs","n":7}"#,
            ),
        ]);
        assert_eq!(
            resolve(&s, "secret://prod/echo-key")
                .await
                .unwrap()
                .expose(),
            "plain-value"
        );
        // Any mix of cases and separators maps to the same variable.
        assert_eq!(
            resolve(&s, "secret://Prod.Echo-Key")
                .await
                .unwrap()
                .expose(),
            "plain-value"
        );
        assert_eq!(
            resolve(&s, "secret://oauth#client_secret")
                .await
                .unwrap()
                .expose(),
            "cs"
        );
        assert_eq!(resolve(&s, "secret://oauth#n").await.unwrap().expose(), "7");
    }

    #[tokio::test]
    async fn errors_name_the_secret_not_the_value() {
        let s = secrets(&[
            ("MCPGW_SECRET_OAUTH", r#"{"client_id":"cid"}"#),
            ("MCPGW_SECRET_RAW", "s3cr3t"),
        ]);
        match resolve(&s, "secret://nope").await {
            Err(SecretsError::NotFound(name)) => assert_eq!(name, "nope"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        let e = resolve(&s, "secret://oauth#client_secret")
            .await
            .unwrap_err();
        assert!(
            matches!(&e, SecretsError::FieldMissing { name, field } if name == "oauth" && field == "client_secret")
        );
        let e = resolve(&s, "secret://raw#field").await.unwrap_err();
        assert!(matches!(e, SecretsError::NotJson(_)));
        assert!(!e.to_string().contains("s3cr3t"));
    }

    #[tokio::test]
    async fn nothing_prints_values() {
        let s = secrets(&[("MCPGW_SECRET_RAW", "s3cr3t")]);
        let v = resolve(&s, "secret://raw").await.unwrap();
        let printed = format!("{s:?} {v:?} {v}");
        assert!(printed.contains("MCPGW_SECRET_RAW"), "{printed}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
    }

    #[test]
    fn from_env_keeps_only_prefixed_vars() {
        // Read-only use of the real environment: PATH exists everywhere and must not be taken.
        let s = EnvSecrets::from_env();
        assert!(s.vars.keys().all(|k| k.starts_with(PREFIX)));
    }
}
