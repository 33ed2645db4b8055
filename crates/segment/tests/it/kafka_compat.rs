//! Real producer bytes in every compression: accepted, rewritten, readable by Kafka decoders.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{Compression as KafkaCompression, RecordBatchDecoder};
use streamhouse_segment::{
    decode_segment, BatchHeader, Compression, RecordBatch, SegmentBuilder, SegmentError,
};

use crate::common::{batch, encode, records};

const CODECS: [(KafkaCompression, Compression); 5] = [
    (KafkaCompression::None, Compression::None),
    (KafkaCompression::Gzip, Compression::Gzip),
    (KafkaCompression::Snappy, Compression::Snappy),
    (KafkaCompression::Lz4, Compression::Lz4),
    (KafkaCompression::Zstd, Compression::Zstd),
];

fn decoded_offsets_and_values(bytes: &Bytes) -> Vec<(i64, Option<Bytes>)> {
    let mut buf = bytes.clone();
    RecordBatchDecoder::decode_all(&mut buf)
        .expect("kafka decodes the batches")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| (r.offset, r.value))
        .collect()
}

#[test]
fn parse_all_accepts_every_compression_and_rewrites_offsets() {
    for (kafka, ours) in CODECS {
        let sent = records(10, 100, 1_700_000_000_000);
        let batches = RecordBatch::parse_all(encode(&sent, kafka)).expect("valid producer batch");
        assert_eq!(batches.len(), 1, "{ours:?}");
        let batch = &batches[0];
        assert_eq!(batch.header().compression(), ours);
        assert_eq!(
            (
                batch.base_offset(),
                batch.last_offset(),
                batch.record_count()
            ),
            (0, 9, 10)
        );
        assert_eq!(batch.max_timestamp(), 1_700_000_000_009);

        let moved = batch.with_base_offset(1_000);
        assert_eq!(moved.len(), batch.len());
        assert_eq!(
            moved.bytes()[8..],
            batch.bytes()[8..],
            "only the base offset changes"
        );
        assert_eq!((moved.base_offset(), moved.last_offset()), (1_000, 1_009));
        RecordBatch::parse_all(moved.bytes().clone()).expect("rewritten batch keeps a valid CRC");
        let expected: Vec<_> = sent
            .iter()
            .map(|r| (r.offset + 1_000, r.value.clone()))
            .collect();
        assert_eq!(
            decoded_offsets_and_values(moved.bytes()),
            expected,
            "{ours:?}"
        );
    }
}

#[test]
fn segment_of_every_compression_decodes_with_kafka() {
    let mut builder = SegmentBuilder::new(500);
    for (kafka, _) in CODECS {
        let payload = encode(&records(3, 50, 7), kafka);
        for batch in RecordBatch::parse_all(payload).expect("valid") {
            builder
                .push(&batch.with_base_offset(builder.next_offset()))
                .expect("push");
        }
    }
    let segment = builder.finish();
    let (footer, batches) = decode_segment(segment.to_bytes()).expect("decodes");
    assert_eq!(
        (footer.base_offset, footer.last_offset, footer.record_count),
        (500, 514, 15)
    );
    let all: Bytes = batches
        .iter()
        .flat_map(|b| b.bytes().to_vec())
        .collect::<Vec<_>>()
        .into();
    let offsets: Vec<i64> = decoded_offsets_and_values(&all)
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(offsets, (500..515).collect::<Vec<_>>());
}

#[test]
fn parse_all_splits_concatenated_batches() {
    let mut payload = BytesMut::new();
    payload.extend_from_slice(batch(2, 10, 0).bytes());
    payload.extend_from_slice(batch(5, 10, 0).bytes());
    let batches = RecordBatch::parse_all(payload.freeze()).expect("two batches");
    assert_eq!(
        batches
            .iter()
            .map(RecordBatch::record_count)
            .collect::<Vec<_>>(),
        [2, 5]
    );
    assert!(RecordBatch::parse_all(Bytes::new())
        .expect("empty payload")
        .is_empty());
}

/// A valid batch with `edit` applied to its bytes, then its CRC recomputed.
fn edited(edit: impl Fn(&mut [u8])) -> Bytes {
    let mut bytes = batch(3, 20, 0).bytes().to_vec();
    edit(&mut bytes);
    let crc = streamhouse_segment::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(bytes)
}

fn rejection(payload: Bytes) -> SegmentError {
    RecordBatch::parse_all(payload).expect_err("payload must be rejected")
}

#[test]
fn parse_all_rejects_malformed_batches() {
    let good = batch(3, 20, 0).bytes().clone();

    let err = rejection(edited(|b| b[16] = 1));
    assert!(matches!(err, SegmentError::BadMagic { .. }), "{err}");
    assert_eq!(err.byte_range(), Some(16..17));

    let mut bad_crc = good.to_vec();
    *bad_crc.last_mut().unwrap() ^= 0x40;
    let err = rejection(bad_crc.into());
    assert!(
        matches!(err, SegmentError::ChecksumMismatch { what: "batch", .. }),
        "{err}"
    );
    assert_eq!(err.byte_range(), Some(0..good.len() as u64));
    assert!(
        err.to_string()
            .starts_with("batch CRC mismatch at bytes 0.."),
        "{err}"
    );

    let mut trailing = BytesMut::from(&good[..]);
    trailing.put_slice(&[0, 0, 0, 0, 7]);
    let err = rejection(trailing.freeze());
    assert!(matches!(err, SegmentError::Truncated { .. }), "{err}");
    assert_eq!(
        err.byte_range(),
        Some(good.len() as u64..good.len() as u64 + 5)
    );

    let err = rejection(good.slice(..good.len() - 1));
    assert!(matches!(err, SegmentError::Truncated { .. }), "{err}");

    let err = rejection(edited(|b| b[57..61].copy_from_slice(&4i32.to_be_bytes())));
    assert!(
        err.to_string()
            .contains("last offset delta 2 does not match record count 4"),
        "{err}"
    );
    let err = rejection(edited(|b| b[57..61].copy_from_slice(&0i32.to_be_bytes())));
    assert!(err.to_string().contains("record count 0"), "{err}");
    let err = rejection(edited(|b| b[22] |= 0x07));
    assert!(
        err.to_string().contains("unknown compression codec 7"),
        "{err}"
    );
    let err = rejection(edited(|b| b[8..12].copy_from_slice(&20i32.to_be_bytes())));
    assert!(
        matches!(
            err,
            SegmentError::InvalidBatch { .. } | SegmentError::Truncated { .. }
        ),
        "{err}"
    );
}

#[test]
fn header_parse_reads_fields_and_flags() {
    let bytes = edited(|b| b[21..23].copy_from_slice(&0x0033i16.to_be_bytes()));
    let header = BatchHeader::parse(&bytes).expect("header");
    assert_eq!(header.magic, 2);
    assert_eq!(header.total_len(), bytes.len());
    assert_eq!(header.compression(), Compression::Lz4);
    assert!(header.is_transactional() && header.is_control());
    assert_eq!(
        (
            header.record_count,
            header.last_offset_delta,
            header.last_offset()
        ),
        (3, 2, 2)
    );
    let err = BatchHeader::parse(&bytes[..60]).expect_err("short header");
    assert_eq!(err.byte_range(), Some(0..61));
}
