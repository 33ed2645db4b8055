//! A count of entries that many per-partition structures of one agent share a bound on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Entries all the holders sharing it (one per partition) may keep together: the agent's
/// segment indexes share one, its partitions' producer states another. Each holder counts its
/// own size in it and, past the bound, evicts from itself (keeping a small floor of its own),
/// so the agent's memory for those entries is bounded by configuration however many
/// partitions it serves: at most `max` plus the floor per partition.
#[derive(Debug)]
pub struct Budget {
    max: usize,
    used: AtomicUsize,
}

impl Budget {
    /// A budget of `max` entries across the holders that share it.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicUsize::new(0),
        })
    }

    /// Entries the holders sharing it keep now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// By how much the holders would exceed the bound with one holder, counted at
    /// `accounted`, grown to `len` entries.
    pub(crate) fn excess(&self, accounted: usize, len: usize) -> usize {
        let total = (self.used() + len).saturating_sub(accounted);
        total.saturating_sub(self.max)
    }

    /// Records that a holder went from `before` to `after` entries. Writes the shared counter
    /// only on a change: writers account after every appended batch, and an atomic write per
    /// batch to one cache line shared by every partition would contend on the produce path.
    pub(crate) fn account(&self, before: usize, after: usize) {
        if after == before {
            return;
        }
        if after > before {
            self.used.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(before - after, Ordering::Relaxed);
        }
    }
}
