//! Consolidation: rewrites the small per-flush slices of shared objects into large contiguous
//! segments, off the write path.
//!
//! Every flush cycle writes one shared object holding a small slice of each partition it
//! flushed. That keeps PUTs per agent at one per cycle, but leaves each partition's history
//! spread over many objects: a cold read would need one GET per slice. A round of consolidation
//! - picks, for the partitions this agent leads, the committed slices in shared objects that
//!   are at least [`ConsolidationConfig::min_age`] old (the tail is served from the cache),
//!   oldest first, up to [`ConsolidationConfig::max_round_bytes`];
//! - reads each of those shared objects ONCE, with one ranged GET covering the slices it needs
//!   (GETs run in parallel), or none when the agent's cache still holds that range (the flush's
//!   write-through: recent data at moderate rates, saving a GET per flush object);
//! - verifies every batch (CRCs) and merges each partition's slices into one segment; a segment
//!   reaching [`ConsolidationConfig::own_object_bytes`] gets an object of its own, the others
//!   share one consolidated object (same layout as a flush's), so a round costs a few PUTs
//!   whatever the partition count;
//! - swaps each partition's merged segment in, fenced by the partition lease, in the metadata
//!   transaction that also schedules the replaced shared objects for deletion: the deleter
//!   removes a shared object after the grace delay and only once no partition references it.
//!
//! Data is consolidated once: consolidated segments are never merged again, so every byte is
//! written to the store twice (flush, consolidation) however long the partition lives.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use streamhouse_metadata::{now_ms, LeaseFence, MetadataStore, SegmentInfo};
use streamhouse_segment::{decode_segment, EncodedSegment, SegmentBuilder, SharedObjectBuilder};

use crate::cache::{concat, slices_of};
use crate::error::{Corruption, Result, StorageError};
use crate::layout::{is_shared_object, CONSOLIDATED_PREFIX};
use crate::partition::PartitionStorage;
use crate::writer::{segment_key, upload_with_retries, WriterConfig};

/// When and how much to consolidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsolidationConfig {
    /// Slices younger than this are left alone: tailing readers find them in the cache.
    pub min_age: Duration,
    /// A round runs once the oldest eligible slice is this old...
    pub max_age: Duration,
    /// ... or this many bytes of slices are eligible.
    pub trigger_bytes: u64,
    /// Most source bytes one round reads and holds in memory.
    pub max_round_bytes: u64,
    /// A merged segment this large gets an object of its own.
    pub own_object_bytes: u64,
    /// Ranged GETs in flight at once.
    pub read_concurrency: usize,
}

impl Default for ConsolidationConfig {
    fn default() -> Self {
        Self {
            min_age: Duration::from_secs(10),
            max_age: Duration::from_secs(60),
            trigger_bytes: 64 * 1024 * 1024,
            max_round_bytes: 128 * 1024 * 1024,
            own_object_bytes: 8 * 1024 * 1024,
            read_concurrency: 8,
        }
    }
}

/// A partition this agent may consolidate: its storage and the lease its writer holds.
#[derive(Debug, Clone)]
pub struct ConsolidationTarget {
    /// The partition's storage (topic, index, cache).
    pub storage: PartitionStorage,
    /// The lease every swap is fenced by.
    pub fence: Option<LeaseFence>,
}

/// What one call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsolidationReport {
    /// Eligible slices and their bytes before the round (the backlog).
    pub backlog_slices: usize,
    /// Bytes of the eligible slices.
    pub backlog_bytes: u64,
    /// Age of the oldest eligible slice, in ms (0 without backlog).
    pub backlog_age_ms: i64,
    /// Shared objects read.
    pub objects_read: usize,
    /// Of those, the ones found whole in the agent's cache (no GET).
    pub objects_from_cache: usize,
    /// Objects written.
    pub objects_written: usize,
    /// Partitions whose slices were swapped for a merged segment.
    pub partitions: usize,
    /// Slices replaced.
    pub slices_replaced: usize,
}

/// Consolidates the partitions it is given (see the module docs).
#[derive(Clone)]
pub struct Consolidator {
    store: Arc<dyn ObjectStore>,
    metadata: Arc<dyn MetadataStore>,
    config: ConsolidationConfig,
    delete_grace: Duration,
    upload: WriterConfig,
}

impl std::fmt::Debug for Consolidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consolidator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The bytes read of one shared object: from `start` on.
struct SourceObject {
    start: u64,
    /// The bytes read from `start` on, as consecutive pieces: the cached blocks' own slices
    /// (copying a round's hundred megabytes out of the cache cost more CPU than the rest of
    /// consolidation, most of it faulting in fresh pages), or one GET's body.
    parts: Vec<Bytes>,
    from_cache: bool,
}

impl SourceObject {
    /// The `len` bytes at object offset `offset`: a slice of the piece holding them, or a
    /// copy when they straddle pieces (a slice crossing a cache block boundary).
    fn range(&self, offset: u64, len: usize) -> Bytes {
        concat(&slices_of(
            &self.parts,
            self.start,
            offset..offset + len as u64,
        ))
    }
}

/// One partition's slices picked for a round.
struct Pick<'a> {
    target: &'a ConsolidationTarget,
    slices: Vec<SegmentInfo>,
    /// Commit times of every slice of the partition still in a flush's shared object (the
    /// picked ones first), to tell the index what is left once the picked ones are swapped.
    shared_times: Vec<i64>,
}

impl Consolidator {
    /// A consolidator over `store` and `metadata`; replaced objects are deleted `delete_grace`
    /// after each swap, so readers that found them can finish.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
        config: ConsolidationConfig,
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

    /// Runs one round over `targets` if their backlog calls for it (`force`: whatever the
    /// backlog, e.g. in tests and at shutdown).
    pub async fn run_once(
        &self,
        targets: &[ConsolidationTarget],
        force: bool,
    ) -> Result<ConsolidationReport> {
        let now = now_ms();
        let mut picks = self.eligible(targets, now).await?;
        let mut report = backlog(&picks, now);
        record_backlog(&report);
        let due = report.backlog_age_ms >= self.config.max_age.as_millis() as i64
            || report.backlog_bytes >= self.config.trigger_bytes;
        if report.backlog_slices == 0 || !(due || force) {
            return Ok(report);
        }
        limit_round(&mut picks, self.config.max_round_bytes);
        let objects = self.read_objects(&picks).await?;
        report.objects_read = objects.len();
        report.objects_from_cache = objects.values().filter(|o| o.from_cache).count();
        let merged = picks
            .iter()
            .map(|pick| merge(pick, &objects))
            .collect::<Result<Vec<_>>>()?;
        let (written, swaps) = self.write_outputs(&picks, merged).await?;
        report.objects_written = written;
        for (pick, info) in picks.iter().zip(swaps) {
            if self.swap(pick, &info).await {
                report.partitions += 1;
                report.slices_replaced += pick.slices.len();
            }
        }
        metrics::counter!("streamhouse_consolidation_rounds_total").increment(1);
        metrics::counter!("streamhouse_consolidation_objects_read_total")
            .increment(report.objects_read as u64);
        Ok(report)
    }

    /// Per target, its committed slices of shared objects old enough to consolidate.
    async fn eligible<'a>(
        &self,
        targets: &'a [ConsolidationTarget],
        now: i64,
    ) -> Result<Vec<Pick<'a>>> {
        let newest = now - self.config.min_age.as_millis() as i64;
        let mut picks = Vec::new();
        for target in targets {
            let storage = &target.storage;
            // Partitions whose index knows of no old enough slice cost no query.
            if storage.index.shared_since_ms().is_none_or(|t| t > newest) {
                continue;
            }
            // From where the shared slices begin, not from the start of a history that only
            // grows: the rounds of a busy partition come every few seconds.
            let segments = self
                .metadata
                .list_segments(
                    &storage.topic.name,
                    storage.partition,
                    storage.index.shared_from_offset(),
                )
                .await?;
            let end = segments.last().map(|s| s.last_offset + 1);
            let shared: Vec<SegmentInfo> = segments
                .into_iter()
                .skip_while(|s| !is_shared_object(&s.object_key))
                .take_while(|s| is_shared_object(&s.object_key))
                .collect();
            let shared_times: Vec<i64> = shared.iter().map(|s| s.created_at_ms).collect();
            storage
                .index
                .set_shared_since_ms(shared_times.first().copied());
            if let Some(from) = shared.first().map(|s| s.base_offset).or(end) {
                storage.index.set_shared_from_offset(from);
            }
            // `segment.ms`: a merged segment spans at most that much append time, so retention
            // by time can drop it on time; the rest waits for the next round.
            let span_ms = i64::try_from(storage.topic.config.segment_ms).unwrap_or(i64::MAX);
            let first = shared.first().map_or(0, |s| s.created_at_ms);
            let slices: Vec<SegmentInfo> = shared
                .into_iter()
                .take_while(|s| s.created_at_ms <= newest)
                .take_while(|s| s.created_at_ms - first < span_ms)
                .collect();
            if !slices.is_empty() {
                picks.push(Pick {
                    target,
                    slices,
                    shared_times,
                });
            }
        }
        Ok(picks)
    }

    /// Reads every object the picks need once: from the agent's cache when it holds the whole
    /// range, else one ranged GET covering its needed slices (not cached: consolidation reads
    /// old data once, which would only evict what readers use).
    async fn read_objects(&self, picks: &[Pick<'_>]) -> Result<HashMap<String, SourceObject>> {
        let mut ranges: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
        for slice in picks.iter().flat_map(|p| &p.slices) {
            let end = slice.object_offset + slice.size_bytes;
            let range = ranges.entry(slice.object_key.as_str()).or_insert((
                slice.object_offset,
                end,
                slice.object_size,
            ));
            (range.0, range.1) = (range.0.min(slice.object_offset), range.1.max(end));
        }
        // The targets are this agent's partitions: they share its one block cache.
        let cache = picks.first().map(|p| p.target.storage.cache.clone());
        let reads: Vec<(String, u64, u64, u64)> = ranges
            .into_iter()
            .map(|(key, (start, end, len))| (key.to_owned(), start, end, len))
            .collect();
        futures::stream::iter(reads)
            .map(|(key, start, end, object_len)| {
                let (store, cache) = (self.store.clone(), cache.clone());
                async move {
                    let cached = match &cache {
                        Some(cache) => cache.cached_parts(&key, object_len, start..end).await,
                        None => None,
                    };
                    let from_cache = cached.is_some();
                    let parts = match cached {
                        Some(parts) => parts,
                        None => vec![store
                            .get_range(&ObjectPath::from(key.as_str()), start..end)
                            .await
                            .map_err(|e| StorageError::object_store(&key, e))?],
                    };
                    let object = SourceObject {
                        start,
                        parts,
                        from_cache,
                    };
                    Ok::<_, StorageError>((key, object))
                }
            })
            .buffer_unordered(self.config.read_concurrency.max(1))
            .try_collect()
            .await
    }

    /// Uploads the merged segments: large ones alone, the rest together in one consolidated
    /// object. Returns how many objects were written and each pick's merged segment.
    async fn write_outputs(
        &self,
        picks: &[Pick<'_>],
        merged: Vec<EncodedSegment>,
    ) -> Result<(usize, Vec<SegmentInfo>)> {
        let mut shared = SharedObjectBuilder::new();
        let mut infos = Vec::with_capacity(picks.len());
        let mut written = 0;
        let shared_key = format!(
            "{CONSOLIDATED_PREFIX}/{:013}-{}.obj",
            now_ms(),
            uuid::Uuid::new_v4().simple()
        );
        let mut in_shared = Vec::new();
        for (pick, encoded) in picks.iter().zip(merged) {
            let storage = &pick.target.storage;
            let len = encoded.len;
            let mut info = merged_info(pick, &encoded);
            if len >= self.config.own_object_bytes {
                info.object_key =
                    segment_key(storage.topic.id, storage.partition, info.base_offset);
                let payload = PutPayload::from_iter(encoded.parts);
                upload_with_retries(self.store.as_ref(), &info.object_key, payload, &self.upload)
                    .await?;
                written += 1;
            } else {
                let entry = shared.push(
                    *storage.topic.id.as_bytes(),
                    storage.partition,
                    &encoded.parts,
                );
                info.object_key = shared_key.clone();
                info.object_offset = entry.offset;
                in_shared.push(infos.len());
            }
            infos.push(info);
        }
        if !in_shared.is_empty() {
            let (parts, object_len) = shared.finish();
            let payload = PutPayload::from_iter(parts);
            upload_with_retries(self.store.as_ref(), &shared_key, payload, &self.upload).await?;
            written += 1;
            for i in in_shared {
                infos[i].object_size = object_len;
            }
        }
        Ok((written, infos))
    }

    /// Swaps a partition's slices for its merged segment (metadata, then the index). A refusal
    /// (lease lost, retention got there first) leaves the slices as they were.
    async fn swap(&self, pick: &Pick<'_>, merged: &SegmentInfo) -> bool {
        let storage = &pick.target.storage;
        let delete_after = now_ms() + self.delete_grace.as_millis() as i64;
        let swapped = self
            .metadata
            .replace_segments(merged, pick.target.fence.as_ref(), delete_after)
            .await;
        match swapped {
            Ok(_) => {
                storage.index.replace(merged);
                let rest = pick.shared_times.get(pick.slices.len()).copied();
                storage.index.set_shared_since_ms(rest);
                storage.index.set_shared_from_offset(merged.last_offset + 1);
                true
            }
            Err(error) => {
                tracing::warn!(topic = %storage.topic.name, partition = storage.partition, %error, "consolidation swap refused");
                false
            }
        }
    }
}

/// The backlog the picks represent.
fn backlog(picks: &[Pick<'_>], now: i64) -> ConsolidationReport {
    let slices = picks.iter().flat_map(|p| &p.slices);
    ConsolidationReport {
        backlog_slices: slices.clone().count(),
        backlog_bytes: slices.clone().map(|s| s.size_bytes).sum(),
        backlog_age_ms: slices.map(|s| now - s.created_at_ms).max().unwrap_or(0),
        ..Default::default()
    }
}

fn record_backlog(report: &ConsolidationReport) {
    metrics::gauge!("streamhouse_consolidation_backlog_slices").set(report.backlog_slices as f64);
    metrics::gauge!("streamhouse_consolidation_backlog_bytes").set(report.backlog_bytes as f64);
    metrics::gauge!("streamhouse_consolidation_backlog_age_seconds")
        .set(report.backlog_age_ms as f64 / 1000.0);
}

/// Keeps the oldest slices up to `max_bytes` in all (at least one), as a prefix of each
/// partition's run, so a round's memory is bounded whatever the backlog.
fn limit_round(picks: &mut Vec<Pick<'_>>, max_bytes: u64) {
    let mut all: Vec<(i64, usize, usize, u64)> = picks
        .iter()
        .enumerate()
        .flat_map(|(p, pick)| {
            pick.slices
                .iter()
                .enumerate()
                .map(move |(i, s)| (s.created_at_ms, p, i, s.size_bytes))
        })
        .collect();
    all.sort_unstable();
    let mut keep = vec![0usize; picks.len()];
    let mut total = 0u64;
    for (_, p, i, size) in all {
        if total > 0 && total + size > max_bytes {
            break;
        }
        // Only whole prefixes: a slice counts if all earlier slices of its partition do.
        if keep[p] == i {
            keep[p] = i + 1;
            total += size;
        }
    }
    for (pick, keep) in picks.iter_mut().zip(keep) {
        pick.slices.truncate(keep);
    }
    picks.retain(|p| !p.slices.is_empty());
}

/// Verifies a pick's slices and re-frames their batches as one segment.
fn merge(pick: &Pick<'_>, objects: &HashMap<String, SourceObject>) -> Result<EncodedSegment> {
    let mut builder = SegmentBuilder::new(pick.slices[0].base_offset);
    for slice in &pick.slices {
        let source = &objects[&slice.object_key];
        let data = source.range(slice.object_offset, slice.size_bytes as usize);
        let range = slice.object_offset..slice.object_offset + slice.size_bytes;
        let corrupt =
            |e| StorageError::corrupt(&slice.object_key, slice.object_size, range.clone(), e);
        let (footer, batches) = decode_segment(data).map_err(corrupt)?;
        if (footer.base_offset, footer.last_offset) != (slice.base_offset, slice.last_offset) {
            return Err(StorageError::Corrupt {
                key: slice.object_key.clone(),
                range: range.clone(),
                source: Corruption::Mismatch(format!(
                    "slice holds offsets {}..={}, metadata says {}..={}",
                    footer.base_offset, footer.last_offset, slice.base_offset, slice.last_offset
                )),
            });
        }
        for batch in &batches {
            builder.push(batch).map_err(corrupt)?;
        }
    }
    Ok(builder.finish())
}

/// The merged segment's row, before its object is chosen.
fn merged_info(pick: &Pick<'_>, encoded: &EncodedSegment) -> SegmentInfo {
    let storage = &pick.target.storage;
    let footer = &encoded.footer;
    let len = encoded.len;
    SegmentInfo {
        topic: storage.topic.name.clone(),
        partition: storage.partition,
        base_offset: footer.base_offset,
        last_offset: footer.last_offset,
        record_count: footer.record_count,
        size_bytes: len,
        object_key: String::new(),
        object_offset: 0,
        object_size: len,
        min_timestamp_ms: pick
            .slices
            .iter()
            .map(|s| s.min_timestamp_ms)
            .min()
            .unwrap_or(-1),
        max_timestamp_ms: pick
            .slices
            .iter()
            .map(|s| s.max_timestamp_ms)
            .max()
            .unwrap_or(-1),
        created_at_ms: pick
            .slices
            .iter()
            .map(|s| s.created_at_ms)
            .max()
            .unwrap_or_else(now_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range is one piece's slice when a piece holds it, else the pieces it spans joined,
    /// wherever the object's read began.
    #[test]
    fn source_ranges_within_and_across_pieces() {
        let object: Vec<u8> = (0..=255).collect();
        let parts = vec![
            Bytes::copy_from_slice(&object[100..140]),
            Bytes::copy_from_slice(&object[140..150]),
            Bytes::copy_from_slice(&object[150..200]),
        ];
        let source = SourceObject {
            start: 100,
            parts,
            from_cache: true,
        };
        for (offset, len) in [
            (100, 40),
            (105, 10),
            (140, 10),
            (120, 50),
            (139, 61),
            (150, 50),
        ] {
            let got = source.range(offset, len);
            assert_eq!(&got[..], &object[offset as usize..offset as usize + len]);
        }
        let within = source.range(150, 20);
        assert_eq!(
            within.as_ptr(),
            source.parts[2].as_ptr(),
            "no copy within a piece"
        );
    }
}
