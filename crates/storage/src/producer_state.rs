//! Idempotent-producer state of one partition, with the rules of Kafka's `ProducerStateManager`.
//!
//! For every producer id the partition remembers the newest epoch and the last
//! [`BATCHES_PER_PRODUCER`] batches (sequence range and offsets). A retried batch that matches one
//! of them is a duplicate and gets its original offsets back instead of being appended again.

use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::{Buf, BufMut};
use streamhouse_metadata::{ProducerSnapshot, ProducerSnapshots};

use crate::error::{Result, StorageError};

/// Version byte of a producer snapshot's encoding (docs/format.md, "Producer snapshots"):
/// version 2 adds the first offset of the producer's open transaction; version 1 (no
/// transactions) is still read.
const SNAPSHOT_VERSION: u8 = 2;

/// Encoded size of one remembered batch: two sequences (i32) and two offsets (i64).
const SNAPSHOT_BATCH_LEN: usize = 24;

/// How many batches per producer are remembered; Kafka's limit on in-flight requests per
/// idempotent connection is the same number, so any retry hits one of them.
pub(crate) const BATCHES_PER_PRODUCER: usize = 5;

/// Most producers whose state one partition keeps. Any client can write with any producer id
/// (a producer the partition forgot is accepted at any sequence), so without a bound a client
/// cycling through ids would grow a partition's state without end. Past it, the producers that
/// wrote least recently and have no open transaction are forgotten first: a retry of such a
/// producer's old batch is then taken as new, as after Kafka's `producer.id.expiration.ms`.
pub const MAX_PRODUCERS_PER_PARTITION: usize = 10_000;

/// Producers a partition keeps whatever its agent's producer [`Budget`](crate::Budget): while
/// the agent's partitions hold more than the budget, a partition that sees a new producer
/// forgets its own least recent ones to make room, down to this floor. The agent's producer
/// states are thus bounded by the budget plus this many per partition.
pub const MIN_PRODUCERS_RETAINED: usize = 8;

/// The producer fields of one batch together with the offsets it was (or will be) stored at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerBatch {
    /// Producer id (>= 0 for idempotent producers).
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// Sequence of the first record.
    pub first_seq: i32,
    /// Sequence of the last record (wraps past `i32::MAX` to 0).
    pub last_seq: i32,
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// What the batch is to the producer's transactions.
    pub kind: BatchKind,
}

/// A batch's part in its producer's transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchKind {
    /// Outside any transaction.
    Plain,
    /// Data of the producer's open transaction.
    Transactional,
    /// The commit or abort marker that ends it.
    Marker,
}

impl ProducerBatch {
    /// Builds the entry for a batch whose records `0..=last_offset_delta` get offsets from
    /// `base_offset`.
    pub fn new(
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_offset_delta: i32,
        base_offset: i64,
    ) -> Self {
        Self {
            producer_id,
            epoch,
            first_seq,
            last_seq: increment_sequence(first_seq, last_offset_delta),
            base_offset,
            last_offset: base_offset + i64::from(last_offset_delta),
            kind: BatchKind::Plain,
        }
    }

    /// The same batch with `kind`.
    pub fn with_kind(self, kind: BatchKind) -> Self {
        Self { kind, ..self }
    }

    /// Whether the batch carries idempotence information at all.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from `i32::MAX` to 0.
fn increment_sequence(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

/// Whether `found` lies ahead of `expected` in sequence order (sequences wrap past
/// `i32::MAX` to 0): some batches between them are missing, rather than `found` being an old
/// one.
pub(crate) fn is_ahead(found: i32, expected: i32) -> bool {
    let span = i64::from(i32::MAX) + 1;
    let distance = (i64::from(found) - i64::from(expected)).rem_euclid(span);
    distance > 0 && distance < span / 2
}

/// What the partition knows about one producer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// Oldest first; only batches of `epoch`.
    batches: VecDeque<ProducerBatch>,
    /// First offset of the producer's open transaction on this partition.
    txn_first: Option<i64>,
    /// Offset of the producer's newest batch or marker; -1 before any.
    last_offset: i64,
}

/// Outcome of checking a batch against the producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Append the batch.
    Append,
    /// The batch was already appended at these offsets; do not append it again.
    Duplicate(ProducerBatch),
}

/// Idempotent-producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// Producers with a lower id may have had state here that was forgotten (expired, below
    /// the log start, or evicted past the bound); one at or above it that the table does not
    /// hold never had a batch stored here.
    forgotten_below: i64,
}

impl ProducerStateTable {
    /// Checks `batch` (its offsets are ignored) without changing the state.
    ///
    /// Order as in Kafka: duplicate detection first, then the epoch, then the sequence.
    ///
    /// A producer the partition has no state for starts at sequence 0. Clients take a later
    /// batch's success as proof that the earlier ones were stored (librdkafka acknowledges them
    /// without an offset), so accepting a later batch first would acknowledge records never
    /// stored: that happens when an earlier batch was refused by an agent that lost the
    /// partition while the next one already reached its new owner. Refused, the client resends
    /// the earlier batch first (the writer answers such a gap "retry" for a while after it
    /// opens: see [`crate::SEQUENCE_GAP_GRACE`]). Only a producer whose state may have been
    /// forgotten (`forgotten_below`) is accepted at any sequence, as Kafka does since KIP-360:
    /// refusing it would wedge a producer idle past the expiry.
    pub fn check(&self, batch: &ProducerBatch) -> Result<Check> {
        if !batch.is_idempotent() || batch.kind == BatchKind::Marker {
            return Ok(Check::Append);
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            if batch.first_seq != 0 && batch.producer_id >= self.forgotten_below {
                return Err(StorageError::OutOfOrderSequence {
                    producer_id: batch.producer_id,
                    epoch: batch.epoch,
                    expected: 0,
                    found: batch.first_seq,
                });
            }
            return Ok(Check::Append);
        };
        if let Some(original) = entry.find_duplicate(batch) {
            return Ok(Check::Duplicate(original));
        }
        if batch.epoch < entry.epoch {
            return Err(StorageError::InvalidProducerEpoch {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                current_epoch: entry.epoch,
            });
        }
        let expected = if batch.epoch > entry.epoch {
            // A bumped epoch restarts the sequence.
            Some(0)
        } else {
            // Same epoch: continue after the last batch; with none kept, anything goes (Kafka).
            entry
                .batches
                .back()
                .map(|last| increment_sequence(last.last_seq, 1))
        };
        match expected {
            Some(expected) if expected != batch.first_seq => {
                Err(StorageError::OutOfOrderSequence {
                    producer_id: batch.producer_id,
                    epoch: batch.epoch,
                    expected,
                    found: batch.first_seq,
                })
            }
            _ => Ok(Check::Append),
        }
    }

    /// Records an appended batch (no checks; call [`Self::check`] first). `agent_full` says the
    /// agent's producer budget is spent: a new producer then makes room by forgetting this
    /// partition's least recent ones (see [`MIN_PRODUCERS_RETAINED`]). Returns whether any
    /// producer was forgotten.
    pub fn record(&mut self, batch: ProducerBatch, agent_full: bool) -> bool {
        if !batch.is_idempotent() {
            return false;
        }
        let mut forgot = false;
        if !self.producers.contains_key(&batch.producer_id) {
            // The new producer itself is never the one forgotten: it is not in the table yet.
            forgot = self.make_room(agent_full);
        }
        let entry = self.producers.entry(batch.producer_id).or_default();
        entry.last_offset = entry.last_offset.max(batch.last_offset);
        // A marker ends the transaction and fences older epochs (never lowers the epoch), but
        // is no retry target.
        let older = batch.kind == BatchKind::Marker && batch.epoch < entry.epoch;
        if batch.epoch != entry.epoch && !older {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        match batch.kind {
            BatchKind::Marker => {
                entry.txn_first = None;
                return forgot;
            }
            BatchKind::Transactional => {
                entry.txn_first.get_or_insert(batch.base_offset);
            }
            BatchKind::Plain => {}
        }
        if entry.batches.len() == BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        forgot
    }

    /// Makes room for one more producer when the table is at its own bound (down to 15/16 of
    /// it, so the O(n) selection runs once per many new producers) or the agent's budget is
    /// spent (a sixteenth of the table, never below [`MIN_PRODUCERS_RETAINED`]).
    fn make_room(&mut self, agent_full: bool) -> bool {
        let len = self.producers.len();
        let excess = if len >= MAX_PRODUCERS_PER_PARTITION {
            len + 1 - MAX_PRODUCERS_PER_PARTITION * 15 / 16
        } else if agent_full && len >= MIN_PRODUCERS_RETAINED {
            (len / 16).max(1)
        } else {
            0
        };
        self.forget_least_recent(excess) > 0
    }

    /// Forgets up to `n` of the producers that wrote least recently and have no open
    /// transaction (a transaction's state holds the last stable offset back, so it stays);
    /// returns how many.
    pub fn forget_least_recent(&mut self, n: usize) -> usize {
        let mut idle: Vec<(i64, i64)> = self
            .producers
            .iter()
            .filter(|(_, e)| e.txn_first.is_none())
            .map(|(&id, e)| (e.last_offset, id))
            .collect();
        let n = n.min(idle.len());
        if n == 0 {
            return 0;
        }
        idle.select_nth_unstable(n - 1);
        for &(_, id) in &idle[..n] {
            self.forget(id);
        }
        n
    }

    /// Records `batch` in a table that lags behind `live` (as of the last sealed chunk, or of
    /// the high watermark), then forgets its producer if `live` already gave it up for the
    /// budget and no transaction of it is open here.
    pub fn record_following(&mut self, batch: ProducerBatch, live: &ProducerStateTable) {
        self.record(batch, false);
        let id = batch.producer_id;
        let idle = self
            .producers
            .get(&id)
            .is_some_and(|e| e.txn_first.is_none());
        if idle && !live.producers.contains_key(&id) {
            self.forget(id);
        }
    }

    /// Forgets the producers `live` no longer holds, unless they have an open transaction
    /// here: keeps a table that lags behind the live one (as of the last sealed chunk, or of
    /// the high watermark) from holding what the live one gave up for the budget.
    pub fn forget_unless_in(&mut self, live: &ProducerStateTable) {
        let gone: Vec<i64> = self
            .producers
            .iter()
            .filter(|(id, e)| e.txn_first.is_none() && !live.producers.contains_key(id))
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.forget(id);
        }
    }

    fn forget(&mut self, producer_id: i64) {
        self.producers.remove(&producer_id);
        self.forgotten_below = self.forgotten_below.max(producer_id.saturating_add(1));
    }

    /// Offset of the newest batch or marker of `producer_id` stored or appended here, if the
    /// partition knows the producer.
    pub fn last_offset_of(&self, producer_id: i64) -> Option<i64> {
        self.producers.get(&producer_id).map(|e| e.last_offset)
    }

    /// First offset of `producer_id`'s open transaction on this partition, if one is open at
    /// `epoch` (an older epoch's transaction is the one its marker will end).
    pub fn open_txn(&self, producer_id: i64, epoch: i16) -> Option<i64> {
        let entry = self.producers.get(&producer_id)?;
        (entry.epoch == epoch).then_some(entry.txn_first).flatten()
    }

    /// First offset of `producer_id`'s open transaction on this partition, whatever its epoch
    /// (what its marker ends).
    pub fn open_txn_any_epoch(&self, producer_id: i64) -> Option<i64> {
        self.producers.get(&producer_id)?.txn_first
    }

    /// First offset of any producer's open transaction (the last stable offset, when below the
    /// high watermark).
    pub fn first_open_txn(&self) -> Option<i64> {
        self.producers.values().filter_map(|e| e.txn_first).min()
    }

    /// Snapshots of the producers of `batches` as they stand once `batches` are recorded on
    /// top of this table, one per producer: what a segment commit stores with the segment.
    pub fn snapshots_after(&self, batches: &[ProducerBatch], now_ms: i64) -> Vec<ProducerSnapshot> {
        let ids: BTreeSet<i64> = batches
            .iter()
            .filter(|b| b.is_idempotent())
            .map(|b| b.producer_id)
            .collect();
        let mut touched = self.subset(ids.iter().copied());
        for batch in batches {
            touched.record(*batch, false);
        }
        ids.into_iter()
            .filter_map(|id| touched.producers[&id].snapshot(id, now_ms))
            .collect()
    }

    /// A table of only the producers `ids` (those this table holds) and this table's bound of
    /// forgotten ids: checks and records of their batches give the same answers on it as on
    /// the whole table, for a fraction of its copy.
    pub fn subset(&self, ids: impl IntoIterator<Item = i64>) -> Self {
        let producers = ids
            .into_iter()
            .filter_map(|id| Some((id, self.producers.get(&id)?.clone())))
            .collect();
        ProducerStateTable {
            producers,
            forgotten_below: self.forgotten_below,
        }
    }

    /// Rebuilds a table from the snapshots a partition committed, leaving out producers whose
    /// newest batch lies below `log_start` (Kafka evicts those too) and, past the bound, the
    /// least recent ones without an open transaction. Errors name the producer
    /// whose snapshot does not decode.
    pub fn from_snapshots(
        committed: &ProducerSnapshots,
        log_start: i64,
    ) -> std::result::Result<Self, (i64, &'static str)> {
        let mut table = ProducerStateTable {
            forgotten_below: committed.forgotten_below,
            ..Self::default()
        };
        for snapshot in &committed.snapshots {
            if snapshot.last_offset < log_start {
                table.forget(snapshot.producer_id);
                continue;
            }
            let mut entry = ProducerEntry::decode(snapshot.producer_id, &snapshot.state)
                .map_err(|reason| (snapshot.producer_id, reason))?;
            entry.last_offset = snapshot.last_offset;
            table.producers.insert(snapshot.producer_id, entry);
        }
        // Within the bound, as appends keep it (see `MAX_PRODUCERS_PER_PARTITION`).
        while table.producers.len() > MAX_PRODUCERS_PER_PARTITION && table.make_room(false) {}
        Ok(table)
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }
}

/// What a committed producer snapshot says of its producer (for DescribeProducers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    /// The producer id.
    pub producer_id: i64,
    /// Its current epoch.
    pub epoch: i16,
    /// Sequence of the last record of its newest batch (-1 when it only wrote markers).
    pub last_sequence: i32,
    /// First offset of its open transaction, if one is open.
    pub txn_first_offset: Option<i64>,
    /// Offset of the last record of its newest batch.
    pub last_offset: i64,
    /// When its newest batch was committed (ms since the Unix epoch).
    pub committed_at_ms: i64,
}

/// Decodes a committed producer snapshot (the format `ProducerStateTable` writes); the error
/// says why it does not decode.
pub fn summarize_snapshot(
    snapshot: &ProducerSnapshot,
) -> std::result::Result<ProducerSummary, &'static str> {
    let entry = ProducerEntry::decode(snapshot.producer_id, &snapshot.state)?;
    Ok(ProducerSummary {
        producer_id: snapshot.producer_id,
        epoch: entry.epoch,
        last_sequence: entry.batches.back().map_or(-1, |b| b.last_seq),
        txn_first_offset: entry.txn_first,
        last_offset: snapshot.last_offset,
        committed_at_ms: snapshot.updated_at_ms,
    })
}

impl ProducerEntry {
    /// The snapshot of this entry; `None` while it remembers no batch.
    fn snapshot(&self, producer_id: i64, now_ms: i64) -> Option<ProducerSnapshot> {
        if self.last_offset < 0 {
            return None;
        }
        let mut state = Vec::with_capacity(12 + self.batches.len() * SNAPSHOT_BATCH_LEN);
        state.put_u8(SNAPSHOT_VERSION);
        state.put_i16(self.epoch);
        state.put_u8(self.batches.len() as u8);
        state.put_i64(self.txn_first.unwrap_or(-1));
        for b in &self.batches {
            state.put_i32(b.first_seq);
            state.put_i32(b.last_seq);
            state.put_i64(b.base_offset);
            state.put_i64(b.last_offset);
        }
        Some(ProducerSnapshot {
            producer_id,
            last_offset: self.last_offset,
            updated_at_ms: now_ms,
            state,
        })
    }

    fn decode(producer_id: i64, mut state: &[u8]) -> std::result::Result<Self, &'static str> {
        if state.len() < 4 {
            return Err("shorter than its header");
        }
        let version = state.get_u8();
        if version != 1 && version != SNAPSHOT_VERSION {
            return Err("unknown version");
        }
        let epoch = state.get_i16();
        let count = usize::from(state.get_u8());
        let txn_first = match version {
            1 => None,
            _ if state.len() < 8 => return Err("shorter than its header"),
            _ => Some(state.get_i64()).filter(|&first| first >= 0),
        };
        if count > BATCHES_PER_PRODUCER || state.len() != count * SNAPSHOT_BATCH_LEN {
            return Err("batch count does not match its length");
        }
        let batches = (0..count)
            .map(|_| ProducerBatch {
                producer_id,
                epoch,
                first_seq: state.get_i32(),
                last_seq: state.get_i32(),
                base_offset: state.get_i64(),
                last_offset: state.get_i64(),
                kind: BatchKind::Plain,
            })
            .collect();
        Ok(Self {
            epoch,
            batches,
            txn_first,
            last_offset: -1,
        })
    }

    fn find_duplicate(&self, batch: &ProducerBatch) -> Option<ProducerBatch> {
        if batch.epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == batch.first_seq && b.last_seq == batch.last_seq)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a partition that never forgot a producer commits.
    fn committed(snapshots: &[ProducerSnapshot]) -> ProducerSnapshots {
        ProducerSnapshots {
            snapshots: snapshots.to_vec(),
            forgotten_below: 0,
        }
    }

    #[test]
    fn a_snapshot_summarizes_its_newest_batch() {
        let table = ProducerStateTable::default();
        let batches = [
            ProducerBatch::new(7, 2, 0, 4, 100),
            ProducerBatch::new(7, 2, 5, 2, 105),
        ];
        let snapshots = table.snapshots_after(&batches, 1234);
        let summary = summarize_snapshot(&snapshots[0]).unwrap();
        let expected = ProducerSummary {
            producer_id: 7,
            epoch: 2,
            last_sequence: 7,
            txn_first_offset: None,
            last_offset: 107,
            committed_at_ms: 1234,
        };
        assert_eq!(summary, expected);
        let mut cut = snapshots[0].clone();
        cut.state.truncate(11);
        assert!(summarize_snapshot(&cut).is_err());
    }

    fn batch(pid: i64, epoch: i16, seq: i32, count: i32, base: i64) -> ProducerBatch {
        ProducerBatch::new(pid, epoch, seq, count - 1, base)
    }

    /// Checks and, when appendable, records: what the writer does.
    fn append(table: &mut ProducerStateTable, b: ProducerBatch) -> Result<Check> {
        let check = table.check(&b)?;
        if check == Check::Append {
            table.record(b, false);
        }
        Ok(check)
    }

    #[test]
    fn snapshots_round_trip_the_state_after_a_segment() {
        let mut durable = ProducerStateTable::default();
        for seq in 0..6 {
            durable.record(batch(1, 0, seq, 1, i64::from(seq)), false);
        }
        durable.record(batch(2, 3, 0, 2, 6), false);
        let segment = [batch(1, 0, 6, 2, 8), batch(-1, -1, -1, 4, 10)];
        let snapshots = durable.snapshots_after(&segment, 42);
        assert_eq!(
            snapshots.len(),
            1,
            "only producers of the segment, never non-idempotent"
        );
        assert_eq!((snapshots[0].producer_id, snapshots[0].last_offset), (1, 9));
        assert_eq!(snapshots[0].updated_at_ms, 42);

        let restored = ProducerStateTable::from_snapshots(&committed(&snapshots), 0).unwrap();
        let mut expected = durable.clone();
        for b in segment {
            expected.record(b, false);
        }
        assert_eq!(restored.producers[&1], expected.producers[&1]);
        assert_eq!(restored.producers[&1].batches.len(), BATCHES_PER_PRODUCER);
        assert!(
            ProducerStateTable::from_snapshots(&committed(&snapshots), 10)
                .unwrap()
                .producers
                .is_empty()
        );
    }

    #[test]
    fn corrupt_snapshots_are_refused() {
        let mut table = ProducerStateTable::default();
        table.record(batch(5, 1, 0, 1, 0), false);
        let good = table.snapshots_after(&[], 0);
        assert!(good.is_empty(), "nothing written, nothing to snapshot");
        let mut snapshot = table.snapshots_after(&[batch(5, 1, 1, 1, 1)], 0).remove(0);
        for cut in 0..snapshot.state.len() {
            let mut short = snapshot.clone();
            short.state.truncate(cut);
            assert!(
                ProducerStateTable::from_snapshots(&committed(&[short]), 0).is_err(),
                "cut at {cut}"
            );
        }
        snapshot.state[0] = 9;
        assert_eq!(
            ProducerStateTable::from_snapshots(&committed(&[snapshot]), 0).unwrap_err(),
            (5, "unknown version")
        );
    }

    #[test]
    fn a_producer_never_forgotten_starts_at_sequence_zero() {
        let mut t = ProducerStateTable::default();
        // Its first batch was refused (or lost with an agent) and the second came first.
        assert!(matches!(
            t.check(&batch(4, 0, 5, 5, -1)),
            Err(StorageError::OutOfOrderSequence {
                expected: 0,
                found: 5,
                ..
            })
        ));
        assert_eq!(append(&mut t, batch(4, 0, 0, 5, 0)).unwrap(), Check::Append);
        assert_eq!(append(&mut t, batch(4, 0, 5, 5, 5)).unwrap(), Check::Append);
        // A bumped epoch on a partition new to the producer starts at 0 too.
        assert_eq!(
            append(&mut t, batch(6, 3, 0, 1, 10)).unwrap(),
            Check::Append
        );
    }

    #[test]
    fn a_producer_that_may_have_been_forgotten_is_accepted_at_any_sequence() {
        let mut t = ProducerStateTable::from_snapshots(
            &ProducerSnapshots {
                snapshots: vec![],
                forgotten_below: 10,
            },
            0,
        )
        .unwrap();
        assert_eq!(
            append(&mut t, batch(9, 0, 70, 1, 0)).unwrap(),
            Check::Append
        );
        assert!(t.check(&batch(10, 0, 70, 1, -1)).is_err());

        // Snapshots below the log start are forgotten too.
        let mut old = ProducerStateTable::default();
        old.record(batch(12, 0, 0, 3, 0), false);
        old.record(batch(11, 0, 0, 3, 20), false);
        let snapshots = old.snapshots_after(&[batch(12, 0, 3, 1, 3), batch(11, 0, 3, 1, 23)], 0);
        let t = ProducerStateTable::from_snapshots(&committed(&snapshots), 10).unwrap();
        assert_eq!(t.check(&batch(12, 0, 40, 1, -1)).unwrap(), Check::Append);
        assert!(t.check(&batch(13, 0, 40, 1, -1)).is_err());
        assert!(
            t.check(&batch(11, 0, 40, 1, -1)).is_err(),
            "kept: still in sequence"
        );
    }

    #[test]
    fn consecutive_sequences_are_accepted() {
        let mut t = ProducerStateTable::default();
        assert_eq!(append(&mut t, batch(1, 0, 0, 3, 0)).unwrap(), Check::Append);
        assert_eq!(append(&mut t, batch(1, 0, 3, 2, 3)).unwrap(), Check::Append);
        assert_eq!(append(&mut t, batch(1, 0, 5, 1, 5)).unwrap(), Check::Append);
    }

    #[test]
    fn retry_of_a_cached_batch_returns_the_original_offsets() {
        let mut t = ProducerStateTable::default();
        let first = batch(7, 2, 0, 10, 100);
        append(&mut t, first).unwrap();
        append(&mut t, batch(7, 2, 10, 10, 110)).unwrap();
        // The retry arrives with different (unassigned) offsets.
        let retry = batch(7, 2, 0, 10, -1);
        assert_eq!(t.check(&retry).unwrap(), Check::Duplicate(first));
    }

    #[test]
    fn ahead_counts_across_the_wrap_of_sequences() {
        assert!(is_ahead(7, 5));
        assert!(!is_ahead(5, 5));
        assert!(!is_ahead(3, 5), "an old batch is behind, not a gap");
        assert!(
            is_ahead(2, i32::MAX - 1),
            "past i32::MAX sequences restart at 0"
        );
        assert!(!is_ahead(i32::MAX - 1, 2));
    }

    #[test]
    fn only_the_last_five_batches_are_deduplicated() {
        let mut t = ProducerStateTable::default();
        for i in 0..6 {
            append(&mut t, batch(1, 0, i, 1, i64::from(i))).unwrap();
        }
        // Batch 0 fell out of the window: it is now simply out of order.
        assert!(matches!(
            t.check(&batch(1, 0, 0, 1, -1)),
            Err(StorageError::OutOfOrderSequence {
                expected: 6,
                found: 0,
                ..
            })
        ));
        assert!(matches!(
            t.check(&batch(1, 0, 1, 1, -1)),
            Ok(Check::Duplicate(_))
        ));
    }

    #[test]
    fn a_gap_is_out_of_order() {
        let mut t = ProducerStateTable::default();
        append(&mut t, batch(1, 0, 0, 5, 0)).unwrap();
        assert!(matches!(
            t.check(&batch(1, 0, 6, 1, -1)),
            Err(StorageError::OutOfOrderSequence {
                expected: 5,
                found: 6,
                ..
            })
        ));
    }

    #[test]
    fn a_partial_overlap_is_out_of_order_not_a_duplicate() {
        let mut t = ProducerStateTable::default();
        append(&mut t, batch(1, 0, 0, 5, 0)).unwrap();
        assert!(matches!(
            t.check(&batch(1, 0, 0, 3, -1)),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn an_older_epoch_is_fenced() {
        let mut t = ProducerStateTable::default();
        append(&mut t, batch(1, 3, 0, 1, 0)).unwrap();
        assert!(matches!(
            t.check(&batch(1, 2, 1, 1, -1)),
            Err(StorageError::InvalidProducerEpoch {
                epoch: 2,
                current_epoch: 3,
                ..
            })
        ));
    }

    #[test]
    fn a_new_epoch_must_start_at_zero_and_resets_the_window() {
        let mut t = ProducerStateTable::default();
        append(&mut t, batch(1, 0, 0, 4, 0)).unwrap();
        assert!(matches!(
            t.check(&batch(1, 1, 4, 1, -1)),
            Err(StorageError::OutOfOrderSequence {
                expected: 0,
                found: 4,
                ..
            })
        ));
        assert_eq!(append(&mut t, batch(1, 1, 0, 1, 4)).unwrap(), Check::Append);
        // The old epoch's batches are no longer duplicates; their epoch is now fenced.
        assert!(matches!(
            t.check(&batch(1, 0, 0, 4, -1)),
            Err(StorageError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn sequences_wrap_around_after_i32_max() {
        // A producer whose state may have been forgotten, so it can start near the wrap.
        let mut t = ProducerStateTable {
            forgotten_below: 2,
            ..ProducerStateTable::default()
        };
        let b = batch(1, 0, i32::MAX - 1, 2, 0);
        assert_eq!(b.last_seq, i32::MAX);
        append(&mut t, b).unwrap();
        let wrapped = batch(1, 0, 0, 3, 2);
        assert_eq!(append(&mut t, wrapped).unwrap(), Check::Append);
        let straddling = ProducerBatch::new(2, 0, i32::MAX, 2, 0);
        assert_eq!(straddling.last_seq, 1);
    }

    #[test]
    fn non_idempotent_batches_are_not_tracked() {
        let mut t = ProducerStateTable::default();
        assert_eq!(
            append(&mut t, batch(-1, -1, -1, 5, 0)).unwrap(),
            Check::Append
        );
        assert_eq!(
            append(&mut t, batch(-1, -1, -1, 5, 5)).unwrap(),
            Check::Append
        );
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn producers_are_independent() {
        let mut t = ProducerStateTable::default();
        append(&mut t, batch(1, 0, 0, 1, 0)).unwrap();
        append(&mut t, batch(2, 0, 0, 1, 1)).unwrap();
        append(&mut t, batch(1, 0, 1, 1, 2)).unwrap();
        assert!(matches!(t.check(&batch(2, 0, 1, 1, -1)), Ok(Check::Append)));
    }

    #[test]
    fn a_partition_keeps_a_bounded_number_of_producers_forgetting_the_idle_first() {
        let mut t = ProducerStateTable::default();
        let mut txn = batch(0, 0, 0, 1, 0);
        txn.kind = BatchKind::Transactional;
        append(&mut t, txn).unwrap();
        let many = MAX_PRODUCERS_PER_PARTITION as i64 * 2;
        for pid in 1..=many {
            append(&mut t, batch(pid, 0, 0, 1, pid)).unwrap();
            assert!(
                t.len() <= MAX_PRODUCERS_PER_PARTITION,
                "{} at {pid}",
                t.len()
            );
        }
        assert_eq!(
            t.open_txn(0, 0),
            Some(0),
            "an open transaction is never forgotten"
        );
        // The newest producer is remembered (its retry is a duplicate)...
        let newest = batch(many, 0, 0, 1, -1);
        assert!(matches!(t.check(&newest), Ok(Check::Duplicate(_))));
        // ...the oldest idle one is not (a retry of its batch is taken as new), and its next
        // batch is accepted although the table no longer knows where its sequence stood.
        assert!(matches!(t.check(&batch(1, 0, 0, 1, -1)), Ok(Check::Append)));
        assert!(matches!(t.check(&batch(1, 0, 1, 1, -1)), Ok(Check::Append)));
        assert!(
            t.check(&batch(many + 1, 0, 1, 1, -1)).is_err(),
            "never seen"
        );
    }

    #[test]
    fn a_spent_agent_budget_makes_room_from_the_partitions_own_least_recent_producers() {
        let mut t = ProducerStateTable::default();
        for pid in 1..=32 {
            t.record(batch(pid, 0, 0, 1, pid), false);
        }
        assert!(t.record(batch(100, 0, 0, 1, 100), true));
        assert_eq!(t.len(), 32 - 2 + 1, "a sixteenth of the table made room");
        assert!(matches!(t.check(&batch(1, 0, 3, 1, -1)), Ok(Check::Append)));
        assert!(
            t.check(&batch(3, 0, 5, 1, -1)).is_err(),
            "the third least recent is still known"
        );
        // A known producer's next batch takes no room, and a small table grows to its floor.
        assert!(!t.record(batch(100, 0, 1, 1, 101), true));
        let mut small = ProducerStateTable::default();
        for pid in 0..MIN_PRODUCERS_RETAINED as i64 {
            assert!(!small.record(batch(pid, 0, 0, 1, pid), true));
        }
        assert_eq!(small.len(), MIN_PRODUCERS_RETAINED);
        assert!(small.record(batch(99, 0, 0, 1, 99), true));
        assert_eq!(small.len(), MIN_PRODUCERS_RETAINED);
    }

    #[test]
    fn a_subset_answers_for_its_producers_as_the_whole_table_does() {
        let mut t = ProducerStateTable::default();
        for pid in 1..=40 {
            t.record(batch(pid, 0, 0, 2, pid * 10), false);
        }
        t.forget(5);
        let sub = t.subset([7, 5, 99]);
        assert_eq!(sub.len(), 1);
        for probe in [
            batch(7, 0, 0, 2, -1),
            batch(7, 0, 2, 1, -1),
            batch(7, 0, 4, 1, -1),
            batch(5, 0, 3, 1, -1),
            batch(99, 0, 3, 1, -1),
            batch(99, 0, 0, 1, -1),
        ] {
            assert_eq!(
                format!("{:?}", sub.check(&probe)),
                format!("{:?}", t.check(&probe)),
                "{probe:?}"
            );
        }
    }

    #[test]
    fn lagging_tables_forget_what_the_live_one_gave_up_except_open_transactions() {
        let mut live = ProducerStateTable::default();
        let mut lagging = ProducerStateTable::default();
        let txn = batch(1, 0, 0, 1, 0).with_kind(BatchKind::Transactional);
        for b in [txn, batch(2, 0, 0, 1, 1), batch(3, 0, 0, 1, 2)] {
            live.record(b, false);
            lagging.record(b, false);
        }
        live.forget(1);
        live.forget(2);
        lagging.forget_unless_in(&live);
        assert_eq!(
            lagging.open_txn(1, 0),
            Some(0),
            "its open transaction stays"
        );
        assert_eq!(lagging.len(), 2);
        // A batch appended before the live table forgot its producer is recorded, then
        // forgotten.
        lagging.record_following(batch(4, 0, 0, 1, 3), &live);
        assert_eq!(lagging.len(), 2);
        live.record(batch(3, 0, 1, 1, 4), false);
        lagging.record_following(batch(3, 0, 1, 1, 4), &live);
        assert!(matches!(
            lagging.check(&batch(3, 0, 1, 1, -1)),
            Ok(Check::Duplicate(_))
        ));
    }

    #[test]
    fn open_transactions_survive_snapshots_and_end_with_their_marker() {
        let mut t = ProducerStateTable::default();
        t.record(
            batch(1, 0, 0, 2, 10).with_kind(BatchKind::Transactional),
            false,
        );
        t.record(
            batch(1, 0, 2, 1, 12).with_kind(BatchKind::Transactional),
            false,
        );
        t.record(batch(2, 0, 0, 1, 13), false);
        assert_eq!((t.open_txn(1, 0), t.open_txn(1, 1)), (Some(10), None));
        assert_eq!(t.first_open_txn(), Some(10));
        let snapshots = t.snapshots_after(&[], 0);
        assert!(snapshots.is_empty());
        let all = ProducerStateTable::default().snapshots_after(
            &[batch(1, 0, 0, 2, 10).with_kind(BatchKind::Transactional)],
            5,
        );
        let restored = ProducerStateTable::from_snapshots(&committed(&all), 0).unwrap();
        assert_eq!(
            restored.open_txn(1, 0),
            Some(10),
            "the open transaction survives"
        );
        assert_eq!(
            summarize_snapshot(&all[0]).unwrap().txn_first_offset,
            Some(10)
        );

        // A fencing abort marker with a bumped epoch ends it and fences epoch 0.
        let marker = ProducerBatch::new(1, 1, -1, 0, 14).with_kind(BatchKind::Marker);
        let after = t.snapshots_after(&[marker], 6);
        t.record(marker, false);
        assert_eq!(t.first_open_txn(), None);
        assert!(matches!(
            t.check(&batch(1, 0, 3, 1, -1)),
            Err(StorageError::InvalidProducerEpoch { .. })
        ));
        let restored = ProducerStateTable::from_snapshots(&committed(&after), 0).unwrap();
        assert_eq!(
            (restored.first_open_txn(), after[0].last_offset),
            (None, 14)
        );
        assert_eq!(summarize_snapshot(&after[0]).unwrap().last_sequence, -1);
    }

    #[test]
    fn version_1_snapshots_are_still_read() {
        let mut v1 = vec![1u8, 0, 4, 1];
        for v in [0i32, 2] {
            v1.extend_from_slice(&v.to_be_bytes());
        }
        for v in [7i64, 9] {
            v1.extend_from_slice(&v.to_be_bytes());
        }
        let snapshot = ProducerSnapshot {
            producer_id: 3,
            last_offset: 9,
            updated_at_ms: 0,
            state: v1,
        };
        let t = ProducerStateTable::from_snapshots(&committed(&[snapshot]), 0).unwrap();
        assert!(matches!(
            t.check(&batch(3, 4, 0, 3, -1)),
            Ok(Check::Duplicate(_))
        ));
        assert_eq!(t.first_open_txn(), None);
    }
}
