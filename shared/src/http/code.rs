//! The machine-readable codes of [`super::ApiError`] (`{"error":{"code":"..."}}`), named
//! once: clients and scripts match on these strings, so a code is spelled only in
//! [`ErrorCode::as_str`].

/// Why a request failed, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    // The request itself.
    InvalidBody,
    InvalidJson,
    InvalidPath,
    InvalidQuery,
    InvalidField,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    NotAcceptable,
    MethodNotAllowed,
    NotFound,
    // Who is calling.
    Unauthenticated,
    InsufficientScope,
    Forbidden,
    // The store.
    AlreadyExists,
    Conflict,
    StoreUnavailable,
    // Configuration the admin API refuses.
    InUse,
    IssuerTaken,
    KeyLimitReached,
    ToolNameCollision,
    UnknownServer,
    UnknownTeam,
    UnknownTool,
    NotOauth,
    EgressDenied,
    SecretInvalid,
    SecretOutOfScope,
    SecretUnresolvable,
    SecretsUnavailable,
    DiscoveryUnavailable,
    InvalidDiscoveredMetadata,
    // Grants and upstream credentials.
    NotConnected,
    GrantStoreUnavailable,
    ConnectRequired,
    CredentialRequired,
    ConnectLinkUnavailable,
    UpstreamCredentialUnavailable,
    // The gateway itself.
    Internal,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidBody => "invalid_body",
            Self::InvalidJson => "invalid_json",
            Self::InvalidPath => "invalid_path",
            Self::InvalidQuery => "invalid_query",
            Self::InvalidField => "invalid_field",
            Self::InvalidRequest => "invalid_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::NotAcceptable => "not_acceptable",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotFound => "not_found",
            Self::Unauthenticated => "unauthenticated",
            Self::InsufficientScope => "insufficient_scope",
            Self::Forbidden => "forbidden",
            Self::AlreadyExists => "already_exists",
            Self::Conflict => "conflict",
            Self::StoreUnavailable => "store_unavailable",
            Self::InUse => "in_use",
            Self::IssuerTaken => "issuer_taken",
            Self::KeyLimitReached => "key_limit_reached",
            Self::ToolNameCollision => "tool_name_collision",
            Self::UnknownServer => "unknown_server",
            Self::UnknownTeam => "unknown_team",
            Self::UnknownTool => "unknown_tool",
            Self::NotOauth => "not_oauth",
            Self::EgressDenied => "egress_denied",
            Self::SecretInvalid => "secret_invalid",
            Self::SecretOutOfScope => "secret_out_of_scope",
            Self::SecretUnresolvable => "secret_unresolvable",
            Self::SecretsUnavailable => "secrets_unavailable",
            Self::DiscoveryUnavailable => "discovery_unavailable",
            Self::InvalidDiscoveredMetadata => "invalid_discovered_metadata",
            Self::NotConnected => "not_connected",
            Self::GrantStoreUnavailable => "grant_store_unavailable",
            Self::ConnectRequired => "connect_required",
            Self::CredentialRequired => "credential_required",
            Self::ConnectLinkUnavailable => "connect_link_unavailable",
            Self::UpstreamCredentialUnavailable => "upstream_credential_unavailable",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
