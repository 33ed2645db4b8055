//! Rewriting a batch with some of its records removed, for log compaction.
//!
//! Like Kafka's log cleaner, a rewritten batch keeps its base offset, `lastOffsetDelta`,
//! timestamps and producer fields (id, epoch, base sequence), so offsets never change and the
//! batch still describes the producer's sequence range; only the removed records are gone (the
//! batch then spans more offsets than it holds records, which only compacted segments allow,
//! see docs/format.md). The kept records are re-encoded and compressed with the batch's codec.

use std::io::{self, Write};

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{BatchHeader, Compression, RecordBatch, PREFIX_LEN};
use crate::error::SegmentError;
use crate::expand::XERIAL_HEADER;
use crate::records::Record;

/// Input per xerial snappy block, as Kafka's Java producer writes them.
const XERIAL_BLOCK: usize = 32 * 1024;

impl RecordBatch {
    /// The batch with only the records `keep` accepts: the batch itself when it keeps them all,
    /// `None` when it keeps none, else a rewritten batch (see the module docs). At most
    /// `max_expanded` bytes are decompressed.
    pub fn retain_records(
        &self,
        max_expanded: usize,
        mut keep: impl FnMut(&Record) -> bool,
    ) -> Result<Option<RecordBatch>, SegmentError> {
        let mut kept = Vec::new();
        let mut total = 0usize;
        for record in self.records(max_expanded)? {
            let record = record?;
            total += 1;
            if keep(&record) {
                kept.push(record);
            }
        }
        Ok(match kept.len() {
            0 => None,
            n if n == total => Some(self.clone()),
            _ => Some(
                self.rewritten(&kept)
                    .map_err(|e| SegmentError::InvalidBatch {
                        range: 0..self.len() as u64,
                        reason: format!(
                            "batch at offset {}: compressing kept records: {e}",
                            self.base_offset()
                        ),
                    })?,
            ),
        })
    }

    /// This batch's header around `records` (a non-empty subset of its records, in order).
    fn rewritten(&self, records: &[Record]) -> io::Result<RecordBatch> {
        let old = self.header();
        let mut raw = BytesMut::new();
        for record in records {
            encode_record(&mut raw, record, old.base_offset, old.base_timestamp);
        }
        let body = compress(old.compression(), &raw)?;
        let header = BatchHeader {
            batch_length: (BatchHeader::LEN - 12 + body.len()) as i32,
            record_count: records.len() as i32,
            crc: 0,
            ..*old
        };
        let mut bytes = BytesMut::with_capacity(BatchHeader::LEN + body.len());
        bytes.put_i64(header.base_offset);
        bytes.put_i32(header.batch_length);
        bytes.put_i32(header.partition_leader_epoch);
        bytes.put_i8(header.magic);
        bytes.put_u32(0);
        bytes.put_i16(header.attributes);
        bytes.put_i32(header.last_offset_delta);
        bytes.put_i64(header.base_timestamp);
        bytes.put_i64(header.max_timestamp);
        bytes.put_i64(header.producer_id);
        bytes.put_i16(header.producer_epoch);
        bytes.put_i32(header.base_sequence);
        bytes.put_i32(header.record_count);
        bytes.extend_from_slice(&body);
        let crc = crate::crc32c(&bytes[PREFIX_LEN..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(RecordBatch::from_parts(
            BatchHeader { crc, ..header },
            Bytes::from(bytes),
        ))
    }
}

/// `raw` record bytes compressed as `codec` writes them in Kafka batches.
fn compress(codec: Compression, raw: &[u8]) -> io::Result<Vec<u8>> {
    match codec {
        Compression::None => Ok(raw.to_vec()),
        Compression::Gzip => {
            let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            out.write_all(raw)?;
            out.finish()
        }
        Compression::Snappy => {
            let mut out = XERIAL_HEADER.to_vec();
            let mut encoder = snap::raw::Encoder::new();
            for block in raw.chunks(XERIAL_BLOCK) {
                let compressed = encoder.compress_vec(block).map_err(io::Error::other)?;
                out.extend_from_slice(&(compressed.len() as i32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            // Independent blocks: Kafka's reader (KafkaLZ4BlockInputStream) decodes each block
            // alone, so a frame whose blocks refer back to earlier ones breaks Java consumers.
            let mut out = lz4::EncoderBuilder::new()
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())?;
            out.write_all(raw)?;
            let (out, result) = out.finish();
            result.map(|()| out)
        }
        Compression::Zstd => zstd::stream::encode_all(raw, 3),
    }
}

/// Appends one record in Kafka's v2 record encoding.
fn encode_record(out: &mut BytesMut, record: &Record, base_offset: i64, base_timestamp: i64) {
    let mut body = BytesMut::new();
    body.put_i8(0); // record attributes: unused in v2
    put_varlong(&mut body, record.timestamp.wrapping_sub(base_timestamp));
    put_varlong(&mut body, record.offset - base_offset);
    put_nullable(&mut body, record.key.as_deref());
    put_nullable(&mut body, record.value.as_deref());
    put_varlong(&mut body, record.headers.len() as i64);
    for (key, value) in &record.headers {
        put_nullable(&mut body, Some(key));
        put_nullable(&mut body, value.as_deref());
    }
    put_varlong(out, body.len() as i64);
    out.extend_from_slice(&body);
}

/// A length-prefixed byte string, -1 for null.
fn put_nullable(out: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varlong(out, -1),
    }
}

/// A zig-zag varint (Kafka's `writeVarint` / `writeVarlong` agree for 32-bit values).
fn put_varlong(out: &mut BytesMut, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}
