//! Kafka RecordBatch v2: header parsing and validation of whole batches.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::SegmentError;
use crate::wire::{be_i16, be_i32, be_i64, be_u32};

/// Bytes before `attributes`: baseOffset, batchLength, partitionLeaderEpoch, magic, crc.
/// Kafka's CRC does not cover them, so the segment index checksums them (see docs/format.md).
pub(crate) const PREFIX_LEN: usize = 21;
/// baseOffset + batchLength: the part of a batch not counted by `batchLength`.
pub(crate) const LOG_OVERHEAD: usize = 12;
const MAGIC_POS: usize = 16;
const SUPPORTED_MAGIC: i8 = 2;
const COMPRESSION_MASK: i16 = 0x07;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// Compression codec of a batch (attributes bits 0-2). Batches are stored compressed as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Codec 0.
    None,
    /// Codec 1.
    Gzip,
    /// Codec 2.
    Snappy,
    /// Codec 3.
    Lz4,
    /// Codec 4.
    Zstd,
}

impl Compression {
    fn from_attributes(attributes: i16) -> Option<Self> {
        match attributes & COMPRESSION_MASK {
            0 => Some(Self::None),
            1 => Some(Self::Gzip),
            2 => Some(Self::Snappy),
            3 => Some(Self::Lz4),
            4 => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// The 61-byte header of a Kafka RecordBatch v2 (all fields big-endian on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after this field (total batch size minus 12).
    pub batch_length: i32,
    /// Leader epoch stamped by the broker (or -1).
    pub partition_leader_epoch: i32,
    /// Record format version; always 2 once parsed.
    pub magic: i8,
    /// CRC-32C over everything from `attributes` to the end of the batch.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Size of the v2 batch header in bytes.
    pub const LEN: usize = 61;

    /// Parses the header fields at the start of `buf`, without checking the CRC.
    ///
    /// Rejects buffers shorter than [`BatchHeader::LEN`], magic other than 2 (the other fields of
    /// v0/v1 messages are laid out differently) and unknown compression codecs.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, SegmentError> {
        Self::parse_at(buf, 0)
    }

    /// Like [`BatchHeader::parse`], reporting byte ranges relative to `pos`.
    pub(crate) fn parse_at(buf: &[u8], pos: u64) -> Result<BatchHeader, SegmentError> {
        let header_range = pos..pos + Self::LEN as u64;
        if buf.len() < Self::LEN {
            return Err(SegmentError::truncated(
                header_range,
                format!(
                    "record batch header needs {} bytes, got {}",
                    Self::LEN,
                    buf.len()
                ),
            ));
        }
        let magic = buf[MAGIC_POS] as i8;
        if magic != SUPPORTED_MAGIC {
            return Err(SegmentError::BadMagic {
                what: "record batch",
                range: pos + MAGIC_POS as u64..pos + MAGIC_POS as u64 + 1,
                expected: SUPPORTED_MAGIC.to_string(),
                found: magic.to_string(),
            });
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: be_u32(buf, 17),
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            record_count: be_i32(buf, 57),
        };
        if Compression::from_attributes(header.attributes).is_none() {
            return Err(SegmentError::invalid_batch(
                header_range,
                format!(
                    "unknown compression codec {}",
                    header.attributes & COMPRESSION_MASK
                ),
            ));
        }
        Ok(header)
    }

    /// Total size of the batch in bytes: 12 + `batch_length`.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record: `base_offset + last_offset_delta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Compression codec of the records.
    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes).unwrap_or(Compression::None)
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// Checks the rules every stored batch obeys, given the header starts at `pos`. With
    /// `gaps` (a compacted segment) the batch may hold fewer records than the offsets it spans:
    /// compaction removes records but keeps `lastOffsetDelta`, as Kafka's cleaner does.
    pub(crate) fn validate(&self, pos: u64, gaps: bool) -> Result<(), SegmentError> {
        let range = pos..pos + self.total_len() as u64;
        if self.batch_length < (Self::LEN - LOG_OVERHEAD) as i32 {
            return Err(SegmentError::invalid_batch(
                pos..pos + Self::LEN as u64,
                format!(
                    "batch length {} is shorter than the v2 header",
                    self.batch_length
                ),
            ));
        }
        if self.record_count <= 0 {
            return Err(SegmentError::invalid_batch(
                range,
                format!("record count {} is not positive", self.record_count),
            ));
        }
        let spanned = i64::from(self.last_offset_delta) + 1;
        let count = i64::from(self.record_count);
        if spanned != count && !(gaps && spanned > count) {
            return Err(SegmentError::invalid_batch(
                range,
                format!(
                    "last offset delta {} does not match record count {} (must be count - 1{})",
                    self.last_offset_delta,
                    self.record_count,
                    if gaps { " or more" } else { "" }
                ),
            ));
        }
        Ok(())
    }
}

/// One validated batch: its header and its exact bytes (a cheap [`Bytes`] slice).
#[derive(Clone, Debug)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Splits a produce payload (concatenated batches) into batches.
    ///
    /// Every batch must have magic 2, a length that fits the payload, a positive record count
    /// with `last_offset_delta == record_count - 1`, and a matching CRC-32C. Trailing bytes
    /// that do not form a whole batch are rejected. Byte ranges in errors are payload-relative.
    pub fn parse_all(buf: Bytes) -> Result<Vec<RecordBatch>, SegmentError> {
        let mut batches = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let batch_len = peek_total_len(&buf[at..]).ok_or_else(|| {
                SegmentError::truncated(
                    at as u64..buf.len() as u64,
                    format!(
                        "trailing {} bytes are not a whole record batch",
                        buf.len() - at
                    ),
                )
            })?;
            if buf.len() - at < batch_len.max(BatchHeader::LEN) {
                return Err(SegmentError::truncated(
                    at as u64..(at + batch_len.max(BatchHeader::LEN)) as u64,
                    format!("record batch cut after {} bytes", buf.len() - at),
                ));
            }
            let batch = Self::read(&buf, at, 0, false)?;
            batch.check_crc(at as u64)?;
            at += batch.len();
            batches.push(batch);
        }
        Ok(batches)
    }

    /// Reads and validates (all but the CRC) the batch at `data[at..]`, which must hold the
    /// whole batch; `base` is the absolute position of `data[0]` for error ranges; `gaps`:
    /// whether it comes from a compacted segment (see [`BatchHeader`]'s validation).
    pub(crate) fn read(
        data: &Bytes,
        at: usize,
        base: u64,
        gaps: bool,
    ) -> Result<RecordBatch, SegmentError> {
        let pos = base + at as u64;
        let header = BatchHeader::parse_at(&data[at..], pos)?;
        header.validate(pos, gaps)?;
        let end = at + header.total_len();
        if end > data.len() {
            return Err(SegmentError::truncated(
                pos..base + end as u64,
                format!("record batch cut after {} bytes", data.len() - at),
            ));
        }
        Ok(RecordBatch {
            header,
            bytes: data.slice(at..end),
        })
    }

    /// Verifies Kafka's CRC-32C; `pos` is the batch's position for the error range.
    pub(crate) fn check_crc(&self, pos: u64) -> Result<(), SegmentError> {
        check_batch_crc(&self.header, &self.bytes, pos)
    }

    /// The parsed header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch exactly as stored (what a fetch returns).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.header.last_offset()
    }

    /// Number of records.
    pub fn record_count(&self) -> i32 {
        self.header.record_count
    }

    /// Largest record timestamp.
    pub fn max_timestamp(&self) -> i64 {
        self.header.max_timestamp
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a validated batch holds at least its header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The length a batch starting at `buf[0]` claims (its 12-byte prefix: base offset and
    /// length), unchecked: how much to read to get the whole batch. `None` when `buf` is
    /// shorter than the prefix.
    pub fn claimed_len(buf: &[u8]) -> Option<usize> {
        peek_total_len(buf)
    }

    /// A batch made of `header` and its `bytes` (already checked by the caller).
    pub(crate) fn from_parts(header: BatchHeader, bytes: Bytes) -> RecordBatch {
        RecordBatch { header, bytes }
    }

    /// Copy with the base offset rewritten. Only the first 8 bytes change, and Kafka's CRC
    /// does not cover them, so the batch stays valid.
    pub fn with_base_offset(&self, base_offset: i64) -> RecordBatch {
        let mut bytes = BytesMut::with_capacity(self.bytes.len());
        bytes.put_i64(base_offset);
        bytes.extend_from_slice(&self.bytes[8..]);
        RecordBatch {
            header: BatchHeader {
                base_offset,
                ..self.header
            },
            bytes: bytes.freeze(),
        }
    }
}

/// Total length of the batch starting at `buf[0]`, if its length field is present.
pub(crate) fn peek_total_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= LOG_OVERHEAD).then(|| LOG_OVERHEAD + be_i32(buf, 8).max(0) as usize)
}

/// Verifies Kafka's CRC-32C of `batch` (its whole bytes) against `header`, parsed from it.
pub(crate) fn check_batch_crc(
    header: &BatchHeader,
    batch: &[u8],
    pos: u64,
) -> Result<(), SegmentError> {
    let found = crate::crc32c(&batch[PREFIX_LEN..]);
    if found == header.crc {
        return Ok(());
    }
    Err(SegmentError::ChecksumMismatch {
        what: "batch",
        range: pos..pos + batch.len() as u64,
        expected: header.crc,
        found,
    })
}
