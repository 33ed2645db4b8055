//! Synthetic batches for unit tests: a valid v2 header and CRC around opaque record bytes.

use bytes::Bytes;

use crate::RecordBatch;

/// A batch of `records` records at `base_offset` with `payload` opaque record bytes.
pub(crate) fn batch(
    base_offset: i64,
    records: i32,
    payload: usize,
    max_timestamp: i64,
) -> RecordBatch {
    let mut buf = Vec::with_capacity(61 + payload);
    buf.extend_from_slice(&base_offset.to_be_bytes());
    buf.extend_from_slice(&((49 + payload) as i32).to_be_bytes());
    buf.extend_from_slice(&(-1i32).to_be_bytes());
    buf.push(2);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&0i16.to_be_bytes());
    buf.extend_from_slice(&(records - 1).to_be_bytes());
    buf.extend_from_slice(&(max_timestamp - 1).to_be_bytes());
    buf.extend_from_slice(&max_timestamp.to_be_bytes());
    buf.extend_from_slice(&(-1i64).to_be_bytes());
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf.extend_from_slice(&(-1i32).to_be_bytes());
    buf.extend_from_slice(&records.to_be_bytes());
    buf.resize(61 + payload, 0xab);
    let crc = crate::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    RecordBatch::parse_all(Bytes::from(buf))
        .expect("synthetic batch is valid")
        .remove(0)
}
