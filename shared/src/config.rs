//! Process configuration, read once at start from the environment (INTERFACE.md lists the
//! variables). Lambda and local mode differ only in defaults: in Lambda
//! (`AWS_LAMBDA_RUNTIME_API` set) the store is DynamoDB and secrets come from Secrets Manager.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::secrets::{SecretRef, SecretScope, SecretValue};

/// Where the store lives.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreBackend {
    Sqlite {
        path: PathBuf,
    },
    Dynamo {
        table: String,
        create_if_missing: bool,
    },
}

/// Where `secret://` references resolve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SecretsBackend {
    Env,
    Aws,
}

/// Where the keyring comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyringConfig {
    /// A local key file, created with a fresh key on first start.
    File(PathBuf),
    /// A secret holding the keyring document, fetched on first use.
    Secret(SecretRef),
}

/// How the bootstrap admin key is known.
#[derive(Debug, Clone, PartialEq)]
pub enum BootstrapAdmin {
    /// `MCPGW_BOOTSTRAP_ADMIN_KEY`: this exact value is an admin key.
    Value(SecretValue),
    /// `MCPGW_BOOTSTRAP_ADMIN_KEY_SECRET`: the secret's value is an admin key (Lambda).
    Secret(SecretRef),
    /// Local mode without a value: generate one on first start and print it once.
    GenerateIfAbsent,
    /// No bootstrap key.
    Disabled,
}

/// Everything a function needs to build its state.
#[derive(Debug, Clone)]
pub struct Config {
    pub in_lambda: bool,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Base URL clients use, without a trailing slash.
    pub public_url: String,
    /// `scheme://host[:port]` of the public URL, as browsers send it in `Origin`.
    pub public_origin: String,
    /// Whether the public URL names a loopback host (a local gateway).
    pub public_is_loopback: bool,
    pub store: StoreBackend,
    pub secrets: SecretsBackend,
    pub secrets_cache_ttl: Duration,
    /// Which secrets server configurations may reference.
    pub secret_scope: SecretScope,
    pub keyring: KeyringConfig,
    pub bootstrap_admin: BootstrapAdmin,
    /// Lowercased emails holding the admin role.
    pub admin_emails: Vec<String>,
    /// Largest request body accepted on any route.
    pub max_body_bytes: usize,
    /// How long a server's configuration is reused before it is read again.
    pub server_cache_ttl: Duration,
    /// How long the proxy waits for an upstream's response headers.
    pub upstream_header_timeout: Duration,
    /// Bound on a whole proxied call, its streamed answer included.
    pub upstream_call_timeout: Duration,
    /// Whether `GET /mcp/{endpoint}` may hold an SSE stream open (not under buffered Lambda).
    pub allow_get_stream: bool,
    /// How long a gateway MCP session id stays valid.
    pub session_ttl: Duration,
    /// Browser origins allowed to call `/mcp` besides the public URL's own (lowercased,
    /// no trailing slash).
    pub allowed_origins: Vec<String>,
    /// How long an authenticated API key is served from memory (0: every request reads the
    /// store).
    pub key_cache_ttl: Duration,
    /// How long the access-control policy (teams, server groups, virtual servers) is reused
    /// before it is read again: changes made through another process apply within this.
    pub policy_cache_ttl: Duration,
    /// An identity provider configured by environment (the SAM template's parameters), in
    /// addition to those registered through the admin API.
    pub identity_provider: Option<crate::domain::IdentityProvider>,
    /// Connection limits of the local HTTP server (slow or idle clients, connection cap).
    pub server_limits: ServerLimits,
    /// Which addresses outbound requests may reach (`MCPGW_EGRESS_*`, see `egress`).
    pub egress: crate::egress::EgressPolicy,
    /// EMF namespace and the metrics listener (`MCPGW_METRICS_*`, see `metrics`).
    pub metrics: crate::metrics::MetricsConfig,
    /// Span export (`OTEL_EXPORTER_OTLP_*`, see `trace::otlp`).
    pub otlp: Option<crate::trace::otlp::OtlpConfig>,
    /// Trace context passthrough (`MCPGW_TRACESTATE_FORWARD`, see `trace`).
    pub trace: crate::trace::TraceConfig,
    /// How long audit records are kept (`MCPGW_AUDIT_RETENTION_DAYS`, default 90).
    pub audit_retention: Duration,
}

/// Longest gateway MCP session lifetime (30 days). Session expiries are computed as
/// `now + ttl` in signed seconds, so the setting is bounded well inside that range.
pub const MAX_SESSION_TTL_SECONDS: u64 = 30 * 86_400;

/// A setting that is present but unusable.
#[derive(Debug, thiserror::Error)]
#[error("configuration error in {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

impl Config {
    /// The path of the public URL (`/prod` behind a REST API stage, empty at a root): the
    /// prefix of every link within the gateway's own pages.
    pub fn public_path(&self) -> String {
        url::Url::parse(&self.public_url)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default()
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Reads settings through `get`, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let in_lambda = get("AWS_LAMBDA_RUNTIME_API").is_some();
        let listen: SocketAddr = get("MCPGW_LISTEN")
            .unwrap_or_else(|| "127.0.0.1:8787".into())
            .parse()
            .map_err(|_| err("MCPGW_LISTEN", "expected HOST:PORT, e.g. 127.0.0.1:8787"))?;
        let data_dir =
            PathBuf::from(get("MCPGW_DATA_DIR").unwrap_or_else(|| "./.mcp-gateway".into()));
        let public_url = get("MCPGW_PUBLIC_URL").unwrap_or_else(|| format!("http://{listen}"));
        let parsed =
            url::Url::parse(&public_url).map_err(|e| err("MCPGW_PUBLIC_URL", e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(err("MCPGW_PUBLIC_URL", "must be an http or https URL"));
        }
        let public_url = public_url.trim_end_matches('/').to_owned();
        let public_origin = parsed.origin().ascii_serialization().to_ascii_lowercase();
        let public_is_loopback = match parsed.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };

        let store_kind = get("MCPGW_STORE")
            .unwrap_or_else(|| if in_lambda { "dynamodb" } else { "sqlite" }.into());
        let store = match store_kind.as_str() {
            "sqlite" => StoreBackend::Sqlite {
                path: data_dir.join("gateway.sqlite3"),
            },
            "dynamodb" => StoreBackend::Dynamo {
                table: get("MCPGW_TABLE_NAME")
                    .ok_or_else(|| err("MCPGW_TABLE_NAME", "required with the dynamodb store"))?,
                create_if_missing: get("MCPGW_CREATE_TABLE")
                    .is_some_and(|v| v == "1" || v == "true"),
            },
            _ => return Err(err("MCPGW_STORE", "expected sqlite or dynamodb")),
        };
        let secrets =
            match get("MCPGW_SECRETS")
                .as_deref()
                .unwrap_or(if in_lambda { "aws" } else { "env" })
            {
                "env" => SecretsBackend::Env,
                "aws" => SecretsBackend::Aws,
                _ => return Err(err("MCPGW_SECRETS", "expected env or aws")),
            };
        let secrets_cache_ttl =
            Duration::from_secs(parse_num(&get, "MCPGW_SECRETS_CACHE_SECONDS", 300)?);
        // With Secrets Manager the prefix is what separates operator secrets from the
        // gateway's own (see SecretScope); env secrets are all the operator's.
        let secret_scope = match get("MCPGW_SECRET_PREFIX") {
            Some(p) if p == "*" => SecretScope::unrestricted(),
            Some(p) => SecretScope::prefixed(p),
            None if secrets == SecretsBackend::Aws => SecretScope::prefixed("mcpgw/"),
            None => SecretScope::unrestricted(),
        };
        let keyring = match get("MCPGW_KEYRING_SECRET") {
            Some(r) => KeyringConfig::Secret(
                SecretRef::parse(&r).map_err(|e| err("MCPGW_KEYRING_SECRET", e.to_string()))?,
            ),
            None if in_lambda => return Err(err("MCPGW_KEYRING_SECRET", "required in Lambda")),
            None => KeyringConfig::File(data_dir.join("keyring.json")),
        };
        let bootstrap_admin = match (
            get("MCPGW_BOOTSTRAP_ADMIN_KEY"),
            get("MCPGW_BOOTSTRAP_ADMIN_KEY_SECRET"),
        ) {
            (Some(v), _) => {
                if v.len() < 16 {
                    return Err(err(
                        "MCPGW_BOOTSTRAP_ADMIN_KEY",
                        "must be at least 16 characters",
                    ));
                }
                // Credentials are read as RFC 6750 b64tokens (identity::bearer_token): a key
                // with other characters could never be presented.
                if !crate::identity::is_b64token(&v) {
                    return Err(err(
                        "MCPGW_BOOTSTRAP_ADMIN_KEY",
                        "may hold only A-Z a-z 0-9 - . _ ~ + / (and = at the end)",
                    ));
                }
                BootstrapAdmin::Value(SecretValue::new(v))
            }
            (None, Some(r)) => BootstrapAdmin::Secret(
                SecretRef::parse(&r)
                    .map_err(|e| err("MCPGW_BOOTSTRAP_ADMIN_KEY_SECRET", e.to_string()))?,
            ),
            (None, None) if in_lambda => BootstrapAdmin::Disabled,
            (None, None) => BootstrapAdmin::GenerateIfAbsent,
        };
        // The gateway's own secrets are never usable as upstream credentials.
        let mut secret_scope = secret_scope;
        if let KeyringConfig::Secret(r) = &keyring {
            secret_scope = secret_scope.reserve(r);
        }
        if let BootstrapAdmin::Secret(r) = &bootstrap_admin {
            secret_scope = secret_scope.reserve(r);
        }
        let admin_emails = get("MCPGW_ADMIN_EMAILS")
            .map(|v| {
                v.split(',')
                    .map(|e| e.trim().to_lowercase())
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let max_body_bytes = parse_num(&get, "MCPGW_MAX_BODY_BYTES", 4 * 1024 * 1024)? as usize;
        // In Lambda the default stays under the template's 30 s function timeout, so the caller
        // gets a JSON 504 instead of the environment being killed mid-request.
        let upstream_default = if in_lambda { 25 } else { 60 };
        let upstream_header_timeout = Duration::from_secs(
            parse_num(&get, "MCPGW_UPSTREAM_TIMEOUT_SECONDS", upstream_default)?.max(1),
        );
        let server_cache_ttl =
            Duration::from_secs(parse_num(&get, "MCPGW_SERVER_CACHE_SECONDS", 15)?);
        // In Lambda a call cannot outlive the function (30 s in the template): end it first
        // with a JSON-RPC error the client can read.
        let call_default = if in_lambda { 28 } else { 300 };
        let upstream_call_timeout = Duration::from_secs(
            parse_num(&get, "MCPGW_UPSTREAM_CALL_TIMEOUT_SECONDS", call_default)?.max(1),
        );
        let session_ttl = parse_num(&get, "MCPGW_SESSION_TTL_SECONDS", 86_400)?;
        if session_ttl > MAX_SESSION_TTL_SECONDS {
            return Err(err(
                "MCPGW_SESSION_TTL_SECONDS",
                format!("at most {MAX_SESSION_TTL_SECONDS} (30 days)"),
            ));
        }
        let session_ttl = Duration::from_secs(session_ttl.max(60));
        let allowed_origins = match get("MCPGW_ALLOWED_ORIGINS") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(|o| {
                    // Kept in the form browsers send (scheme://host[:non-default port]), so
                    // `https://app.example.com:443` matches `https://app.example.com`.
                    let bad = || {
                        err(
                            "MCPGW_ALLOWED_ORIGINS",
                            "expected comma-separated origins like https://app.example.com (no path)",
                        )
                    };
                    let u = url::Url::parse(o).map_err(|_| bad())?;
                    let bare = u.path() == "/" && u.query().is_none() && u.fragment().is_none();
                    if !matches!(u.scheme(), "http" | "https") || !bare || u.host().is_none() {
                        return Err(bad());
                    }
                    Ok(u.origin().ascii_serialization().to_ascii_lowercase())
                })
                .collect::<Result<_, _>>()?,
        };
        let egress = egress_from(&get, in_lambda)?;
        let identity_provider = identity_provider_from(&get)?;
        if let Some(idp) = &identity_provider {
            // The gateway fetches these itself: refuse to start rather than fail every JWT.
            let urls = [
                ("MCPGW_IDP_ISSUER", Some(&idp.issuer)),
                ("MCPGW_IDP_JWKS_URI", idp.jwks_uri.as_ref()),
            ];
            for (var, url) in urls {
                if let Some(Err(e)) = url.map(|u| egress.check_url_str(u)) {
                    return Err(err(var, e.to_string()));
                }
            }
        }
        let metrics = crate::metrics::MetricsConfig::from_lookup(&get, in_lambda)?;
        let otlp = crate::trace::otlp::OtlpConfig::from_lookup(&get)?;
        let trace = crate::trace::TraceConfig::from_lookup(&get)?;
        if let Some(o) = &otlp {
            // The collector is contacted like any other host: refuse to start rather than
            // drop every span.
            egress
                .check_url_str(&o.traces_url)
                .map_err(|e| err("OTEL_EXPORTER_OTLP_ENDPOINT", e.to_string()))?;
        }
        let audit_days = parse_num(&get, "MCPGW_AUDIT_RETENTION_DAYS", 90)?;
        if audit_days == 0 || audit_days > 36_500 {
            return Err(err(
                "MCPGW_AUDIT_RETENTION_DAYS",
                "expected 1 to 36500 days",
            ));
        }
        let audit_retention = Duration::from_secs(audit_days * 86_400);
        let key_cache_ttl = Duration::from_secs(parse_num(&get, "MCPGW_KEY_CACHE_SECONDS", 5)?);
        let policy_cache_ttl =
            Duration::from_secs(parse_num(&get, "MCPGW_POLICY_CACHE_SECONDS", 2)?);
        let server_limits = ServerLimits {
            header_read_timeout: Duration::from_secs(
                parse_num(&get, "MCPGW_HEADER_READ_TIMEOUT_SECONDS", 10)?.max(1),
            ),
            body_read_timeout: Duration::from_secs(
                parse_num(&get, "MCPGW_BODY_READ_TIMEOUT_SECONDS", 30)?.max(1),
            ),
            max_connections: parse_num(&get, "MCPGW_MAX_CONNECTIONS", 1024)?.max(1) as usize,
        };
        Ok(Self {
            server_limits,
            egress,
            metrics,
            otlp,
            trace,
            key_cache_ttl,
            audit_retention,
            policy_cache_ttl,
            identity_provider,
            in_lambda,
            listen,
            data_dir,
            public_url,
            public_origin,
            public_is_loopback,
            store,
            secrets,
            secrets_cache_ttl,
            secret_scope,
            keyring,
            bootstrap_admin,
            admin_emails,
            max_body_bytes,
            server_cache_ttl,
            upstream_header_timeout,
            upstream_call_timeout,
            session_ttl,
            allowed_origins,
            allow_get_stream: match get("MCPGW_ALLOW_GET_STREAM").as_deref() {
                Some("1" | "true") => true,
                Some("0" | "false") => false,
                Some(_) => return Err(err("MCPGW_ALLOW_GET_STREAM", "expected 1 or 0")),
                None => !in_lambda,
            },
        })
    }
}

/// `MCPGW_EGRESS_DENY`, `MCPGW_EGRESS_ALLOW` (comma-separated CIDRs) and
/// `MCPGW_EGRESS_ALLOW_HTTP` over the defaults of the mode.
fn egress_from(
    get: &impl Fn(&str) -> Option<String>,
    in_lambda: bool,
) -> Result<crate::egress::EgressPolicy, ConfigError> {
    let cidrs = |var: &'static str| {
        crate::egress::parse_cidrs(&get(var).unwrap_or_default())
            .map_err(|e| err(var, e.to_string()))
    };
    let plain_http = match get("MCPGW_EGRESS_ALLOW_HTTP").as_deref() {
        Some("1" | "true") => true,
        Some("0" | "false") => false,
        Some(_) => return Err(err("MCPGW_EGRESS_ALLOW_HTTP", "expected 1 or 0")),
        None => !in_lambda,
    };
    Ok(crate::egress::EgressPolicy::defaults(in_lambda)
        .deny(cidrs("MCPGW_EGRESS_DENY")?)
        .allow(cidrs("MCPGW_EGRESS_ALLOW")?)
        .plain_http(plain_http))
}

/// `MCPGW_IDP_*`: one identity provider when `MCPGW_IDP_ISSUER` is set.
fn identity_provider_from(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<crate::domain::IdentityProvider>, ConfigError> {
    let Some(issuer) = get("MCPGW_IDP_ISSUER") else {
        return Ok(None);
    };
    let list = |var: &str| -> Vec<String> {
        get(var)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut doc = serde_json::json!({
        "name": get("MCPGW_IDP_NAME").unwrap_or_else(|| "default".into()),
        "issuer": issuer,
        "audiences": list("MCPGW_IDP_AUDIENCES"),
        "required_scopes": list("MCPGW_IDP_REQUIRED_SCOPES"),
        "scopes": list("MCPGW_IDP_SCOPES"),
        "admin_groups": list("MCPGW_IDP_ADMIN_GROUPS"),
        "allowed_client_ids": list("MCPGW_IDP_ALLOWED_CLIENT_IDS"),
    });
    for (var, field) in [
        ("MCPGW_IDP_JWKS_URI", "jwks_uri"),
        ("MCPGW_IDP_EMAIL_CLAIM", "email_claim"),
        ("MCPGW_IDP_GROUPS_CLAIM", "groups_claim"),
    ] {
        if let Some(v) = get(var) {
            doc[field] = v.into();
        }
    }
    let algorithms = list("MCPGW_IDP_ALGORITHMS");
    if !algorithms.is_empty() {
        doc["algorithms"] = algorithms.into();
    }
    let idp: crate::domain::IdentityProvider =
        serde_json::from_value(doc).map_err(|e| err("MCPGW_IDP_ISSUER", e.to_string()))?;
    idp.validate().map_err(|m| err("MCPGW_IDP_ISSUER", m))?;
    Ok(Some(idp))
}

fn parse_num(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
) -> Result<u64, ConfigError> {
    match get(var) {
        Some(v) => v
            .parse()
            .map_err(|_| err(var, "expected a non-negative integer")),
        None => Ok(default),
    }
}

/// What one slow or idle client may hold of the local server. API Gateway shields the Lambda
/// functions from this; a gateway listening on a port must do it itself: a client that
/// trickles its request a byte at a time would otherwise keep its connection (and a task)
/// forever, and a few hundred such clients exhaust the process's file descriptors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerLimits {
    /// The whole request head (request line and headers) must arrive within this, counted
    /// from the moment the server waits for it. The wait for the next request on a kept-alive
    /// connection counts too, so this is also the idle timeout between requests.
    pub header_read_timeout: Duration,
    /// The whole request body must arrive within this, counted from the end of the head;
    /// a body still arriving then answers 408.
    pub body_read_timeout: Duration,
    /// Connections served at once. Beyond it the server stops accepting, so further clients
    /// wait in the kernel's backlog until a slot frees up (within the timeouts above).
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn identity_provider_and_proxy_settings_from_the_environment() {
        let c = cfg(&[]).unwrap();
        assert!(c.identity_provider.is_none());
        assert_eq!(c.session_ttl, Duration::from_secs(86_400));
        assert_eq!(c.upstream_call_timeout, Duration::from_secs(300));
        assert!(c.allowed_origins.is_empty());
        let c = cfg(&[
            ("MCPGW_IDP_ISSUER", "https://login.example.com/tenant"),
            ("MCPGW_IDP_AUDIENCES", "api://gw, https://gw.example.com"),
            ("MCPGW_IDP_EMAIL_CLAIM", "upn"),
            ("MCPGW_IDP_ADMIN_GROUPS", "platform"),
            ("MCPGW_IDP_ALGORITHMS", "RS256,ES256"),
            ("MCPGW_IDP_ALLOWED_CLIENT_IDS", "mcp-cli, 0oa1b2c3"),
            (
                "MCPGW_ALLOWED_ORIGINS",
                "https://App.example.com/, http://localhost:3000",
            ),
            ("MCPGW_SESSION_TTL_SECONDS", "3600"),
        ])
        .unwrap();
        let idp = c.identity_provider.unwrap();
        assert_eq!(
            (idp.name.as_str(), idp.email_claim.as_str()),
            ("default", "upn")
        );
        assert_eq!(idp.audiences, vec!["api://gw", "https://gw.example.com"]);
        assert_eq!(idp.algorithms, vec!["RS256", "ES256"]);
        assert_eq!(idp.groups_claim, "groups");
        assert_eq!(idp.allowed_client_ids, vec!["mcp-cli", "0oa1b2c3"]);
        assert_eq!(
            c.allowed_origins,
            vec!["https://app.example.com", "http://localhost:3000"]
        );
        assert_eq!(c.session_ttl, Duration::from_secs(3600));
        for bad in [
            ("MCPGW_IDP_ISSUER", "not a url"),
            ("MCPGW_ALLOWED_ORIGINS", "ftp://x"),
            ("MCPGW_ALLOWED_ORIGINS", "https://app.example.com/path"),
        ] {
            assert!(cfg(&[bad]).is_err(), "{bad:?}");
        }
        assert!(
            cfg(&[
                ("MCPGW_IDP_ISSUER", "https://x"),
                ("MCPGW_IDP_ALGORITHMS", "HS256")
            ])
            .is_err()
        );
        // Advertised scopes go into a challenge header: only scope tokens (the baseline,
        // valid ones, is the configuration above).
        for scope in ["a\"b", "a b\\", "x\\y"] {
            let vars = [
                ("MCPGW_IDP_ISSUER", "https://x"),
                ("MCPGW_IDP_SCOPES", scope),
            ];
            assert!(cfg(&vars).is_err(), "{scope}");
        }
        let ok = cfg(&[
            ("MCPGW_IDP_ISSUER", "https://x"),
            ("MCPGW_IDP_SCOPES", "openid,mcp:use"),
        ])
        .unwrap();
        assert_eq!(
            ok.identity_provider.unwrap().scopes,
            vec!["openid", "mcp:use"]
        );
    }

    #[test]
    fn local_defaults_follow_the_interface() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8787");
        assert_eq!(c.public_url, "http://127.0.0.1:8787");
        assert_eq!(c.public_path(), "");
        assert_eq!(
            c.store,
            StoreBackend::Sqlite {
                path: PathBuf::from("./.mcp-gateway/gateway.sqlite3")
            }
        );
        assert_eq!(c.secrets, SecretsBackend::Env);
        assert_eq!(
            c.keyring,
            KeyringConfig::File(PathBuf::from("./.mcp-gateway/keyring.json"))
        );
        assert_eq!(c.bootstrap_admin, BootstrapAdmin::GenerateIfAbsent);
        assert_eq!(c.secret_scope, SecretScope::unrestricted());
        assert!(c.allow_get_stream);
    }

    #[test]
    fn lambda_defaults_and_requirements() {
        assert_eq!(
            cfg(&[("AWS_LAMBDA_RUNTIME_API", "x")]).unwrap_err().var,
            "MCPGW_TABLE_NAME"
        );
        let c = cfg(&[
            ("AWS_LAMBDA_RUNTIME_API", "x"),
            ("MCPGW_TABLE_NAME", "t"),
            (
                "MCPGW_KEYRING_SECRET",
                "secret://arn:aws:secretsmanager:r:1:secret:k",
            ),
            ("MCPGW_PUBLIC_URL", "https://api.example.com/prod/"),
        ])
        .unwrap();
        assert_eq!(c.secrets, SecretsBackend::Aws);
        let keyring = SecretRef::parse("secret://arn:aws:secretsmanager:r:1:secret:k").unwrap();
        assert_eq!(
            c.secret_scope,
            SecretScope::prefixed("mcpgw/").reserve(&keyring)
        );
        assert!(
            !c.secret_scope.permits(&keyring),
            "the keyring is never an upstream credential"
        );
        assert_eq!(c.public_url, "https://api.example.com/prod");
        assert_eq!(
            c.public_path(),
            "/prod",
            "links in pages start with the stage"
        );
        assert_eq!(c.bootstrap_admin, BootstrapAdmin::Disabled);
        assert!(!c.allow_get_stream);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("MCPGW_LISTEN", "nope"),
            ("MCPGW_PUBLIC_URL", "ftp://x"),
            ("MCPGW_STORE", "mysql"),
            ("MCPGW_SECRETS", "vault"),
            ("MCPGW_KEYRING_SECRET", "plain"),
            ("MCPGW_BOOTSTRAP_ADMIN_KEY", "short"),
            ("MCPGW_BOOTSTRAP_ADMIN_KEY", "sixteen chars with spaces"),
            ("MCPGW_BOOTSTRAP_ADMIN_KEY", "0123456789abcdef,second"),
            ("MCPGW_MAX_BODY_BYTES", "-1"),
            ("MCPGW_SESSION_TTL_SECONDS", "2592001"),
            ("MCPGW_SESSION_TTL_SECONDS", "18446744073709551615"),
            ("MCPGW_KEY_CACHE_SECONDS", "five"),
            ("MCPGW_UPSTREAM_CALL_TIMEOUT_SECONDS", "-3"),
            ("MCPGW_ALLOWED_ORIGINS", "not an origin"),
            ("MCPGW_IDP_ISSUER", "http://idp.example.com"),
            // Governance settings (issue 25).
            ("MCPGW_AUDIT_RETENTION_DAYS", "0"),
            ("MCPGW_AUDIT_RETENTION_DAYS", "36501"),
            ("MCPGW_AUDIT_RETENTION_DAYS", "ninety"),
            ("MCPGW_TRACESTATE_FORWARD", "maybe"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ] {
            assert_eq!(cfg(&[(k, v)]).unwrap_err().var, k);
        }
    }

    #[test]
    fn session_ttl_is_capped_at_thirty_days() {
        let c = cfg(&[("MCPGW_SESSION_TTL_SECONDS", "2592000")]).unwrap();
        assert_eq!(c.session_ttl, Duration::from_secs(MAX_SESSION_TTL_SECONDS));
        let e = cfg(&[("MCPGW_SESSION_TTL_SECONDS", "2592001")]).unwrap_err();
        assert!(e.message.contains("2592000"), "{e}");
        // Below a minute it is raised to one, as before.
        let c = cfg(&[("MCPGW_SESSION_TTL_SECONDS", "5")]).unwrap();
        assert_eq!(c.session_ttl, Duration::from_secs(60));
    }

    #[test]
    fn egress_settings_follow_the_mode_and_name_their_variable() {
        use std::net::IpAddr;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let lambda = [
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("MCPGW_TABLE_NAME", "t"),
            ("MCPGW_KEYRING_SECRET", "secret://k"),
        ];
        // Local: loopback and plain http allowed; Lambda: both denied.
        let local = cfg(&[]).unwrap().egress;
        assert!(local.check_ip(ip("127.0.0.1")).is_ok() && local.allow_plain_http());
        let aws = cfg(&lambda).unwrap().egress;
        assert!(aws.check_ip(ip("127.0.0.1")).is_err() && !aws.allow_plain_http());
        // The Lambda emulator's tests admit loopback and plain http explicitly.
        let mut vars = lambda.to_vec();
        vars.extend([
            ("MCPGW_EGRESS_ALLOW", "127.0.0.0/8, ::1"),
            ("MCPGW_EGRESS_ALLOW_HTTP", "1"),
            ("MCPGW_EGRESS_DENY", "10.0.0.0/8"),
        ]);
        let admitted = cfg(&vars).unwrap().egress;
        assert!(admitted.check_ip(ip("127.0.0.1")).is_ok() && admitted.allow_plain_http());
        assert!(admitted.check_ip(ip("::1")).is_ok());
        assert!(admitted.check_ip(ip("10.1.2.3")).is_err());
        for (k, v) in [
            ("MCPGW_EGRESS_DENY", "10.0.0.0/33"),
            ("MCPGW_EGRESS_DENY", "example.com"),
            ("MCPGW_EGRESS_ALLOW", "127.0.0.1/8/8"),
            ("MCPGW_EGRESS_ALLOW_HTTP", "yes"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err();
            assert_eq!(e.var, k, "{e}");
        }
        // An environment-configured identity provider the gateway may not reach is a start
        // failure naming the variable, not a 401 on every token.
        let e = cfg(&[
            ("MCPGW_IDP_ISSUER", "https://login.example.com"),
            ("MCPGW_IDP_JWKS_URI", "https://[::ffff:169.254.1.1]/keys"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "MCPGW_IDP_JWKS_URI");
        assert!(e.message.contains("link-local"), "{e}");
        let mut vars = lambda.to_vec();
        vars.push(("MCPGW_IDP_ISSUER", "http://127.0.0.1:9/idp"));
        assert_eq!(cfg(&vars).unwrap_err().var, "MCPGW_IDP_ISSUER");
        vars.push(("MCPGW_EGRESS_ALLOW", "127.0.0.1"));
        assert!(cfg(&vars).is_ok());
    }

    #[test]
    fn admin_emails_are_normalized() {
        let c = cfg(&[("MCPGW_ADMIN_EMAILS", " Alice@Example.com, ,bob@x.io")]).unwrap();
        assert_eq!(c.admin_emails, vec!["alice@example.com", "bob@x.io"]);
    }
}
