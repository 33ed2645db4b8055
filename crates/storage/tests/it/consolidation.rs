//! Consolidation of shared-object slices: the data reads the same after, each shared object is
//! read once per round, the shared objects are deleted once no partition references them, and a
//! merged segment is never merged again.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use streamhouse_metadata::{now_ms, MetadataStore, SqliteMetadataStore};
use streamhouse_storage::{
    Budget, ConsolidationConfig, ConsolidationTarget, Consolidator, FlushContext, FlushCycle,
    ObjectDeleter, PartitionReader, PartitionStorage, PartitionWriter, SegmentCache,
    SegmentCacheConfig, SegmentIndex, SegmentIndexConfig,
};

use crate::support::{batch, open_partitions};

const TOPIC: &str = "consolidate";

struct Setup {
    store: Arc<dyn ObjectStore>,
    metadata: Arc<dyn MetadataStore>,
    storages: Vec<PartitionStorage>,
    writers: Vec<PartitionWriter>,
    context: FlushContext,
}

async fn setup(partitions: u32) -> Setup {
    let metadata: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let p = open_partitions(metadata.clone(), store.clone(), TOPIC, partitions).await;
    Setup {
        store,
        metadata,
        storages: p.storages,
        writers: p.writers,
        context: p.context,
    }
}

async fn keys(store: &dyn ObjectStore) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// Every partition's batches, read cold (fresh index and cache), as (base offset, timestamp).
async fn read_all(s: &Setup) -> Vec<Vec<(i64, i64)>> {
    let mut all = Vec::new();
    for storage in &s.storages {
        let cold = PartitionStorage {
            index: Arc::new(SegmentIndex::new(
                TOPIC,
                storage.partition,
                s.metadata.clone(),
                SegmentIndexConfig::default(),
            )),
            cache: Arc::new(SegmentCache::new(SegmentCacheConfig::default())),
            producer_budget: Budget::new(usize::MAX),
            ..storage.clone()
        };
        let reader = PartitionReader::new(cold);
        let (mut offset, mut out) = (0, Vec::new());
        loop {
            let read = reader.read(offset, 1 << 20).await.unwrap();
            if read.batches.is_empty() {
                break;
            }
            out.extend(
                read.batches
                    .iter()
                    .map(|b| (b.base_offset(), b.header().base_timestamp)),
            );
            offset = read.next_offset;
        }
        all.push(out);
    }
    all
}

/// One batch per partition per round (timestamp = round), each round one flush cycle.
async fn flush_rounds(s: &Setup, rounds: i64) {
    for round in 0..rounds {
        for w in &s.writers {
            let _ = w.append(vec![batch(2, 64, round, None)]).unwrap();
        }
        let report = FlushCycle::seal(&s.context, &s.writers).run().await;
        assert!(report.results.iter().all(|(_, r)| r.is_ok()));
    }
}

/// Consolidates every slice at once, into shared objects only.
fn merge_everything() -> ConsolidationConfig {
    ConsolidationConfig {
        min_age: Duration::ZERO,
        own_object_bytes: u64::MAX,
        ..Default::default()
    }
}

fn targets(s: &Setup) -> Vec<ConsolidationTarget> {
    s.storages
        .iter()
        .map(|storage| ConsolidationTarget {
            storage: storage.clone(),
            fence: None,
        })
        .collect()
}

#[tokio::test]
async fn slices_merge_into_one_segment_per_partition_and_shared_objects_go() {
    let s = setup(5).await;
    flush_rounds(&s, 8).await;
    // One object per flush cycle, whatever the partition count.
    assert_eq!(keys(&*s.store).await.len(), 8);
    let before = read_all(&s).await;

    let config = merge_everything();
    let consolidator =
        Consolidator::new(s.store.clone(), s.metadata.clone(), config, Duration::ZERO);
    let report = consolidator.run_once(&targets(&s), true).await.unwrap();
    assert_eq!((report.objects_read, report.objects_written), (8, 1));
    assert_eq!(
        report.objects_from_cache, 8,
        "the flushes' write-through served every read: no GET"
    );
    assert_eq!((report.partitions, report.slices_replaced), (5, 40));
    for storage in &s.storages {
        let segments = s
            .metadata
            .list_segments(TOPIC, storage.partition, 0)
            .await
            .unwrap();
        assert_eq!(segments.len(), 1, "one merged segment");
        assert!(segments[0].object_key.starts_with("data/"));
    }
    assert_eq!(
        read_all(&s).await,
        before,
        "the same batches at the same offsets"
    );

    // The flushes' objects are unreferenced now; the deleter removes them all, once.
    let deleter = ObjectDeleter::new(s.store.clone(), s.metadata.clone());
    assert_eq!(deleter.delete_due(now_ms()).await.unwrap(), 8);
    let left = keys(&*s.store).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("data/"));
    assert_eq!(read_all(&s).await, before);

    // Merged data is never merged again; with nothing new there is no round.
    let again = consolidator.run_once(&targets(&s), true).await.unwrap();
    assert_eq!((again.backlog_slices, again.objects_written), (0, 0));
}

#[tokio::test]
async fn a_shared_object_stays_while_another_partition_still_uses_it() {
    let s = setup(2).await;
    for w in &s.writers {
        let _ = w.append(vec![batch(3, 64, 1, None)]).unwrap();
    }
    let _ = FlushCycle::seal(&s.context, &s.writers).run().await;
    let shared = keys(&*s.store).await;
    let config = ConsolidationConfig {
        min_age: Duration::ZERO,
        ..Default::default()
    };
    let consolidator =
        Consolidator::new(s.store.clone(), s.metadata.clone(), config, Duration::ZERO);
    // Only partition 0 is led here.
    let report = consolidator
        .run_once(&targets(&s)[..1], true)
        .await
        .unwrap();
    assert_eq!(report.partitions, 1);
    let deleter = ObjectDeleter::new(s.store.clone(), s.metadata.clone());
    assert_eq!(deleter.delete_due(now_ms()).await.unwrap(), 0);
    assert!(
        keys(&*s.store).await.contains(&shared[0]),
        "partition 1 still reads it"
    );
    consolidator
        .run_once(&targets(&s)[1..], true)
        .await
        .unwrap();
    assert_eq!(deleter.delete_due(now_ms()).await.unwrap(), 1);
    assert!(!keys(&*s.store).await.contains(&shared[0]));
}

#[tokio::test]
async fn large_merged_segments_get_objects_of_their_own_and_rounds_are_bounded() {
    let s = setup(2).await;
    for round in 0..4 {
        let _ = s.writers[0]
            .append(vec![batch(50, 1000, round, None)])
            .unwrap();
        let _ = s.writers[1]
            .append(vec![batch(1, 10, round, None)])
            .unwrap();
        let _ = FlushCycle::seal(&s.context, &s.writers).run().await;
    }
    let before = read_all(&s).await;
    let config = ConsolidationConfig {
        min_age: Duration::ZERO,
        own_object_bytes: 100_000,
        // Two rounds: the first takes the two oldest flushes' slices only.
        max_round_bytes: 110_000,
        ..Default::default()
    };
    let consolidator =
        Consolidator::new(s.store.clone(), s.metadata.clone(), config, Duration::ZERO);
    let first = consolidator.run_once(&targets(&s), true).await.unwrap();
    assert!(first.slices_replaced < 8, "{first:?}");
    for _ in 0..10 {
        if consolidator
            .run_once(&targets(&s), true)
            .await
            .unwrap()
            .partitions
            == 0
        {
            break;
        }
    }
    let big = s.metadata.list_segments(TOPIC, 0, 0).await.unwrap();
    assert!(
        big.iter().all(|seg| seg.object_key.starts_with("topics/")),
        "{big:?}"
    );
    assert_eq!(read_all(&s).await, before);
}

/// `segment.ms` bounds the append-time span of a merged segment: slices appended further apart
/// go to separate segments (over several rounds), each spanning less than the setting.
#[tokio::test]
async fn merged_segments_span_at_most_segment_ms_of_append_time() {
    let mut s = setup(1).await;
    let segment_ms = 60;
    for storage in &mut s.storages {
        storage.topic.config.segment_ms = segment_ms;
    }
    for round in 0..8 {
        let _ = s.writers[0]
            .append(vec![batch(2, 64, round, None)])
            .unwrap();
        let report = FlushCycle::seal(&s.context, &s.writers).run().await;
        assert!(report.results.iter().all(|(_, r)| r.is_ok()));
        // Real time, not paused: `created_at_ms` is the wall clock, stored with each slice.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let slices = s.metadata.list_segments(TOPIC, 0, 0).await.unwrap();
    let span = slices.last().unwrap().created_at_ms - slices[0].created_at_ms;
    assert!(
        span >= 2 * segment_ms as i64,
        "slices appended over {span} ms"
    );
    let before = read_all(&s).await;

    let config = merge_everything();
    let consolidator =
        Consolidator::new(s.store.clone(), s.metadata.clone(), config, Duration::ZERO);
    for _ in 0..slices.len() {
        consolidator.run_once(&targets(&s), true).await.unwrap();
    }
    let merged = s.metadata.list_segments(TOPIC, 0, 0).await.unwrap();
    assert!(merged.len() >= 3, "{} segments", merged.len());
    for m in &merged {
        assert!(m.object_key.starts_with("data/"), "{m:?} consolidated");
        let covered: Vec<_> = slices
            .iter()
            .filter(|s| s.base_offset >= m.base_offset && s.last_offset <= m.last_offset)
            .collect();
        let span = covered.last().unwrap().created_at_ms - covered[0].created_at_ms;
        assert!(
            span < segment_ms as i64,
            "a segment spans {span} ms of appends"
        );
    }
    assert_eq!(
        read_all(&s).await,
        before,
        "the same batches at the same offsets"
    );
}

#[tokio::test]
async fn slices_not_in_the_cache_are_read_from_the_store() {
    let s = setup(3).await;
    flush_rounds(&s, 4).await;
    let before = read_all(&s).await;
    // As after a restart: the same partitions with an empty cache.
    let cold = Arc::new(SegmentCache::new(SegmentCacheConfig::default()));
    let targets: Vec<ConsolidationTarget> = targets(&s)
        .into_iter()
        .map(|mut t| {
            t.storage.cache = cold.clone();
            t
        })
        .collect();
    let config = merge_everything();
    let consolidator =
        Consolidator::new(s.store.clone(), s.metadata.clone(), config, Duration::ZERO);
    let report = consolidator.run_once(&targets, true).await.unwrap();
    assert_eq!((report.objects_read, report.objects_from_cache), (4, 0));
    assert_eq!(report.slices_replaced, 12);
    assert_eq!(read_all(&s).await, before);
    assert_eq!(
        cold.stats().await.cached_bytes,
        0,
        "consolidation caches nothing"
    );
}

#[tokio::test]
async fn later_rounds_list_only_the_segments_after_the_merged_ones() {
    let s = setup(1).await;
    let recorder = crate::support::ListingRecorder::over(s.metadata.clone());
    let consolidator = Consolidator::new(
        s.store.clone(),
        recorder.clone(),
        merge_everything(),
        Duration::ZERO,
    );
    // Rounds of 2 records: offsets 0..=5, then 6..=11, then 12..=17.
    for round in 0..3 {
        flush_rounds(&s, 3).await;
        let report = consolidator.run_once(&targets(&s), true).await.unwrap();
        assert_eq!(
            (report.partitions, report.slices_replaced),
            (1, 3),
            "round {round}"
        );
    }
    let again = consolidator.run_once(&targets(&s), true).await.unwrap();
    assert_eq!(again.backlog_slices, 0);
    assert_eq!(
        recorder.listing_starts(),
        [0, 6, 12],
        "the first look lists the whole partition, later ones from the end of the merged data \
         (and one with nothing left to merge none)"
    );
    let merged = s.metadata.list_segments(TOPIC, 0, 0).await.unwrap();
    let ranges: Vec<(i64, i64)> = merged
        .iter()
        .map(|m| (m.base_offset, m.last_offset))
        .collect();
    assert_eq!(ranges, [(0, 5), (6, 11), (12, 17)]);
    assert_eq!(read_all(&s).await[0].len(), 9);
}
