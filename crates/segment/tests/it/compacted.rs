//! Compacted segments (format version 2, issue 15): batches rewritten with records removed keep
//! their offsets, segments with gaps round-trip through the verifying reader, and dense (v1)
//! segments still read and refuse gaps.

use bytes::Bytes;
use kafka_protocol::records::Compression as KafkaCompression;
use streamhouse_segment::{
    decode_segment, read_footer, BatchCursor, RecordBatch, SegmentBuilder, COMPACTED_VERSION,
    FORMAT_VERSION,
};

use crate::common::{encode, records};

/// A batch of `count` records (keys `key-0..`) at `base`, compressed with `codec`.
fn batch_at(base: i64, count: usize, codec: KafkaCompression) -> RecordBatch {
    let bytes = encode(&records(count, 8, 1_000), codec);
    RecordBatch::parse_all(bytes).expect("valid batch")[0].with_base_offset(base)
}

fn offsets(batch: &RecordBatch) -> Vec<i64> {
    batch
        .records(1 << 20)
        .expect("records")
        .map(|r| r.expect("record").offset)
        .collect()
}

#[test]
fn retained_records_keep_their_offsets_and_the_batch_its_span() {
    let codecs = [
        KafkaCompression::None,
        KafkaCompression::Gzip,
        KafkaCompression::Snappy,
        KafkaCompression::Lz4,
        KafkaCompression::Zstd,
    ];
    for codec in codecs {
        let batch = batch_at(100, 6, codec);
        let kept = batch
            .retain_records(1 << 20, |r| r.offset % 2 == 1)
            .expect("decodes")
            .expect("some kept");
        assert_eq!(offsets(&kept), [101, 103, 105]);
        assert_eq!((kept.base_offset(), kept.last_offset()), (100, 105));
        assert_eq!(kept.record_count(), 3);
        assert_eq!(kept.header().base_sequence, batch.header().base_sequence);
        // Re-encoded with the batch's own codec, and decoded by kafka-protocol as a client would.
        assert_eq!(kept.header().compression(), batch.header().compression());
        let mut bytes = kept.bytes().clone();
        let decoded = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes)
            .expect("a client decodes the rewritten batch");
        let offsets: Vec<i64> = decoded[0].records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [101, 103, 105], "{codec:?}");
        let values: Vec<_> = kept
            .records(1 << 20)
            .expect("records")
            .map(|r| r.expect("record").key.expect("key"))
            .collect();
        assert_eq!(values, [&b"key-1"[..], b"key-3", b"key-5"]);
    }
}

#[test]
fn retaining_all_or_none_is_the_batch_or_nothing() {
    let batch = batch_at(0, 3, KafkaCompression::None);
    let all = batch.retain_records(1 << 20, |_| true).expect("ok");
    assert_eq!(all.expect("kept").bytes(), batch.bytes());
    assert!(batch
        .retain_records(1 << 20, |_| false)
        .expect("ok")
        .is_none());
}

#[test]
fn compacted_segment_with_gaps_round_trips() {
    let mut builder = SegmentBuilder::compacted(10);
    let first = batch_at(12, 4, KafkaCompression::None)
        .retain_records(1 << 20, |r| r.offset != 13)
        .expect("ok")
        .expect("kept");
    let second = batch_at(30, 2, KafkaCompression::None);
    builder.push(&first).expect("first batch after a gap");
    builder.push(&second).expect("second batch after a gap");
    builder.cover_through(49).expect("removed tail");
    let encoded = builder.finish();
    let (footer, batches) = decode_segment(encoded.to_bytes()).expect("valid v2 segment");
    assert_eq!(footer.version(), COMPACTED_VERSION);
    assert_eq!((footer.base_offset, footer.last_offset), (10, 49));
    assert_eq!(footer.record_count, 5);
    assert_eq!(batches.len(), 2);
    // A reader seeking into a gap gets the next batch.
    let pos = footer.seek(20);
    let data = encoded
        .to_bytes()
        .slice(pos as usize..footer.data_end as usize);
    let mut cursor = BatchCursor::with_footer(data, pos, &footer, 20);
    let next = cursor.next().expect("a batch").expect("verified");
    assert_eq!(next.base_offset(), 30);
}

#[test]
fn an_empty_compacted_segment_covers_its_range() {
    let mut builder = SegmentBuilder::compacted(5);
    builder.cover_through(9).expect("cover");
    let encoded = builder.finish();
    let footer = read_footer(&encoded.to_bytes(), encoded.to_bytes().len() as u64).expect("footer");
    assert_eq!(
        (footer.base_offset, footer.last_offset, footer.record_count),
        (5, 9, 0)
    );
    assert_eq!(footer.seek(7), footer.data_end);
    decode_segment(encoded.to_bytes()).expect("valid");
}

#[test]
fn dense_segments_stay_version_1_and_refuse_gaps() {
    let mut builder = SegmentBuilder::new(0);
    builder
        .push(&batch_at(0, 2, KafkaCompression::None))
        .expect("dense");
    assert!(builder
        .push(&batch_at(5, 1, KafkaCompression::None))
        .is_err());
    assert!(builder.cover_through(10).is_err());
    let encoded = builder.finish();
    assert_eq!(encoded.footer.version(), FORMAT_VERSION);
    assert!(!encoded.footer.allows_gaps());
}

#[test]
fn a_rewritten_batch_is_refused_outside_a_compacted_segment() {
    let kept = batch_at(0, 3, KafkaCompression::None)
        .retain_records(1 << 20, |r| r.offset != 1)
        .expect("ok")
        .expect("kept");
    // Produce parses batches as dense: a batch spanning more offsets than records is invalid.
    let err = RecordBatch::parse_all(Bytes::copy_from_slice(kept.bytes())).expect_err("gap");
    assert!(err.to_string().contains("last offset delta"), "{err}");
}
