//! Latency of the metadata calls on the produce and fetch paths.
//!
//! `cargo bench -p streamhouse-metadata --bench metadata_ops`

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use streamhouse_metadata::prelude::*;
use streamhouse_metadata::{
    now_ms, CacheConfig, CachedMetadataStore, MetadataStore, NewTopic, SegmentInfo,
    SqliteMetadataStore, TopicConfig,
};
use tokio::runtime::Runtime;

const RECORDS_PER_SEGMENT: i64 = 1_000;

async fn topic(store: &dyn MetadataStore, name: &str) {
    let topic = NewTopic {
        name: name.into(),
        partitions: 1,
        config: TopicConfig::default(),
    };
    store.create_topic(topic).await.unwrap();
}

/// Commits the next segment of partition 0, as a partition writer does on every roll.
async fn commit_next(store: &dyn MetadataStore, topic: &str, next: &AtomicI64) {
    let base = next.fetch_add(RECORDS_PER_SEGMENT, Ordering::Relaxed);
    let segment = SegmentInfo {
        topic: topic.into(),
        partition: 0,
        base_offset: base,
        last_offset: base + RECORDS_PER_SEGMENT - 1,
        record_count: RECORDS_PER_SEGMENT,
        size_bytes: 1 << 20,
        object_offset: 0,
        object_size: 1 << 20,
        object_key: format!("{topic}/0/{base:020}.seg"),
        min_timestamp_ms: 0,
        max_timestamp_ms: 0,
        created_at_ms: now_ms(),
    };
    store.commit_segment(&segment, None).await.unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file: Arc<dyn MetadataStore> = Arc::new(
        rt.block_on(SqliteMetadataStore::open(&dir.path().join("bench.db")))
            .unwrap(),
    );
    let cached = CachedMetadataStore::new(file.clone(), CacheConfig::default());
    rt.block_on(topic(file.as_ref(), "bench"));
    let next = AtomicI64::new(0);

    let mut group = c.benchmark_group("sqlite_file");
    group.sample_size(30);
    group.bench_function("commit_segment_synchronous_full", |b| {
        b.to_async(&rt)
            .iter(|| commit_next(file.as_ref(), "bench", &next))
    });
    group.bench_function("get_partition", |b| {
        b.to_async(&rt)
            .iter(|| async { file.get_partition("bench", 0).await.unwrap() })
    });
    group.bench_function("get_partition_cached", |b| {
        b.to_async(&rt)
            .iter(|| async { cached.get_partition("bench", 0).await.unwrap() })
    });
    group.bench_function("list_segments_tail", |b| {
        b.to_async(&rt).iter(|| async {
            let hw = file.get_partition("bench", 0).await.unwrap().high_watermark;
            file.list_segments("bench", 0, hw - 1).await.unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
