//! Builds real Kafka batches with kafka-protocol's encoder, and segments from them.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression as KafkaCompression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use streamhouse_segment::{EncodedSegment, RecordBatch, SegmentBuilder};

/// `count` records at offsets `0..count` with `value_len`-byte values and timestamps from `ts`.
pub fn records(count: usize, value_len: usize, ts: i64) -> Vec<Record> {
    (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: ts + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'a' + (i % 26) as u8; value_len])),
            headers: Default::default(),
        })
        .collect()
}

/// Encodes `records` as RecordBatch v2 bytes.
pub fn encode(records: &[Record], compression: KafkaCompression) -> Bytes {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, records, &options).expect("encode record batch");
    buf.freeze()
}

/// One uncompressed batch at base offset 0.
pub fn batch(count: usize, value_len: usize, ts: i64) -> RecordBatch {
    let bytes = encode(&records(count, value_len, ts), KafkaCompression::None);
    let mut batches = RecordBatch::parse_all(bytes).expect("valid batch");
    assert_eq!(batches.len(), 1);
    batches.pop().expect("one batch")
}

/// Shape of one batch in generated segments: record count, value length, first timestamp.
pub type BatchSpec = (usize, usize, i64);

/// Builds a segment at `base_offset` from `specs`; returns it with the batches as pushed.
pub fn segment(
    base_offset: i64,
    specs: &[BatchSpec],
    interval: usize,
) -> (EncodedSegment, Vec<RecordBatch>) {
    let mut builder = SegmentBuilder::with_index_interval(base_offset, interval);
    let batches: Vec<RecordBatch> = specs
        .iter()
        .map(|&(count, value_len, ts)| {
            let batch = batch(count, value_len, ts).with_base_offset(builder.next_offset());
            builder.push(&batch).expect("push consecutive batch");
            batch
        })
        .collect();
    (builder.finish(), batches)
}

/// Absolute position of every batch in a segment built by [`segment`].
pub fn positions(segment: &EncodedSegment, batches: &[RecordBatch]) -> Vec<u64> {
    batches
        .iter()
        .scan(segment.footer.data_start, |pos, b| {
            let at = *pos;
            *pos += b.len() as u64;
            Some(at)
        })
        .collect()
}
