//! Protocol revisions the gateway speaks, by era.
//!
//! Session era: an `initialize` handshake negotiates the version and the server may hand out
//! an `Mcp-Session-Id`. Stateless era (2026-07-28): no handshake, every request carries its
//! version and the client's capabilities in `params._meta`.

/// Versions reachable through `initialize`, oldest first.
pub const HANDSHAKE: &[&str] = &["2025-03-26", "2025-06-18", "2025-11-25"];
/// Versions using the per-request envelope, oldest first.
pub const MODERN: &[&str] = &["2026-07-28"];
/// What the gateway offers a handshake client that asks for a version it does not know.
pub const LATEST_HANDSHAKE: &str = "2025-11-25";
/// What the gateway speaks to a stateless-era upstream.
pub const LATEST_MODERN: &str = "2026-07-28";

pub fn is_handshake(v: &str) -> bool {
    HANDSHAKE.contains(&v)
}

pub fn is_modern(v: &str) -> bool {
    MODERN.contains(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eras_are_disjoint_and_latest_are_members() {
        assert!(HANDSHAKE.iter().all(|v| !is_modern(v)));
        assert!(is_handshake(LATEST_HANDSHAKE) && is_modern(LATEST_MODERN));
        for unknown in ["2024-11-05", "2099-01-01"] {
            assert!(!is_handshake(unknown) && !is_modern(unknown));
        }
    }
}
