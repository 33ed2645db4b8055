//! The partition writer: assigns offsets and keeps a partition's appended batches until a group
//! commit makes them durable.
//!
//! Appends are synchronous and in memory. Durability comes from a flush cycle
//! ([`crate::FlushCycle`]), which seals the open segment of every writer it flushes, uploads them
//! all as ONE shared object, commits every partition's range in ONE metadata transaction, and
//! only then advances each high watermark. Acknowledgements wait on a [`DurableTicket`].
//!
//! Cycles may overlap (a cycle uploads while the previous one commits). Each sealed chunk has a
//! sequence number per partition and is resolved (published or discarded) strictly in that
//! order, so offsets stay dense: a chunk that fails discards every later record of its partition
//! (their producers get an error), and chunks sealed after it are void.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use rand::RngExt;
use std::collections::HashMap;

use streamhouse_metadata::{
    now_ms, AbortedTxn, LeaseFence, ProducerSnapshot, SegmentInfo, TopicConfig, TxnMarker,
    WrittenMarker,
};
use streamhouse_segment::{ControlMarker, EncodedSegment, RecordBatch, SegmentBuilder};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit};

use crate::budget::Budget;
use crate::error::{Result, StorageError};
use crate::layout::SEGMENT_PREFIX;
use crate::partition::PartitionStorage;
use crate::producer_state::{
    is_ahead, BatchKind, Check, ProducerBatch, ProducerStateTable, MIN_PRODUCERS_RETAINED,
};

/// How long after a writer opens a sequence gap from a producer that has appended nothing
/// through it is answered "retry" ([`StorageError::EarlierBatchesInFlight`]) instead of
/// out of order.
///
/// Why: right after a partition changes hands, a producer's batch refused by the previous
/// owner is resent while its next batch may already have reached the new one. Kafka answers
/// that next batch `OUT_OF_ORDER_SEQUENCE_NUMBER`, which Java clients retry, but librdkafka
/// (and every client built on it) then bumps its producer epoch and renumbers every queued
/// record, so a record on any other partition whose earlier send timed out but was stored is
/// stored a second time under the new epoch (librdkafka issue 4953). A retriable answer lets
/// the client resend in order instead. Clients resend a refused batch within a second or two
/// of a metadata refresh; a gap still open after this long is a real one.
pub const SEQUENCE_GAP_GRACE: Duration = Duration::from_secs(30);

/// Settings of a [`PartitionWriter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    /// Roll (flush) the open segment once it holds this many bytes (`segment.bytes`).
    pub segment_max_bytes: u64,
    /// Upload attempts after the first one before a flush fails.
    pub upload_retries: u32,
    /// Delay before the first retry; doubles per attempt (with jitter).
    pub upload_backoff: Duration,
    /// Upper bound of the retry delay.
    pub upload_backoff_max: Duration,
    /// How long records appended without a deadline of their own ([`PartitionWriter::append`])
    /// may wait for their flush before it is abandoned.
    pub default_deadline: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self::for_topic(&TopicConfig::default())
    }
}

impl WriterConfig {
    /// Defaults with the roll settings of a topic. (`segment.ms` needs nothing here: every
    /// flush cycle, at most `flush_interval` apart, ends the open segment.)
    pub fn for_topic(config: &TopicConfig) -> Self {
        Self {
            segment_max_bytes: config.segment_bytes,
            upload_retries: 5,
            upload_backoff: Duration::from_millis(50),
            upload_backoff_max: Duration::from_secs(5),
            default_deadline: Duration::from_secs(30),
        }
    }

    /// Delay before retry number `attempt` (0-based): exponential, capped, with "equal jitter"
    /// so writers that failed together do not retry in lockstep.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .upload_backoff
            .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
            .min(self.upload_backoff_max);
        let half = exp / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

/// Where an append landed.
#[derive(Debug)]
pub struct Appended {
    /// Offset of the first record appended (or of the original, for a duplicate).
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Whether the batches were a retry of already appended ones (idempotent producer) and were
    /// not appended again.
    pub duplicate: bool,
    /// Resolves once the records are durable.
    pub durable: DurableTicket,
    /// Bytes buffered in the partition's open segment right after this append, so the caller
    /// can ask for an early flush without locking the writer again.
    pub buffered_bytes: usize,
}

/// Resolves when appended records are durable (committed, below the high watermark), or fails
/// when the flush that carried them failed.
#[derive(Debug)]
#[must_use = "records are only acknowledged once the ticket resolves"]
pub struct DurableTicket {
    wait: Option<oneshot::Receiver<Result<()>>>,
    topic: Arc<str>,
    partition: u32,
}

impl DurableTicket {
    /// Waits until the records are durable.
    ///
    /// Errors with [`StorageError::FlushFailed`] when their flush failed (nothing of them is
    /// visible then) and [`StorageError::WriterClosed`] when the writer went away first.
    pub async fn wait(self) -> Result<()> {
        let Some(rx) = self.wait else { return Ok(()) };
        rx.await.unwrap_or_else(|_| {
            Err(StorageError::WriterClosed {
                topic: self.topic.to_string(),
                partition: self.partition,
            })
        })
    }

    /// Whether the records were already durable when the ticket was issued.
    pub fn is_ready(&self) -> bool {
        self.wait.is_none()
    }
}

/// Writes one partition. Cheap to clone; all clones share the partition's state, so every
/// producer connection of the partition can hold one.
#[derive(Clone)]
pub struct PartitionWriter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PartitionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionWriter")
            .field("topic", &self.inner.topic)
            .field("partition", &self.inner.storage.partition)
            .field("high_watermark", &self.high_watermark())
            .finish_non_exhaustive()
    }
}

struct Inner {
    storage: PartitionStorage,
    /// The topic name, shared with every [`DurableTicket`].
    topic: Arc<str>,
    config: WriterConfig,
    fence: Option<LeaseFence>,
    /// High watermark and time at opening: a producer whose newest batch lies below it has
    /// appended nothing through this writer (see [`SEQUENCE_GAP_GRACE`]).
    opened: (i64, tokio::time::Instant),
    state: Mutex<State>,
    /// Sequence number of the last sealed chunk resolved (published or discarded); a chunk is
    /// resolved only once its predecessor is.
    resolved: watch::Sender<u64>,
    high_watermark: watch::Sender<i64>,
    roll_scheduled: AtomicBool,
}

/// Mutable state, behind a std mutex: held only for in-memory work, never across an await.
struct State {
    open: OpenSegment,
    next_offset: i64,
    high_watermark: i64,
    log_start: i64,
    /// Includes appends not yet durable; checks run against it.
    producers: ProducerStateTable,
    /// As of the end of the last sealed chunk: what the next chunk's snapshots build on.
    sealed_producers: ProducerStateTable,
    /// As of the high watermark; restored when a flush fails.
    durable_producers: ProducerStateTable,
    waiters: Vec<Waiter>,
    /// Set once the writer lost its lease; the reason.
    fenced: Option<String>,
    /// Bumped by every discard: chunks sealed under an older generation are void.
    generation: u64,
    /// Aborted transactions up to the high watermark, by marker offset (for Fetch).
    aborted: Vec<AbortedTxn>,
    /// Markers appended per producer id: a transactional write verified with the coordinator
    /// before the producer's marker was appended belongs to the finished transaction.
    markers_appended: HashMap<i64, u64>,
    /// Sequence number the next sealed chunk gets (the first is 1).
    next_seq: u64,
}

impl State {
    /// Records an appended batch in the live producer table within the agent's producer
    /// budget; producers it forgets for the budget are forgotten by the lagging tables too.
    fn record_producer(&mut self, entry: ProducerBatch, budget: &Budget) {
        let before = self.producers.len();
        if self.producers.record(entry, budget.excess(0, 1) > 0) {
            self.sealed_producers.forget_unless_in(&self.producers);
            self.durable_producers.forget_unless_in(&self.producers);
        }
        budget.account(before, self.producers.len());
    }
}

/// Counts a freshly loaded producer table in the agent's budget, first forgetting its least
/// recent producers (down to [`MIN_PRODUCERS_RETAINED`]) if it would not fit.
fn fit_budget(producers: &mut ProducerStateTable, budget: &Budget) {
    let len = producers.len();
    let excess = budget
        .excess(0, len)
        .min(len.saturating_sub(MIN_PRODUCERS_RETAINED));
    producers.forget_least_recent(excess);
    budget.account(0, producers.len());
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        self.storage
            .producer_budget
            .account(state.producers.len(), 0);
    }
}

/// The segment appends currently go to.
struct OpenSegment {
    builder: SegmentBuilder,
    producer_batches: Vec<ProducerBatch>,
    /// Transaction markers in it, stored with its commit.
    markers: Vec<WrittenMarker>,
    opened_at: Option<Instant>,
    /// The earliest deadline of the records in it: past it, their flush is abandoned.
    deadline: Option<tokio::time::Instant>,
    /// Memory reserved for its bytes from the agent's buffer budget, released with the chunk.
    reservation: Option<OwnedSemaphorePermit>,
}

impl OpenSegment {
    fn new(base_offset: i64) -> Self {
        Self {
            builder: SegmentBuilder::new(base_offset),
            producer_batches: Vec::new(),
            markers: Vec::new(),
            opened_at: None,
            deadline: None,
            reservation: None,
        }
    }

    /// Size of the open segment so far; 0 while it holds no batch.
    fn buffered_bytes(&self) -> usize {
        if self.builder.is_empty() {
            0
        } else {
            self.builder.size()
        }
    }

    fn is_full(&self, config: &WriterConfig) -> bool {
        !self.builder.is_empty() && self.builder.size() as u64 >= config.segment_max_bytes
    }

    fn hold(&mut self, deadline: tokio::time::Instant, reservation: Option<OwnedSemaphorePermit>) {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        if let Some(permit) = reservation {
            match &mut self.reservation {
                Some(held) => held.merge(permit),
                None => self.reservation = Some(permit),
            }
        }
    }
}

/// A partition's records taken out of its writer by a flush cycle: one encoded segment, to be
/// uploaded (inside a shared object), committed and then resolved with
/// `PartitionWriter::publish` or `PartitionWriter::discard`.
pub struct SealedChunk {
    pub(crate) writer: PartitionWriter,
    pub(crate) encoded: EncodedSegment,
    producer_batches: Vec<ProducerBatch>,
    /// The state of the chunk's producers once it is durable, committed with it.
    pub(crate) producer_snapshots: Vec<ProducerSnapshot>,
    /// The transaction markers it holds, committed with it.
    pub(crate) markers: Vec<WrittenMarker>,
    /// Past this, the chunk must not be committed: its producers have been answered.
    pub(crate) deadline: tokio::time::Instant,
    seq: u64,
    generation: u64,
    _reservation: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for SealedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedChunk")
            .field("writer", &self.writer)
            .field("base_offset", &self.encoded.footer.base_offset)
            .field("last_offset", &self.encoded.footer.last_offset)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

struct Waiter {
    last_offset: i64,
    tx: oneshot::Sender<Result<()>>,
}

/// What an append may hold and how long it may wait (see [`PartitionWriter::append_with`]).
#[derive(Debug, Default)]
pub struct AppendOptions {
    /// When the appending request stops waiting (its produce timeout): a flush not committed
    /// by then is abandoned, so a record answered with an error is never stored later.
    /// `None`: [`WriterConfig::default_deadline`] from now.
    pub deadline: Option<tokio::time::Instant>,
    /// Memory reserved for the records from the agent's buffer budget; held until their chunk
    /// is resolved.
    pub reservation: Option<OwnedSemaphorePermit>,
    /// The coordinator confirmed that the transaction of the batches' producer includes this
    /// partition (see [`PartitionWriter::txn_verification`]).
    pub txn_verified: Option<TxnVerification>,
}

/// Taken before asking the transaction coordinator whether a producer's ongoing transaction
/// includes a partition (KIP-890); valid for an append only while no marker of that producer
/// was appended in between (else the write belongs to a finished transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnVerification {
    /// The producer id.
    pub producer_id: i64,
    /// The producer epoch of the write.
    pub epoch: i16,
    markers_appended: u64,
}

impl PartitionWriter {
    /// Opens the writer of `topic`/`partition` at the durable high watermark.
    ///
    /// Idempotent-producer state comes from the producer snapshots committed with the segments
    /// (one per producer, always matching the high watermark), so a retry after a restart or a
    /// failover is recognised however long ago the producer last wrote, until it expires.
    pub async fn open(
        storage: PartitionStorage,
        config: WriterConfig,
        fence: Option<LeaseFence>,
    ) -> Result<Self> {
        let progress = storage
            .metadata
            .get_partition(&storage.topic.name, storage.partition)
            .await?;
        let hw = progress.high_watermark;
        let snapshots = storage
            .metadata
            .list_producer_snapshots(&storage.topic.name, storage.partition)
            .await?;
        let aborted = storage
            .metadata
            .list_aborted_txns(
                &storage.topic.name,
                storage.partition,
                progress.log_start_offset,
            )
            .await?;
        let mut producers =
            ProducerStateTable::from_snapshots(&snapshots, progress.log_start_offset).map_err(
                |(producer_id, reason)| StorageError::CorruptProducerState {
                    topic: storage.topic.name.clone(),
                    partition: storage.partition,
                    producer_id,
                    reason,
                },
            )?;
        fit_budget(&mut producers, &storage.producer_budget);
        tracing::debug!(
            topic = %storage.topic.name,
            partition = storage.partition,
            high_watermark = hw,
            producers = producers.len(),
            epoch = fence.as_ref().map(|f| f.epoch),
            "partition writer opened"
        );
        let (high_watermark, _) = watch::channel(hw);
        let state = State {
            open: OpenSegment::new(hw),
            next_offset: hw,
            high_watermark: hw,
            log_start: progress.log_start_offset,
            producers: producers.clone(),
            sealed_producers: producers.clone(),
            durable_producers: producers,
            waiters: Vec::new(),
            fenced: None,
            generation: 0,
            next_seq: 1,
            aborted,
            markers_appended: HashMap::new(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                topic: Arc::from(storage.topic.name.as_str()),
                storage,
                config,
                fence,
                opened: (hw, tokio::time::Instant::now()),
                state: Mutex::new(state),
                resolved: watch::channel(0).0,
                high_watermark,
                roll_scheduled: AtomicBool::new(false),
            }),
        })
    }

    /// Appends batches (one produce request's records for this partition) in memory.
    ///
    /// Idempotence is checked first: a retry of one of a producer's last five batches returns
    /// the original offsets and appends nothing; epoch and sequence violations fail the whole
    /// call. Otherwise the batches get consecutive offsets (their base offsets are rewritten).
    /// When the open segment outgrows [`WriterConfig::segment_max_bytes`] a background flush is
    /// started (inside a Tokio runtime).
    pub fn append(&self, batches: Vec<RecordBatch>) -> Result<Appended> {
        self.append_with(batches, AppendOptions::default())
    }

    /// [`Self::append`] with a deadline and a memory reservation (see [`AppendOptions`]).
    pub fn append_with(
        &self,
        batches: Vec<RecordBatch>,
        options: AppendOptions,
    ) -> Result<Appended> {
        if batches.is_empty() {
            return Err(self.inner.invalid("no batches to append"));
        }
        let deadline = options
            .deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + self.inner.config.default_deadline);
        // One lock for the whole append: checks, push, and what the caller and the roll need.
        let (appended, full) = {
            let mut state = self.inner.lock();
            self.inner.check_usable(&state)?;
            let mut appended = match self.inner.check_producers(&state, &batches)? {
                Some(original) => self.inner.duplicate(&mut state, original),
                None => {
                    self.inner
                        .check_txn(&state, &batches, options.txn_verified)?;
                    let appended = self.inner.push(&mut state, &batches)?;
                    state.open.hold(deadline, options.reservation);
                    appended
                }
            };
            appended.buffered_bytes = state.open.buffered_bytes();
            (appended, state.open.is_full(&self.inner.config))
        };
        if full {
            self.schedule_roll();
        }
        Ok(appended)
    }

    /// What a transactional append of `batches` must first have confirmed by the transaction
    /// coordinator (KIP-890): `None` when nothing (not transactional, or the producer's
    /// transaction is already open here at that epoch).
    pub fn txn_verification(&self, batches: &[RecordBatch]) -> Option<TxnVerification> {
        let h = batches
            .iter()
            .map(|b| b.header())
            .find(|h| h.is_transactional())?;
        let state = self.inner.lock();
        if state
            .producers
            .open_txn(h.producer_id, h.producer_epoch)
            .is_some()
        {
            return None;
        }
        Some(TxnVerification {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            markers_appended: state
                .markers_appended
                .get(&h.producer_id)
                .copied()
                .unwrap_or(0),
        })
    }

    /// Appends a transaction's commit or abort marker (a control batch) for `marker`'s
    /// producer. Its durable commit discharges the pending marker in the metadata store and,
    /// for an abort, records the aborted range, so the marker is written once.
    pub fn append_marker(&self, marker: &TxnMarker) -> Result<Appended> {
        let control = ControlMarker {
            commit: marker.commit,
            coordinator_epoch: i32::try_from(marker.coordinator_epoch).unwrap_or(i32::MAX),
        };
        let batch =
            RecordBatch::control(marker.producer_id, marker.producer_epoch, control, now_ms());
        let deadline = tokio::time::Instant::now() + self.inner.config.default_deadline;
        let (appended, full) = {
            let mut state = self.inner.lock();
            self.inner.check_usable(&state)?;
            let first_offset = state.producers.open_txn_any_epoch(marker.producer_id);
            let mut appended = self.inner.push(&mut state, std::slice::from_ref(&batch))?;
            state.open.markers.push(WrittenMarker {
                marker: marker.clone(),
                offset: appended.base_offset,
                first_offset,
            });
            *state
                .markers_appended
                .entry(marker.producer_id)
                .or_default() += 1;
            state.open.hold(deadline, None);
            appended.buffered_bytes = state.open.buffered_bytes();
            (appended, state.open.is_full(&self.inner.config))
        };
        if full {
            self.schedule_roll();
        }
        Ok(appended)
    }

    /// The last stable offset: every offset below it is durable and belongs to no open
    /// transaction (what read_committed consumers may read up to).
    pub fn last_stable_offset(&self) -> i64 {
        let state = self.inner.lock();
        let hw = state.high_watermark;
        state
            .durable_producers
            .first_open_txn()
            .map_or(hw, |first| first.min(hw))
    }

    /// The aborted transactions that overlap `from..=to` (Fetch's aborted-transactions list):
    /// those whose abort marker is at or after `from` and whose first offset is at or
    /// before `to`.
    pub fn aborted_txns(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let state = self.inner.lock();
        let start = state.aborted.partition_point(|a| a.last_offset < from);
        state.aborted[start..]
            .iter()
            .filter(|a| a.first_offset <= to)
            .copied()
            .collect()
    }

    /// Makes everything appended so far durable, as a flush cycle of this partition alone:
    /// upload (with retries), commit, index and cache, then the high watermark advances and
    /// waiters wake.
    ///
    /// Returns the committed segment, or `None` when there was nothing to flush. On failure every
    /// record not yet durable is discarded and its tickets fail; the next append starts at the
    /// high watermark again. A fenced writer stays unusable.
    pub async fn flush(&self) -> Result<Option<SegmentInfo>> {
        let context = crate::FlushContext::for_partition(&self.inner.storage, &self.inner.config);
        let cycle = crate::FlushCycle::seal(&context, std::slice::from_ref(self));
        let mut results = cycle.run().await.results;
        match results.pop() {
            Some((_, result)) => result.map(Some),
            None => self.inner.check_usable(&self.inner.lock()).map(|()| None),
        }
    }

    /// Age of the open segment (time since its first batch), `None` when it is empty.
    pub fn open_segment_age(&self) -> Option<Duration> {
        self.inner.lock().open.opened_at.map(|at| at.elapsed())
    }

    /// Bytes appended but not yet sealed.
    pub fn buffered_bytes(&self) -> usize {
        self.inner.lock().open.buffered_bytes()
    }

    /// Next offset to become durable: every offset below it is committed and readable.
    pub fn high_watermark(&self) -> i64 {
        *self.inner.high_watermark.borrow()
    }

    /// Next offset an append will get (includes records not yet durable).
    pub fn next_offset(&self) -> i64 {
        self.inner.lock().next_offset
    }

    /// Lowest retained offset: as of when the writer was opened, raised by
    /// [`Self::raise_log_start`] when retention or DeleteRecords truncates the partition.
    pub fn log_start_offset(&self) -> i64 {
        self.inner.lock().log_start
    }

    /// Records that the partition was truncated before `offset` (never lowers the log start,
    /// never past the high watermark), so readers below it get `OffsetOutOfRange`.
    pub fn raise_log_start(&self, offset: i64) {
        let mut state = self.inner.lock();
        state.log_start = offset.min(state.high_watermark).max(state.log_start);
        let log_start = state.log_start;
        state.aborted.retain(|a| a.last_offset >= log_start);
    }

    /// High watermark changes, for Fetch long-polling and same-agent readers.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.inner.high_watermark.subscribe()
    }

    /// Whether the writer lost its lease and refuses all work.
    pub fn is_fenced(&self) -> bool {
        self.inner.lock().fenced.is_some()
    }

    /// Starts a background flush of the full open segment, unless one is scheduled already.
    fn schedule_roll(&self) {
        if self.inner.roll_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.roll_scheduled.store(false, Ordering::Release);
            return;
        };
        let writer = self.clone();
        runtime.spawn(async move {
            if let Err(error) = writer.flush().await {
                tracing::warn!(%error, "background segment roll failed");
            }
        });
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than refusing service forever would.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn invalid(&self, reason: impl Into<String>) -> StorageError {
        StorageError::InvalidBatch {
            topic: self.topic.to_string(),
            partition: self.storage.partition,
            reason: reason.into(),
        }
    }

    fn fenced_error(&self, reason: &str) -> StorageError {
        StorageError::Fenced {
            topic: self.topic.to_string(),
            partition: self.storage.partition,
            reason: reason.to_owned(),
        }
    }

    fn check_usable(&self, state: &State) -> Result<()> {
        match &state.fenced {
            Some(reason) => Err(self.fenced_error(reason)),
            None => Ok(()),
        }
    }

    /// Refuses a transactional batch that would open a transaction on this partition unless
    /// the coordinator confirmed it, for this producer and epoch, since the producer's last
    /// marker.
    fn check_txn(
        &self,
        state: &State,
        batches: &[RecordBatch],
        verified: Option<TxnVerification>,
    ) -> Result<()> {
        for h in batches
            .iter()
            .map(|b| b.header())
            .filter(|h| h.is_transactional())
        {
            if state
                .producers
                .open_txn(h.producer_id, h.producer_epoch)
                .is_some()
            {
                continue;
            }
            let markers = state
                .markers_appended
                .get(&h.producer_id)
                .copied()
                .unwrap_or(0);
            let expected = TxnVerification {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                markers_appended: markers,
            };
            if verified != Some(expected) {
                return Err(StorageError::TxnNotVerified {
                    topic: self.topic.to_string(),
                    partition: self.storage.partition,
                    producer_id: h.producer_id,
                    epoch: h.producer_epoch,
                });
            }
        }
        Ok(())
    }

    /// Runs the idempotence checks for every batch, as if the earlier ones were appended.
    /// Returns the original of a duplicate (Kafka answers the whole request with it).
    fn check_producers(
        &self,
        state: &State,
        batches: &[RecordBatch],
    ) -> Result<Option<ProducerBatch>> {
        let mut staged: Option<ProducerStateTable> = None;
        for batch in batches {
            let entry = producer_batch(batch, -1);
            let table = staged.as_ref().unwrap_or(&state.producers);
            match table.check(&entry).map_err(|e| self.soften_gap(table, e))? {
                Check::Duplicate(original) => return Ok(Some(original)),
                Check::Append if batches.len() > 1 => {
                    // Only the request's producers: a copy of the whole table (up to
                    // 10,000 producers) per request would be work any client could ask for.
                    staged
                        .get_or_insert_with(|| {
                            let ids = batches.iter().map(|b| b.header().producer_id);
                            state.producers.subset(ids)
                        })
                        .record(entry, false);
                }
                Check::Append => {}
            }
        }
        Ok(None)
    }

    /// A sequence gap from a producer that has appended nothing through this writer, within
    /// [`SEQUENCE_GAP_GRACE`] of its opening, becomes [`StorageError::EarlierBatchesInFlight`].
    fn soften_gap(&self, table: &ProducerStateTable, error: StorageError) -> StorageError {
        let StorageError::OutOfOrderSequence {
            producer_id,
            epoch,
            expected,
            found,
        } = error
        else {
            return error;
        };
        let (opened_hw, opened_at) = self.opened;
        let new_here = table
            .last_offset_of(producer_id)
            .is_none_or(|last| last < opened_hw);
        if new_here && is_ahead(found, expected) && opened_at.elapsed() < SEQUENCE_GAP_GRACE {
            StorageError::EarlierBatchesInFlight {
                producer_id,
                epoch,
                expected,
                found,
            }
        } else {
            error
        }
    }

    fn duplicate(&self, state: &mut State, original: ProducerBatch) -> Appended {
        Appended {
            base_offset: original.base_offset,
            last_offset: original.last_offset,
            duplicate: true,
            durable: self.ticket(state, original.last_offset),
            buffered_bytes: 0,
        }
    }

    fn push(&self, state: &mut State, batches: &[RecordBatch]) -> Result<Appended> {
        self.check_fits(state, batches)?;
        let base_offset = state.next_offset;
        for batch in batches {
            // Placed at the next offset by the builder itself, without copying the batch.
            let at = state.next_offset;
            state
                .open
                .builder
                .push_at(batch, at)
                .map_err(|e| self.invalid(e.to_string()))?;
            let entry = producer_batch(batch, at);
            state.record_producer(entry, &self.storage.producer_budget);
            state.open.producer_batches.push(entry);
            state.next_offset = state.open.builder.next_offset();
        }
        state.open.opened_at.get_or_insert_with(Instant::now);
        let last_offset = state.next_offset - 1;
        Ok(Appended {
            base_offset,
            last_offset,
            duplicate: false,
            durable: self.ticket(state, last_offset),
            buffered_bytes: 0,
        })
    }

    /// Refuses a request the open segment cannot take whole, so a push never fails halfway
    /// (the format limits a segment to 4 GiB and 2^32 offsets; only reachable when flushes fall
    /// far behind, and the next flush makes room again).
    fn check_fits(&self, state: &State, batches: &[RecordBatch]) -> Result<()> {
        let bytes: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let records: i64 = batches.iter().map(|b| i64::from(b.record_count())).sum();
        let builder = &state.open.builder;
        let fits_bytes = builder.size() as u64 + bytes < u64::from(u32::MAX);
        let fits_offsets =
            state.next_offset + records - builder.base_offset() < i64::from(u32::MAX);
        if fits_bytes && fits_offsets {
            Ok(())
        } else {
            Err(self.invalid("the open segment is full; retry after the pending flush"))
        }
    }

    fn ticket(&self, state: &mut State, last_offset: i64) -> DurableTicket {
        let wait = (last_offset >= state.high_watermark).then(|| {
            let (tx, rx) = oneshot::channel();
            state.waiters.push(Waiter { last_offset, tx });
            rx
        });
        DurableTicket {
            wait,
            topic: self.topic.clone(),
            partition: self.storage.partition,
        }
    }

    /// Takes the open segment for flushing, leaving an empty one that continues its offsets.
    fn seal(&self, writer: &PartitionWriter) -> Result<Option<SealedChunk>> {
        let mut state = self.lock();
        self.check_usable(&state)?;
        self.roll_scheduled.store(false, Ordering::Release);
        if state.open.builder.is_empty() {
            return Ok(None);
        }
        let next = state.next_offset;
        let open = std::mem::replace(&mut state.open, OpenSegment::new(next));
        let producer_snapshots = state
            .sealed_producers
            .snapshots_after(&open.producer_batches, now_ms());
        let State {
            producers,
            sealed_producers,
            ..
        } = &mut *state;
        for entry in &open.producer_batches {
            sealed_producers.record_following(*entry, producers);
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let generation = state.generation;
        drop(state);
        Ok(Some(SealedChunk {
            writer: writer.clone(),
            encoded: open.builder.finish(),
            producer_batches: open.producer_batches,
            producer_snapshots,
            markers: open.markers,
            deadline: open.deadline.unwrap_or_else(tokio::time::Instant::now),
            seq,
            generation,
            _reservation: open.reservation,
        }))
    }

    /// Waits until every chunk sealed before `chunk` is resolved.
    async fn turn(&self, chunk: &SealedChunk) {
        let mut resolved = self.resolved.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = resolved.wait_for(|&done| done + 1 >= chunk.seq).await;
    }

    /// Whether `chunk` may still be committed: no discard happened since it was sealed.
    fn is_current(&self, chunk: &SealedChunk) -> bool {
        let state = self.lock();
        state.generation == chunk.generation && state.fenced.is_none()
    }

    fn resolve(&self, chunk: &SealedChunk) {
        self.resolved
            .send_modify(|done| *done = (*done).max(chunk.seq));
    }

    /// Makes a committed chunk visible: index first, so a reader that sees the new high
    /// watermark always finds the segment (the flush cycle cached the object already).
    fn publish(&self, chunk: SealedChunk, info: &SegmentInfo) {
        self.storage.index.insert(info);
        let hw = info.last_offset + 1;
        let mut state = self.lock();
        state.high_watermark = hw;
        let State {
            producers,
            durable_producers,
            ..
        } = &mut *state;
        for entry in &chunk.producer_batches {
            durable_producers.record_following(*entry, producers);
        }
        for m in chunk.markers.iter().filter(|m| !m.marker.commit) {
            if let Some(first_offset) = m.first_offset {
                state.aborted.push(AbortedTxn {
                    producer_id: m.marker.producer_id,
                    first_offset,
                    last_offset: m.offset,
                });
            }
        }
        let (done, pending) = std::mem::take(&mut state.waiters)
            .into_iter()
            .partition::<Vec<_>, _>(|w| w.last_offset < hw);
        state.waiters = pending;
        self.high_watermark.send_replace(hw);
        drop(state);
        self.resolve(&chunk);
        for waiter in done {
            let _ = waiter.tx.send(Ok(()));
        }
    }

    /// Rolls back to the durable state after a failed chunk and fails every pending ticket; a
    /// void chunk (sealed before an earlier discard) is only marked resolved.
    fn discard(&self, chunk: &SealedChunk, error: StorageError) -> StorageError {
        let error = Arc::new(error);
        let failure = |from_offset| StorageError::FlushFailed {
            topic: self.topic.to_string(),
            partition: self.storage.partition,
            from_offset,
            source: error.clone(),
        };
        let mut state = self.lock();
        if error.is_fenced() && state.fenced.is_none() {
            state.fenced = Some(error.to_string());
        }
        let hw = state.high_watermark;
        if state.generation != chunk.generation {
            drop(state);
            self.resolve(chunk);
            return failure(hw);
        }
        state.generation += 1;
        state.open = OpenSegment::new(hw);
        state.next_offset = hw;
        let before = state.producers.len();
        state.producers = state.durable_producers.clone();
        state.sealed_producers = state.durable_producers.clone();
        self.storage
            .producer_budget
            .account(before, state.producers.len());
        let waiters = std::mem::take(&mut state.waiters);
        drop(state);
        self.resolve(chunk);
        tracing::error!(topic = %self.topic, partition = self.storage.partition, %error, "flush failed; discarded records from offset {hw}");
        for waiter in waiters {
            let _ = waiter.tx.send(Err(failure(hw)));
        }
        failure(hw)
    }
}

impl PartitionWriter {
    /// Seals the open segment for a flush cycle: `None` when nothing is buffered, an error when
    /// the writer is fenced.
    pub(crate) fn seal(&self) -> Result<Option<SealedChunk>> {
        self.inner.seal(self)
    }

    /// Waits until the chunks sealed before `chunk` are resolved.
    pub(crate) async fn turn(&self, chunk: &SealedChunk) {
        self.inner.turn(chunk).await
    }

    /// Whether `chunk` may still be committed (see [`SealedChunk`]).
    pub(crate) fn is_current(&self, chunk: &SealedChunk) -> bool {
        self.inner.is_current(chunk)
    }

    /// Publishes a committed chunk: high watermark, producer state, waiters.
    pub(crate) fn publish(&self, chunk: SealedChunk, info: &SegmentInfo) {
        self.inner.publish(chunk, info)
    }

    /// Discards a chunk that will not be committed, and everything appended after it.
    pub(crate) fn discard(&self, chunk: &SealedChunk, error: StorageError) -> StorageError {
        self.inner.discard(chunk, error)
    }

    /// Whether `other` is a handle of this very writer.
    pub fn same_as(&self, other: &PartitionWriter) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The partition's storage context.
    pub(crate) fn storage(&self) -> &PartitionStorage {
        &self.inner.storage
    }

    /// The lease the writer commits under.
    pub(crate) fn fence(&self) -> Option<&LeaseFence> {
        self.inner.fence.as_ref()
    }

    /// The topic name.
    pub(crate) fn topic(&self) -> &str {
        &self.inner.topic
    }
}

/// PUTs a new object, create-only where the store supports it (keys are never reused, so
/// nothing committed can be overwritten), retrying failures with backoff and jitter. A retry
/// that finds the object already there is the earlier attempt having succeeded after all. An
/// error means the object may or may not be stored and must not be acknowledged.
pub(crate) async fn upload_with_retries(
    store: &dyn ObjectStore,
    key: &str,
    payload: PutPayload,
    config: &WriterConfig,
) -> Result<()> {
    let path = ObjectPath::from(key);
    let mut mode = PutMode::Create;
    let mut attempt = 0;
    loop {
        let options = PutOptions {
            mode: mode.clone(),
            ..Default::default()
        };
        let error = match store.put_opts(&path, payload.clone(), options).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) if attempt > 0 => return Ok(()),
            // No conditional writes here: the key is unique all the same.
            Err(object_store::Error::NotImplemented { .. }) if mode == PutMode::Create => {
                mode = PutMode::Overwrite;
                continue;
            }
            Err(error) => error,
        };
        if attempt >= config.upload_retries {
            return Err(StorageError::object_store(key, error));
        }
        tracing::warn!(key, attempt, %error, "object upload failed, retrying");
        tokio::time::sleep(config.backoff(attempt)).await;
        attempt += 1;
    }
}

/// Key of a new per-partition segment object. Random, so no two writes ever share a key.
pub(crate) fn segment_key(topic_id: uuid::Uuid, partition: u32, base_offset: i64) -> String {
    let unique = uuid::Uuid::new_v4().simple();
    format!("{SEGMENT_PREFIX}/{topic_id}/{partition}/{base_offset:020}-{unique}.seg")
}

/// Producer fields of a batch placed at `base_offset`.
fn producer_batch(batch: &RecordBatch, base_offset: i64) -> ProducerBatch {
    let h = batch.header();
    let kind = match (h.is_control(), h.is_transactional()) {
        (true, _) => BatchKind::Marker,
        (false, true) => BatchKind::Transactional,
        (false, false) => BatchKind::Plain,
    };
    ProducerBatch::new(
        h.producer_id,
        h.producer_epoch,
        h.base_sequence,
        h.last_offset_delta,
        base_offset,
    )
    .with_kind(kind)
}
