// PLACEHOLDER replaced by the egress branch on merge
//! The egress policy: which addresses the gateway may contact. This is the placeholder the
//! discovery branch builds against (the contract in HELPER_RULES.md); the egress branch
//! (issue 22, item 4) replaces it with the real policy.

/// Which outbound URLs and addresses are allowed.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    _private: (),
}

/// Why a URL or address is refused; the message names the rule.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{rule}")]
pub struct EgressDenied {
    rule: String,
}

impl EgressPolicy {
    /// Host literal and scheme check (placeholder: the scheme only).
    pub fn check_url(&self, url: &url::Url) -> Result<(), EgressDenied> {
        match url.scheme() {
            "http" | "https" => Ok(()),
            other => Err(EgressDenied {
                rule: format!("the scheme {other} is not allowed"),
            }),
        }
    }

    /// Resolved-address check (placeholder: every address).
    pub fn check_ip(&self, _ip: std::net::IpAddr) -> Result<(), EgressDenied> {
        Ok(())
    }

    /// Whether plain http:// is acceptable for OAuth/OIDC endpoints (placeholder: yes).
    pub fn allow_plain_http(&self) -> bool {
        true
    }
}
