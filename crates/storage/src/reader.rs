//! The partition reader: batches from any offset, through the segment index and the cache.
//!
//! The hot path issues no metadata query: segments come from the [`SegmentIndex`], footers from
//! the agent's bounded footer cache in the [`SegmentCache`] (one ranged read of the object's
//! tail on a miss), batch bytes from the
//! [`SegmentCache`] (only the needed range, in cache blocks). The high watermark comes from the
//! same-agent writer ([`PartitionReader::with_writer`]), from the caller
//! ([`PartitionReader::read_with_high_watermark`]) or from a cached metadata value refreshed at
//! most once per [`ReaderConfig::bounds_refresh_interval`].

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// Tokio's clock (the same as std's outside tests), so tests pause and advance the cached bounds' age.
use tokio::time::Instant;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use streamhouse_segment::{decode_pieces, read_footer, RecordBatch, SegmentFooter};
use tokio::sync::watch;

use crate::cache::{CachedParts, CachedRange};
use crate::error::{Corruption, Result, StorageError};
use crate::partition::PartitionStorage;
use crate::segment_index::IndexedSegment;
use crate::writer::PartitionWriter;

/// Smallest data range read at once: reads below this cost a request all the same.
const MIN_READ_BYTES: u64 = 16 * 1024;
/// Extra index lookups for an offset below the high watermark that the index does not know yet.
const MISS_RETRIES: u32 = 3;
/// Pause before each of them (longer than the index's refresh throttle after a miss).
const MISS_RETRY_DELAY: Duration = Duration::from_millis(10);

/// Settings of a [`PartitionReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderConfig {
    /// Bytes read from an object's end to find its footer; a second read happens only for a
    /// footer larger than this. A footer is 84 + 20 bytes per index entry (`docs/format.md`),
    /// at most one entry per batch and per 4 KiB of data, so 8 KiB holds the footer of any
    /// segment of up to ~400 batches. A read served from cached blocks costs the same whatever
    /// its length, but an exact read (`SegmentCacheConfig::exact_shared_reads`) copies every
    /// byte: a 64 KiB tail was a quarter of a typical 256 KiB flush-object slice, read twice.
    pub footer_tail_bytes: u64,
    /// Prefetch the start of the next segment when a read reaches the last quarter of one.
    pub read_ahead: bool,
    /// How much of the next segment to prefetch.
    pub read_ahead_bytes: u64,
    /// How long a high watermark / log start read from the metadata store is trusted.
    pub bounds_refresh_interval: Duration,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        Self {
            footer_tail_bytes: 8 * 1024,
            read_ahead: true,
            read_ahead_bytes: 4 * 1024 * 1024,
            bounds_refresh_interval: Duration::from_secs(1),
        }
    }
}

/// Batches read from a partition.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole batches exactly as stored, in offset order. The first may start before the
    /// requested offset (Kafka clients skip the records below their position).
    pub batches: Vec<RecordBatch>,
    /// High watermark the read was bounded by.
    pub high_watermark: i64,
    /// Lowest retained offset.
    pub log_start_offset: i64,
    /// Offset to read from next (the requested offset when nothing was returned).
    pub next_offset: i64,
}

impl ReadResult {
    /// Total size of the returned batches.
    pub fn size_bytes(&self) -> usize {
        self.batches.iter().map(RecordBatch::len).sum()
    }
}

/// Reads one partition. Share it (`Arc`) between the fetch sessions of the partition: its
/// read-ahead state is per partition (footers are cached agent-wide, in the
/// [`SegmentCache`](crate::SegmentCache)).
pub struct PartitionReader {
    storage: PartitionStorage,
    config: ReaderConfig,
    writer_high_watermark: Option<watch::Receiver<i64>>,
    bounds: Mutex<CachedBounds>,
    /// Segment last prefetched, so a sequential reader prefetches each segment once.
    prefetched: Mutex<Option<(Arc<str>, u64)>>,
}

impl std::fmt::Debug for PartitionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReader")
            .field("topic", &self.storage.topic.name)
            .field("partition", &self.storage.partition)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// High watermark and log start as last read from the metadata store.
#[derive(Debug, Clone, Copy)]
struct CachedBounds {
    high_watermark: i64,
    log_start: i64,
    fetched_at: Option<Instant>,
}

/// The offsets a read is bounded by.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    high_watermark: i64,
    log_start: i64,
}

impl PartitionReader {
    /// A reader of the partition with the default [`ReaderConfig`].
    pub fn new(storage: PartitionStorage) -> Self {
        Self {
            storage,
            config: ReaderConfig::default(),
            writer_high_watermark: None,
            bounds: Mutex::new(CachedBounds {
                high_watermark: 0,
                log_start: 0,
                fetched_at: None,
            }),
            prefetched: Mutex::new(None),
        }
    }

    /// Replaces the settings.
    pub fn with_config(mut self, config: ReaderConfig) -> Self {
        self.config = config;
        self
    }

    /// Takes the high watermark from this agent's writer of the partition (always current, no
    /// metadata query).
    pub fn with_writer(mut self, writer: &PartitionWriter) -> Self {
        self.writer_high_watermark = Some(writer.subscribe());
        self
    }

    /// Reads whole batches from `start_offset` until about `max_bytes`, bounded by the high
    /// watermark of the writer (see [`Self::with_writer`]) or the cached metadata value.
    ///
    /// At least one batch is returned when `start_offset` is below the high watermark, even if
    /// it is larger than `max_bytes` (as Kafka does). Reading at the high watermark returns no
    /// batches; below the log start or past the high watermark is
    /// [`StorageError::OffsetOutOfRange`].
    pub async fn read(&self, start_offset: i64, max_bytes: usize) -> Result<ReadResult> {
        let bounds = self.bounds(start_offset).await?;
        self.read_bounded(start_offset, max_bytes, bounds).await
    }

    /// Like [`Self::read`] with the high watermark the caller knows (e.g. the Fetch handler's
    /// view); only the log start comes from the cached metadata value.
    pub async fn read_with_high_watermark(
        &self,
        start_offset: i64,
        max_bytes: usize,
        high_watermark: i64,
    ) -> Result<ReadResult> {
        let log_start = self.cached_bounds(false).await?.log_start;
        let bounds = Bounds {
            high_watermark,
            log_start,
        };
        self.read_bounded(start_offset, max_bytes, bounds).await
    }

    /// First batch holding a record with timestamp `>= timestamp_ms` (Kafka ListOffsets by
    /// time): its base offset and max timestamp, or `None` when every record is older.
    ///
    /// Batch granularity: the offset is the batch's base offset, which may precede the first
    /// matching record by up to a batch; Kafka clients filter by timestamp after seeking, and
    /// compressed batches could not be searched record by record without decompressing them.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>> {
        let mut next = self.storage.index.lookup_timestamp(timestamp_ms).await?;
        while let Some(segment) = next {
            let footer = self.footer(&segment).await?;
            if let Some(pos) = footer.seek_timestamp(timestamp_ms) {
                if let Some(found) = self
                    .find_timestamp(&segment, &footer, pos, timestamp_ms)
                    .await?
                {
                    return Ok(Some(found));
                }
            }
            next = self.storage.index.lookup(segment.last_offset + 1).await?;
        }
        Ok(None)
    }

    async fn read_bounded(
        &self,
        start_offset: i64,
        max_bytes: usize,
        bounds: Bounds,
    ) -> Result<ReadResult> {
        if start_offset < bounds.log_start || start_offset > bounds.high_watermark {
            return Err(StorageError::OffsetOutOfRange {
                offset: start_offset,
                log_start: bounds.log_start,
                high_watermark: bounds.high_watermark,
            });
        }
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut size = 0usize;
        let mut next = start_offset;
        while next < bounds.high_watermark && (batches.is_empty() || size < max_bytes) {
            let budget = max_bytes.saturating_sub(size);
            let (chunk, segment_last) = match self.read_at(next, budget, batches.is_empty()).await {
                Ok(read) => read,
                Err(e) if !is_vanished(&e) => return Err(e),
                // What was read so far is valid; the next read reports the cause.
                Err(_) if !batches.is_empty() => break,
                Err(e) => return Err(self.truncated_meanwhile(next, bounds, e).await),
            };
            let Some(chunk) = chunk else {
                // A compacted segment holds no record from `next` to its end: go on after it.
                if segment_last < next {
                    break;
                }
                next = segment_last + 1;
                continue;
            };
            let before = batches.len();
            for batch in chunk {
                if batch.last_offset() >= bounds.high_watermark {
                    break;
                }
                size += batch.len();
                next = batch.last_offset() + 1;
                batches.push(batch);
            }
            if batches.len() == before {
                break;
            }
        }
        Ok(ReadResult {
            batches,
            high_watermark: bounds.high_watermark,
            log_start_offset: bounds.log_start,
            next_offset: next,
        })
    }

    /// Batches from `offset` out of the segment holding it (`None`: it holds none from
    /// `offset` on, see `read_segment`), and that segment's last offset.
    async fn read_at(
        &self,
        offset: i64,
        budget: usize,
        at_least_one: bool,
    ) -> Result<(Option<Vec<RecordBatch>>, i64)> {
        let segment = self.segment_for(offset).await?;
        let batches = self
            .read_segment(&segment, offset, budget, at_least_one)
            .await?;
        Ok((batches, segment.last_offset))
    }

    /// The error for a segment or object that vanished from under a read: when retention or
    /// DeleteRecords truncated the partition after the bounds were checked, the offset is now
    /// out of range (never partial or stale data); otherwise `error` stands.
    async fn truncated_meanwhile(
        &self,
        offset: i64,
        bounds: Bounds,
        error: StorageError,
    ) -> StorageError {
        match self.cached_bounds(true).await {
            Ok(fresh) if offset < fresh.log_start => StorageError::OffsetOutOfRange {
                offset,
                log_start: fresh.log_start,
                high_watermark: bounds.high_watermark.max(fresh.high_watermark),
            },
            _ => error,
        }
    }

    /// The segment holding `offset`, which lies below a high watermark. A miss is retried
    /// briefly: the high watermark may come from a fresher metadata read than the index's last
    /// refresh, and the index throttles refreshes after a miss.
    async fn segment_for(&self, offset: i64) -> Result<IndexedSegment> {
        for _ in 0..MISS_RETRIES {
            if let Some(segment) = self.storage.index.lookup(offset).await? {
                return Ok(segment);
            }
            tokio::time::sleep(MISS_RETRY_DELAY).await;
        }
        self.storage
            .index
            .lookup(offset)
            .await?
            .ok_or_else(|| StorageError::MissingSegment {
                topic: self.storage.topic.name.to_string(),
                partition: self.storage.partition,
                offset,
            })
    }

    /// Batches of `segment` from `offset` fitting in `budget` bytes; the first one regardless
    /// when `at_least_one`. `None` when the segment holds no batch from `offset` on (only a
    /// compacted segment can end in a gap).
    async fn read_segment(
        &self,
        segment: &IndexedSegment,
        offset: i64,
        budget: usize,
        at_least_one: bool,
    ) -> Result<Option<Vec<RecordBatch>>> {
        let footer = self.footer(segment).await?;
        let pos = footer.seek(offset);
        if pos >= footer.data_end {
            return Ok(None);
        }
        // The seek lands on an index block start, up to one block before `offset`.
        let len = (budget as u64).saturating_add(u64::from(footer.index_interval()));
        // A batch that cannot be returned (over the budget, not the first) is not read whole.
        let most = if at_least_one { u64::MAX } else { len };
        let (decoded, end) = self
            .decode_from(segment, &footer, pos, offset, len, most)
            .await?;
        self.maybe_read_ahead(segment, &footer, end);
        if decoded.is_empty() && end < footer.data_end {
            return Ok(Some(Vec::new()));
        }
        if decoded.is_empty() {
            return Ok(None);
        }
        let mut taken = 0usize;
        let fitting = decoded
            .into_iter()
            .enumerate()
            .take_while(|(i, batch)| {
                taken = taken.saturating_add(batch.len());
                (*i == 0 && at_least_one) || taken <= budget
            })
            .map(|(_, batch)| batch)
            .collect();
        Ok(Some(fitting))
    }

    /// Finds the first batch at or after `pos` whose max timestamp is `>= timestamp_ms`.
    async fn find_timestamp(
        &self,
        segment: &IndexedSegment,
        footer: &Arc<SegmentFooter>,
        mut pos: u64,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>> {
        while pos < footer.data_end {
            let (batches, end) = self
                .decode_from(segment, footer, pos, i64::MIN, MIN_READ_BYTES, u64::MAX)
                .await?;
            if let Some(hit) = batches.iter().find(|b| b.max_timestamp() >= timestamp_ms) {
                return Ok(Some((hit.base_offset(), hit.max_timestamp())));
            }
            pos = end;
        }
        Ok(None)
    }

    /// Decodes the whole batches (those ending at or after `from_offset`) of at least `len`
    /// bytes from `pos`, reading more when that range does not hold one whole batch, but not
    /// more than `most` bytes (then none are returned). Returns them with the position after
    /// the last one (or where the batch that did not fit starts).
    async fn decode_from(
        &self,
        segment: &IndexedSegment,
        footer: &Arc<SegmentFooter>,
        pos: u64,
        from_offset: i64,
        len: u64,
        most: u64,
    ) -> Result<(Vec<RecordBatch>, u64)> {
        let mut len = len.max(MIN_READ_BYTES);
        loop {
            let end = footer.data_end.min(pos.saturating_add(len));
            let read = self.read_parts(segment, pos..end).await?;
            // In the cache blocks' own bytes: only an index block straddling two is copied.
            let (batches, reached) =
                decode_pieces(&read.parts, pos, footer, from_offset, !read.written).map_err(
                    |e| StorageError::corrupt(&segment.object_key, segment.size_bytes, pos..end, e),
                )?;
            if !batches.is_empty() || (end == footer.data_end && reached == end) {
                return Ok((batches, reached));
            }
            if end == footer.data_end {
                return Err(self.mismatch(
                    segment,
                    pos..end,
                    format!("no batch reaching offset {from_offset} in the segment data"),
                ));
            }
            // Rare (one batch larger than the read): its length field, from a copy.
            let data = CachedRange::from(read).bytes;
            len = next_read_len(&data, reached - pos, len);
            if len > most {
                return Ok((Vec::new(), reached));
            }
        }
    }

    /// When a read got into the last quarter of a segment, starts fetching the next one.
    fn maybe_read_ahead(&self, segment: &IndexedSegment, footer: &SegmentFooter, reached: u64) {
        let data = footer.data_end - footer.data_start;
        if !self.config.read_ahead || (reached - footer.data_start) * 4 < data * 3 {
            return;
        }
        // Only what is already indexed: read-ahead must never cost a metadata query.
        let Some(next) = self.storage.index.lookup_cached(segment.last_offset + 1) else {
            return;
        };
        {
            let mut last = self.prefetched.lock().unwrap_or_else(|p| p.into_inner());
            let key = (next.object_key.clone(), next.object_offset);
            if last.as_ref() == Some(&key) {
                return;
            }
            *last = Some(key);
        }
        let size = next.size_bytes;
        let tail = size.saturating_sub(self.config.footer_tail_bytes);
        let head = self.config.read_ahead_bytes.min(tail);
        let at = next.object_offset;
        for range in [at..at + head, at + tail..at + size] {
            self.storage.cache.prefetch(
                self.storage.store.clone(),
                &next.object_key,
                next.object_size,
                range,
            );
        }
    }

    /// The verified footer of a segment, cached per object.
    async fn footer(&self, segment: &IndexedSegment) -> Result<Arc<SegmentFooter>> {
        let key = (segment.object_key.clone(), segment.object_offset);
        if let Some(footer) = self.storage.cache.footer(&key) {
            return Ok(footer);
        }
        let footer = Arc::new(self.load_footer(segment).await?);
        self.storage.cache.insert_footer(key, footer.clone());
        Ok(footer)
    }

    async fn load_footer(&self, segment: &IndexedSegment) -> Result<SegmentFooter> {
        let len = segment.size_bytes;
        let mut tail = len.min(self.config.footer_tail_bytes);
        let footer = loop {
            let bytes = CachedRange::from(self.read_parts(segment, len - tail..len).await?).bytes;
            match read_footer(&bytes, len) {
                Ok(footer) => break footer,
                Err(e) => match e.need_tail_bytes() {
                    Some(needed) if (needed as u64) > tail && (needed as u64) <= len => {
                        tail = needed as u64;
                    }
                    _ => {
                        return Err(StorageError::corrupt(
                            &segment.object_key,
                            len,
                            len - tail..len,
                            e,
                        ))
                    }
                },
            }
        };
        if footer.base_offset != segment.base_offset || footer.last_offset != segment.last_offset {
            return Err(self.mismatch(
                segment,
                footer.data_end..len,
                format!(
                    "footer covers offsets {}..={}, metadata says {}..={}",
                    footer.base_offset,
                    footer.last_offset,
                    segment.base_offset,
                    segment.last_offset
                ),
            ));
        }
        Ok(footer)
    }

    /// `range` of a segment (positions relative to the segment, which may lie anywhere in its
    /// object) through the cache. A failed read of an object whose size differs from the
    /// committed size is reported as corruption (a truncated object); a missing object is
    /// logged as a warning and counted, as it means data loss, not a client error. Tagged with
    /// whether the bytes are this agent's write-through (their batch CRCs need no re-check).
    async fn read_parts(&self, segment: &IndexedSegment, range: Range<u64>) -> Result<CachedParts> {
        let at = segment.object_offset;
        let absolute = at + range.start..at + range.end.min(segment.size_bytes);
        let read = self
            .storage
            .cache
            .read_range_parts(
                &*self.storage.store,
                &segment.object_key,
                segment.object_size,
                absolute.clone(),
            )
            .await;
        let error = match read {
            Ok(parts) => return Ok(parts),
            Err(error) => check_object_size(&*self.storage.store, segment, absolute)
                .await
                .unwrap_or(error),
        };
        if matches!(error, StorageError::Corrupt { .. }) || is_vanished(&error) {
            metrics::counter!("streamhouse_read_object_errors_total").increment(1);
            tracing::warn!(key = %segment.object_key, topic = %self.storage.topic.name, partition = self.storage.partition, %error, "segment object unreadable");
        }
        Err(error)
    }

    fn mismatch(
        &self,
        segment: &IndexedSegment,
        range: Range<u64>,
        reason: String,
    ) -> StorageError {
        StorageError::Corrupt {
            key: segment.object_key.to_string(),
            range,
            source: Corruption::Mismatch(reason),
        }
    }

    async fn bounds(&self, start_offset: i64) -> Result<Bounds> {
        let Some(writer) = &self.writer_high_watermark else {
            let mut cached = self.cached_bounds(false).await?;
            if start_offset > cached.high_watermark {
                // Another agent may have written since: confirm before calling it out of range.
                cached = self.cached_bounds(true).await?;
            }
            return Ok(cached);
        };
        let high_watermark = *writer.borrow();
        let log_start = self.cached_bounds(false).await?.log_start;
        Ok(Bounds {
            high_watermark,
            log_start,
        })
    }

    /// High watermark and log start from the metadata store, at most once per refresh interval
    /// unless `force`d.
    async fn cached_bounds(&self, force: bool) -> Result<Bounds> {
        let cached = *self.bounds.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = cached
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.config.bounds_refresh_interval);
        if fresh && !force {
            return Ok(Bounds {
                high_watermark: cached.high_watermark,
                log_start: cached.log_start,
            });
        }
        let state = self
            .storage
            .metadata
            .get_partition(&self.storage.topic.name, self.storage.partition)
            .await?;
        *self.bounds.lock().unwrap_or_else(|p| p.into_inner()) = CachedBounds {
            high_watermark: state.high_watermark,
            log_start: state.log_start_offset,
            fetched_at: Some(Instant::now()),
        };
        Ok(Bounds {
            high_watermark: state.high_watermark,
            log_start: state.log_start_offset,
        })
    }
}

/// Whether a read failed because its segment is no longer there (truncated by retention).
fn is_vanished(error: &StorageError) -> bool {
    matches!(
        error,
        StorageError::MissingSegment { .. }
            | StorageError::ObjectStore {
                source: object_store::Error::NotFound { .. },
                ..
            }
    )
}

/// How much to read after a read of `len` bytes ended inside the batch at `at`: up to that
/// batch's end when its length prefix was read (growing by doubling would copy a large batch
/// several times), else twice as much.
fn next_read_len(data: &[u8], at: u64, len: u64) -> u64 {
    let claimed = usize::try_from(at)
        .ok()
        .and_then(|at| data.get(at..))
        .and_then(RecordBatch::claimed_len);
    match claimed {
        Some(claimed) => (at + claimed as u64).max(len.saturating_add(1)),
        None => len.saturating_mul(2),
    }
}

/// A [`StorageError::Corrupt`] when the stored object's size differs from the committed one;
/// `None` when it matches or cannot be checked (the original error then stands).
async fn check_object_size(
    store: &dyn ObjectStore,
    segment: &IndexedSegment,
    range: Range<u64>,
) -> Option<StorageError> {
    let meta = store
        .head(&ObjectPath::from(&*segment.object_key))
        .await
        .ok()?;
    (meta.size != segment.object_size).then(|| StorageError::Corrupt {
        key: segment.object_key.to_string(),
        range,
        source: Corruption::Size {
            expected: segment.object_size,
            actual: meta.size,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::next_read_len;

    #[test]
    fn a_read_cut_inside_a_batch_grows_to_its_end() {
        // 12-byte prefix of a batch at 100 claiming 1,000,000 - 12 bytes after it.
        let mut data = vec![0u8; 100];
        data.extend_from_slice(&7i64.to_be_bytes());
        data.extend_from_slice(&(1_000_000i32 - 12).to_be_bytes());
        assert_eq!(next_read_len(&data, 100, 16_384), 1_000_100);
        // Prefix not read yet: doubled.
        assert_eq!(next_read_len(&data[..105], 100, 16_384), 32_768);
        // A claim below what was read (corrupt) still makes progress.
        data[108..112].copy_from_slice(&0i32.to_be_bytes());
        assert_eq!(next_read_len(&data, 100, 16_384), 16_385);
    }
}
