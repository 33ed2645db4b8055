//! Segment encode/decode throughput on ~16 MiB segments of 1 KiB records.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use streamhouse_segment::{decode_segment, read_footer, BatchCursor, RecordBatch, SegmentBuilder};

const SEGMENT_BYTES: usize = 16 << 20;
const RECORD_BYTES: usize = 1024;

/// One uncompressed producer batch of `count` 1 KiB records.
fn producer_batch(count: usize) -> RecordBatch {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: 7,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::from(vec![b'x'; RECORD_BYTES])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
    RecordBatch::parse_all(buf.freeze())
        .expect("valid")
        .remove(0)
}

/// Batches with consecutive offsets filling about [`SEGMENT_BYTES`].
fn batches(records_per_batch: usize) -> Vec<RecordBatch> {
    let template = producer_batch(records_per_batch);
    let count = SEGMENT_BYTES / template.len();
    (0..count)
        .map(|i| template.with_base_offset((i * records_per_batch) as i64))
        .collect()
}

fn encode(batches: &[RecordBatch]) -> Bytes {
    let mut builder = SegmentBuilder::new(0);
    for batch in batches {
        builder.push(batch).expect("consecutive");
    }
    builder.finish().to_bytes()
}

fn bench_shape(c: &mut Criterion, name: &str, records_per_batch: usize) {
    let batches = batches(records_per_batch);
    let object = encode(&batches);
    let footer = read_footer(&object, object.len() as u64).expect("footer");
    let data = object.slice(footer.data_start as usize..footer.data_end as usize);

    let mut group = c.benchmark_group(format!("segment_codec/{name}"));
    group.throughput(Throughput::Bytes(object.len() as u64));
    group.bench_function("encode", |b| b.iter(|| encode(black_box(&batches))));
    group.bench_function("decode_segment", |b| {
        b.iter(|| decode_segment(black_box(object.clone())).expect("decodes"))
    });
    group.bench_function("cursor_with_footer", |b| {
        b.iter(|| {
            let cursor = BatchCursor::with_footer(data.clone(), footer.data_start, &footer, 0);
            cursor.map(|r| r.expect("valid").len()).sum::<usize>()
        })
    });
    group.bench_function("cursor_plain", |b| {
        b.iter(|| {
            let cursor = BatchCursor::new(data.clone(), footer.data_start, footer.data_end, 0);
            cursor.map(|r| r.expect("valid").len()).sum::<usize>()
        })
    });
    group.finish();
}

fn segment_codec(c: &mut Criterion) {
    bench_shape(c, "1x1KiB_batches", 1);
    bench_shape(c, "16x1KiB_batches", 16);
}

criterion_group!(benches, segment_codec);
criterion_main!(benches);
