//! The partition writer: assigns offsets, builds segments, uploads and commits them.
//!
//! Appends are synchronous and in memory; durability comes from [`PartitionWriter::flush`],
//! which seals the open segment, uploads it, commits it to the metadata store and only then
//! advances the high watermark. Acknowledgements wait on a [`DurableTicket`].
//!
//! A crash (or a refused commit) between the upload and the commit leaves an object no segment
//! row references. It is harmless: readers only follow committed segments, and the object key
//! carries the writer's lease epoch so no live object is ever overwritten. The orphan janitor
//! (`MetadataStore::all_segment_keys`) removes such objects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rand::Rng;
use streamhouse_metadata::{
    now_ms, LeaseFence, MetadataError, ProducerSnapshot, SegmentInfo, TopicConfig,
};
use streamhouse_segment::{EncodedSegment, RecordBatch, SegmentBuilder};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::error::{Result, StorageError};
use crate::partition::PartitionStorage;
use crate::producer_state::{Check, ProducerBatch, ProducerStateTable};

/// Settings of a [`PartitionWriter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    /// Roll (flush) the open segment once it holds this many bytes (`segment.bytes`).
    pub segment_max_bytes: u64,
    /// Roll the open segment once its first batch is this old (`segment.ms`); the caller's
    /// flusher acts on [`PartitionWriter::needs_roll`].
    pub segment_max_age: Duration,
    /// Upload attempts after the first one before a flush fails.
    pub upload_retries: u32,
    /// Delay before the first retry; doubles per attempt (with jitter).
    pub upload_backoff: Duration,
    /// Upper bound of the retry delay.
    pub upload_backoff_max: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self::for_topic(&TopicConfig::default())
    }
}

impl WriterConfig {
    /// Defaults with the roll settings of a topic.
    pub fn for_topic(config: &TopicConfig) -> Self {
        Self {
            segment_max_bytes: config.segment_bytes,
            segment_max_age: Duration::from_millis(config.segment_ms),
            upload_retries: 5,
            upload_backoff: Duration::from_millis(50),
            upload_backoff_max: Duration::from_secs(5),
        }
    }

    /// Delay before retry number `attempt` (0-based): exponential, capped, with "equal jitter"
    /// so writers that failed together do not retry in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
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
    state: Mutex<State>,
    /// One flush at a time: a segment may only be committed once its predecessor is.
    flush_lock: tokio::sync::Mutex<()>,
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
    /// As of the high watermark; restored when a flush fails.
    durable_producers: ProducerStateTable,
    waiters: Vec<Waiter>,
    /// Set once the writer lost its lease; the reason.
    fenced: Option<String>,
}

/// The segment appends currently go to.
struct OpenSegment {
    builder: SegmentBuilder,
    producer_batches: Vec<ProducerBatch>,
    opened_at: Option<Instant>,
}

impl OpenSegment {
    fn new(base_offset: i64) -> Self {
        Self {
            builder: SegmentBuilder::new(base_offset),
            producer_batches: Vec::new(),
            opened_at: None,
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
}

/// A segment taken out of the open slot by a flush.
struct Sealed {
    encoded: EncodedSegment,
    producer_batches: Vec<ProducerBatch>,
    /// The state of the segment's producers once it is durable, committed with it.
    producer_snapshots: Vec<ProducerSnapshot>,
}

struct Waiter {
    last_offset: i64,
    tx: oneshot::Sender<Result<()>>,
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
        let producers = ProducerStateTable::from_snapshots(&snapshots, progress.log_start_offset)
            .map_err(|(producer_id, reason)| StorageError::CorruptProducerState {
            topic: storage.topic.name.clone(),
            partition: storage.partition,
            producer_id,
            reason,
        })?;
        let (high_watermark, _) = watch::channel(hw);
        let state = State {
            open: OpenSegment::new(hw),
            next_offset: hw,
            high_watermark: hw,
            log_start: progress.log_start_offset,
            producers: producers.clone(),
            durable_producers: producers,
            waiters: Vec::new(),
            fenced: None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                topic: Arc::from(storage.topic.name.as_str()),
                storage,
                config,
                fence,
                state: Mutex::new(state),
                flush_lock: tokio::sync::Mutex::new(()),
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
        if batches.is_empty() {
            return Err(self.inner.invalid("no batches to append"));
        }
        let appended = {
            let mut state = self.inner.lock();
            self.inner.check_usable(&state)?;
            match self.inner.check_producers(&state, &batches)? {
                Some(original) => self.inner.duplicate(&mut state, original),
                None => self.inner.push(&mut state, &batches)?,
            }
        };
        self.maybe_schedule_roll();
        Ok(appended)
    }

    /// Seals the open segment and makes it durable: upload (with retries), commit to the
    /// metadata store, index and cache it, then advance the high watermark and wake waiters.
    ///
    /// Returns the committed segment, or `None` when there was nothing to flush. On failure every
    /// record not yet durable (the sealed segment and anything appended since) is discarded and
    /// its tickets fail; the next append starts at the high watermark again. A fenced writer
    /// stays unusable.
    pub async fn flush(&self) -> Result<Option<SegmentInfo>> {
        let _one_at_a_time = self.inner.flush_lock.lock().await;
        let Some(sealed) = self.inner.seal()? else {
            return Ok(None);
        };
        match self.inner.persist(&sealed).await {
            Ok(info) => {
                self.inner.publish(sealed, &info).await;
                Ok(Some(info))
            }
            Err(error) => Err(self.inner.discard(error)),
        }
    }

    /// Age of the open segment (time since its first batch), `None` when it is empty.
    pub fn open_segment_age(&self) -> Option<Duration> {
        self.inner.lock().open.opened_at.map(|at| at.elapsed())
    }

    /// Whether the open segment should be rolled now, by size or by age.
    pub fn needs_roll(&self) -> bool {
        let state = self.inner.lock();
        let by_size = state.open.is_full(&self.inner.config);
        let by_age = state
            .open
            .opened_at
            .is_some_and(|at| at.elapsed() >= self.inner.config.segment_max_age);
        by_size || by_age
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
    }

    /// High watermark changes, for Fetch long-polling and same-agent readers.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.inner.high_watermark.subscribe()
    }

    /// Whether the writer lost its lease and refuses all work.
    pub fn is_fenced(&self) -> bool {
        self.inner.lock().fenced.is_some()
    }

    fn maybe_schedule_roll(&self) {
        let full = self.inner.lock().open.is_full(&self.inner.config);
        if !full || self.inner.roll_scheduled.swap(true, Ordering::AcqRel) {
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
            match table.check(&entry)? {
                Check::Duplicate(original) => return Ok(Some(original)),
                Check::Append if batches.len() > 1 => {
                    staged
                        .get_or_insert_with(|| state.producers.clone())
                        .record(entry);
                }
                Check::Append => {}
            }
        }
        Ok(None)
    }

    fn duplicate(&self, state: &mut State, original: ProducerBatch) -> Appended {
        Appended {
            base_offset: original.base_offset,
            last_offset: original.last_offset,
            duplicate: true,
            durable: self.ticket(state, original.last_offset),
        }
    }

    fn push(&self, state: &mut State, batches: &[RecordBatch]) -> Result<Appended> {
        self.check_fits(state, batches)?;
        let base_offset = state.next_offset;
        for batch in batches {
            let rebased = batch.with_base_offset(state.next_offset);
            state
                .open
                .builder
                .push(&rebased)
                .map_err(|e| self.invalid(e.to_string()))?;
            let entry = producer_batch(&rebased, rebased.base_offset());
            state.producers.record(entry);
            state.open.producer_batches.push(entry);
            state.next_offset = rebased.last_offset() + 1;
        }
        state.open.opened_at.get_or_insert_with(Instant::now);
        let last_offset = state.next_offset - 1;
        Ok(Appended {
            base_offset,
            last_offset,
            duplicate: false,
            durable: self.ticket(state, last_offset),
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
    fn seal(&self) -> Result<Option<Sealed>> {
        let open = {
            let mut state = self.lock();
            self.check_usable(&state)?;
            self.roll_scheduled.store(false, Ordering::Release);
            if state.open.builder.is_empty() {
                return Ok(None);
            }
            let next = state.next_offset;
            let open = std::mem::replace(&mut state.open, OpenSegment::new(next));
            // Flushes are serialized, so the durable table is exactly the state before `open`.
            let snapshots = state
                .durable_producers
                .snapshots_after(&open.producer_batches, now_ms());
            (open, snapshots)
        };
        let (open, producer_snapshots) = open;
        Ok(Some(Sealed {
            encoded: open.builder.finish(),
            producer_batches: open.producer_batches,
            producer_snapshots,
        }))
    }

    /// Uploads and commits a sealed segment. Never reports success unless both happened.
    async fn persist(&self, sealed: &Sealed) -> Result<SegmentInfo> {
        let segment = &sealed.encoded;
        let footer = &segment.footer;
        let epoch = self.fence.as_ref().map_or(0, |f| f.epoch);
        let key = segment_key(
            self.storage.topic.id,
            self.storage.partition,
            footer.base_offset,
            epoch,
        );
        self.upload(&key, segment.bytes.clone()).await?;
        let info = SegmentInfo {
            topic: self.topic.to_string(),
            partition: self.storage.partition,
            base_offset: footer.base_offset,
            last_offset: footer.last_offset,
            record_count: footer.record_count,
            size_bytes: segment.bytes.len() as u64,
            object_key: key,
            min_timestamp_ms: footer.min_timestamp,
            max_timestamp_ms: footer.max_timestamp,
            created_at_ms: now_ms(),
        };
        self.commit(&info, &sealed.producer_snapshots).await?;
        Ok(info)
    }

    async fn upload(&self, key: &str, bytes: Bytes) -> Result<()> {
        upload_with_retries(self.storage.store.as_ref(), key, bytes, &self.config).await
    }

    async fn commit(&self, info: &SegmentInfo, producers: &[ProducerSnapshot]) -> Result<()> {
        let error = match self
            .storage
            .metadata
            .commit_segment_with_producers(info, producers, self.fence.as_ref())
            .await
        {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        match error {
            MetadataError::Fenced { .. } => Err(self.fenced_error(&error.to_string())),
            // Someone else committed at our offset: another writer owns the partition.
            MetadataError::OffsetConflict { .. } => Err(self.fenced_error(&error.to_string())),
            // The commit may have gone through before the error (e.g. a lost connection).
            other if self.was_committed(info).await => {
                tracing::warn!(error = %other, key = info.object_key, "commit reported an error but is recorded");
                Ok(())
            }
            other => Err(other.into()),
        }
    }

    async fn was_committed(&self, info: &SegmentInfo) -> bool {
        self.storage
            .metadata
            .list_segments(&self.topic, self.storage.partition, info.base_offset)
            .await
            .is_ok_and(|segments| segments.iter().any(|s| s.object_key == info.object_key))
    }

    /// Makes a committed segment visible: index and cache first, so a reader that sees the new
    /// high watermark always finds the segment.
    async fn publish(&self, sealed: Sealed, info: &SegmentInfo) {
        self.storage.index.insert(info);
        self.storage
            .cache
            .insert_object(&info.object_key, sealed.encoded.bytes.clone())
            .await;
        let hw = info.last_offset + 1;
        let mut state = self.lock();
        state.high_watermark = hw;
        for entry in sealed.producer_batches {
            state.durable_producers.record(entry);
        }
        let (done, pending) = std::mem::take(&mut state.waiters)
            .into_iter()
            .partition::<Vec<_>, _>(|w| w.last_offset < hw);
        state.waiters = pending;
        self.high_watermark.send_replace(hw);
        drop(state);
        for waiter in done {
            let _ = waiter.tx.send(Ok(()));
        }
    }

    /// Rolls back to the durable state after a failed flush and fails every pending ticket.
    fn discard(&self, error: StorageError) -> StorageError {
        let error = Arc::new(error);
        let mut state = self.lock();
        let hw = state.high_watermark;
        if error.is_fenced() {
            state.fenced = Some(error.to_string());
        }
        state.open = OpenSegment::new(hw);
        state.next_offset = hw;
        state.producers = state.durable_producers.clone();
        let waiters = std::mem::take(&mut state.waiters);
        drop(state);
        tracing::error!(topic = %self.topic, partition = self.storage.partition, %error, "flush failed; discarded records from offset {hw}");
        let failure = || StorageError::FlushFailed {
            topic: self.topic.to_string(),
            partition: self.storage.partition,
            from_offset: hw,
            source: error.clone(),
        };
        for waiter in waiters {
            let _ = waiter.tx.send(Err(failure()));
        }
        failure()
    }
}

/// PUTs a segment object, retrying failures with backoff and jitter; an error means the object
/// may not be stored and must not be acknowledged.
pub(crate) async fn upload_with_retries(
    store: &dyn ObjectStore,
    key: &str,
    bytes: Bytes,
    config: &WriterConfig,
) -> Result<()> {
    let path = ObjectPath::from(key);
    let mut attempt = 0;
    loop {
        let error = match store.put(&path, PutPayload::from(bytes.clone())).await {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        if attempt >= config.upload_retries {
            return Err(StorageError::object_store(key, error));
        }
        tracing::warn!(key, attempt, %error, "segment upload failed, retrying");
        tokio::time::sleep(config.backoff(attempt)).await;
        attempt += 1;
    }
}

/// Object key of a segment. The lease epoch makes keys of different owners distinct, so a zombie
/// writer can never overwrite an object a live writer committed.
pub(crate) fn segment_key(topic_id: Uuid, partition: u32, base_offset: i64, epoch: i64) -> String {
    format!("topics/{topic_id}/{partition}/{base_offset:020}-{epoch}.seg")
}

/// Producer fields of a batch placed at `base_offset`.
fn producer_batch(batch: &RecordBatch, base_offset: i64) -> ProducerBatch {
    let h = batch.header();
    ProducerBatch::new(
        h.producer_id,
        h.producer_epoch,
        h.base_sequence,
        h.last_offset_delta,
        base_offset,
    )
}
