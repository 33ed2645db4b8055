//! Writing a segment object batch by batch.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::batch::{RecordBatch, PREFIX_LEN};
use crate::error::SegmentError;
use crate::footer::{
    encode_header, IndexEntry, SegmentFooter, COMPACTED_VERSION, FORMAT_VERSION, HEADER_LEN,
};

/// Default bytes of batch data between sparse index entries.
pub const DEFAULT_INDEX_INTERVAL: usize = 4096;

/// Batches at least this large are kept as they are (a part of their own, no copy); smaller
/// ones are packed together into parts of about this size, so an object of many small batches
/// is not uploaded as thousands of tiny writes.
const PACKED_PART_BYTES: usize = 64 * 1024;

/// Accumulates consecutive batches of one partition into a segment object.
pub struct SegmentBuilder {
    base_offset: i64,
    /// Offset after the range covered so far (the last batch's, or where `cover_through` put it).
    next_offset: i64,
    /// Records pushed so far.
    records: i64,
    /// A compacted segment: batches may leave gaps ([`COMPACTED_VERSION`]).
    gaps: bool,
    index_interval: u32,
    /// The batches pushed so far, as parts: large batches shared with the caller (a write
    /// buffers one copy of its records, not two), small ones packed into `packing` first. No
    /// part has spare capacity beyond `packing`'s, so buffered memory is what was pushed.
    parts: Vec<Bytes>,
    packing: BytesMut,
    /// Bytes of the header and every batch pushed.
    size: usize,
    index: Vec<IndexEntry>,
    batch_count: u32,
    timestamps: Option<(i64, i64)>,
}

/// A finished segment object and its decoded footer.
#[derive(Clone, Debug)]
pub struct EncodedSegment {
    /// The object as consecutive parts (header, batches, footer), uploaded back to back
    /// without being copied into one buffer.
    pub parts: Vec<Bytes>,
    /// The object's length: the sum of the parts' lengths.
    pub len: u64,
    /// The footer, as [`read_footer`](crate::read_footer) would decode it from the object.
    pub footer: SegmentFooter,
}

impl EncodedSegment {
    /// The object in one buffer (a copy unless it is a single part), for callers that need
    /// contiguous bytes, such as tests and tools; uploads use [`Self::parts`].
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.clone(),
            parts => Bytes::from(parts.concat()),
        }
    }
}

impl std::fmt::Debug for SegmentBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentBuilder")
            .field("base_offset", &self.base_offset)
            .field("next_offset", &self.next_offset)
            .field("size", &self.size)
            .field("batch_count", &self.batch_count)
            .field("index_entries", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl SegmentBuilder {
    /// Starts a segment at `base_offset` with a sparse index entry every ~4 KiB of data.
    pub fn new(base_offset: i64) -> Self {
        Self::with_index_interval(base_offset, DEFAULT_INDEX_INTERVAL)
    }

    /// Starts a segment with an index entry every ~`bytes` bytes of data (at least one byte,
    /// at most 4 GiB); smaller intervals mean shorter scans and a bigger footer.
    pub fn with_index_interval(base_offset: i64, bytes: usize) -> Self {
        SegmentBuilder {
            base_offset,
            next_offset: base_offset,
            records: 0,
            gaps: false,
            index_interval: bytes.clamp(1, u32::MAX as usize) as u32,
            parts: Vec::new(),
            packing: BytesMut::new(),
            size: HEADER_LEN,
            index: Vec::new(),
            batch_count: 0,
            timestamps: None,
        }
    }

    /// Starts a compacted segment ([`COMPACTED_VERSION`]) at `base_offset`: batches follow each
    /// other with gaps allowed and may hold fewer records than the offsets they span.
    pub fn compacted(base_offset: i64) -> Self {
        SegmentBuilder {
            gaps: true,
            ..Self::new(base_offset)
        }
    }

    /// Appends a batch whose base offset must equal [`SegmentBuilder::next_offset`] (or, in a
    /// compacted segment, be at least that).
    pub fn push(&mut self, batch: &RecordBatch) -> Result<(), SegmentError> {
        self.push_at(batch, batch.base_offset())
    }

    /// Appends a batch as if its base offset were `base_offset`, which must equal
    /// [`SegmentBuilder::next_offset`] (or, in a compacted segment, be at least that).
    ///
    /// The stored batch gets `base_offset` in its first 8 bytes, which Kafka's CRC does not
    /// cover; the rest of a large batch is kept as a slice of the caller's bytes, so a batch
    /// placed at a new offset is not copied to rewrite 8 bytes.
    pub fn push_at(&mut self, batch: &RecordBatch, base_offset: i64) -> Result<(), SegmentError> {
        let fits = match self.gaps {
            true => base_offset >= self.next_offset,
            false => base_offset == self.next_offset,
        };
        if !fits {
            return Err(SegmentError::OffsetMismatch {
                expected: self.next_offset,
                found: base_offset,
            });
        }
        let last_offset = base_offset + i64::from(batch.header().last_offset_delta);
        let rel_position = self.check_limits(batch.len(), last_offset)?;
        let rel_offset = (base_offset - self.base_offset) as u32;
        self.note_timestamps(batch);
        let max_ts = self
            .timestamps
            .map_or(batch.max_timestamp(), |(_, max)| max);
        if self.starts_block(rel_position) {
            self.index.push(IndexEntry {
                rel_offset,
                rel_position,
                max_timestamp: max_ts,
                prefix_crc: 0,
            });
        }
        let offset = base_offset.to_be_bytes();
        let entry = self
            .index
            .last_mut()
            .expect("an index entry exists after the first batch");
        entry.max_timestamp = max_ts;
        let crc = crate::crc32c_append(entry.prefix_crc, &offset);
        entry.prefix_crc = crate::crc32c_append(crc, &batch.bytes()[8..PREFIX_LEN]);
        self.append_rebased(offset, batch.bytes());
        self.batch_count += 1;
        self.records += i64::from(batch.record_count());
        self.next_offset = last_offset + 1;
        Ok(())
    }

    fn note_timestamps(&mut self, batch: &RecordBatch) {
        let (min, max) = (batch.header().base_timestamp, batch.max_timestamp());
        self.timestamps = Some(match self.timestamps {
            Some((lo, hi)) => (lo.min(min), hi.max(max)),
            None => (min, max),
        });
    }

    /// Extends a compacted segment's range through `last_offset` (whose records compaction
    /// removed), so it replaces exactly the segments it was made from.
    pub fn cover_through(&mut self, last_offset: i64) -> Result<(), SegmentError> {
        if !self.gaps || last_offset + 1 < self.next_offset {
            return Err(SegmentError::OffsetMismatch {
                expected: self.next_offset,
                found: last_offset + 1,
            });
        }
        if last_offset - self.base_offset > i64::from(u32::MAX) {
            return Err(SegmentError::LimitExceeded {
                reason: format!("offset {last_offset} is more than 2^32 past the segment base"),
            });
        }
        self.next_offset = last_offset + 1;
        Ok(())
    }

    /// Checks the format's u32 limits and returns the batch's position relative to the data.
    fn check_limits(&self, len: usize, last_offset: i64) -> Result<u32, SegmentError> {
        let rel_position = self.size - HEADER_LEN;
        if rel_position + len > u32::MAX as usize {
            return Err(SegmentError::LimitExceeded {
                reason: format!("batch data would exceed 4 GiB at {rel_position} bytes"),
            });
        }
        if last_offset - self.base_offset > i64::from(u32::MAX) || self.batch_count == u32::MAX {
            return Err(SegmentError::LimitExceeded {
                reason: format!("offset {last_offset} is more than 2^32 past the segment base"),
            });
        }
        Ok(rel_position as u32)
    }

    fn starts_block(&self, rel_position: u32) -> bool {
        self.index
            .last()
            .is_none_or(|e| rel_position - e.rel_position >= self.index_interval)
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Base offset the next pushed batch must have.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Bytes so far, including the header (not the footer).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether no batch was pushed.
    pub fn is_empty(&self) -> bool {
        self.batch_count == 0
    }

    /// Records pushed so far.
    pub fn record_count(&self) -> i64 {
        self.records
    }

    /// Keeps a batch's bytes with `offset` in place of its first 8: a large batch as a part of
    /// its own (no copy), preceded by the new offset (packed) when it changes; a small one
    /// packed whole.
    fn append_rebased(&mut self, offset: [u8; 8], bytes: &Bytes) {
        self.size += bytes.len();
        if bytes.len() >= PACKED_PART_BYTES && bytes[..8] == offset {
            self.seal_packing();
            self.parts.push(bytes.clone());
            return;
        }
        if bytes.len() >= PACKED_PART_BYTES {
            self.packing.extend_from_slice(&offset);
            self.seal_packing();
            self.parts.push(bytes.slice(8..));
            return;
        }
        if self.packing.len() + bytes.len() > PACKED_PART_BYTES {
            self.seal_packing();
        }
        if self.packing.is_empty() {
            // Room for a few batches like this one up front: grown from empty, the part was
            // reallocated (and copied) at every doubling. Bounded by the part size, and by a
            // small multiple of what the partition wrote, so idle partitions reserve little.
            self.packing
                .reserve((bytes.len() * 4).min(PACKED_PART_BYTES));
        }
        self.packing.extend_from_slice(&offset);
        self.packing.extend_from_slice(&bytes[8..]);
    }

    fn seal_packing(&mut self) {
        if !self.packing.is_empty() {
            self.parts.push(std::mem::take(&mut self.packing).freeze());
        }
    }

    /// Writes header, footer and trailer and returns the object.
    pub fn finish(mut self) -> EncodedSegment {
        self.seal_packing();
        let version = match self.gaps {
            true => COMPACTED_VERSION,
            false => FORMAT_VERSION,
        };
        let (min_timestamp, max_timestamp) = self.timestamps.unwrap_or((-1, -1));
        let footer = SegmentFooter {
            base_offset: self.base_offset,
            last_offset: self.next_offset - 1,
            record_count: self.record_count(),
            batch_count: self.batch_count,
            min_timestamp,
            max_timestamp,
            data_start: HEADER_LEN as u64,
            data_end: self.size as u64,
            index_interval: self.index_interval,
            index: Arc::from(self.index),
            version,
        };
        let mut tail = Vec::new();
        footer.encode_into(&mut tail);
        let len = (self.size + tail.len()) as u64;
        let header = Bytes::copy_from_slice(&encode_header(self.base_offset, version));
        let mut parts = Vec::with_capacity(self.parts.len() + 2);
        parts.push(header);
        parts.append(&mut self.parts);
        parts.push(Bytes::from(tail));
        EncodedSegment { parts, len, footer }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::batch;

    #[test]
    fn blocks_start_once_the_interval_is_reached() {
        let mut builder = SegmentBuilder::with_index_interval(100, 250);
        for i in 0..6 {
            // 61 + 39 = 100-byte batches of 2 records.
            builder.push(&batch(100 + 2 * i, 2, 39, i)).expect("push");
        }
        let footer = builder.finish().footer;
        let starts: Vec<_> = footer
            .index
            .iter()
            .map(|e| (e.rel_offset, e.rel_position))
            .collect();
        assert_eq!(starts, [(0, 0), (6, 300)]);
        let max_ts: Vec<_> = footer.index.iter().map(|e| e.max_timestamp).collect();
        assert_eq!(max_ts, [2, 5]);
        assert_eq!((footer.min_timestamp, footer.max_timestamp), (-1, 5));
    }

    #[test]
    fn prefix_crc_covers_the_bytes_kafka_leaves_out() {
        let batches: Vec<_> = (0..3).map(|i| batch(i * 4, 4, 10, 0)).collect();
        let mut builder = SegmentBuilder::new(0);
        batches.iter().for_each(|b| builder.push(b).expect("push"));
        let footer = builder.finish().footer;
        let prefixes: Vec<u8> = batches
            .iter()
            .flat_map(|b| b.bytes()[..PREFIX_LEN].to_vec())
            .collect();
        assert_eq!(footer.index.len(), 1);
        assert_eq!(footer.index[0].prefix_crc, crate::crc32c(&prefixes));
    }

    #[test]
    fn large_batches_are_kept_without_a_copy_and_small_ones_packed() {
        let large = batch(0, 1, PACKED_PART_BYTES, 0);
        let mut builder = SegmentBuilder::new(0);
        builder.push(&large).expect("push");
        (1..4).for_each(|i| builder.push(&batch(i, 1, 10, 0)).expect("push"));
        let size = builder.size();
        let seg = builder.finish();
        // Header, the large batch itself, the three small ones packed together, footer.
        assert_eq!(seg.parts.len(), 4);
        assert_eq!(seg.parts[1].as_ptr(), large.bytes().as_ptr());
        assert_eq!(seg.parts[2].len(), 3 * 71);
        assert_eq!(size, HEADER_LEN + large.len() + 3 * 71);
        assert_eq!(seg.len as usize, seg.to_bytes().len());
        assert_eq!(seg.footer.data_end as usize, size);
    }

    #[test]
    fn a_large_batch_placed_at_a_new_offset_is_not_copied() {
        let large = batch(0, 1, PACKED_PART_BYTES, 0);
        let mut builder = SegmentBuilder::new(50);
        builder.push_at(&large, 50).expect("push_at");
        let seg = builder.finish();
        // Header, the new offset, the rest of the batch as the caller's bytes, footer.
        assert_eq!(seg.parts.len(), 4);
        assert_eq!(&seg.parts[1][..], &50i64.to_be_bytes());
        assert_eq!(seg.parts[2].as_ptr(), large.bytes()[8..].as_ptr());
        let (_, read) = crate::decode_segment(seg.to_bytes()).expect("decodes");
        assert_eq!(read[0].bytes()[8..], large.bytes()[8..]);
        assert_eq!(read[0].base_offset(), 50);
    }

    #[test]
    fn zero_interval_indexes_every_batch() {
        let mut builder = SegmentBuilder::with_index_interval(0, 0);
        (0..4).for_each(|i| builder.push(&batch(i, 1, 0, 0)).expect("push"));
        assert_eq!(builder.finish().footer.index_len(), 4);
    }
}
