//! Segment header, footer (summary + sparse indexes) and trailer: layout in docs/format.md.

use std::sync::Arc;

use crate::error::SegmentError;
use crate::wire::{be_i64, be_u16, be_u32, be_u64};

/// Magic bytes at the start of every segment object.
pub const SEGMENT_MAGIC: [u8; 4] = *b"SHSG";
/// Magic bytes at the very end of every segment object.
pub const TRAILER_MAGIC: [u8; 4] = *b"SHSF";
/// Segment format version of dense segments (every offset of the range present), written by
/// flushes and consolidation.
pub const FORMAT_VERSION: u16 = 1;
/// Segment format version of compacted segments: offsets only increase, with gaps where
/// compaction removed records (docs/format.md). Readers read both.
pub const COMPACTED_VERSION: u16 = 2;
/// Size of the fixed segment header; batches start right after it.
pub const HEADER_LEN: usize = 24;
/// Size of the fixed trailer at the end of the object.
pub const TRAILER_LEN: usize = 16;

const SUMMARY_LEN: usize = 68;
const ENTRY_LEN: usize = 20;
const HEADER_CRC_START: usize = 20;

/// One index block: the batches from `rel_position` up to the next entry (or the data end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// First offset of the block minus the segment base offset.
    pub(crate) rel_offset: u32,
    /// Position of the block's first batch minus `data_start`.
    pub(crate) rel_position: u32,
    /// Largest batch max timestamp from the segment start through the end of this block.
    pub(crate) max_timestamp: i64,
    /// CRC-32C over the 21-byte prefixes (fields Kafka's CRC leaves out) of the block's batches.
    pub(crate) prefix_crc: u32,
}

impl IndexEntry {
    fn encode_into(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.rel_offset.to_be_bytes());
        buf.extend_from_slice(&self.rel_position.to_be_bytes());
        buf.extend_from_slice(&self.max_timestamp.to_be_bytes());
        buf.extend_from_slice(&self.prefix_crc.to_be_bytes());
    }

    fn decode(buf: &[u8]) -> Self {
        IndexEntry {
            rel_offset: be_u32(buf, 0),
            rel_position: be_u32(buf, 4),
            max_timestamp: be_i64(buf, 8),
            prefix_crc: be_u32(buf, 16),
        }
    }
}

/// One sparse index entry in absolute terms (for `segment inspect` and diagnostics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexPoint {
    /// First offset of the index block.
    pub offset: i64,
    /// Absolute position of the block's first batch.
    pub position: u64,
    /// Largest batch max timestamp from the segment start through the end of the block.
    pub max_timestamp: i64,
}

/// Segment summary and sparse indexes, decoded from the footer of a segment object.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentFooter {
    /// Offset of the first record (also in the header).
    pub base_offset: i64,
    /// Offset of the last record; `base_offset - 1` for an empty segment.
    pub last_offset: i64,
    /// Number of records (`last_offset - base_offset + 1`).
    pub record_count: i64,
    /// Number of batches.
    pub batch_count: u32,
    /// Smallest batch base timestamp, or -1 for an empty segment.
    pub min_timestamp: i64,
    /// Largest batch max timestamp, or -1 for an empty segment.
    pub max_timestamp: i64,
    /// Absolute position of the first batch.
    pub data_start: u64,
    /// Absolute position just past the last batch (where the footer starts).
    pub data_end: u64,
    pub(crate) index_interval: u32,
    pub(crate) index: Arc<[IndexEntry]>,
    /// [`FORMAT_VERSION`] or [`COMPACTED_VERSION`].
    pub(crate) version: u16,
}

impl SegmentFooter {
    /// Absolute byte position of a batch boundary at or before the batch containing `offset`,
    /// taken from the sparse index; reading batches from there reaches `offset`. The position
    /// is always an index block start, as
    /// [`BatchCursor::with_footer`](crate::BatchCursor::with_footer) needs. Offsets below the
    /// segment give `data_start`; offsets past it (or any offset of an empty segment) give
    /// `data_end`.
    pub fn seek(&self, offset: i64) -> u64 {
        if offset > self.last_offset || self.index.is_empty() {
            return self.data_end;
        }
        let rel = offset.saturating_sub(self.base_offset).max(0);
        let block = self
            .index
            .partition_point(|e| i64::from(e.rel_offset) <= rel)
            .saturating_sub(1);
        self.block_start(block)
    }

    /// Position (an index block start) to scan from for the first record with timestamp >= `ts`;
    /// `None` when every timestamp in the segment is smaller.
    pub fn seek_timestamp(&self, ts: i64) -> Option<u64> {
        let block = self.index.partition_point(|e| e.max_timestamp < ts);
        (block < self.index.len()).then(|| self.block_start(block))
    }

    /// Heap + inline size estimate in bytes (for cache weighing).
    pub fn memory_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + 2 * std::mem::size_of::<usize>()
            + std::mem::size_of_val(&*self.index)
    }

    /// Whether offsets may have gaps: a compacted segment ([`COMPACTED_VERSION`]), whose
    /// `record_count` may be smaller than its offset range and whose batches may span more
    /// offsets than they hold records.
    pub fn allows_gaps(&self) -> bool {
        self.version == COMPACTED_VERSION
    }

    /// The format version the segment was written in.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Target bytes of batch data between index entries, as written.
    pub fn index_interval(&self) -> u32 {
        self.index_interval
    }

    /// Number of sparse index entries (index blocks).
    pub fn index_len(&self) -> usize {
        self.index.len()
    }

    /// The sparse index entries, in order.
    pub fn index_points(&self) -> impl ExactSizeIterator<Item = IndexPoint> + '_ {
        (0..self.index.len()).map(|block| IndexPoint {
            offset: self.block_first_offset(block),
            position: self.block_start(block),
            max_timestamp: self.index[block].max_timestamp,
        })
    }

    pub(crate) fn block_start(&self, block: usize) -> u64 {
        self.data_start + u64::from(self.index[block].rel_position)
    }

    /// End of `block`: the next block's start or `data_end`.
    pub(crate) fn block_end(&self, block: usize) -> u64 {
        if block + 1 < self.index.len() {
            self.block_start(block + 1)
        } else {
            self.data_end
        }
    }

    /// The block that starts exactly at absolute position `pos`.
    pub(crate) fn block_starting_at(&self, pos: u64) -> Option<usize> {
        let rel = u32::try_from(pos.checked_sub(self.data_start)?).ok()?;
        self.index
            .binary_search_by_key(&rel, |e| e.rel_position)
            .ok()
    }

    pub(crate) fn block_first_offset(&self, block: usize) -> i64 {
        self.base_offset + i64::from(self.index[block].rel_offset)
    }

    /// Appends the footer encoding and the trailer to `buf` (the footer's CRC covers only what
    /// this call appends).
    pub(crate) fn encode_into(&self, buf: &mut Vec<u8>) {
        let footer_start = buf.len();
        for v in [self.base_offset, self.last_offset, self.record_count] {
            buf.extend_from_slice(&v.to_be_bytes());
        }
        buf.extend_from_slice(&self.batch_count.to_be_bytes());
        buf.extend_from_slice(&self.index_interval.to_be_bytes());
        buf.extend_from_slice(&self.min_timestamp.to_be_bytes());
        buf.extend_from_slice(&self.max_timestamp.to_be_bytes());
        buf.extend_from_slice(&self.data_start.to_be_bytes());
        buf.extend_from_slice(&self.data_end.to_be_bytes());
        buf.extend_from_slice(&(self.index.len() as u32).to_be_bytes());
        for entry in self.index.iter() {
            entry.encode_into(buf);
        }
        let footer = &buf[footer_start..];
        let footer_len = footer.len() as u32;
        let footer_crc = crate::crc32c(footer);
        buf.extend_from_slice(&footer_len.to_be_bytes());
        buf.extend_from_slice(&footer_crc.to_be_bytes());
        buf.extend_from_slice(&self.version.to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf.extend_from_slice(&TRAILER_MAGIC);
    }

    fn decode(buf: &[u8], version: u16) -> Self {
        let entries = buf[SUMMARY_LEN..].chunks_exact(ENTRY_LEN);
        SegmentFooter {
            base_offset: be_i64(buf, 0),
            last_offset: be_i64(buf, 8),
            record_count: be_i64(buf, 16),
            batch_count: be_u32(buf, 24),
            index_interval: be_u32(buf, 28),
            min_timestamp: be_i64(buf, 32),
            max_timestamp: be_i64(buf, 40),
            data_start: be_u64(buf, 48),
            data_end: be_u64(buf, 56),
            index: entries.map(IndexEntry::decode).collect(),
            version,
        }
    }

    /// Checks the invariants readers rely on; `range` is the footer's position for errors.
    fn validate(&self, range: std::ops::Range<u64>) -> Result<(), SegmentError> {
        let fail = |reason: String| Err(SegmentError::corrupt(range.clone(), reason));
        if self.data_start != HEADER_LEN as u64 || self.data_end != range.start {
            return fail(format!(
                "data range {}..{} does not lie between header and footer",
                self.data_start, self.data_end
            ));
        }
        if self.data_end - self.data_start > u64::from(u32::MAX) {
            return fail("data larger than 4 GiB".into());
        }
        if !self.counts_fit() {
            return fail(format!(
                "offsets {}..={} disagree with {} records in {} batches",
                self.base_offset, self.last_offset, self.record_count, self.batch_count
            ));
        }
        if (self.batch_count == 0) != self.index.is_empty()
            || (self.batch_count == 0) != (self.data_start == self.data_end)
            || self.index.len() > self.batch_count as usize
        {
            return fail(format!(
                "{} index entries and {} data bytes for {} batches",
                self.index.len(),
                self.data_end - self.data_start,
                self.batch_count
            ));
        }
        self.validate_index().or_else(fail)
    }

    /// Dense segments hold every offset of their range; compacted ones at most that many
    /// records. Either way each batch holds at least one record.
    fn counts_fit(&self) -> bool {
        let Some(span) = self
            .last_offset
            .checked_sub(self.base_offset)
            .and_then(|d| d.checked_add(1))
        else {
            return false;
        };
        let records_fit = match self.allows_gaps() {
            true => span >= 0 && self.record_count <= span,
            false => self.record_count == span,
        };
        records_fit && self.record_count >= i64::from(self.batch_count)
    }

    fn validate_index(&self) -> Result<(), String> {
        let Some(first) = self.index.first() else {
            return Ok(());
        };
        // A compacted segment's first batch may start past the segment base (records removed).
        let first_offset_ok = first.rel_offset == 0 || self.allows_gaps();
        if !first_offset_ok || first.rel_position != 0 {
            return Err("first index entry does not point at the first batch".into());
        }
        let data_len = self.data_end - self.data_start;
        let offsets = self.last_offset - self.base_offset;
        for (i, pair) in self.index.windows(2).enumerate() {
            let (a, b) = (pair[0], pair[1]);
            if b.rel_offset <= a.rel_offset
                || b.rel_position <= a.rel_position
                || b.max_timestamp < a.max_timestamp
                || u64::from(b.rel_position) >= data_len
                || i64::from(b.rel_offset) > offsets
            {
                return Err(format!(
                    "index entry {} is out of order or out of range",
                    i + 1
                ));
            }
        }
        let last = self.index[self.index.len() - 1];
        if last.max_timestamp != self.max_timestamp {
            return Err("timestamp index disagrees with the segment max timestamp".into());
        }
        Ok(())
    }
}

/// Given the last `tail.len()` bytes of an object of `object_len` bytes, decodes and verifies the
/// footer. When the tail is too short to hold the whole footer, the error's
/// [`SegmentError::need_tail_bytes`] says how many tail bytes to read instead.
pub fn read_footer(tail: &[u8], object_len: u64) -> Result<SegmentFooter, SegmentError> {
    let min_len = (HEADER_LEN + SUMMARY_LEN + TRAILER_LEN) as u64;
    if object_len < min_len {
        return Err(SegmentError::truncated(
            0..min_len,
            format!(
                "object of {object_len} bytes is smaller than the smallest segment \
                 ({min_len} bytes)"
            ),
        ));
    }
    if tail.len() as u64 > object_len {
        return Err(SegmentError::corrupt(
            0..object_len,
            format!("tail of {} bytes is longer than the object", tail.len()),
        ));
    }
    if tail.len() < TRAILER_LEN {
        return Err(SegmentError::NeedTailBytes {
            needed: TRAILER_LEN + SUMMARY_LEN,
            got: tail.len(),
        });
    }
    let trailer = read_trailer(&tail[tail.len() - TRAILER_LEN..], object_len, min_len)?;
    let needed = trailer.footer_len + TRAILER_LEN;
    if tail.len() < needed {
        return Err(SegmentError::NeedTailBytes {
            needed,
            got: tail.len(),
        });
    }
    let footer = &tail[tail.len() - needed..tail.len() - TRAILER_LEN];
    let footer_pos = object_len - needed as u64;
    let range = footer_pos..footer_pos + footer.len() as u64;
    let found = crate::crc32c(footer);
    if found != trailer.footer_crc {
        return Err(SegmentError::ChecksumMismatch {
            what: "footer",
            range,
            expected: trailer.footer_crc,
            found,
        });
    }
    let decoded = SegmentFooter::decode(footer, trailer.version);
    decoded.validate(range)?;
    Ok(decoded)
}

struct Trailer {
    footer_len: usize,
    footer_crc: u32,
    version: u16,
}

fn read_trailer(buf: &[u8], object_len: u64, min_len: u64) -> Result<Trailer, SegmentError> {
    let pos = object_len - TRAILER_LEN as u64;
    let field = |at: u64, len: u64| pos + at..pos + at + len;
    check_magic("trailer", &buf[12..16], TRAILER_MAGIC, field(12, 4))?;
    let version = check_version(be_u16(buf, 8), be_u16(buf, 10), field(8, 4))?;
    let footer_len = be_u32(buf, 0) as usize;
    let entries_len = footer_len.wrapping_sub(SUMMARY_LEN);
    if footer_len < SUMMARY_LEN
        || !entries_len.is_multiple_of(ENTRY_LEN)
        || footer_len as u64 > object_len - min_len + SUMMARY_LEN as u64
    {
        return Err(SegmentError::corrupt(
            field(0, 4),
            format!("footer length {footer_len} does not fit a {object_len}-byte segment"),
        ));
    }
    Ok(Trailer {
        footer_len,
        footer_crc: be_u32(buf, 4),
        version,
    })
}

/// Encodes the fixed header of a segment of format `version` starting at `base_offset`.
pub(crate) fn encode_header(base_offset: i64, version: u16) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&SEGMENT_MAGIC);
    header[4..6].copy_from_slice(&version.to_be_bytes());
    header[8..16].copy_from_slice(&base_offset.to_be_bytes());
    let crc = crate::crc32c(&header[..HEADER_CRC_START]);
    header[HEADER_CRC_START..].copy_from_slice(&crc.to_be_bytes());
    header
}

/// Verifies the fixed header at the start of `object` and returns its base offset and version.
pub(crate) fn decode_header(object: &[u8]) -> Result<(i64, u16), SegmentError> {
    if object.len() < HEADER_LEN {
        return Err(SegmentError::truncated(
            0..HEADER_LEN as u64,
            "segment header cut".to_string(),
        ));
    }
    let header = &object[..HEADER_LEN];
    check_magic("segment", &header[0..4], SEGMENT_MAGIC, 0..4)?;
    let stored = be_u32(header, HEADER_CRC_START);
    let found = crate::crc32c(&header[..HEADER_CRC_START]);
    if stored != found {
        return Err(SegmentError::ChecksumMismatch {
            what: "header",
            range: 0..HEADER_CRC_START as u64,
            expected: stored,
            found,
        });
    }
    let version = check_version(be_u16(header, 4), be_u16(header, 6), 4..8)?;
    if be_u32(header, 16) != 0 {
        return Err(SegmentError::corrupt(
            16..20,
            "reserved header bytes are not zero",
        ));
    }
    Ok((be_i64(header, 8), version))
}

fn check_magic(
    what: &'static str,
    found: &[u8],
    expected: [u8; 4],
    range: std::ops::Range<u64>,
) -> Result<(), SegmentError> {
    if found == expected {
        return Ok(());
    }
    Err(SegmentError::BadMagic {
        what,
        range,
        expected: format!("{:?}", String::from_utf8_lossy(&expected)),
        found: format!("{:?}", String::from_utf8_lossy(found)),
    })
}

/// Accepts the versions this reader knows and no flags; returns the version.
fn check_version(
    version: u16,
    flags: u16,
    range: std::ops::Range<u64>,
) -> Result<u16, SegmentError> {
    if version != FORMAT_VERSION && version != COMPACTED_VERSION {
        return Err(SegmentError::Unsupported {
            range,
            detail: format!(
                "format version {version} (this reader knows {FORMAT_VERSION} and \
                 {COMPACTED_VERSION})"
            ),
        });
    }
    if flags != 0 {
        return Err(SegmentError::Unsupported {
            range,
            detail: format!("unknown flags {flags:#06x}"),
        });
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::batch;
    use crate::SegmentBuilder;

    #[test]
    fn sizes_match_the_spec() {
        let mut builder = SegmentBuilder::with_index_interval(5, 1);
        (0..3).for_each(|i| builder.push(&batch(5 + i, 1, 0, 9)).expect("push"));
        let bytes = builder.finish().to_bytes();
        let footer_len = be_u32(&bytes, bytes.len() - TRAILER_LEN) as usize;
        assert_eq!(footer_len, SUMMARY_LEN + 3 * ENTRY_LEN);
        assert_eq!(bytes.len(), HEADER_LEN + 3 * 61 + footer_len + TRAILER_LEN);
        assert_eq!(&bytes[bytes.len() - 4..], b"SHSF");
        assert_eq!(&bytes[..4], b"SHSG");
    }

    #[test]
    fn header_round_trips_and_rejects_reserved_bits() {
        let mut header = encode_header(-42, FORMAT_VERSION);
        assert_eq!(decode_header(&header).expect("valid header"), (-42, 1));
        header[19] = 1;
        let crc = crate::crc32c(&header[..HEADER_CRC_START]);
        header[HEADER_CRC_START..].copy_from_slice(&crc.to_be_bytes());
        let err = decode_header(&header).expect_err("reserved bytes set");
        assert_eq!(err.byte_range(), Some(16..20));
    }

    #[test]
    fn newer_version_is_unsupported_not_corrupt() {
        let mut header = encode_header(0, FORMAT_VERSION);
        header[5] = 3;
        let crc = crate::crc32c(&header[..HEADER_CRC_START]);
        header[HEADER_CRC_START..].copy_from_slice(&crc.to_be_bytes());
        let err = decode_header(&header).expect_err("version 3");
        assert!(
            err.to_string()
                .contains("format version 3 (this reader knows 1 and 2)"),
            "{err}"
        );
    }

    #[test]
    fn seek_timestamp_uses_max_so_far() {
        let mut builder = SegmentBuilder::with_index_interval(0, 1);
        for (i, ts) in [10, 50, 20, 60].into_iter().enumerate() {
            builder.push(&batch(i as i64, 1, 0, ts)).expect("push");
        }
        let footer = builder.finish().footer;
        let block = |b: usize| footer.block_start(b);
        assert_eq!(footer.seek_timestamp(i64::MIN), Some(block(0)));
        assert_eq!(footer.seek_timestamp(30), Some(block(1)));
        assert_eq!(footer.seek_timestamp(55), Some(block(3)));
        assert_eq!(footer.seek_timestamp(61), None);
        assert_eq!(footer.seek(2), block(2));
    }
}
