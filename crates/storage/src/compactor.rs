//! Compaction: merges runs of small adjacent segments into segments close to `segment.bytes`.
//!
//! Group commit makes one small segment per partition per flush, which keeps acknowledgements
//! fast but multiplies objects (more PUTs, GETs and index entries per byte). Compaction restores
//! large segments off the write path: it only rewrites committed segments, which are immutable,
//! so it never races the writer. The merged segment holds the very same batches (same offsets,
//! same bytes), re-framed with a fresh footer; every source batch is CRC-checked on the way.
//!
//! The swap is one metadata transaction ([`MetadataStore::replace_segments`]), fenced by the
//! partition lease. Replaced objects are deleted only after a grace delay so readers that looked
//! up the old segments (here, or on another agent until its index refreshes) can finish; a crash
//! before that leaves unreferenced objects for the orphan janitor.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use streamhouse_metadata::{now_ms, LeaseFence, SegmentInfo};
use streamhouse_segment::{decode_segment, EncodedSegment, SegmentBuilder};

use crate::error::{Corruption, Result, StorageError};
use crate::partition::PartitionStorage;
use crate::retention::delete_objects;
use crate::writer::{upload_with_retries, WriterConfig};

/// When and how far to merge.
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// Merged segments grow up to this size (the topic's `segment.bytes`).
    pub target_bytes: u64,
    /// Only segments at least this old are merged, so the tail stays with the writer's freshly
    /// cached objects and a merge batches many flushes.
    pub min_age: Duration,
    /// Replaced objects are deleted this long after the swap.
    pub delete_grace: Duration,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            target_bytes: 64 * 1024 * 1024,
            min_age: Duration::from_secs(30),
            delete_grace: crate::retention::DEFAULT_DELETE_GRACE,
        }
    }
}

/// What one merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// The new segment.
    pub merged: SegmentInfo,
    /// The segments it replaced, in offset order.
    pub replaced: Vec<SegmentInfo>,
}

/// Merges small segments of one partition; run by the agent holding the partition's lease.
pub struct Compactor {
    storage: PartitionStorage,
    fence: Option<LeaseFence>,
    upload: WriterConfig,
}

impl Compactor {
    /// A compactor of the partition, committing under `fence` (the lease the writer holds).
    pub fn new(storage: PartitionStorage, fence: Option<LeaseFence>) -> Self {
        Self {
            upload: WriterConfig::for_topic(&storage.topic.config),
            storage,
            fence,
        }
    }

    /// Merges the first eligible run of segments, if there is one.
    pub async fn compact_once(&self, config: &CompactionConfig) -> Result<Option<Compacted>> {
        let segments = self
            .storage
            .metadata
            .list_segments(&self.storage.topic.name, self.storage.partition, 0)
            .await?;
        let newest_allowed = now_ms() - config.min_age.as_millis() as i64;
        let run = pick_run(&segments, config.target_bytes, newest_allowed);
        if run.len() < 2 {
            return Ok(None);
        }
        let encoded = self.merge(run).await?;
        let merged = self.commit(run, encoded).await?;
        Ok(Some(merged))
    }

    /// Merges eligible runs until none is left (at most `max_runs`); returns how many.
    pub async fn compact(&self, config: &CompactionConfig, max_runs: usize) -> Result<usize> {
        let mut done = 0;
        while done < max_runs {
            let Some(compacted) = self.compact_once(config).await? else {
                break;
            };
            delete_objects_after(
                self.storage.store.clone(),
                &compacted.replaced,
                config.delete_grace,
            );
            done += 1;
        }
        Ok(done)
    }

    /// Reads, verifies and re-frames the run's batches into one segment.
    async fn merge(&self, run: &[SegmentInfo]) -> Result<EncodedSegment> {
        let mut builder = SegmentBuilder::new(run[0].base_offset);
        for segment in run {
            let path = ObjectPath::from(segment.object_key.as_str());
            let fetch = async { self.storage.store.get(&path).await?.bytes().await };
            let bytes = fetch
                .await
                .map_err(|e| StorageError::object_store(&segment.object_key, e))?;
            let (footer, batches) = decode_segment(bytes).map_err(|e| {
                StorageError::corrupt(
                    &segment.object_key,
                    segment.size_bytes,
                    0..segment.size_bytes,
                    e,
                )
            })?;
            if (footer.base_offset, footer.last_offset)
                != (segment.base_offset, segment.last_offset)
            {
                return Err(mismatch(segment, footer.base_offset, footer.last_offset));
            }
            for batch in &batches {
                builder.push(batch).map_err(|e| {
                    StorageError::corrupt(
                        &segment.object_key,
                        segment.size_bytes,
                        0..segment.size_bytes,
                        e,
                    )
                })?;
            }
        }
        Ok(builder.finish())
    }

    /// Uploads the merged segment and swaps it in for the run, in metadata then in the index.
    async fn commit(&self, run: &[SegmentInfo], encoded: EncodedSegment) -> Result<Compacted> {
        let footer = &encoded.footer;
        let epoch = self.fence.as_ref().map_or(0, |f| f.epoch);
        let key = format!(
            "topics/{}/{}/{:020}-{epoch}-merged-{:020}.seg",
            self.storage.topic.id, self.storage.partition, footer.base_offset, footer.last_offset
        );
        upload_with_retries(
            self.storage.store.as_ref(),
            &key,
            encoded.bytes.clone(),
            &self.upload,
        )
        .await?;
        let merged = SegmentInfo {
            topic: self.storage.topic.name.clone(),
            partition: self.storage.partition,
            base_offset: footer.base_offset,
            last_offset: footer.last_offset,
            record_count: footer.record_count,
            size_bytes: encoded.bytes.len() as u64,
            object_key: key,
            min_timestamp_ms: run.iter().map(|s| s.min_timestamp_ms).min().unwrap_or(-1),
            max_timestamp_ms: run.iter().map(|s| s.max_timestamp_ms).max().unwrap_or(-1),
            created_at_ms: run
                .iter()
                .map(|s| s.created_at_ms)
                .max()
                .unwrap_or_else(now_ms),
        };
        let replaced = self
            .storage
            .metadata
            .replace_segments(&merged, self.fence.as_ref())
            .await?;
        self.storage.index.replace(&merged);
        self.storage
            .cache
            .insert_object(&merged.object_key, encoded.bytes)
            .await;
        tracing::debug!(
            topic = %self.storage.topic.name,
            partition = self.storage.partition,
            segments = replaced.len(),
            bytes = merged.size_bytes,
            "compacted segments"
        );
        Ok(Compacted { merged, replaced })
    }
}

fn mismatch(segment: &SegmentInfo, base: i64, last: i64) -> StorageError {
    StorageError::Corrupt {
        key: segment.object_key.clone(),
        range: 0..segment.size_bytes,
        source: Corruption::Mismatch(format!(
            "object holds offsets {base}..={last}, metadata says {}..={}",
            segment.base_offset, segment.last_offset
        )),
    }
}

/// The first run of at least two adjacent segments, each smaller than half the target and
/// created no later than `newest_allowed_ms`, that together fit in `target_bytes`. Segments past
/// half the target are left alone, which bounds how often a byte is rewritten.
fn pick_run(segments: &[SegmentInfo], target_bytes: u64, newest_allowed_ms: i64) -> &[SegmentInfo] {
    let small =
        |s: &SegmentInfo| s.size_bytes < target_bytes / 2 && s.created_at_ms <= newest_allowed_ms;
    let mut start = 0;
    while start < segments.len() {
        if !small(&segments[start]) {
            start += 1;
            continue;
        }
        let mut end = start + 1;
        let mut total = segments[start].size_bytes;
        while end < segments.len()
            && small(&segments[end])
            && segments[end].base_offset == segments[end - 1].last_offset + 1
            && total + segments[end].size_bytes <= target_bytes
        {
            total += segments[end].size_bytes;
            end += 1;
        }
        if end - start >= 2 {
            return &segments[start..end];
        }
        start = end;
    }
    &[]
}

/// Deletes the objects of `segments` once `grace` has passed, in the background. Without a
/// runtime (or if the process stops first) they stay as orphans for the janitor.
pub(crate) fn delete_objects_after(
    store: Arc<dyn ObjectStore>,
    segments: &[SegmentInfo],
    grace: Duration,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let keys: Vec<ObjectPath> = segments
        .iter()
        .map(|s| ObjectPath::from(s.object_key.as_str()))
        .collect();
    runtime.spawn(async move {
        tokio::time::sleep(grace).await;
        delete_objects(store.as_ref(), &keys).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, last: i64, size: u64, created: i64) -> SegmentInfo {
        SegmentInfo {
            topic: "t".into(),
            partition: 0,
            base_offset: base,
            last_offset: last,
            record_count: last - base + 1,
            size_bytes: size,
            object_key: format!("k{base}"),
            min_timestamp_ms: 0,
            max_timestamp_ms: 0,
            created_at_ms: created,
        }
    }

    #[test]
    fn picks_the_first_run_of_small_old_adjacent_segments() {
        let segments = [
            seg(0, 9, 600, 0),   // too big on its own (>= half of 1000)
            seg(10, 19, 100, 0), // run starts
            seg(20, 29, 100, 0),
            seg(30, 39, 100, 0),
            seg(40, 49, 100, 99), // too new
        ];
        let run = pick_run(&segments, 1000, 50);
        assert_eq!(
            run.iter().map(|s| s.base_offset).collect::<Vec<_>>(),
            [10, 20, 30]
        );
        assert!(
            pick_run(&segments[..2], 1000, 50).is_empty(),
            "a single segment is no run"
        );
    }

    #[test]
    fn runs_stop_at_the_target_and_at_gaps() {
        let segments = [
            seg(0, 9, 400, 0),
            seg(10, 19, 400, 0),
            seg(20, 29, 400, 0),
            seg(40, 49, 10, 0),
        ];
        let run = pick_run(&segments, 1000, 0);
        assert_eq!(
            run.len(),
            2,
            "a third 400-byte segment would pass the target"
        );
        let gap = [seg(0, 9, 10, 0), seg(20, 29, 10, 0)];
        assert!(pick_run(&gap, 1000, 0).is_empty());
    }
}
