//! Retention and truncation: dropping the oldest segments of a partition.
//!
//! Truncation happens in a fixed order so that a reader never sees garbage:
//! 1. `MetadataStore::truncate_before` deletes the segment rows and advances the log start (the
//!    commit point: from now on a read below it is `OffsetOutOfRange`);
//! 2. the partition's writer and [`SegmentIndex`] forget the segments;
//! 3. the objects are deleted only after a grace delay, so a read that found a segment just
//!    before step 1 can still finish reading it. The deletion is scheduled in the metadata store
//!    by step 1 itself, so a crash during the delay forgets nothing: the next
//!    [`ObjectDeleter`] run does it (and keeps a shared object other partitions still use).

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use streamhouse_metadata::{MetadataStore, SegmentInfo, TopicConfig};

use crate::deleter::ObjectDeleter;
use crate::error::Result;
use crate::segment_index::SegmentIndex;
use crate::writer::PartitionWriter;

/// How many segments retention reads from the metadata store at a time while it looks for
/// the first one to keep.
const RETENTION_PAGE: u32 = 256;

/// How long deleted segment objects stay readable by default after their truncation.
pub const DEFAULT_DELETE_GRACE: Duration = Duration::from_secs(60);

/// A topic's retention limits (Kafka `retention.ms` and `retention.bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Segments whose newest record is older than this many milliseconds are deleted.
    pub retention_ms: Option<i64>,
    /// Per partition: the oldest segments are deleted while the partition would still hold at
    /// least this many bytes without them (Kafka's rule, so a partition never drops below it).
    pub retention_bytes: Option<i64>,
}

impl From<&TopicConfig> for RetentionPolicy {
    /// A topic whose `cleanup.policy` leaves out `delete` (compact only) keeps everything:
    /// compaction, not retention, bounds it, as in Kafka.
    fn from(config: &TopicConfig) -> Self {
        let deletes = config
            .extra
            .get("cleanup.policy")
            .is_none_or(|policy| policy.split(',').any(|p| p.trim() == "delete"));
        if !deletes {
            return Self::default();
        }
        Self {
            // Kafka uses -1 for "unlimited"; treat any negative value that way.
            retention_ms: config.retention_ms.filter(|ms| *ms >= 0),
            retention_bytes: config.retention_bytes.filter(|b| *b >= 0),
        }
    }
}

impl RetentionPolicy {
    /// The log start this policy calls for, given a partition's segments in offset order at
    /// `now_ms`: just past the last segment to delete. `None` when nothing is to be deleted.
    ///
    /// Only a prefix of the log is ever deleted: a segment is kept, with everything after it,
    /// as soon as neither limit applies to it.
    pub fn new_log_start(&self, segments: &[SegmentInfo], now_ms: i64) -> Option<i64> {
        let total = segments.iter().map(|s| s.size_bytes).sum();
        let mut scan = self.scan(total, now_ms);
        scan.feed(segments);
        scan.new_start
    }

    /// A scan of a partition holding `total_bytes`, fed its segments from the oldest on.
    fn scan(&self, total_bytes: u64, now_ms: i64) -> PrefixScan {
        let excess = self
            .retention_bytes
            .map(|limit| (total_bytes as i64).saturating_sub(limit).max(0));
        PrefixScan {
            expired_before: self.retention_ms.map(|ms| now_ms.saturating_sub(ms)),
            excess,
            new_start: None,
            done: false,
        }
    }
}

/// The deletable prefix of a partition's log, found by feeding its segments in offset order,
/// so that only that prefix need be read from the metadata store, a page at a time.
#[derive(Debug)]
struct PrefixScan {
    /// Records older than this (ms) are past `retention.ms`.
    expired_before: Option<i64>,
    /// Bytes still above `retention.bytes`, if it is set.
    excess: Option<i64>,
    /// Just past the last segment to delete so far.
    new_start: Option<i64>,
    /// A segment to keep was found: nothing after it is deleted.
    done: bool,
}

impl PrefixScan {
    /// Takes the next segments in offset order; returns whether the prefix has ended.
    fn feed(&mut self, segments: &[SegmentInfo]) -> bool {
        for segment in segments {
            if self.done {
                break;
            }
            let size = segment.size_bytes as i64;
            let expired = self
                .expired_before
                .is_some_and(|before| segment.max_timestamp_ms < before);
            let oversize = self.excess.is_some_and(|excess| excess >= size);
            if !expired && !oversize {
                self.done = true;
                break;
            }
            self.excess = self.excess.map(|excess| excess - size);
            self.new_start = Some(segment.last_offset + 1);
        }
        self.done
    }
}

/// The partition a truncation applies to, with the in-memory state that must follow it.
#[derive(Debug, Clone, Copy)]
pub struct TruncationTarget<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition index.
    pub partition: u32,
    /// The partition's segment index on this agent.
    pub index: &'a SegmentIndex,
    /// This agent's writer of the partition, if it has one open.
    pub writer: Option<&'a PartitionWriter>,
}

/// What a truncation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    /// The partition's log start afterwards (Kafka's low watermark).
    pub log_start: i64,
    /// Segments removed from the metadata; their objects are deleted after the grace delay.
    pub deleted: Vec<SegmentInfo>,
}

/// Truncates partitions and deletes the dropped segment objects after a grace delay.
#[derive(Clone)]
pub struct LogTruncator {
    store: Arc<dyn ObjectStore>,
    metadata: Arc<dyn MetadataStore>,
    grace: Duration,
}

impl std::fmt::Debug for LogTruncator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogTruncator")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl LogTruncator {
    /// A truncator deleting objects `grace` after their segments were dropped.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
        grace: Duration,
    ) -> Self {
        Self {
            store,
            metadata,
            grace,
        }
    }

    /// Drops every segment lying wholly below `new_log_start` and raises the log start to it
    /// (clamped: never lowered, never past the high watermark). Inside a Tokio runtime, the
    /// objects are deleted in the background once the grace delay has passed.
    pub async fn truncate(
        &self,
        target: TruncationTarget<'_>,
        new_log_start: i64,
    ) -> Result<Truncated> {
        let delete_after = streamhouse_metadata::now_ms() + self.grace.as_millis() as i64;
        let deleted = self
            .metadata
            .truncate_before(target.topic, target.partition, new_log_start, delete_after)
            .await?;
        let log_start = self
            .metadata
            .get_partition(target.topic, target.partition)
            .await?
            .log_start_offset;
        if let Some(writer) = target.writer {
            writer.raise_log_start(log_start);
        }
        target.index.remove_below(log_start);
        if !deleted.is_empty() {
            tracing::info!(
                topic = target.topic,
                partition = target.partition,
                log_start,
                segments = deleted.len(),
                "truncated partition"
            );
            self.delete_later(&deleted);
        }
        Ok(Truncated { log_start, deleted })
    }

    /// Applies `policy` to a partition at `now_ms`. `None` when nothing had to be deleted.
    pub async fn enforce(
        &self,
        target: TruncationTarget<'_>,
        policy: RetentionPolicy,
        now_ms: i64,
    ) -> Result<Option<Truncated>> {
        if policy == RetentionPolicy::default() {
            return Ok(None);
        }
        match self.deletable_prefix(&target, policy, now_ms).await? {
            Some(log_start) => self.truncate(target, log_start).await.map(Some),
            None => Ok(None),
        }
    }

    /// [`RetentionPolicy::new_log_start`] of a partition, reading from the metadata store only
    /// its byte total and the segments up to the first one kept (a page at a time), not its
    /// whole history: that grows with retention, and this runs for every partition.
    async fn deletable_prefix(
        &self,
        target: &TruncationTarget<'_>,
        policy: RetentionPolicy,
        now_ms: i64,
    ) -> Result<Option<i64>> {
        let total = match policy.retention_bytes {
            Some(_) => {
                let totals = self.metadata.segment_totals(target.topic, target.partition);
                totals.await?.bytes
            }
            None => 0,
        };
        let mut scan = policy.scan(total, now_ms);
        let mut from = i64::MIN;
        loop {
            let page = self
                .metadata
                .list_segments_page(target.topic, target.partition, from, RETENTION_PAGE)
                .await?;
            let ended = scan.feed(&page) || page.len() < RETENTION_PAGE as usize;
            match page.last() {
                Some(last) if !ended => from = last.last_offset + 1,
                _ => return Ok(scan.new_start),
            }
        }
    }

    /// Deletes the truncated objects once the grace delay has passed, in the background. They
    /// are scheduled in the metadata store already, so if this agent stops first the next
    /// deleter run (any agent's) does it.
    fn delete_later(&self, segments: &[SegmentInfo]) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let deleter = ObjectDeleter::new(self.store.clone(), self.metadata.clone());
        if segments.is_empty() {
            return;
        }
        let grace = self.grace;
        runtime.spawn(async move {
            tokio::time::sleep(grace).await;
            if let Err(error) = deleter.delete_due(streamhouse_metadata::now_ms()).await {
                tracing::warn!(%error, "deleting truncated objects failed; retried later");
            }
        });
    }
}
