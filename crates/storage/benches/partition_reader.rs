//! PartitionReader: sequential read throughput of a 1 000 000-record partition from the local
//! object store (100-byte values, 1000-record batches, segments rolled at 4 MiB), cold (empty
//! segment cache every pass: every byte read from disk) and warm (cache kept), and the number of
//! metadata queries one full sequential read costs (printed before the benches).
//!
//! `cargo bench -p streamhouse-storage --bench partition_reader -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use streamhouse_metadata::prelude::*;
use streamhouse_metadata::{
    CallHook, HookedMetadataStore, MetadataStore, NewTopic, Result as MetaResult,
    SqliteMetadataStore, TopicConfig,
};
use streamhouse_segment::RecordBatch;
use streamhouse_storage::{
    Budget, PartitionReader, PartitionStorage, PartitionWriter, SegmentCache, SegmentCacheConfig,
    SegmentIndex, SegmentIndexConfig, WriterConfig,
};
use tokio::runtime::Runtime;

const TOPIC: &str = "bench";
const RECORDS: usize = 1_000_000;
const RECORDS_PER_BATCH: usize = 1000;
const VALUE_LEN: usize = 100;
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
const FETCH_MAX_BYTES: usize = 1024 * 1024;

/// Counts every call made to the metadata store it wraps.
#[derive(Default)]
struct CountCalls(AtomicU64);

#[async_trait]
impl CallHook for CountCalls {
    async fn before(&self, _method: &'static str) -> MetaResult<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One 1000-record batch of 100-byte values, as a client would produce it.
fn batch() -> RecordBatch {
    let records: Vec<Record> = (0..RECORDS_PER_BATCH)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1 + i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::from(vec![b'x'; VALUE_LEN])),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    RecordBatch::parse_all(buf.freeze()).unwrap().remove(0)
}

/// The written partition and what readers need to read it.
struct Fixture {
    _dir: tempfile::TempDir,
    metadata: Arc<HookedMetadataStore<CountCalls>>,
    writer: PartitionWriter,
    /// The writer's storage: its index and cache.
    writer_storage: PartitionStorage,
    total_bytes: u64,
}

impl Fixture {
    fn index(&self) -> Arc<SegmentIndex> {
        let metadata: Arc<dyn MetadataStore> = self.metadata.clone();
        Arc::new(SegmentIndex::new(
            TOPIC,
            0,
            metadata,
            SegmentIndexConfig::default(),
        ))
    }

    /// A reader on another agent: own index, empty cache.
    fn cold_reader(&self) -> PartitionReader {
        PartitionReader::new(PartitionStorage {
            index: self.index(),
            cache: Arc::new(SegmentCache::new(SegmentCacheConfig::default())),
            producer_budget: Budget::new(usize::MAX),
            ..self.writer_storage.clone()
        })
    }

    /// A reader on the writer's agent (shared index and cache, HW from the writer).
    fn local_reader(&self) -> PartitionReader {
        PartitionReader::new(self.writer_storage.clone()).with_writer(&self.writer)
    }

    fn queries(&self) -> u64 {
        self.metadata.hook().0.load(Ordering::Relaxed)
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let sqlite = SqliteMetadataStore::in_memory().await.unwrap();
    let metadata = Arc::new(HookedMetadataStore::new(
        Arc::new(sqlite),
        CountCalls::default(),
    ));
    let topic = metadata
        .create_topic(NewTopic {
            name: TOPIC.into(),
            partitions: 1,
            config: TopicConfig::default(),
        })
        .await
        .unwrap();
    let dyn_metadata: Arc<dyn MetadataStore> = metadata.clone();
    let writer_index = Arc::new(SegmentIndex::new(
        TOPIC,
        0,
        dyn_metadata.clone(),
        SegmentIndexConfig::default(),
    ));
    let config = WriterConfig {
        // Rolled explicitly below, so segment boundaries do not depend on task scheduling.
        segment_max_bytes: u64::MAX,
        ..WriterConfig::default()
    };
    let writer_storage = PartitionStorage {
        topic,
        partition: 0,
        store,
        metadata: dyn_metadata,
        index: writer_index,
        cache: Arc::new(SegmentCache::new(SegmentCacheConfig::default())),
        producer_budget: Budget::new(usize::MAX),
    };
    let writer = PartitionWriter::open(writer_storage.clone(), config, None)
        .await
        .unwrap();
    let batch = batch();
    let mut total_bytes = 0;
    for _ in 0..RECORDS / RECORDS_PER_BATCH {
        let _ = writer.append(vec![batch.clone()]).unwrap();
        total_bytes += batch.len() as u64;
        if writer.buffered_bytes() as u64 >= SEGMENT_BYTES {
            writer.flush().await.unwrap();
        }
    }
    writer.flush().await.unwrap();
    assert_eq!(writer.high_watermark(), RECORDS as i64);
    Fixture {
        _dir: dir,
        metadata,
        writer,
        writer_storage,
        total_bytes,
    }
}

/// Reads the whole partition from offset 0; returns the records read.
async fn read_all(reader: &PartitionReader) -> usize {
    let mut next = 0;
    let mut records = 0;
    loop {
        let read = reader.read(next, FETCH_MAX_BYTES).await.unwrap();
        if read.batches.is_empty() {
            return records;
        }
        records += read
            .batches
            .iter()
            .map(|b| b.record_count() as usize)
            .sum::<usize>();
        next = read.next_offset;
        black_box(&read);
    }
}

fn report_metadata_queries(runtime: &Runtime, fx: &Fixture) {
    for (name, reader) in [
        ("cross-agent (cold)", fx.cold_reader()),
        ("same-agent (writer)", fx.local_reader()),
    ] {
        let before = fx.queries();
        let start = std::time::Instant::now();
        let records = runtime.block_on(read_all(&reader));
        assert_eq!(records, RECORDS);
        println!(
            "{name} reader: {} metadata queries for one sequential read of {records} records ({:?})",
            fx.queries() - before,
            start.elapsed()
        );
    }
}

fn bench(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let fx = runtime.block_on(fixture());
    let segments = runtime
        .block_on(fx.metadata.list_segments(TOPIC, 0, 0))
        .unwrap()
        .len();
    println!(
        "partition: {RECORDS} records, {} MB of batches, {segments} segments",
        fx.total_bytes / 1_000_000
    );
    report_metadata_queries(&runtime, &fx);

    for (unit, throughput) in [
        ("bytes", Throughput::Bytes(fx.total_bytes)),
        ("records", Throughput::Elements(RECORDS as u64)),
    ] {
        let mut group = c.benchmark_group(format!("partition_reader_{unit}"));
        group.sample_size(10);
        group.throughput(throughput);
        group.bench_function("sequential_cold_local_fs", |b| {
            b.to_async(&runtime).iter(|| async {
                let reader = fx.cold_reader();
                assert_eq!(read_all(&reader).await, RECORDS);
            })
        });
        let warm = fx.cold_reader();
        group.bench_function("sequential_warm_cache", |b| {
            b.to_async(&runtime)
                .iter(|| async { assert_eq!(read_all(&warm).await, RECORDS) })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
