//! The metric families: counters and latency histograms keyed by a few label values, each
//! series a handful of atomics. A read lock and a hash find an existing series; only a new
//! label set takes the write lock.
//!
//! Cardinality is bounded: label values that callers influence (endpoint and tool names) are
//! "open", and once a family holds [`MAX_SERIES`] series a new label set has its open values
//! replaced by [`OTHER`]. The closed labels (status class, outcome, mode: values the gateway
//! chooses from fixed lists) are kept, so the overflow series are few and still say what
//! happened. A caller inventing a million tool names grows nothing past the bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Most distinct label sets one family keeps before folding open labels into [`OTHER`].
pub const MAX_SERIES: usize = 500;
/// The value that stands for every label value past the bound.
pub const OTHER: &str = "other";
/// Longest label value kept (longer ones are cut at a character boundary).
pub const MAX_LABEL_BYTES: usize = 128;
/// Most latency samples a series keeps between two EMF flushes (EMF's limit per value array).
pub const MAX_SAMPLES: usize = 100;

/// Upper bounds of the latency histogram buckets, in seconds (`+Inf` follows).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A counter or a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram,
}

/// One label of a family.
#[derive(Debug, Clone, Copy)]
pub struct Label {
    pub name: &'static str,
    /// Whether callers influence its values (folded into [`OTHER`] past the bound).
    pub open: bool,
}

/// An open label.
pub const fn open(name: &'static str) -> Label {
    Label { name, open: true }
}

/// A closed label (values from a fixed list the gateway chooses).
pub const fn closed(name: &'static str) -> Label {
    Label { name, open: false }
}

/// One series: a count, and for histograms a sum and bucket counts.
#[derive(Debug)]
pub struct Series {
    pub labels: Box<[Box<str>]>,
    count: AtomicU64,
    /// Sum of observations in microseconds.
    sum_us: AtomicU64,
    buckets: Box<[AtomicU64]>,
    /// The count at the last EMF flush.
    flushed: AtomicU64,
    /// Observations (milliseconds) since the last EMF flush, when EMF is on.
    samples: Option<Mutex<Vec<f64>>>,
}

impl Series {
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Cumulative bucket counts, one per [`BUCKETS`] entry.
    pub fn cumulative_buckets(&self) -> Vec<u64> {
        let mut acc = 0;
        self.buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect()
    }

    fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    fn observe(&self, seconds: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        self.sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(samples) = &self.samples {
            let mut s = samples.lock().unwrap_or_else(|e| e.into_inner());
            if s.len() < MAX_SAMPLES {
                s.push(seconds * 1000.0);
            }
        }
    }

    /// What was counted since the last flush, and the samples taken since; marks them flushed.
    pub fn take_delta(&self) -> (u64, Vec<f64>) {
        let now = self.count.load(Ordering::Relaxed);
        let before = self.flushed.swap(now, Ordering::Relaxed);
        let samples = self
            .samples
            .as_ref()
            .map(|s| std::mem::take(&mut *s.lock().unwrap_or_else(|e| e.into_inner())))
            .unwrap_or_default();
        (now.saturating_sub(before), samples)
    }
}

/// A metric family: a name, its labels, and its series.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: &'static [Label],
    series: RwLock<HashMap<Box<str>, Arc<Series>>>,
    keep_samples: bool,
    /// Observations that landed in an overflow series.
    overflowed: AtomicU64,
}

impl Family {
    pub fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &'static [Label],
        keep_samples: bool,
    ) -> Self {
        Self {
            name,
            help,
            kind,
            labels,
            series: RwLock::default(),
            keep_samples: keep_samples && kind == Kind::Histogram,
            overflowed: AtomicU64::new(0),
        }
    }

    /// Adds `n` to the counter with `values` (one per label, in order).
    pub fn inc(&self, values: &[&str], n: u64) {
        self.series(values).add(n);
    }

    /// Observes a latency of `seconds` on the histogram with `values`.
    pub fn observe(&self, values: &[&str], seconds: f64) {
        self.series(values).observe(seconds);
    }

    /// Every series, in label order (for a stable exposition).
    pub fn snapshot(&self) -> Vec<Arc<Series>> {
        let map = self.series.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = map.values().cloned().collect();
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        all
    }

    /// Number of label sets held.
    pub fn len(&self) -> usize {
        self.series.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no series exists yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Observations folded into an overflow series so far.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    fn series(&self, values: &[&str]) -> Arc<Series> {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        // The key is built in a per-thread buffer: an existing series (every observation
        // but a label set's first) costs no allocation.
        KEY.with_borrow_mut(|key| {
            key_into(key, values.iter().copied());
            self.series_keyed(key, values)
        })
    }

    fn series_keyed(&self, key: &str, values: &[&str]) -> Arc<Series> {
        // Built only once the family is full.
        let fold = || -> Vec<&str> {
            self.labels
                .iter()
                .zip(values)
                .map(|(l, v)| if l.open { OTHER } else { *v })
                .collect()
        };
        {
            // The common case: the series exists (or the family is full and its overflow
            // series does), under the read lock only.
            let map = self.series.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = map.get(key) {
                return s.clone();
            }
            if map.len() >= MAX_SERIES
                && let Some(s) = map.get(key_of(fold().into_iter()).as_str())
            {
                self.overflowed.fetch_add(1, Ordering::Relaxed);
                return s.clone();
            }
        }
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(key) {
            return s.clone();
        }
        let folded;
        let (key, values) = if map.len() >= MAX_SERIES {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            folded = fold();
            let k = key_of(folded.iter().copied());
            if let Some(s) = map.get(k.as_str()) {
                return s.clone();
            }
            (k, folded.as_slice())
        } else {
            (key.to_owned(), values)
        };
        let buckets = match self.kind {
            Kind::Counter => 0,
            Kind::Histogram => BUCKETS.len(),
        };
        let s = Arc::new(Series {
            labels: values.iter().map(|v| Box::from(clip(v))).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            flushed: AtomicU64::new(0),
            samples: self.keep_samples.then(Mutex::default),
        });
        map.insert(key.into_boxed_str(), s.clone());
        s
    }
}

thread_local! {
    /// The buffer [`Family::series`] builds lookup keys in.
    static KEY: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(128));
}

/// The map key of a label set: the values joined by a separator no value contains after
/// [`clip`] (control characters are replaced there).
fn key_of<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut key = String::with_capacity(64);
    key_into(&mut key, values);
    key
}

/// [`key_of`] into `key` (cleared first).
fn key_into<'a>(key: &mut String, values: impl Iterator<Item = &'a str>) {
    key.clear();
    for (i, v) in values.enumerate() {
        if i > 0 {
            key.push('\u{1f}');
        }
        key.push_str(&clip(v));
    }
}

/// A label value as stored: at most [`MAX_LABEL_BYTES`], control characters replaced by `_`,
/// empty as `none` (CloudWatch dimension values cannot be empty).
pub fn clip(v: &str) -> std::borrow::Cow<'_, str> {
    if v.is_empty() {
        return "none".into();
    }
    let mut end = v.len().min(MAX_LABEL_BYTES);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &v[..end];
    if cut.chars().any(char::is_control) {
        cut.chars()
            .map(|c| if c.is_control() { '_' } else { c })
            .collect::<String>()
            .into()
    } else {
        cut.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static LABELS: [Label; 2] = [open("tool"), closed("outcome")];

    #[test]
    fn a_million_invented_names_stay_within_the_bound() {
        let f = Family::new("t", "t", Kind::Histogram, &LABELS, true);
        for i in 0..1_000_000u32 {
            let outcome = if i % 2 == 0 { "ok" } else { "rpc_error" };
            f.observe(&[&format!("tool-{i}"), outcome], 0.001);
        }
        // MAX_SERIES real label sets, plus one overflow series per closed value.
        assert_eq!(f.len(), MAX_SERIES + 2);
        assert_eq!(f.overflowed(), 1_000_000 - MAX_SERIES as u64);
        let other: u64 = f
            .snapshot()
            .iter()
            .filter(|s| &*s.labels[0] == OTHER)
            .map(|s| s.count())
            .sum();
        assert_eq!(
            other,
            1_000_000 - MAX_SERIES as u64,
            "nothing is lost, only folded"
        );
        // Samples stay bounded too.
        for s in f.snapshot() {
            assert!(s.take_delta().1.len() <= MAX_SAMPLES);
        }
    }

    #[test]
    fn histograms_count_sum_and_bucket() {
        let f = Family::new("t", "t", Kind::Histogram, &LABELS, false);
        f.observe(&["a", "ok"], 0.0007);
        f.observe(&["a", "ok"], 0.2);
        f.observe(&["a", "ok"], 99.0);
        let s = &f.snapshot()[0];
        assert_eq!(s.count(), 3);
        assert!((s.sum_seconds() - 99.2007).abs() < 1e-6);
        let b = s.cumulative_buckets();
        assert_eq!(b[0], 0);
        assert_eq!(b[1], 1, "0.7 ms is in the 1 ms bucket");
        assert_eq!(b[BUCKETS.iter().position(|x| *x == 0.25).unwrap()], 2);
        assert_eq!(*b.last().unwrap(), 2, "99 s is only in +Inf (the count)");
    }

    #[test]
    fn label_values_are_clipped_and_cleaned() {
        assert_eq!(clip(""), "none");
        assert_eq!(clip("a\nb\u{1f}c"), "a_b_c");
        let long = "é".repeat(100);
        assert!(clip(&long).len() <= MAX_LABEL_BYTES);
        let f = Family::new("t", "t", Kind::Counter, &LABELS, false);
        f.inc(&["x\u{1f}y", "ok"], 1);
        f.inc(&["x", "y\u{1f}ok"], 1);
        assert_eq!(
            f.len(),
            2,
            "the separator cannot make two label sets collide"
        );
    }

    #[test]
    fn deltas_reset_at_each_flush() {
        let f = Family::new("t", "t", Kind::Counter, &LABELS, true);
        f.inc(&["a", "ok"], 3);
        let s = f.snapshot()[0].clone();
        assert_eq!(s.take_delta().0, 3);
        assert_eq!(s.take_delta().0, 0);
        f.inc(&["a", "ok"], 2);
        assert_eq!(s.take_delta().0, 2);
        assert_eq!(s.count(), 5, "the cumulative count is kept for Prometheus");
    }
}
