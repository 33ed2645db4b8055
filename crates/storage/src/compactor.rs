//! Log compaction (`cleanup.policy=compact`): keeps the newest record of every key, with
//! Kafka's semantics, on object storage.
//!
//! A partition's log is, oldest first: segments already compacted (the *clean* part, their
//! keys end in [`COMPACTED_SUFFIX`]), segments not yet compacted (the *dirty* part), and the
//! *active* part that is never compacted: slices still in flushes' shared objects (`wal/`, not
//! consolidated yet: consolidation plays the role of Kafka's segment roll) and segments whose
//! newest record is younger than `min.compaction.lag.ms`. A round, when the dirty part is at
//! least `min.cleanable.dirty.ratio` of the compactable log or older than
//! `max.compaction.lag.ms`:
//! 1. reads the dirty segments and maps each key (a 128-bit hash) to its newest offset. The map
//!    holds at most [`CompactionConfig::key_map_bytes`]; when it fills, the round compacts only
//!    up to the dirty segment where it filled and the next round goes on from there (as Kafka's
//!    cleaner does); when even the first dirty segment has more keys than fit, the round makes
//!    several passes over the whole dirty part, each over the keys of one hash bucket
//!    (`hash % passes`). Either way memory stays bounded;
//! 2. rewrites the whole compactable log oldest first, dropping every record whose key has a
//!    newer offset in the map, and tombstones older than `delete.retention.ms`; batches keep
//!    their offsets and producer fields (`RecordBatch::retain_records`), segments become
//!    compacted segments (format version 2, offsets with gaps) covering the same offsets;
//! 3. swaps each output for the segments it replaces as soon as it is written, oldest first,
//!    fenced by the partition lease, scheduling the old objects' deletion after the grace delay
//!    in the same transaction (`MetadataStore::compact_segments`).
//!
//! Crash safety: each swap is one transaction between two valid logs. Swapping oldest first
//! means a record is only ever dropped while the record superseding it is still in the log, so
//! a crash (or a lost lease) between swaps exposes no resurrected key and loses nothing kept;
//! the next round redoes whatever was not swapped. Uploaded but unswapped objects are orphans
//! for the janitor. Offsets never change, so consumers anywhere in the log keep going.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use streamhouse_metadata::{now_ms, LeaseFence, MetadataStore, SegmentInfo, TopicConfig};
use streamhouse_segment::{decode_segment, EncodedSegment, Record, RecordBatch, SegmentBuilder};

use crate::error::{Corruption, Result, StorageError};
use crate::layout::{is_shared_object, SEGMENT_PREFIX};
use crate::partition::PartitionStorage;
use crate::writer::{upload_with_retries, WriterConfig};

/// Object keys of compacted segments end with this (the clean part of a log is the run of
/// leading segments whose keys do).
pub const COMPACTED_SUFFIX: &str = ".compacted.seg";

/// Bytes of one key-map slot: a 16-byte key hash, an 8-byte offset and the hash table's control
/// byte. The table holds at most 7/8 of its slots, so a full map costs 28.6 bytes per key.
pub const KEY_MAP_SLOT_BYTES: usize = 25;

/// Most bytes one record may decompress to while being compacted (Kafka's max message size
/// is far below).
const MAX_EXPANDED_BATCH: usize = 64 * 1024 * 1024;

/// A topic's compaction settings, with Kafka's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionPolicy {
    /// `delete.retention.ms`: tombstones are kept this long (record timestamp) after they were
    /// written, so consumers reading behind see the deletion.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: segments with records younger than this are not compacted.
    pub min_lag_ms: i64,
    /// `max.compaction.lag.ms`: dirty data older than this is compacted whatever the ratio.
    pub max_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: compact once dirty bytes are this share of the log.
    pub min_dirty_ratio: f64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        Self {
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_lag_ms: 0,
            max_lag_ms: i64::MAX,
            min_dirty_ratio: 0.5,
        }
    }
}

impl CompactionPolicy {
    /// The policy of a topic whose `cleanup.policy` includes `compact`; `None` otherwise.
    /// Values were validated when set; one that does not parse keeps its default.
    pub fn of(config: &TopicConfig) -> Option<Self> {
        let policy = config.extra.get("cleanup.policy")?;
        if !policy.split(',').any(|p| p.trim() == "compact") {
            return None;
        }
        let get = |name: &str| config.extra.get(name).and_then(|v| v.trim().parse().ok());
        let default = Self::default();
        Some(Self {
            delete_retention_ms: get("delete.retention.ms").unwrap_or(default.delete_retention_ms),
            min_lag_ms: get("min.compaction.lag.ms").unwrap_or(default.min_lag_ms),
            max_lag_ms: get("max.compaction.lag.ms").unwrap_or(default.max_lag_ms),
            min_dirty_ratio: config
                .extra
                .get("min.cleanable.dirty.ratio")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default.min_dirty_ratio),
        })
    }
}

/// How much a compactor may hold and write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionConfig {
    /// Memory for one partition's key map (Kafka's `log.cleaner.dedupe.buffer.size`); more
    /// keys than fit make the round take several passes.
    pub key_map_bytes: usize,
    /// A compacted output segment is closed once it holds this many bytes.
    pub output_segment_bytes: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            key_map_bytes: 64 * 1024 * 1024,
            output_segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A partition to compact: its storage, the lease its writer holds and its topic's policy.
#[derive(Debug, Clone)]
pub struct CompactionTarget {
    /// The partition's storage (topic, index, cache).
    pub storage: PartitionStorage,
    /// The lease every swap is fenced by.
    pub fence: Option<LeaseFence>,
    /// The topic's compaction settings, as stored now.
    pub policy: CompactionPolicy,
}

/// What a round did (summed over partitions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Dirty bytes of the compactable logs before the round (the backlog).
    pub dirty_bytes: u64,
    /// Partitions compacted.
    pub partitions: usize,
    /// Passes over the key space (more than one per partition when its keys did not fit).
    pub passes: usize,
    /// Bytes of segments read (key-map builds and rewrites).
    pub bytes_read: u64,
    /// Bytes of compacted segments written.
    pub bytes_written: u64,
    /// Records read by the rewrites.
    pub records_read: u64,
    /// Records kept by the rewrites.
    pub records_kept: u64,
    /// Segments replaced by compacted ones.
    pub segments_replaced: usize,
    /// Object-store requests made (GETs and PUTs).
    pub requests: u64,
}

/// Compacts the partitions it is given (see the module docs).
#[derive(Clone)]
pub struct Compactor {
    store: Arc<dyn ObjectStore>,
    metadata: Arc<dyn MetadataStore>,
    config: CompactionConfig,
    delete_grace: Duration,
    upload: WriterConfig,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Newest offset of every key of one hash bucket seen in the dirty part.
struct KeyMap {
    offsets: HashMap<u128, i64>,
    capacity: usize,
    /// This map holds the keys with `hash % passes == pass`.
    pass: u64,
    passes: u64,
}

/// How many keys a map of at most `bytes` holds: the table grows by doubling its slots (a power
/// of two) once 7/8 full, so stopping at 7/8 of the largest power of two that fits keeps it
/// within `bytes`.
fn key_map_capacity(bytes: usize) -> usize {
    let slots = (bytes / KEY_MAP_SLOT_BYTES).max(8);
    (1usize << slots.ilog2()) / 8 * 7
}

impl KeyMap {
    fn new(capacity: usize, pass: u64, passes: u64) -> Self {
        Self {
            offsets: HashMap::new(),
            capacity,
            pass,
            passes,
        }
    }

    fn covers(&self, hash: u128) -> bool {
        (hash % u128::from(self.passes)) as u64 == self.pass
    }

    /// Records `offset` as the newest of `key`'s; `false` when the map is full.
    fn insert(&mut self, hash: u128, offset: i64) -> bool {
        if !self.covers(hash) {
            return true;
        }
        if self.offsets.len() >= self.capacity && !self.offsets.contains_key(&hash) {
            return false;
        }
        self.offsets.insert(hash, offset);
        true
    }

    /// Whether a record of this key at `offset` is superseded by a newer one.
    fn superseded(&self, hash: u128, offset: i64) -> bool {
        self.offsets
            .get(&hash)
            .is_some_and(|&newest| newest > offset)
    }
}

/// A key map over the dirty segments: complete, or filled in the middle of one of them.
enum Mapped {
    /// Every dirty key.
    All(KeyMap),
    /// The keys up to where the map filled, inside dirty segment `segment` (an index into the
    /// segments mapped); the offsets it holds are still each key's newest so far.
    FullAt { map: KeyMap, segment: usize },
}

/// A 128-bit hash of a record key: two SipHash values with different domains, so a collision
/// (which would drop a live record) is as unlikely as with Kafka's MD5.
fn key_hash(key: &[u8]) -> u128 {
    let half = |domain: u8| {
        let mut h = DefaultHasher::new();
        domain.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// One partition's log, split as the module docs say.
struct Plan {
    /// Every segment that may be rewritten (clean then dirty), oldest first.
    compactable: Vec<SegmentInfo>,
    /// Index in `compactable` of the first dirty segment.
    dirty_from: usize,
    /// Whether `compactable` reaches the end of the log: its last record is then kept, so the
    /// log end stays readable (Kafka never cleans its active segment for the same reason).
    ends_log: bool,
}

impl Plan {
    /// Compacts only the segments before index `end` this round.
    fn cut(&mut self, end: usize) {
        if end < self.compactable.len() {
            self.compactable.truncate(end);
            self.ends_log = false;
        }
    }

    fn dirty(&self) -> &[SegmentInfo] {
        &self.compactable[self.dirty_from..]
    }

    fn dirty_bytes(&self) -> u64 {
        self.dirty().iter().map(|s| s.size_bytes).sum()
    }

    /// Whether a clean segment holds a tombstone whose `delete.retention.ms` has passed.
    fn tombstones_expired(&self, now: i64) -> bool {
        self.compactable[..self.dirty_from]
            .iter()
            .any(|s| tombstones_expire_at(&s.object_key).is_some_and(|at| at <= now))
    }

    /// Whether the policy calls for a round now: enough dirty data, dirty data waiting longer
    /// than `max.compaction.lag.ms`, or tombstones to remove.
    fn due(&self, policy: &CompactionPolicy, now: i64) -> bool {
        if self.tombstones_expired(now) {
            return true;
        }
        let Some(first_dirty) = self.dirty().first() else {
            return false;
        };
        let total: u64 = self.compactable.iter().map(|s| s.size_bytes).sum();
        let ratio = self.dirty_bytes() as f64 / total.max(1) as f64;
        let overdue = first_dirty.min_timestamp_ms < now.saturating_sub(policy.max_lag_ms);
        ratio >= policy.min_dirty_ratio || overdue
    }
}

/// Splits `segments` (a partition's, oldest first) into the compactable prefix and the rest.
fn plan(segments: Vec<SegmentInfo>, policy: &CompactionPolicy, now: i64) -> Plan {
    let newest_allowed = now.saturating_sub(policy.min_lag_ms);
    let total = segments.len();
    let compactable: Vec<SegmentInfo> = segments
        .into_iter()
        .take_while(|s| !is_shared_object(&s.object_key) && s.max_timestamp_ms <= newest_allowed)
        .collect();
    let ends_log = compactable.len() == total;
    let dirty_from = compactable
        .iter()
        .position(|s| !s.object_key.ends_with(COMPACTED_SUFFIX))
        .unwrap_or(compactable.len());
    Plan {
        compactable,
        dirty_from,
        ends_log,
    }
}

/// When the earliest tombstone of a compacted segment expires, from its key (see
/// [`output_key`]).
fn tombstones_expire_at(key: &str) -> Option<i64> {
    let stem = key.strip_suffix(COMPACTED_SUFFIX)?;
    let (_, tag) = stem.rsplit_once('.')?;
    tag.strip_prefix('t')?.parse().ok()
}

impl Compactor {
    /// A compactor over `store` and `metadata`; replaced objects are deleted `delete_grace`
    /// after each swap, so readers that found them can finish.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
        config: CompactionConfig,
        delete_grace: Duration,
    ) -> Self {
        Self {
            store,
            metadata,
            config,
            delete_grace,
            upload: WriterConfig::default(),
        }
    }

    /// Compacts each target whose policy calls for it (`force`: whatever the dirty ratio and
    /// lag say, as long as there is dirty data). A failing partition is logged and skipped.
    pub async fn run_once(&self, targets: &[CompactionTarget], force: bool) -> CompactionReport {
        let mut report = CompactionReport::default();
        for target in targets {
            let storage = &target.storage;
            if let Err(error) = self.compact(target, force, &mut report).await {
                metrics::counter!("streamhouse_compaction_failures_total").increment(1);
                tracing::warn!(topic = %storage.topic.name, partition = storage.partition, %error, "compaction failed");
            }
        }
        record_metrics(&report);
        report
    }

    /// One partition: plans, then runs as many key-space passes as its keys need.
    async fn compact(
        &self,
        target: &CompactionTarget,
        force: bool,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let now = now_ms();
        let plan = self.plan(target, now).await?;
        report.dirty_bytes += plan.dirty_bytes();
        let work = !plan.dirty().is_empty() || plan.tombstones_expired(now);
        if !work || !(force || plan.due(&target.policy, now)) {
            return Ok(());
        }
        let capacity = key_map_capacity(self.config.key_map_bytes);
        let end = plan.compactable.last().map_or(-1, |s| s.last_offset);
        // Without dirty data (a round for expired tombstones only) the map stays empty.
        let dirty_start = plan.dirty().first().map_or(end + 1, |s| s.base_offset);
        let mut plan = plan;
        let dirty: Vec<&SegmentInfo> = plan.dirty().iter().collect();
        match self
            .build_map(&dirty, dirty_start, capacity, (0, 1), report)
            .await?
        {
            Mapped::All(map) => {
                let segments = plan.compactable.clone();
                self.pass(target, &plan, &segments, &map, true, report)
                    .await?;
            }
            Mapped::FullAt { map, segment } if segment > 0 => {
                // As Kafka's cleaner: compact up to the dirty segment where the map filled (its
                // keys are all mapped before it); the next round goes on from there.
                plan.cut(plan.dirty_from + segment);
                let segments = plan.compactable.clone();
                self.pass(target, &plan, &segments, &map, true, report)
                    .await?;
            }
            Mapped::FullAt { .. } => {
                // The first dirty segment alone has more keys than the map holds: passes over
                // hash buckets of the keys, through the whole dirty part at once.
                self.bucket_passes(target, &plan, capacity, dirty_start, report)
                    .await?;
            }
        }
        report.partitions += 1;
        Ok(())
    }

    /// Compacts `plan` in several passes, each over the keys of one hash bucket: 2 buckets,
    /// doubled until each bucket's keys fit the map.
    async fn bucket_passes(
        &self,
        target: &CompactionTarget,
        plan: &Plan,
        capacity: usize,
        dirty_start: i64,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let (mut pass, mut passes) = (0u64, 2u64);
        let passes_before = report.passes;
        while pass < passes {
            // Each pass reads the log the previous passes left.
            let current = match report.passes == passes_before {
                true => plan.compactable.clone(),
                false => self.current(target, plan).await?,
            };
            // An earlier pass may have merged clean and dirty segments into one output.
            let dirty: Vec<&SegmentInfo> = current
                .iter()
                .filter(|s| s.last_offset >= dirty_start)
                .collect();
            let bucket = (pass, passes);
            let Mapped::All(map) = self
                .build_map(&dirty, dirty_start, capacity, bucket, report)
                .await?
            else {
                // Too many keys for one map: split the key space in twice as many buckets and
                // start again (passes already made stay valid compactions).
                passes *= 2;
                pass = 0;
                continue;
            };
            let last_pass = pass + 1 == passes;
            self.pass(target, plan, &current, &map, last_pass, report)
                .await?;
            pass += 1;
        }
        Ok(())
    }

    /// Rewrites `segments` (the log `plan` compacts, as it is now) with `map`; `clean`: the
    /// map saw every dirty key, so the outputs are clean.
    async fn pass(
        &self,
        target: &CompactionTarget,
        plan: &Plan,
        segments: &[SegmentInfo],
        map: &KeyMap,
        clean: bool,
        report: &mut CompactionReport,
    ) -> Result<()> {
        report.passes += 1;
        let end = plan.compactable.last().map_or(-1, |s| s.last_offset);
        let rewrite = Rewrite {
            target,
            map,
            clean,
            log_end: plan.ends_log.then_some(end),
            tombstone_horizon: now_ms().saturating_sub(target.policy.delete_retention_ms),
        };
        self.rewrite(&rewrite, segments, report).await
    }

    async fn plan(&self, target: &CompactionTarget, now: i64) -> Result<Plan> {
        let storage = &target.storage;
        let segments = self
            .metadata
            .list_segments(&storage.topic.name, storage.partition, 0)
            .await?;
        Ok(plan(segments, &target.policy, now))
    }

    /// The segments now covering the offsets `plan` compacts (after an earlier pass).
    async fn current(&self, target: &CompactionTarget, plan: &Plan) -> Result<Vec<SegmentInfo>> {
        let end = plan.compactable.last().map_or(-1, |s| s.last_offset);
        let storage = &target.storage;
        let segments = self
            .metadata
            .list_segments(&storage.topic.name, storage.partition, 0)
            .await?;
        Ok(segments
            .into_iter()
            .take_while(|s| s.last_offset <= end)
            .collect())
    }

    /// Maps the keys of hash bucket `(pass, passes)` in the dirty records (from `dirty_start`
    /// on) to their newest offsets, until more than `capacity` keys fall in the bucket.
    async fn build_map(
        &self,
        dirty: &[&SegmentInfo],
        dirty_start: i64,
        capacity: usize,
        (pass, passes): (u64, u64),
        report: &mut CompactionReport,
    ) -> Result<Mapped> {
        let mut map = KeyMap::new(capacity, pass, passes);
        for (i, segment) in dirty.iter().enumerate() {
            for batch in self.read_segment(segment, report).await? {
                // Transactional records never supersede others: an aborted (or still open)
                // transaction's record must not remove a committed one.
                if batch.header().is_transactional() {
                    continue;
                }
                for record in records(&batch, segment)? {
                    let Some(key) = record.key.as_deref() else {
                        continue;
                    };
                    if record.offset < dirty_start {
                        continue;
                    }
                    if !map.insert(key_hash(key), record.offset) {
                        return Ok(Mapped::FullAt { map, segment: i });
                    }
                }
            }
        }
        Ok(Mapped::All(map))
    }

    /// Rewrites `segments` without the records `job.map` supersedes and expired tombstones, in
    /// outputs of about `output_segment_bytes`, each swapped in as soon as it is written.
    async fn rewrite(
        &self,
        job: &Rewrite<'_>,
        segments: &[SegmentInfo],
        report: &mut CompactionReport,
    ) -> Result<()> {
        let mut out: Option<Output> = None;
        for segment in segments {
            let output = out.get_or_insert_with(|| Output::new(segment.base_offset));
            for batch in self.read_segment(segment, report).await? {
                if let Some(kept) = output.retain(job, &batch, segment, report)? {
                    output
                        .builder
                        .push(&kept)
                        .map_err(|e| mismatch(segment, e))?;
                }
            }
            output
                .builder
                .cover_through(segment.last_offset)
                .map_err(|e| mismatch(segment, e))?;
            output.replaced.push(segment);
            if output.builder.size() as u64 >= self.config.output_segment_bytes {
                let full = out.take().expect("an output is open");
                self.swap(job, full, report).await?;
            }
        }
        if let Some(last) = out {
            self.swap(job, last, report).await?;
        }
        Ok(())
    }

    /// Uploads `output` and swaps it for the segments it replaces, fenced; then tells the
    /// segment index.
    async fn swap(
        &self,
        job: &Rewrite<'_>,
        output: Output<'_>,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let storage = &job.target.storage;
        let replaced_records = output.replaced.iter().map(|s| s.record_count).sum();
        let (info, parts) = output.finish(storage, job);
        report.bytes_written += info.size_bytes;
        report.requests += 1;
        let payload = PutPayload::from_iter(parts);
        upload_with_retries(self.store.as_ref(), &info.object_key, payload, &self.upload).await?;
        let delete_after = now_ms() + self.delete_grace.as_millis() as i64;
        let fence = job.target.fence.as_ref();
        let replaced = self
            .metadata
            .compact_segments(&info, replaced_records, fence, delete_after)
            .await?;
        storage.index.replace(&info);
        report.segments_replaced += replaced;
        Ok(())
    }

    /// Reads and verifies one segment (one ranged GET, also for a slice of a shared object).
    async fn read_segment(
        &self,
        segment: &SegmentInfo,
        report: &mut CompactionReport,
    ) -> Result<Vec<RecordBatch>> {
        let range = segment.object_offset..segment.object_offset + segment.size_bytes;
        let path = ObjectPath::from(segment.object_key.as_str());
        let bytes: Bytes = self
            .store
            .get_range(&path, range.clone())
            .await
            .map_err(|e| StorageError::object_store(&segment.object_key, e))?;
        report.requests += 1;
        report.bytes_read += bytes.len() as u64;
        let corrupt =
            |e| StorageError::corrupt(&segment.object_key, segment.object_size, range.clone(), e);
        let (footer, batches) = decode_segment(bytes).map_err(corrupt)?;
        if (footer.base_offset, footer.last_offset) != (segment.base_offset, segment.last_offset) {
            return Err(StorageError::Corrupt {
                key: segment.object_key.clone(),
                range,
                source: Corruption::Mismatch(format!(
                    "segment holds offsets {}..={}, metadata says {}..={}",
                    footer.base_offset,
                    footer.last_offset,
                    segment.base_offset,
                    segment.last_offset
                )),
            });
        }
        Ok(batches)
    }
}

/// The records of a batch of `segment`, decoded.
fn records(batch: &RecordBatch, segment: &SegmentInfo) -> Result<Vec<Record>> {
    batch
        .records(MAX_EXPANDED_BATCH)
        .and_then(|records| records.collect())
        .map_err(|e| mismatch(segment, e))
}

/// What one rewrite pass applies to every record.
struct Rewrite<'a> {
    target: &'a CompactionTarget,
    map: &'a KeyMap,
    /// Whether the outputs are clean (the last pass over the key space).
    clean: bool,
    /// The log's last offset when the rewrite reaches it: that record is kept (see
    /// [`Plan::ends_log`]).
    log_end: Option<i64>,
    /// Tombstones with a timestamp before this are removed.
    tombstone_horizon: i64,
}

impl Rewrite<'_> {
    /// Kafka's rule: a record stays unless a newer record has its key, or it is a tombstone
    /// whose `delete.retention.ms` has passed. Only keys of the pass's hash bucket are judged:
    /// another pass's tombstone may still supersede older records of its key, which that pass
    /// removes first.
    fn keeps(&self, record: &Record) -> bool {
        let Some(key) = record.key.as_deref() else {
            return true;
        };
        if self.log_end == Some(record.offset) {
            return true;
        }
        let hash = key_hash(key);
        if !self.map.covers(hash) {
            return true;
        }
        if self.map.superseded(hash, record.offset) {
            return false;
        }
        record.value.is_some() || record.timestamp >= self.tombstone_horizon
    }
}

/// One compacted segment being written and the segments it replaces.
struct Output<'a> {
    builder: SegmentBuilder,
    replaced: Vec<&'a SegmentInfo>,
    /// Earliest timestamp of a tombstone kept, if any.
    oldest_tombstone: Option<i64>,
}

impl<'a> Output<'a> {
    fn new(base_offset: i64) -> Self {
        Self {
            builder: SegmentBuilder::compacted(base_offset),
            replaced: Vec::new(),
            oldest_tombstone: None,
        }
    }

    /// `batch` without the records `job` drops. Transactional batches (markers included) are
    /// kept whole: which of their records were committed is not known here, so none is
    /// removed (Kafka's cleaner removes aborted ones; here they stay, read_committed readers
    /// skip them by the aborted-transactions list).
    fn retain(
        &mut self,
        job: &Rewrite<'_>,
        batch: &RecordBatch,
        segment: &SegmentInfo,
        report: &mut CompactionReport,
    ) -> Result<Option<RecordBatch>> {
        if batch.header().is_transactional() {
            return Ok(Some(self.keep_whole(batch, report)));
        }
        report.records_read += batch.record_count() as u64;
        let mut oldest_tombstone = self.oldest_tombstone;
        let kept = batch
            .retain_records(MAX_EXPANDED_BATCH, |record| {
                let keep = job.keeps(record);
                // The log end's tombstone stays until newer records arrive: no round is due for it.
                if keep && record.value.is_none() && job.log_end != Some(record.offset) {
                    oldest_tombstone = Some(
                        oldest_tombstone.map_or(record.timestamp, |t| t.min(record.timestamp)),
                    );
                }
                keep
            })
            .map_err(|e| mismatch(segment, e))?;
        self.oldest_tombstone = oldest_tombstone;
        report.records_kept += kept.as_ref().map_or(0, |b| b.record_count() as u64);
        Ok(kept)
    }

    /// `batch` as it is (counted as read and kept).
    fn keep_whole(&mut self, batch: &RecordBatch, report: &mut CompactionReport) -> RecordBatch {
        report.records_read += batch.record_count() as u64;
        report.records_kept += batch.record_count() as u64;
        batch.clone()
    }

    /// The encoded segment and its row.
    fn finish(self, storage: &PartitionStorage, job: &Rewrite<'_>) -> (SegmentInfo, Vec<Bytes>) {
        let encoded = self.builder.finish();
        let expiry = self
            .oldest_tombstone
            .map(|t| t.saturating_add(job.target.policy.delete_retention_ms));
        let key = output_key(storage, encoded.footer.base_offset, job.clean, expiry);
        (
            output_info(storage, &self.replaced, &encoded, key),
            encoded.parts,
        )
    }
}

/// The object key of a compacted segment: clean ones end in [`COMPACTED_SUFFIX`], tagged
/// `.t{ms}` when they hold a tombstone to remove at `ms`, so a round is due then; a pass that
/// did not see every key leaves its output dirty for the next round.
fn output_key(
    storage: &PartitionStorage,
    base_offset: i64,
    clean: bool,
    tombstones_expire: Option<i64>,
) -> String {
    let suffix = match (clean, tombstones_expire) {
        (false, _) => ".seg".to_owned(),
        (true, None) => COMPACTED_SUFFIX.to_owned(),
        (true, Some(at)) => format!(".t{at}{COMPACTED_SUFFIX}"),
    };
    format!(
        "{SEGMENT_PREFIX}/{}/{}/{base_offset:020}-{}{suffix}",
        storage.topic.id,
        storage.partition,
        uuid::Uuid::new_v4().simple()
    )
}

fn mismatch(segment: &SegmentInfo, error: streamhouse_segment::SegmentError) -> StorageError {
    let range = segment.object_offset..segment.object_offset + segment.size_bytes;
    StorageError::corrupt(&segment.object_key, segment.object_size, range, error)
}

/// The row of a compacted segment replacing `replaced` (a non-empty run, oldest first).
fn output_info(
    storage: &PartitionStorage,
    replaced: &[&SegmentInfo],
    encoded: &EncodedSegment,
    object_key: String,
) -> SegmentInfo {
    let footer = &encoded.footer;
    let len = encoded.len;
    SegmentInfo {
        topic: storage.topic.name.clone(),
        partition: storage.partition,
        base_offset: footer.base_offset,
        last_offset: footer.last_offset,
        record_count: footer.record_count,
        size_bytes: len,
        object_key,
        object_offset: 0,
        object_size: len,
        // The replaced segments' bounds: retention and timestamp lookups treat the range as
        // before (a compacted segment may have lost its newest record's timestamp).
        min_timestamp_ms: replaced
            .iter()
            .map(|s| s.min_timestamp_ms)
            .min()
            .unwrap_or(-1),
        max_timestamp_ms: replaced
            .iter()
            .map(|s| s.max_timestamp_ms)
            .max()
            .unwrap_or(-1),
        created_at_ms: replaced
            .iter()
            .map(|s| s.created_at_ms)
            .max()
            .unwrap_or_else(now_ms),
    }
}

fn record_metrics(report: &CompactionReport) {
    metrics::gauge!("streamhouse_compaction_dirty_bytes").set(report.dirty_bytes as f64);
    metrics::counter!("streamhouse_compaction_rounds_total").increment(1);
    metrics::counter!("streamhouse_compaction_partitions_total")
        .increment(report.partitions as u64);
    metrics::counter!("streamhouse_compaction_bytes_read_total").increment(report.bytes_read);
    metrics::counter!("streamhouse_compaction_bytes_written_total").increment(report.bytes_written);
    metrics::counter!("streamhouse_compaction_records_removed_total")
        .increment(report.records_read - report.records_kept);
    metrics::counter!("streamhouse_compaction_segments_replaced_total")
        .increment(report.segments_replaced as u64);
}
