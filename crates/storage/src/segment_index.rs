//! Per-partition in-memory index from offsets to segments, so the read path finds the segment
//! holding an offset without querying the metadata store.
//!
//! The index is a sorted map keyed by base offset (two parallel vectors, binary-searched): the
//! segment holding offset `x` is the last entry with `base_offset <= x`, provided its
//! `last_offset >= x`. It is filled two ways:
//! - [`SegmentIndex::insert`] by the partition writer after each commit (same-agent readers never
//!   need a refresh);
//! - on a miss, or when the index is older than the refresh interval, by one
//!   `list_segments(topic, partition, offset)` query (concurrent callers share it).
//!
//! Entries leave it by [`SegmentIndex::remove_below`] (retention), by a refresh that no longer
//! lists them (deleted by another agent), or by LRU eviction: at the index's own bound, or when
//! the agent's indexes together hold more than their shared [`Budget`] (an index that
//! grows past it evicts its own least recently used entries, keeping [`MIN_RETAINED`]), so an
//! agent's index memory is bounded by configuration however many partitions it serves.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// Tokio's clock (the same as std's outside tests), so tests pause and advance the refresh ages.
use tokio::time::Instant;

use parking_lot::RwLock;
use streamhouse_metadata::{MetadataStore, SegmentInfo};

use crate::budget::Budget;
use crate::error::Result;

/// A miss for an offset that a refresh younger than this already answered "not there" is
/// answered from memory: consumers polling at the high watermark would otherwise query the
/// metadata store once per fetch. Bounds how stale a cross-agent "no segment yet" can be.
const MISS_REFRESH_GAP: Duration = Duration::from_millis(5);

/// Entries an index keeps whatever the agent-wide budget: enough for its readers' current
/// segments, so a full budget costs extra metadata queries, never a failing read.
pub const MIN_RETAINED: usize = 16;

/// Settings of a [`SegmentIndex`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndexConfig {
    /// An index older than this re-reads the metadata store on the next lookup, to see segments
    /// committed or deleted by other agents.
    pub refresh_interval: Duration,
    /// Most segments kept in memory; least recently used ones are evicted past it.
    pub max_segments: usize,
    /// Most segments all the partitions' indexes of one agent keep together (the agent's
    /// [`Budget`]).
    pub max_segments_per_agent: usize,
}

impl Default for SegmentIndexConfig {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(30),
            max_segments: 10_000,
            // ~100 MB of entries; one partition alone stays under `max_segments`.
            max_segments_per_agent: 500_000,
        }
    }
}

/// What the index knows about one segment: enough to locate and fetch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedSegment {
    /// First offset in the segment.
    pub base_offset: i64,
    /// Last offset in the segment (inclusive).
    pub last_offset: i64,
    /// Size of the segment (its byte range in the object).
    pub size_bytes: u64,
    /// Where the segment starts in its object.
    pub object_offset: u64,
    /// Size of the whole object.
    pub object_size: u64,
    /// Smallest record timestamp (ms).
    pub min_timestamp_ms: i64,
    /// Largest record timestamp (ms).
    pub max_timestamp_ms: i64,
    /// Key of the object in the object store (shared, so lookups do not copy it).
    pub object_key: Arc<str>,
}

impl IndexedSegment {
    /// Whether `offset` lies in this segment.
    pub fn contains(&self, offset: i64) -> bool {
        (self.base_offset..=self.last_offset).contains(&offset)
    }

    fn same_segment(&self, info: &SegmentInfo) -> bool {
        self.base_offset == info.base_offset
            && self.last_offset == info.last_offset
            && *self.object_key == *info.object_key
            && self.object_offset == info.object_offset
    }
}

impl From<&SegmentInfo> for IndexedSegment {
    fn from(info: &SegmentInfo) -> Self {
        Self {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            size_bytes: info.size_bytes,
            object_offset: info.object_offset,
            object_size: info.object_size,
            min_timestamp_ms: info.min_timestamp_ms,
            max_timestamp_ms: info.max_timestamp_ms,
            object_key: Arc::from(info.object_key.as_str()),
        }
    }
}

struct Entry {
    segment: IndexedSegment,
    /// Value of [`SegmentIndex::clock`] when the entry was last inserted or read.
    last_used: AtomicU64,
}

struct State {
    segments: Segments,
    refreshed_at: Instant,
    /// Entries counted in the budget (the length at the last accounting).
    accounted: usize,
}

/// Indexed segments ordered by base offset, as two parallel vectors.
///
/// A lookup is a binary search over a dense `Vec<i64>` of base offsets: at a million segments
/// that is 8 MB whose upper search levels stay in cache, where a `BTreeMap` walks node after
/// node of 64-byte entries (about twice the cache misses, measured in `benches/segment_index.rs`).
/// Segments never overlap, so base and last offsets are both increasing. The writer's inserts
/// land at the end (amortized O(1)); removals in the middle (eviction, compaction, refresh) shift
/// the tail, which is cheap at the default bound and rare.
#[derive(Default)]
struct Segments {
    bases: Vec<i64>,
    entries: Vec<Entry>,
}

impl Segments {
    fn len(&self) -> usize {
        self.bases.len()
    }

    /// The entry with the greatest base offset at or below `offset`.
    fn floor(&self, offset: i64) -> Option<&Entry> {
        self.floor_index(offset).map(|i| &self.entries[i])
    }

    /// Interpolation search: base offsets grow roughly linearly with position (segments hold
    /// similar record counts), so a guess from the first and last base usually lands on or next
    /// to the answer: one or two cache misses where a binary search over a million keys takes
    /// about twenty. Galloping from the guess keeps the worst case logarithmic when segment sizes
    /// vary.
    fn floor_index(&self, offset: i64) -> Option<usize> {
        let bases = &self.bases;
        let (&first, &last) = (bases.first()?, bases.last()?);
        if offset < first {
            return None;
        }
        if offset >= last {
            return Some(bases.len() - 1);
        }
        let span = (last - first) as i128;
        let guess = ((offset - first) as i128 * (bases.len() - 1) as i128 / span) as usize;
        // Widen [lo, hi) around the guess until bases[lo] <= offset < bases[hi].
        let (mut lo, mut hi) = (guess, guess + 1);
        let mut step = 1;
        while bases[lo] > offset {
            hi = lo;
            lo = lo.saturating_sub(step);
            step *= 2;
        }
        step = 1;
        while hi < bases.len() && bases[hi] <= offset {
            lo = hi;
            hi = (hi + step).min(bases.len());
            step *= 2;
        }
        Some(lo + bases[lo..hi].partition_point(|&base| base <= offset) - 1)
    }

    /// Inserts or replaces the entry at `base`.
    fn insert(&mut self, base: i64, entry: Entry) {
        if self.bases.last().is_none_or(|&last| last < base) {
            self.bases.push(base);
            self.entries.push(entry);
            return;
        }
        match self.bases.binary_search(&base) {
            Ok(i) => self.entries[i] = entry,
            Err(i) => {
                self.bases.insert(i, base);
                self.entries.insert(i, entry);
            }
        }
    }

    /// Removes and returns the entries whose offsets overlap `from..=upto`.
    fn remove_overlapping(&mut self, from: i64, upto: i64) -> Vec<(i64, Entry)> {
        let start = self
            .entries
            .partition_point(|e| e.segment.last_offset < from);
        let end = self.bases.partition_point(|&base| base <= upto).max(start);
        self.bases
            .drain(start..end)
            .zip(self.entries.drain(start..end))
            .collect()
    }

    /// Keeps the entries for which `keep` holds.
    fn retain(&mut self, mut keep: impl FnMut(i64, &Entry) -> bool) {
        let bases = std::mem::take(&mut self.bases);
        let entries = std::mem::take(&mut self.entries);
        for (base, entry) in bases.into_iter().zip(entries) {
            if keep(base, &entry) {
                self.bases.push(base);
                self.entries.push(entry);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (i64, &Entry)> {
        self.bases.iter().copied().zip(&self.entries)
    }
}

/// The last metadata query, for coalescing and throttling misses.
struct RefreshRecord {
    /// Sequence number of the query (see `SegmentIndex::refreshes_started`).
    id: u64,
    /// Offsets the query answered authoritatively.
    covered: std::ops::RangeInclusive<i64>,
    finished_at: Instant,
}

/// In-memory map from offsets to the segments of one partition.
///
/// Lookups that hit take a read lock for a few hundred nanoseconds and never wait on anything
/// else; misses refresh from the metadata store.
pub struct SegmentIndex {
    topic: String,
    partition: u32,
    metadata: Arc<dyn MetadataStore>,
    config: SegmentIndexConfig,
    state: RwLock<State>,
    /// Logical time for LRU: advanced by every change, copied into entries when they are used.
    /// Readers only store it, so the hot path never writes a shared cache line.
    clock: AtomicU64,
    /// Serializes metadata queries (single-flight); holds the latest one's outcome.
    refresh: tokio::sync::Mutex<Option<RefreshRecord>>,
    refreshes_started: AtomicU64,
    queries: AtomicU64,
    /// The agent-wide bound this index counts its entries in, if any.
    budget: Option<Arc<Budget>>,
    /// Commit time (ms) of the partition's oldest segment still in a flush's shared object,
    /// `i64::MAX` when it has none, 0 when unknown: lets consolidation skip, without a metadata
    /// query, the partitions with nothing to consolidate.
    shared_since_ms: AtomicI64,
    /// An offset at or below the base of the partition's oldest segment still in a flush's
    /// shared object (0 until consolidation first looked): consolidation lists segments from
    /// here, not the partition's whole history, every time it looks.
    shared_from_offset: AtomicI64,
}

impl Drop for SegmentIndex {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.account(self.state.get_mut().accounted, 0);
        }
    }
}

impl std::fmt::Debug for SegmentIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentIndex")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("segments", &self.len())
            .field("metadata_queries", &self.metadata_queries())
            .finish()
    }
}

impl SegmentIndex {
    /// An empty index for one partition. Nothing is queried until the first lookup misses.
    pub fn new(
        topic: &str,
        partition: u32,
        metadata: Arc<dyn MetadataStore>,
        config: SegmentIndexConfig,
    ) -> Self {
        Self {
            topic: topic.to_owned(),
            partition,
            metadata,
            config,
            state: RwLock::new(State {
                segments: Segments::default(),
                refreshed_at: Instant::now(),
                accounted: 0,
            }),
            clock: AtomicU64::new(0),
            refresh: tokio::sync::Mutex::new(None),
            refreshes_started: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            shared_since_ms: AtomicI64::new(0),
            shared_from_offset: AtomicI64::new(0),
            budget: None,
        }
    }

    /// Counts this index's entries in `budget`, shared with the agent's other indexes.
    pub fn with_budget(mut self, budget: Arc<Budget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Commit time (ms) of the oldest segment still in a flush's shared object: `None` when
    /// there is none; `Some(0)` when unknown (a partition just opened).
    pub fn shared_since_ms(&self) -> Option<i64> {
        let since = self.shared_since_ms.load(Ordering::Acquire);
        (since != i64::MAX).then_some(since)
    }

    /// Records what consolidation found: the commit time of the oldest segment still in a shared
    /// object (`None`: no such segment). A slice committed meanwhile may be hidden until the
    /// partition's next commit lowers the mark again: consolidation is only delayed by it.
    pub fn set_shared_since_ms(&self, since: Option<i64>) {
        self.shared_since_ms
            .store(since.unwrap_or(i64::MAX), Ordering::Release);
    }

    /// An offset no later than the base of the oldest segment still in a flush's shared object
    /// (0 when unknown): where consolidation's listing of the partition can start.
    pub fn shared_from_offset(&self) -> i64 {
        self.shared_from_offset.load(Ordering::Acquire)
    }

    /// Records where the segments still in shared objects begin, as consolidation found or
    /// left them: the oldest one's base offset, or past the last segment when there is none
    /// (later commits start there or after). Never below what it was: data below it is in
    /// consolidated segments for good.
    pub fn set_shared_from_offset(&self, offset: i64) {
        self.shared_from_offset.fetch_max(offset, Ordering::AcqRel);
    }

    /// The segment holding `offset`, refreshing from the metadata store first when the offset is
    /// not indexed or the index is older than the refresh interval. `None` when no committed
    /// segment holds the offset (before the log start, in a gap, at or past the high watermark).
    pub async fn lookup(&self, offset: i64) -> Result<Option<IndexedSegment>> {
        if let Some(segment) = self.probe_fresh(offset) {
            return Ok(Some(segment));
        }
        let observed = self.refreshes_started.load(Ordering::Acquire);
        self.refresh_covering(offset, observed).await?;
        Ok(self.lookup_cached(offset))
    }

    /// The indexed segment holding `offset`, from memory only (no freshness check, no query).
    pub fn lookup_cached(&self, offset: i64) -> Option<IndexedSegment> {
        self.probe(offset).0
    }

    /// The first segment whose newest record has a timestamp `>= timestamp_ms` (Kafka
    /// ListOffsets by time). Always asks the metadata store: the index may hold only part of the
    /// partition, and a segment it lacks could be the answer. The store finds it, rather than
    /// listing the partition's whole history here.
    pub async fn lookup_timestamp(&self, timestamp_ms: i64) -> Result<Option<IndexedSegment>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let found = self
            .metadata
            .first_segment_reaching(&self.topic, self.partition, timestamp_ms)
            .await?;
        Ok(found.as_ref().map(IndexedSegment::from))
    }

    /// Adds a segment just committed by this agent's writer.
    pub fn insert(&self, segment: &SegmentInfo) {
        if crate::layout::is_shared_object(&segment.object_key) {
            self.shared_since_ms
                .fetch_min(segment.created_at_ms, Ordering::AcqRel);
        }
        let tick = self.tick();
        let mut state = self.state.write();
        state
            .segments
            .insert(segment.base_offset, Entry::new(segment.into(), tick));
        self.evict_if_over(&mut state);
    }

    /// Swaps in a segment that replaced the segments it covers (compaction).
    pub fn replace(&self, merged: &SegmentInfo) {
        let tick = self.tick();
        let mut state = self.state.write();
        state
            .segments
            .remove_overlapping(merged.base_offset, merged.last_offset);
        state
            .segments
            .insert(merged.base_offset, Entry::new(merged.into(), tick));
        self.evict_if_over(&mut state);
    }

    /// Forgets every segment lying wholly below `offset` (after retention deleted them).
    pub fn remove_below(&self, offset: i64) {
        let mut state = self.state.write();
        state
            .segments
            .retain(|_, entry| entry.segment.last_offset >= offset);
        self.evict_if_over(&mut state);
    }

    /// Number of indexed segments.
    pub fn len(&self) -> usize {
        self.state.read().segments.len()
    }

    /// Whether no segment is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many `list_segments` queries this index has issued.
    pub fn metadata_queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// The indexed segment holding `offset`, if the index is younger than the refresh interval.
    fn probe_fresh(&self, offset: i64) -> Option<IndexedSegment> {
        let (hit, refreshed_at) = self.probe(offset);
        hit.filter(|_| refreshed_at.elapsed() < self.config.refresh_interval)
    }

    /// The indexed segment holding `offset` (marked used), and when the index was last refreshed.
    fn probe(&self, offset: i64) -> (Option<IndexedSegment>, Instant) {
        let state = self.state.read();
        let hit = state
            .segments
            .floor(offset)
            .filter(|entry| entry.segment.last_offset >= offset)
            .map(|entry| {
                entry.touch(self.clock.load(Ordering::Relaxed));
                entry.segment.clone()
            });
        (hit, state.refreshed_at)
    }

    /// Makes the index authoritative for `offset`, querying the metadata store unless the offset
    /// is now indexed, or a query that started after the caller's miss (`observed` queries had
    /// started then), or one that finished moments ago, already covered it.
    async fn refresh_covering(&self, offset: i64, observed: u64) -> Result<()> {
        let mut last = self.refresh.lock().await;
        if self.probe_fresh(offset).is_some() {
            return Ok(()); // filled by the query this caller waited for, or by insert()
        }
        if let Some(record) = last.as_ref() {
            let recent = record.id > observed || record.finished_at.elapsed() < MISS_REFRESH_GAP;
            if recent && record.covered.contains(&offset) {
                return Ok(());
            }
        }
        let id = self.refreshes_started.fetch_add(1, Ordering::AcqRel) + 1;
        let segments = self.query(offset).await?;
        let covered = self.apply_refresh(offset, segments);
        *last = Some(RefreshRecord {
            id,
            covered,
            finished_at: Instant::now(),
        });
        Ok(())
    }

    async fn query(&self, from: i64) -> Result<Vec<SegmentInfo>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .metadata
            .list_segments(&self.topic, self.partition, from)
            .await?)
    }

    /// Replaces what the index holds from `from` up to the last listed segment with the listing,
    /// keeping at most a bound's worth (the lowest offsets, which sequential readers need first).
    /// Returns the offsets the listing answers for.
    fn apply_refresh(
        &self,
        from: i64,
        mut listed: Vec<SegmentInfo>,
    ) -> std::ops::RangeInclusive<i64> {
        let truncated = listed.len() > self.retained_after_eviction();
        listed.truncate(self.retained_after_eviction());
        let tick = self.tick();
        let mut state = self.state.write();
        state.refreshed_at = Instant::now();
        let Some(upto) = listed.last().map(|s| s.last_offset) else {
            // Nothing from `from` on: a segment indexed there meanwhile came from `insert` after
            // the query ran, so it is kept.
            return from..=i64::MAX;
        };
        // Entries past the listing are kept: they can only be commits newer than the query.
        let mut previous: HashMap<i64, Entry> = state
            .segments
            .remove_overlapping(from, upto)
            .into_iter()
            .collect();
        for info in &listed {
            let entry = match previous.remove(&info.base_offset) {
                Some(entry) if entry.segment.same_segment(info) => entry,
                _ => Entry::new(info.into(), tick),
            };
            state.segments.insert(info.base_offset, entry);
        }
        self.evict_if_over(&mut state);
        from..=if truncated { upto } else { i64::MAX }
    }

    /// Evicts least recently used entries once over the index's own bound (down to a little
    /// below it, so the O(n) selection runs once per many inserts rather than on each) or while
    /// the agent's indexes are over their budget (down to what brings them back under it, never
    /// below [`MIN_RETAINED`]); then counts the index's size in the budget.
    fn evict_if_over(&self, state: &mut State) {
        let len = state.segments.len();
        let mut keep = len;
        if len > self.config.max_segments.max(1) {
            keep = self.retained_after_eviction();
        }
        if let Some(budget) = &self.budget {
            let excess = budget.excess(state.accounted, len);
            keep = keep.min(len.saturating_sub(excess).max(MIN_RETAINED));
        }
        if keep < len {
            self.evict_oldest(state, len - keep);
        }
        if let Some(budget) = &self.budget {
            budget.account(state.accounted, state.segments.len());
        }
        state.accounted = state.segments.len();
    }

    /// Drops the `excess` least recently used entries.
    fn evict_oldest(&self, state: &mut State, excess: usize) {
        let mut by_age: Vec<(u64, i64)> = state
            .segments
            .iter()
            .map(|(base, entry)| (entry.last_used.load(Ordering::Relaxed), base))
            .collect();
        by_age.select_nth_unstable(excess - 1);
        let evicted: HashSet<i64> = by_age[..excess].iter().map(|&(_, base)| base).collect();
        state.segments.retain(|base, _| !evicted.contains(&base));
    }

    fn retained_after_eviction(&self) -> usize {
        let bound = self.config.max_segments.max(1);
        bound - bound / 16
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl Entry {
    fn new(segment: IndexedSegment, tick: u64) -> Self {
        Self {
            segment,
            last_used: AtomicU64::new(tick),
        }
    }

    fn touch(&self, now: u64) {
        // Skipping the store when unchanged keeps concurrent readers of a hot entry from
        // bouncing its cache line between cores.
        if self.last_used.load(Ordering::Relaxed) != now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod floor_tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(base: i64) -> Entry {
        let info = SegmentInfo {
            topic: "t".into(),
            partition: 0,
            base_offset: base,
            last_offset: base,
            record_count: 1,
            size_bytes: 1,
            object_offset: 0,
            object_size: 1,
            object_key: String::new(),
            min_timestamp_ms: 0,
            max_timestamp_ms: 0,
            created_at_ms: 0,
        };
        Entry::new((&info).into(), 0)
    }

    proptest! {
        /// The interpolation search answers exactly as a plain binary search, whatever the gaps.
        #[test]
        fn floor_matches_binary_search(
            gaps in proptest::collection::vec(1i64..1_000_000, 1..300),
            probes in proptest::collection::vec(-10i64..400_000_000, 1..50),
        ) {
            let mut segments = Segments::default();
            let mut base = 0;
            for gap in gaps {
                base += gap;
                segments.insert(base, entry(base));
            }
            for offset in probes {
                let expected = segments.bases.partition_point(|&b| b <= offset).checked_sub(1);
                prop_assert_eq!(segments.floor_index(offset), expected, "offset {}", offset);
            }
        }
    }
}
