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
        let mut excess = self.excess_bytes(segments);
        let mut new_start = None;
        for segment in segments {
            let expired = self
                .retention_ms
                .is_some_and(|ms| segment.max_timestamp_ms < now_ms.saturating_sub(ms));
            let oversize = excess >= segment.size_bytes as i64 && self.retention_bytes.is_some();
            if !expired && !oversize {
                break;
            }
            excess -= segment.size_bytes as i64;
            new_start = Some(segment.last_offset + 1);
        }
        new_start
    }

    /// Bytes above `retention.bytes` (0 without a size limit or when under it).
    fn excess_bytes(&self, segments: &[SegmentInfo]) -> i64 {
        let total: i64 = segments.iter().map(|s| s.size_bytes as i64).sum();
        self.retention_bytes
            .map_or(0, |limit| total.saturating_sub(limit).max(0))
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
        let segments = self
            .metadata
            .list_segments(target.topic, target.partition, i64::MIN)
            .await?;
        match policy.new_log_start(&segments, now_ms) {
            Some(log_start) => self.truncate(target, log_start).await.map(Some),
            None => Ok(None),
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
