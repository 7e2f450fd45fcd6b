//! The audit trail: one [`AuditRecord`] per decision (tool calls, reads, prompts, denials,
//! failed logins, connections, admin changes), written by the [`Auditor`] as a JSON line on
//! stdout (CloudWatch Logs in Lambda) and, batched, to the store.
//!
//! Emitting is synchronous and cheap: the record is linked into this process's hash chain
//! ([`chain`], keyed with the keyring), written as a line, and pushed to a bounded buffer.
//! Records emitted before the keyring was first loaded (Lambda fetches it on first use) wait
//! unlinked; the next flush loads the keyring, links them in emit order and writes their
//! lines. The store write happens
//! in [`Auditor::flush`]: per invocation in Lambda (an end-of-invocation hook, see
//! `invocation`, so a frozen sandbox loses nothing), every second or at 25 buffered records
//! locally (a background task). Flushes seal the chain head ([`seal`]) every
//! [`SealPolicy::records`] records or [`SealPolicy::interval`]. A failed write keeps its
//! records buffered for the next flush and is counted ([`Auditor::write_failures`]); a record
//! the store refuses for good (`StoreError::Rejected`: too large) is dropped and counted
//! ([`Auditor::rejected`]) instead, so it cannot block the records behind it;
//! `verify` checks what was stored.

pub mod args;
mod canonical;
pub mod chain;
pub mod events;
pub mod range;
pub mod record;
pub mod sample;
pub mod seal;
pub mod verify;
pub mod view;

pub use canonical::{canonical_hash, canonical_json};
pub use record::{Actor, AuditRecord, ChainLink, CredentialUse, Decision, Event, Outcome};

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::keyring::KeyringSource;
use crate::store::{AuditSeal, AuditStore, StoreError};

/// Most records one store write carries (DynamoDB's `BatchWriteItem` limit).
pub const FLUSH_BATCH: usize = 25;
/// Most records kept waiting for the store; beyond it the oldest are dropped (they are on
/// stdout already) and counted in [`Auditor::dropped`].
pub const BUFFER_MAX: usize = 10_000;
/// How often the local background task flushes.
pub const BACKGROUND_INTERVAL: Duration = Duration::from_secs(1);

/// When a flush seals the chain head.
#[derive(Debug, Clone, Copy)]
pub struct SealPolicy {
    /// After this many records since the last seal.
    pub records: u64,
    /// Or when the last seal is this old (and records were added since).
    pub interval: Duration,
}

impl Default for SealPolicy {
    fn default() -> Self {
        Self {
            records: 100,
            interval: Duration::from_secs(60),
        }
    }
}

/// Where flushed records go.
struct Sink {
    store: Arc<dyn AuditStore>,
    keyring: Arc<KeyringSource>,
    retention: Duration,
    policy: SealPolicy,
}

/// What waits for the store.
#[derive(Default)]
struct Pending {
    records: VecDeque<AuditRecord>,
    seals: Vec<AuditSeal>,
}

/// The last seal made: its `seq` and when.
struct LastSeal {
    seq: u64,
    at: Instant,
}

/// The chain and the records waiting for the keyring to be linked into it.
struct Linking {
    chain: chain::Chain,
    /// Emitted before the keyring was loaded, in emit order (not yet on stdout either).
    waiting: VecDeque<AuditRecord>,
}

/// Writes audit records. One per process, in `AppState`.
pub struct Auditor {
    linking: Mutex<Linking>,
    pending: Mutex<Pending>,
    sink: Option<Sink>,
    /// One flush at a time, so a failed batch goes back in front of newer records.
    flushing: tokio::sync::Mutex<()>,
    last_seal: Mutex<LastSeal>,
    /// Wakes the background flusher early when a batch is full.
    batch_full: tokio::sync::Notify,
    write_failures: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    /// Call metrics and write failures are counted from here (see `metrics`).
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Tests: every emitted record is also kept here ([`Auditor::recording`]).
    #[cfg(feature = "testing")]
    recorded: Option<Arc<Mutex<Vec<AuditRecord>>>>,
}

impl Default for Auditor {
    /// An auditor that writes stdout lines only (no store): for tests of other parts.
    fn default() -> Self {
        Self::build(None)
    }
}

impl Auditor {
    /// An auditor that also writes to `store`, sealing with `keyring`; records and seals
    /// are kept `retention` (`MCPGW_AUDIT_RETENTION_DAYS`).
    pub fn new(
        store: Arc<dyn AuditStore>,
        keyring: Arc<KeyringSource>,
        retention: Duration,
    ) -> Self {
        Self::build(Some(Sink {
            store,
            keyring,
            retention,
            policy: SealPolicy::default(),
        }))
    }

    /// The same, counting each record's call metrics and every failed write in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The same, sealing by `policy` instead of the default.
    pub fn with_seal_policy(mut self, policy: SealPolicy) -> Self {
        if let Some(sink) = self.sink.as_mut() {
            sink.policy = policy;
        }
        self
    }

    fn build(sink: Option<Sink>) -> Self {
        Self {
            linking: Mutex::new(Linking {
                chain: chain::Chain::new(chain::new_writer_id()),
                waiting: VecDeque::new(),
            }),
            pending: Mutex::new(Pending::default()),
            sink,
            flushing: tokio::sync::Mutex::new(()),
            last_seal: Mutex::new(LastSeal {
                seq: 0,
                at: Instant::now(),
            }),
            batch_full: tokio::sync::Notify::new(),
            write_failures: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            metrics: None,
            #[cfg(feature = "testing")]
            recorded: None,
        }
    }

    /// Tests: an auditor (stdout only) that also keeps what it emits, in the returned list.
    #[cfg(feature = "testing")]
    pub fn recording() -> (Self, Arc<Mutex<Vec<AuditRecord>>>) {
        let kept: Arc<Mutex<Vec<AuditRecord>>> = Arc::default();
        let mut auditor = Self::build(None);
        auditor.recorded = Some(Arc::clone(&kept));
        (auditor, kept)
    }

    /// This process's writer id (its chain's name).
    pub fn writer(&self) -> String {
        lock(&self.linking).chain.writer().to_owned()
    }

    /// Store writes that failed since start (each failed batch once; its records stay
    /// buffered and are retried).
    pub fn write_failures(&self) -> u64 {
        self.write_failures.load(Ordering::Relaxed)
    }

    /// Records dropped from a full buffer (the store was unreachable for long); they were
    /// written to stdout, and verify reports their gap as `deleted`.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records the store refused for good (too large for it): dropped, never retried, so
    /// they cannot block the records behind them. They were written to stdout; verify
    /// reports the gap they leave as `deleted` (when records of the chain precede them).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Records waiting for the store.
    pub fn buffered(&self) -> usize {
        lock(&self.pending).records.len()
    }

    /// Records `record`: linked into the chain, always a JSON line on stdout, then the store
    /// (at the next flush). Never waits on I/O other than the stdout line.
    pub fn emit(&self, mut record: AuditRecord) {
        // Metrics and the request's span are fed from the record: one observation point.
        if let Some(m) = &self.metrics {
            m.observe_record(&record);
        }
        crate::trace::note_record(&record);
        #[cfg(feature = "testing")]
        if let Some(kept) = &self.recorded {
            lock(kept).push(record.clone());
        }
        let ring = self.sink.as_ref().map(|sink| sink.keyring.cached());
        let mut lines = Vec::with_capacity(1);
        let full = {
            let mut linking = lock(&self.linking);
            match ring {
                // No store: nothing is verified; the chain is a plain hash.
                None => {
                    linking.chain.link(&mut record, None);
                    lines.push(record);
                    false
                }
                Some(None) => {
                    linking.waiting.push_back(record);
                    self.trim_waiting(&mut linking.waiting);
                    false
                }
                Some(Some(ring)) => {
                    linking.waiting.push_back(record);
                    self.link_waiting(&mut linking, &ring, &mut lines)
                }
            }
        };
        write_lines(&lines);
        if full {
            self.batch_full.notify_one();
        }
    }

    /// Links the waiting records in order and queues them for the store (under the linking
    /// lock, so the buffer stays in `seq` order); their linked forms go to `lines`. Whether
    /// a batch is full.
    fn link_waiting(
        &self,
        linking: &mut Linking,
        ring: &crate::crypto::Keyring,
        lines: &mut Vec<AuditRecord>,
    ) -> bool {
        let mut pending = lock(&self.pending);
        while let Some(mut record) = linking.waiting.pop_front() {
            linking.chain.link(&mut record, Some(ring));
            pending.records.push_back(record.clone());
            lines.push(record);
        }
        self.trim(&mut pending);
        pending.records.len() >= FLUSH_BATCH
    }

    /// Beyond [`BUFFER_MAX`] waiting records (the keyring cannot be loaded), the oldest go
    /// to stdout unchained and are counted as dropped.
    fn trim_waiting(&self, waiting: &mut VecDeque<AuditRecord>) {
        while waiting.len() > BUFFER_MAX {
            if let Some(r) = waiting.pop_front() {
                write_lines(std::slice::from_ref(&r));
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Links the records that waited for the keyring (loading it), before a flush.
    async fn link_waiting_records(&self, sink: &Sink) {
        if lock(&self.linking).waiting.is_empty() {
            return;
        }
        let mut lines = Vec::new();
        match sink.keyring.get().await {
            Ok(ring) => {
                self.link_waiting(&mut lock(&self.linking), &ring, &mut lines);
            }
            Err(e) => {
                // Without the keyring the records cannot be chained: they go to stdout
                // unchained and are counted, never stored unauthenticated.
                tracing::warn!(error = %crate::http::error_chain(&e), "audit records not chained: no keyring");
                let mut linking = lock(&self.linking);
                lines.extend(linking.waiting.drain(..));
                self.dropped
                    .fetch_add(lines.len() as u64, Ordering::Relaxed);
            }
        }
        write_lines(&lines);
    }

    /// Drops the oldest records beyond [`BUFFER_MAX`], counting them.
    fn write_failed(&self) {
        self.write_failures.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.inc_audit_write_failures(1);
        }
    }

    fn trim(&self, pending: &mut Pending) {
        while pending.records.len() > BUFFER_MAX {
            pending.records.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes what was emitted since the last flush to the store, sealing the chain head
    /// when the seal policy says so.
    pub async fn flush(&self) {
        self.flush_inner(false).await;
    }

    /// [`Auditor::flush`], sealing the head whatever the policy (at shutdown).
    pub async fn flush_and_seal(&self) {
        self.flush_inner(true).await;
    }

    async fn flush_inner(&self, force_seal: bool) {
        let Some(sink) = &self.sink else {
            return;
        };
        let _one = self.flushing.lock().await;
        self.link_waiting_records(sink).await;
        self.seal_if_due(sink, force_seal).await;
        let (records, seals): (Vec<AuditRecord>, Vec<AuditSeal>) = {
            let mut p = lock(&self.pending);
            (p.records.drain(..).collect(), std::mem::take(&mut p.seals))
        };
        if records.is_empty() && seals.is_empty() {
            return;
        }
        let mut batches = records.chunks(FLUSH_BATCH).peekable();
        // Seals ride with the last batch, after the records they cover.
        let mut written = 0;
        while let Some(batch) = batches.next() {
            let last = batches.peek().is_none();
            let with: &[AuditSeal] = if last { &seals } else { &[] };
            let result = match sink.store.put_audit(batch, with, sink.retention).await {
                // A record the store refuses for good must not block those behind it:
                // the batch is written record by record, the refused ones dropped.
                Err(StoreError::Rejected(_)) => self.write_singly(sink, batch, with).await,
                other => other.map_err(|e| (0, e)),
            };
            if let Err((done, e)) = result {
                self.write_failed();
                // The error names the backend's failure only, never a record's content.
                tracing::warn!(
                    error = %crate::http::error_chain(&e),
                    records = records.len() - written - done,
                    "audit store write failed; records kept for the next flush"
                );
                self.requeue(&records[written + done..], seals);
                return;
            }
            written += batch.len();
        }
        if records.is_empty() {
            // Seals alone.
            match sink.store.put_audit(&[], &seals, sink.retention).await {
                Ok(()) => {}
                Err(StoreError::Rejected(e)) => {
                    // Never the case for seals the auditor made; kept from looping anyway.
                    self.write_failed();
                    tracing::warn!(error = %e, "audit seals refused by the store; dropped");
                }
                Err(e) => {
                    self.write_failed();
                    tracing::warn!(error = %crate::http::error_chain(&e), "audit seal write failed");
                    self.requeue(&[], seals);
                }
            }
        }
    }

    /// Writes `batch` one record at a time, then `seals`: records the store refuses for good
    /// are dropped and counted ([`Auditor::rejected`]), never retried. On a transient
    /// failure, how many records were done and the error.
    async fn write_singly(
        &self,
        sink: &Sink,
        batch: &[AuditRecord],
        seals: &[AuditSeal],
    ) -> Result<(), (usize, StoreError)> {
        for (i, record) in batch.iter().enumerate() {
            match sink
                .store
                .put_audit(std::slice::from_ref(record), &[], sink.retention)
                .await
            {
                Ok(()) => {}
                Err(StoreError::Rejected(e)) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    self.write_failed();
                    // Where it sits in the chain, never what it holds; stdout has it.
                    let link = record.chain.as_ref();
                    tracing::warn!(
                        error = %e,
                        writer = link.map(|c| c.writer.as_str()),
                        seq = link.map(|c| c.seq),
                        "audit record refused by the store; dropped (it is on stdout)"
                    );
                }
                Err(e) => return Err((i, e)),
            }
        }
        if seals.is_empty() {
            return Ok(());
        }
        match sink.store.put_audit(&[], seals, sink.retention).await {
            Ok(()) => Ok(()),
            Err(e) => Err((batch.len(), e)),
        }
    }

    /// Puts unwritten records back in front of those emitted since.
    fn requeue(&self, records: &[AuditRecord], seals: Vec<AuditSeal>) {
        let mut p = lock(&self.pending);
        for r in records.iter().rev() {
            p.records.push_front(r.clone());
        }
        let mut seals = seals;
        seals.append(&mut p.seals);
        p.seals = seals;
        self.trim(&mut p);
    }

    /// Adds a seal of the current head to the pending writes when due.
    async fn seal_if_due(&self, sink: &Sink, force: bool) {
        let (writer, seq, head) = {
            let linking = lock(&self.linking);
            let (seq, head) = linking.chain.head();
            (linking.chain.writer().to_owned(), seq, head.to_owned())
        };
        {
            let last = lock(&self.last_seal);
            let added = seq.saturating_sub(last.seq);
            let due = added > 0
                && (force
                    || added >= sink.policy.records
                    || last.at.elapsed() >= sink.policy.interval);
            if !due {
                return;
            }
        }
        let ring = match sink.keyring.get().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %crate::http::error_chain(&e), "audit seal skipped: no keyring");
                return;
            }
        };
        match seal::make(&ring, &writer, seq, &head, record::now_ms()) {
            Ok(s) => {
                lock(&self.pending).seals.push(s);
                *lock(&self.last_seal) = LastSeal {
                    seq,
                    at: Instant::now(),
                };
            }
            Err(e) => tracing::warn!(error = %e, "audit seal failed"),
        }
    }

    /// Locally: flushes every [`BACKGROUND_INTERVAL`], or as soon as a batch is full, for as
    /// long as the auditor lives. (Not in Lambda: a frozen sandbox runs no timer; the
    /// end-of-invocation hook flushes there.)
    pub fn spawn_background_flush(self: &Arc<Self>) {
        if self.sink.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let Some(me) = weak.upgrade() else { return };
                let _ = tokio::time::timeout(BACKGROUND_INTERVAL, me.batch_full.notified()).await;
                me.flush().await;
            }
        });
    }
}

#[async_trait::async_trait]
impl crate::invocation::EndOfInvocation for Auditor {
    async fn end_of_invocation(&self) {
        self.flush().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the data consistent: a panic elsewhere may be ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes each record as a JSON line on stdout.
fn write_lines(records: &[AuditRecord]) {
    for record in records {
        if let Ok(mut line) = serde_json::to_vec(&StdoutLine { audit: record }) {
            line.push(b'\n');
            // A closed stdout must not take the request down with it.
            let _ = std::io::stdout().lock().write_all(&line);
        }
    }
}

/// The stdout form: `{"audit": {...}}`, so log queries can pick records from other lines.
#[derive(serde::Serialize)]
struct StdoutLine<'a> {
    audit: &'a AuditRecord,
}
