//! The records inside a batch: decompression with a bounded output and record decoding, the
//! one place every caller (produce validation, ListOffsets, HTTP consume) reads records from.
//!
//! Everything streams: compressed payloads are decompressed through a reader that fails once
//! more than the caller's limit came out, so a batch that claims (or expands to) gigabytes costs
//! at most the limit in CPU and a small fixed buffer in memory, never its expanded size.

use std::io::{self, BufRead, BufReader, Read};

use bytes::Bytes;

use crate::batch::{BatchHeader, Compression, RecordBatch};
use crate::error::SegmentError;

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
        let mut records = Records::new(self, max_expanded, false)?;
        for record in records.by_ref() {
            record?;
        }
        Ok(())
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
        let header = *batch.header();
        let payload = &batch.bytes()[BatchHeader::LEN..];
        let stream: Box<dyn Read + 'a> = match header.compression() {
            // Read in place: through a buffer, every byte would be copied once more.
            Compression::None => {
                return Ok(Self::over(
                    batch,
                    Input::Plain(Bounded::new(payload, max_expanded)),
                    keep,
                ));
            }
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(payload)),
            Compression::Snappy => Box::new(XerialSnappy::new(payload, max_expanded)),
            Compression::Lz4 => Box::new(lz4::Decoder::new(payload).map_err(|e| {
                invalid(
                    &header,
                    batch.len(),
                    format!("lz4 payload does not decode: {e}"),
                )
            })?),
            Compression::Zstd => {
                let mut decoder = zstd::stream::read::Decoder::with_buffer(payload)
                    .map_err(|e| invalid(&header, batch.len(), format!("zstd: {e}")))?;
                decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| {
                    invalid(&header, batch.len(), format!("zstd window limit: {e}"))
                })?;
                Box::new(decoder)
            }
        };
        let stream = Bounded::new(stream, max_expanded);
        let input = Input::Stream(BufReader::with_capacity(READ_BUFFER, stream));
        Ok(Self::over(batch, input, keep))
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

/// An uncompressed payload read in place, within the same limit a decompressing stream has:
/// the bytes past it are never handed out, and asking for them fails as a stream's read does.
impl BufRead for Bounded<&[u8]> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let room = self.limit.saturating_sub(self.read);
        if room == 0 && !self.inner.is_empty() {
            self.read = self.limit + 1;
            return Err(io::Error::other(LimitExceeded));
        }
        Ok(&self.inner[..room.min(self.inner.len() as u64) as usize])
    }

    fn consume(&mut self, n: usize) {
        self.inner = &self.inner[n..];
        self.read += n as u64;
    }
}

/// Where a batch's records are read from: an uncompressed payload in place, or a decompressing
/// stream through a buffer.
enum Input<'a> {
    Plain(Bounded<&'a [u8]>),
    Stream(BufReader<Bounded<Box<dyn Read + 'a>>>),
}

impl Input<'_> {
    /// Record bytes consumed so far.
    fn position(&self) -> u64 {
        match self {
            Input::Plain(plain) => plain.read,
            Input::Stream(stream) => stream.get_ref().read - stream.buffer().len() as u64,
        }
    }

    /// The limit and what was read against it (a stream's read-ahead included).
    fn bounded(&self) -> Bounded<()> {
        let (read, limit) = match self {
            Input::Plain(plain) => (plain.read, plain.limit),
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
            Input::Plain(plain) => {
                let available = plain.fill_buf()?;
                let n = available.len().min(buf.len());
                buf[..n].copy_from_slice(&available[..n]);
                plain.consume(n);
                Ok(n)
            }
            Input::Stream(stream) => stream.read(buf),
        }
    }
}

impl BufRead for Input<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            Input::Plain(plain) => plain.fill_buf(),
            Input::Stream(stream) => stream.fill_buf(),
        }
    }

    fn consume(&mut self, n: usize) {
        match self {
            Input::Plain(plain) => plain.consume(n),
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

/// Kafka's snappy framing (xerial `SnappyOutputStream`): a 16-byte magic header, then blocks of
/// `[u32 compressed length][raw snappy block]`; without the header, one raw snappy block. Each
/// block's claimed size is checked against what the limit still allows before it is allocated.
struct XerialSnappy<'a> {
    input: &'a [u8],
    block: Vec<u8>,
    at: usize,
    allowance: u64,
    /// No xerial header: the whole input is one raw block, not yet decompressed.
    raw: bool,
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

impl<'a> XerialSnappy<'a> {
    fn new(input: &'a [u8], limit: usize) -> Self {
        let framed = input.len() >= XERIAL_HEADER_LEN && input.starts_with(XERIAL_MAGIC);
        Self {
            input: if framed {
                &input[XERIAL_HEADER_LEN..]
            } else {
                input
            },
            block: Vec::new(),
            at: 0,
            // One byte more than the limit lets the caller tell "over the limit" apart.
            allowance: limit as u64 + 1,
            raw: !framed,
        }
    }

    fn decompress(&mut self, compressed: &[u8]) -> io::Result<()> {
        let len = snap::raw::decompress_len(compressed).map_err(io::Error::other)?;
        if len as u64 > self.allowance {
            // Refused from the block's own claim, before allocating it.
            return Err(io::Error::other(LimitExceeded));
        }
        self.allowance -= len as u64;
        self.block.resize(len, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(io::Error::other)?;
        self.at = 0;
        Ok(())
    }
}

impl Read for XerialSnappy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if std::mem::take(&mut self.raw) {
            let whole = std::mem::take(&mut self.input);
            self.decompress(whole)?;
        }
        while self.at >= self.block.len() {
            if self.input.is_empty() {
                return Ok(0);
            }
            if self.input.len() < 4 {
                return Err(io::Error::other("snappy block length cut short"));
            }
            let len = u32::from_be_bytes(self.input[..4].try_into().expect("4 bytes")) as usize;
            if self.input.len() - 4 < len {
                return Err(io::Error::other("snappy block cut short"));
            }
            let (block, rest) = self.input[4..].split_at(len);
            self.input = rest;
            self.decompress(block)?;
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
