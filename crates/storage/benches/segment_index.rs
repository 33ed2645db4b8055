//! SegmentIndex: lookup latency at 1 000, 100 000 and 1 000 000 indexed segments, and heap bytes
//! per indexed segment (printed before the latency benches, measured with a counting allocator).
//!
//! `cargo bench -p streamhouse-storage --bench segment_index -- --warm-up-time 1 --measurement-time 3`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{RngExt, SeedableRng};
use streamhouse_metadata::{now_ms, SegmentInfo, SqliteMetadataStore};
use streamhouse_storage::{IndexedSegment, SegmentIndex, SegmentIndexConfig};

/// Counts live heap bytes, so index memory can be measured directly.
struct CountingAllocator;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const RECORDS_PER_SEGMENT: i64 = 1000;

/// A segment as the writer commits it, with a realistic object key (topic UUID, 20-digit base).
fn segment(n: i64) -> SegmentInfo {
    let base_offset = n * RECORDS_PER_SEGMENT;
    SegmentInfo {
        topic: "events".into(),
        partition: 3,
        base_offset,
        last_offset: base_offset + RECORDS_PER_SEGMENT - 1,
        record_count: RECORDS_PER_SEGMENT,
        size_bytes: 8 << 20,
        object_offset: 0,
        object_size: 8 << 20,
        object_key: format!(
            "topics/5f0c7d1e-9a4b-4c2e-8f3d-2b6a1e9c7d40/3/{base_offset:020}-7.seg"
        ),
        min_timestamp_ms: n * 60_000,
        max_timestamp_ms: n * 60_000 + 59_999,
        created_at_ms: now_ms(),
    }
}

/// An index over `segments` segments, filled the way the writer fills it.
fn build_index(runtime: &tokio::runtime::Runtime, segments: i64) -> SegmentIndex {
    let metadata = Arc::new(runtime.block_on(SqliteMetadataStore::in_memory()).unwrap());
    // Never stale during a run: the metadata store is empty, the index is filled by insert().
    let config = SegmentIndexConfig {
        max_segments: segments as usize,
        refresh_interval: std::time::Duration::from_secs(3600),
        ..SegmentIndexConfig::default()
    };
    let index = SegmentIndex::new("events", 3, metadata, config);
    for n in 0..segments {
        index.insert(&segment(n));
    }
    index
}

/// Heap bytes the index holds per segment: live bytes after filling it minus before, over the
/// count. The `SegmentInfo`s passed to `insert` are dropped before measuring.
fn report_memory_per_segment(runtime: &tokio::runtime::Runtime) {
    const SEGMENTS: i64 = 1_000_000;
    let metadata = Arc::new(runtime.block_on(SqliteMetadataStore::in_memory()).unwrap());
    let config = SegmentIndexConfig {
        max_segments: SEGMENTS as usize,
        ..SegmentIndexConfig::default()
    };
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let index = SegmentIndex::new("events", 3, metadata, config);
    for n in 0..SEGMENTS {
        index.insert(&segment(n));
    }
    let bytes = LIVE_BYTES.load(Ordering::Relaxed) - before;
    let key_len = segment(0).object_key.len();
    println!(
        "segment_index memory: {} segments, {:.1} MiB, {:.1} bytes/segment (object key {key_len} bytes)",
        index.len(),
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / SEGMENTS as f64,
    );
}

fn lookup_latency(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    report_memory_per_segment(&runtime);
    let mut group = c.benchmark_group("segment_index_lookup");
    group.throughput(Throughput::Elements(1));
    for segments in [1_000i64, 100_000, 1_000_000] {
        let index = build_index(&runtime, segments);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let end = segments * RECORDS_PER_SEGMENT;
        group.bench_with_input(BenchmarkId::new("cached", segments), &index, |b, index| {
            b.iter(|| {
                let offset = rng.random_range(0..end);
                black_box(index.lookup_cached(black_box(offset)))
            })
        });
        group.bench_with_input(
            BenchmarkId::new("async_hit", segments),
            &index,
            |b, index| {
                b.iter(|| {
                    let offset = rng.random_range(0..end);
                    black_box(futures::executor::block_on(index.lookup(offset)).unwrap())
                })
            },
        );
        // Baseline measured in the same run: the seed design's `BTreeMap` from base offset to
        // segment, with the same entries and the same floor query.
        let btree: std::collections::BTreeMap<i64, IndexedSegment> = (0..segments)
            .map(|n| {
                let info = segment(n);
                (info.base_offset, IndexedSegment::from(&info))
            })
            .collect();
        group.bench_with_input(
            BenchmarkId::new("btreemap_baseline", segments),
            &btree,
            |b, btree| {
                b.iter(|| {
                    let offset = rng.random_range(0..end);
                    black_box(
                        btree
                            .range(..=black_box(offset))
                            .next_back()
                            .filter(|(_, s)| s.last_offset >= offset)
                            .map(|(_, s)| s.clone()),
                    )
                })
            },
        );
        println!(
            "segment_index {segments} segments: {} metadata queries during the benchmark",
            index.metadata_queries()
        );
    }
    group.finish();
}

criterion_group!(benches, lookup_latency);

criterion_main!(benches);
