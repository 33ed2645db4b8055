//! The records inside a batch: decompression with a bounded output and record decoding, the
//! one place every caller (produce validation, ListOffsets, HTTP consume) reads records from.
//!
//! Decompression stops once more than the caller's limit came out, so a batch that claims (or
//! expands to) gigabytes costs at most the limit in CPU, never its expanded size. lz4 frames of
//! independent blocks and xerial snappy are expanded whole into a buffer the thread reuses (at
//! most the limit plus one lz4 block, see [`expand`]) and read in place, as uncompressed payloads
//! are; gzip, zstd and other lz4 frames stream through a small fixed buffer.

use std::io::{self, BufRead, BufReader, Read};

use bytes::Bytes;

use crate::batch::{BatchHeader, Compression, RecordBatch};
use crate::error::SegmentError;
use crate::expand::{self, ExpandError, Expanded};

/// Attributes bit 3: the batch's timestamps are the broker's append time, not the producer's.
const LOG_APPEND_TIME_FLAG: i16 = 0x08;
/// Buffer between the decompressor and the record decoder.
const READ_BUFFER: usize = 16 * 1024;
/// Largest zstd window accepted (2^23 = 8 MiB): what Kafka producers use for their batch sizes
/// at any level; a frame asking for more is refused instead of making us allocate its window.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset (the batch's base offset plus the record's offset delta).
    pub offset: i64,
    /// Create time, or the batch's append time for log-append-time batches (ms since epoch).
    pub timestamp: i64,
    /// Key, `None` for a null key.
    pub key: Option<Bytes>,
    /// Value, `None` for a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order: key and value (`None` for a null value).
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

impl RecordBatch {
    /// Checks every record like Kafka's broker does before appending (Kafka's `LogValidator`):
    /// the payload decompresses, holds exactly `record_count` records whose lengths, varints,
    /// keys, values and headers are consistent, with consecutive offset deltas and timestamps
    /// not past the batch's max timestamp. At most `max_expanded` bytes are decompressed;
    /// record contents are skipped, not copied.
    pub fn validate_records(&self, max_expanded: usize) -> Result<(), SegmentError> {
        self.validate_counting_null_keys(max_expanded).map(|_| ())
    }

    /// [`Self::validate_records`], counting on the way the records whose key is null (a
    /// compacted topic refuses them), so that one pass does both.
    pub fn validate_counting_null_keys(&self, max_expanded: usize) -> Result<u32, SegmentError> {
        let mut null_keys = 0;
        for record in Records::new(self, max_expanded, false)? {
            null_keys += u32::from(record?.key.is_none());
        }
        Ok(null_keys)
    }

    /// The batch's records, decoded as they are read; at most `max_expanded` bytes of
    /// (decompressed) record data are read, beyond which the iterator yields
    /// [`SegmentError::TooLarge`].
    pub fn records(&self, max_expanded: usize) -> Result<Records<'_>, SegmentError> {
        Records::new(self, max_expanded, true)
    }
}

/// Iterator over the records of one batch (see [`RecordBatch::records`]). After an error it
/// yields nothing more.
pub struct Records<'a> {
    header: BatchHeader,
    batch_len: u64,
    input: Input<'a>,
    next: i32,
    /// Offset delta of the previous record (-1 before the first).
    prev_delta: i32,
    keep: bool,
    failed: bool,
}

impl<'a> Records<'a> {
    fn new(batch: &'a RecordBatch, max_expanded: usize, keep: bool) -> Result<Self, SegmentError> {
        let payload = &batch.bytes()[BatchHeader::LEN..];
        let input = match Self::in_place(batch, payload, max_expanded)? {
            Some(bytes) => Input::InPlace(InPlace::new(bytes, max_expanded)),
            None => {
                let stream = Bounded::new(Self::stream(batch, payload)?, max_expanded);
                Input::Stream(BufReader::with_capacity(READ_BUFFER, stream))
            }
        };
        Ok(Self::over(batch, input, keep))
    }

    /// The record bytes to read in place: an uncompressed payload itself (through a buffer,
    /// every byte would be copied once more), or one [`expand`] takes, expanded; `None` for a
    /// payload read as a stream.
    fn in_place(
        batch: &RecordBatch,
        payload: &'a [u8],
        max_expanded: usize,
    ) -> Result<Option<Payload<'a>>, SegmentError> {
        let expanded = match batch.header().compression() {
            Compression::None => return Ok(Some(Payload::Borrowed(payload))),
            Compression::Snappy => expand::snappy(payload, max_expanded).map(Some),
            Compression::Lz4 => expand::lz4(payload, max_expanded),
            Compression::Gzip | Compression::Zstd => Ok(None),
        };
        let expanded = expanded.map_err(|e| match e {
            ExpandError::TooLarge => SegmentError::TooLarge {
                range: 0..batch.len() as u64,
                limit: max_expanded as u64,
            },
            ExpandError::Invalid(reason) => invalid(
                batch.header(),
                batch.len(),
                format!(
                    "{:?} payload does not decompress: {reason}",
                    batch.header().compression()
                ),
            ),
        })?;
        Ok(expanded.map(Payload::Expanded))
    }

    /// The decompressing stream for a payload [`Self::in_place`] leaves: gzip, zstd, and lz4
    /// frames with linked blocks or a dictionary.
    fn stream(batch: &RecordBatch, payload: &'a [u8]) -> Result<Box<dyn Read + 'a>, SegmentError> {
        let header = batch.header();
        let invalid = |reason: String| invalid(header, batch.len(), reason);
        Ok(match header.compression() {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(payload)),
            Compression::Lz4 => Box::new(
                lz4::Decoder::new(payload)
                    .map_err(|e| invalid(format!("lz4 payload does not decode: {e}")))?,
            ),
            // Zstd: the others were read in place.
            _ => {
                let mut decoder = zstd::stream::read::Decoder::with_buffer(payload)
                    .map_err(|e| invalid(format!("zstd: {e}")))?;
                decoder
                    .window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(|e| invalid(format!("zstd window limit: {e}")))?;
                Box::new(decoder)
            }
        })
    }

    fn over(batch: &RecordBatch, input: Input<'a>, keep: bool) -> Self {
        Self {
            header: *batch.header(),
            batch_len: batch.len() as u64,
            input,
            next: 0,
            prev_delta: -1,
            keep,
            failed: false,
        }
    }

    fn decode_next(&mut self) -> Result<Record, SegmentError> {
        let index = self.next;
        let length = self.varint("record length")?;
        let length = u64::try_from(length)
            .map_err(|_| self.invalid(format!("record {index} has negative length {length}")))?;
        let start = self.input.position();
        let _attributes = self.byte()?;
        let timestamp_delta = self.varlong("timestamp delta")?;
        let offset_delta = self.varint("offset delta")?;
        self.check_offset_delta(index, offset_delta)?;
        let key = self.bytes("key", length)?;
        let value = self.bytes("value", length)?;
        let header_count = self.varint("header count")?;
        if header_count < 0 {
            return Err(self.invalid(format!("record {index} has {header_count} headers")));
        }
        let mut headers = Vec::new();
        for _ in 0..header_count {
            let Some(key) = self.bytes("header key", length)? else {
                return Err(self.invalid(format!("record {index} has a null header key")));
            };
            let value = self.bytes("header value", length)?;
            if self.keep {
                headers.push((key, value));
            }
        }
        let consumed = self.input.position() - start;
        if consumed != length {
            return Err(self.invalid(format!(
                "record {index} declares {length} bytes but its fields take {consumed}"
            )));
        }
        let timestamp = if self.header.attributes & LOG_APPEND_TIME_FLAG != 0 {
            self.header.max_timestamp
        } else {
            let timestamp = self.header.base_timestamp.wrapping_add(timestamp_delta);
            if timestamp > self.header.max_timestamp {
                return Err(self.invalid(format!(
                    "record {index} has timestamp {timestamp}, past the batch's max timestamp {}",
                    self.header.max_timestamp
                )));
            }
            timestamp
        };
        Ok(Record {
            offset: self.header.base_offset + i64::from(offset_delta),
            timestamp,
            key,
            value,
            headers,
        })
    }

    /// Offset deltas are consecutive from 0 in a batch as produced; in a batch compaction
    /// rewrote (fewer records than the offsets it spans) they only increase, up to
    /// `lastOffsetDelta`.
    fn check_offset_delta(&mut self, index: i32, offset_delta: i32) -> Result<(), SegmentError> {
        let dense = self.header.last_offset_delta == self.header.record_count - 1;
        let fits = match dense {
            true => offset_delta == index,
            false => {
                offset_delta > self.prev_delta && offset_delta <= self.header.last_offset_delta
            }
        };
        if !fits {
            return Err(self.invalid(format!(
                "record {index} has offset delta {offset_delta}: inner offsets must be {}",
                if dense {
                    "consecutive"
                } else {
                    "increasing within the batch"
                }
            )));
        }
        self.prev_delta = offset_delta;
        Ok(())
    }

    /// After the last declared record the payload must end.
    fn check_end(&mut self) -> Result<(), SegmentError> {
        match self.input.fill_buf() {
            Ok([]) => Ok(()),
            Ok(_) => Err(self.invalid(format!(
                "bytes follow the {} declared records",
                self.header.record_count
            ))),
            Err(e) => Err(self.io_error(e)),
        }
    }

    fn byte(&mut self) -> Result<u8, SegmentError> {
        let mut b = [0u8; 1];
        self.input
            .read_exact(&mut b)
            .map_err(|e| self.io_error(e))?;
        Ok(b[0])
    }

    /// A zig-zag varint of at most `max_bytes` bytes (5 for 32 bits, 10 for 64), as Kafka's
    /// `ByteUtils.readVarint` / `readVarlong`.
    fn unsigned_varint(&mut self, what: &str, max_bytes: u32) -> Result<u64, SegmentError> {
        match self.buffered_varint(max_bytes) {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => return Err(self.io_error(e)),
        }
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.invalid(format!("{what} varint is longer than {max_bytes} bytes")))
    }

    /// The varint when it ends within the bytes already buffered (nearly always: only one
    /// straddling a stream's buffer boundary, or a malformed one, takes the byte-wise path).
    fn buffered_varint(&mut self, max_bytes: u32) -> io::Result<Option<u64>> {
        let buffered = self.input.fill_buf()?;
        let mut value = 0u64;
        for (i, &b) in buffered.iter().take(max_bytes as usize).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.input.consume(i + 1);
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    fn varint(&mut self, what: &str) -> Result<i32, SegmentError> {
        let raw = self.unsigned_varint(what, 5)?;
        let raw = u32::try_from(raw)
            .map_err(|_| self.invalid(format!("{what} varint overflows 32 bits")))?;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    fn varlong(&mut self, what: &str) -> Result<i64, SegmentError> {
        let raw = self.unsigned_varint(what, 10)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// A length-prefixed byte string (-1: null) no longer than the record holding it, read
    /// (when keeping records) or skipped.
    fn bytes(&mut self, what: &str, record_length: u64) -> Result<Option<Bytes>, SegmentError> {
        let len = self.varint(what)?;
        if len == -1 {
            return Ok(None);
        }
        let len = u64::try_from(len)
            .ok()
            .filter(|&l| l <= record_length)
            .ok_or_else(|| {
                self.invalid(format!(
                    "{what} length {len} is invalid in a record of {record_length} bytes"
                ))
            })?;
        if !self.keep {
            let skipped = self.input.skip(len).map_err(|e| self.io_error(e))?;
            return match skipped == len {
                true => Ok(Some(Bytes::new())),
                false => Err(self.premature_end()),
            };
        }
        // `len` is bounded by the record length, itself bounded by what the limit lets through
        // (the read fails first); grow as bytes arrive rather than trusting the prefix.
        let mut buf = Vec::with_capacity((len as usize).min(READ_BUFFER));
        (&mut self.input)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| self.io_error(e))?;
        if buf.len() as u64 != len {
            return Err(self.premature_end());
        }
        Ok(Some(buf.into()))
    }

    fn premature_end(&self) -> SegmentError {
        self.invalid(format!(
            "payload ends inside record {} of {} declared",
            self.next, self.header.record_count
        ))
    }

    fn io_error(&self, e: io::Error) -> SegmentError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return self.premature_end();
        }
        let over = e.get_ref().is_some_and(|inner| inner.is::<LimitExceeded>());
        let bounded = self.input.bounded();
        if over || bounded.exceeded() {
            return SegmentError::TooLarge {
                range: self.range(),
                limit: bounded.limit,
            };
        }
        self.invalid(format!(
            "{:?} payload does not decompress: {e}",
            self.header.compression()
        ))
    }

    fn range(&self) -> std::ops::Range<u64> {
        0..self.batch_len
    }

    fn invalid(&self, reason: String) -> SegmentError {
        SegmentError::InvalidBatch {
            range: self.range(),
            reason: format!("batch at offset {}: {reason}", self.header.base_offset),
        }
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record, SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next > self.header.record_count {
            return None;
        }
        let result = if self.next == self.header.record_count {
            match self.check_end() {
                Ok(()) => {
                    self.next += 1;
                    return None;
                }
                Err(e) => Err(e),
            }
        } else {
            self.decode_next()
        };
        match &result {
            Ok(_) => self.next += 1,
            Err(_) => self.failed = true,
        }
        Some(result)
    }
}

fn invalid(header: &BatchHeader, len: usize, reason: String) -> SegmentError {
    SegmentError::InvalidBatch {
        range: 0..len as u64,
        reason: format!("batch at offset {}: {reason}", header.base_offset),
    }
}

/// The error a bounded decompression fails with once its output would pass the limit.
#[derive(Debug)]
struct LimitExceeded;

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompressed size limit exceeded")
    }
}

impl std::error::Error for LimitExceeded {}

/// A reader that fails once more than `limit` bytes came out of `inner`.
struct Bounded<R> {
    inner: R,
    limit: u64,
    read: u64,
}

impl<R> Bounded<R> {
    fn new(inner: R, limit: usize) -> Self {
        Bounded {
            inner,
            limit: limit as u64,
            read: 0,
        }
    }

    fn exceeded(&self) -> bool {
        self.read > self.limit
    }
}

/// Record bytes read in place, within the same limit a decompressing stream has: the bytes past
/// it are never handed out, and asking for them fails as a stream's read does.
struct InPlace<'a> {
    payload: Payload<'a>,
    at: usize,
    limit: usize,
    over: bool,
}

/// Bytes records are read from in place.
enum Payload<'a> {
    /// The batch's own uncompressed payload.
    Borrowed(&'a [u8]),
    /// A compressed payload expanded whole (see [`expand`]).
    Expanded(Expanded),
}

impl<'a> InPlace<'a> {
    fn new(payload: Payload<'a>, limit: usize) -> Self {
        Self {
            payload,
            at: 0,
            limit,
            over: false,
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.payload {
            Payload::Borrowed(bytes) => bytes,
            Payload::Expanded(expanded) => expanded.bytes(),
        }
    }

    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let len = self.bytes().len();
        if self.at == self.limit && len > self.limit {
            self.over = true;
            return Err(io::Error::other(LimitExceeded));
        }
        let end = len.min(self.limit);
        let at = self.at;
        Ok(&self.bytes()[at..end])
    }

    fn consume(&mut self, n: usize) {
        self.at += n;
    }
}

/// Where a batch's records are read from: bytes in place, or a decompressing stream through a
/// buffer.
enum Input<'a> {
    InPlace(InPlace<'a>),
    Stream(BufReader<Bounded<Box<dyn Read + 'a>>>),
}

impl Input<'_> {
    /// Record bytes consumed so far.
    fn position(&self) -> u64 {
        match self {
            Input::InPlace(bytes) => bytes.at as u64,
            Input::Stream(stream) => stream.get_ref().read - stream.buffer().len() as u64,
        }
    }

    /// The limit and what was read against it (a stream's read-ahead included).
    fn bounded(&self) -> Bounded<()> {
        let (read, limit) = match self {
            Input::InPlace(bytes) => (bytes.at as u64 + u64::from(bytes.over), bytes.limit as u64),
            Input::Stream(stream) => (stream.get_ref().read, stream.get_ref().limit),
        };
        Bounded {
            inner: (),
            limit,
            read,
        }
    }

    /// Skips up to `n` bytes without copying them; how many there were.
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let mut left = n;
        while left > 0 {
            let available = self.fill_buf()?.len() as u64;
            if available == 0 {
                break;
            }
            let step = available.min(left);
            self.consume(step as usize);
            left -= step;
        }
        Ok(n - left)
    }
}

impl Read for Input<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::InPlace(bytes) => {
                let available = bytes.fill_buf()?;
                let n = available.len().min(buf.len());
                buf[..n].copy_from_slice(&available[..n]);
                bytes.consume(n);
                Ok(n)
            }
            Input::Stream(stream) => stream.read(buf),
        }
    }
}

impl BufRead for Input<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            Input::InPlace(bytes) => bytes.fill_buf(),
            Input::Stream(stream) => stream.fill_buf(),
        }
    }

    fn consume(&mut self, n: usize) {
        match self {
            Input::InPlace(bytes) => bytes.consume(n),
            Input::Stream(stream) => stream.consume(n),
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.exceeded() {
            return Err(io::Error::other(LimitExceeded));
        }
        // One byte past the limit tells "exactly the limit" from "more than the limit".
        let room = (self.limit - self.read + 1).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        self.read += n as u64;
        if self.exceeded() {
            return Err(io::Error::other(LimitExceeded));
        }
        Ok(n)
    }
}
