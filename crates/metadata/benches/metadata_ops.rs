//! Latency of the metadata calls on the produce and fetch paths.
//!
//! `cargo bench -p streamhouse-metadata --bench metadata_ops`

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use streamhouse_metadata::prelude::*;
use streamhouse_metadata::{
    now_ms, CacheConfig, CachedMetadataStore, CommitOutcome, LeaseFence, MetadataStore, NewTopic,
    ProducerSnapshot, SegmentCommit, SegmentInfo, SqliteMetadataStore, TopicConfig,
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

/// Commits the next segment of each of `partitions` partitions in one group commit, each with
/// one producer snapshot and a lease fence, as a flush cycle of one agent does.
async fn group_commit_next(
    store: &dyn MetadataStore,
    topic: &str,
    partitions: u32,
    next: &AtomicI64,
) {
    let base = next.fetch_add(RECORDS_PER_SEGMENT, Ordering::Relaxed);
    let key = format!("wal/{topic}-{base:020}.obj");
    let commits: Vec<SegmentCommit> = (0..partitions)
        .map(|partition| SegmentCommit {
            segment: SegmentInfo {
                topic: topic.into(),
                partition,
                base_offset: base,
                last_offset: base + RECORDS_PER_SEGMENT - 1,
                record_count: RECORDS_PER_SEGMENT,
                size_bytes: 1 << 16,
                object_offset: u64::from(partition) << 16,
                object_size: u64::from(partitions) << 16,
                object_key: key.clone(),
                min_timestamp_ms: 0,
                max_timestamp_ms: 0,
                created_at_ms: now_ms(),
            },
            producers: vec![ProducerSnapshot {
                producer_id: i64::from(partition),
                last_offset: base + RECORDS_PER_SEGMENT - 1,
                updated_at_ms: now_ms(),
                state: vec![7; 40],
            }],
            fence: Some(LeaseFence {
                agent_id: "bench".into(),
                epoch: 1,
            }),
            markers: Vec::new(),
        })
        .collect();
    let outcomes = store.commit_segments(&commits).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == CommitOutcome::Committed));
}

/// A topic of `partitions` partitions whose leases `bench` holds at epoch 1 for a day.
async fn leased_topic(store: &dyn MetadataStore, name: &str, partitions: u32) {
    let topic = NewTopic {
        name: name.into(),
        partitions,
        config: TopicConfig::default(),
    };
    store.create_topic(topic).await.unwrap();
    for partition in 0..partitions {
        let lease = store
            .acquire_lease(name, partition, "bench", 86_400_000)
            .await
            .unwrap();
        assert_eq!(lease.map(|l| l.epoch), Some(1));
    }
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
    for partitions in [6, 100] {
        let name = format!("group{partitions}");
        rt.block_on(leased_topic(file.as_ref(), &name, partitions));
        let next = AtomicI64::new(0);
        group.bench_function(format!("group_commit_{partitions}_partitions"), |b| {
            b.to_async(&rt)
                .iter(|| group_commit_next(file.as_ref(), &name, partitions, &next))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
