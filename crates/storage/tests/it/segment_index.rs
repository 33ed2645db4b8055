//! SegmentIndex against the real SQLite metadata store.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use streamhouse_metadata::prelude::*;
use streamhouse_metadata::{now_ms, NewTopic, SegmentInfo, SqliteMetadataStore, TopicConfig};
use streamhouse_storage::{SegmentIndex, SegmentIndexConfig};

const TOPIC: &str = "events";
const RECORDS_PER_SEGMENT: i64 = 10;

async fn metadata() -> Arc<SqliteMetadataStore> {
    let store = SqliteMetadataStore::in_memory().await.unwrap();
    store
        .create_topic(NewTopic {
            name: TOPIC.into(),
            partitions: 1,
            config: TopicConfig::default(),
        })
        .await
        .unwrap();
    Arc::new(store)
}

/// Segment `n` of partition 0: offsets `10n..=10n+9`, timestamps `1000n..=1000n+900`.
fn segment(n: i64) -> SegmentInfo {
    let base_offset = n * RECORDS_PER_SEGMENT;
    SegmentInfo {
        topic: TOPIC.into(),
        partition: 0,
        base_offset,
        last_offset: base_offset + RECORDS_PER_SEGMENT - 1,
        record_count: RECORDS_PER_SEGMENT,
        size_bytes: 4096 + n as u64,
        object_offset: 0,
        object_size: 4096 + n as u64,
        object_key: format!("topics/t/0/{base_offset:020}-0.seg"),
        min_timestamp_ms: n * 1000,
        max_timestamp_ms: n * 1000 + 900,
        created_at_ms: now_ms(),
    }
}

async fn commit(metadata: &SqliteMetadataStore, segments: std::ops::Range<i64>) {
    for n in segments {
        metadata.commit_segment(&segment(n), None).await.unwrap();
    }
}

fn index(metadata: &Arc<SqliteMetadataStore>, config: SegmentIndexConfig) -> SegmentIndex {
    SegmentIndex::new(TOPIC, 0, metadata.clone(), config)
}

async fn base_of(index: &SegmentIndex, offset: i64) -> Option<i64> {
    index
        .lookup(offset)
        .await
        .unwrap()
        .map(|segment| segment.base_offset)
}

#[tokio::test]
async fn lookup_finds_segment_boundaries_and_nothing_outside() {
    let metadata = metadata().await;
    commit(&metadata, 0..3).await;
    let index = index(&metadata, SegmentIndexConfig::default());

    for (offset, base) in [(0, 0), (9, 0), (10, 10), (19, 10), (20, 20), (29, 20)] {
        assert_eq!(base_of(&index, offset).await, Some(base), "offset {offset}");
    }
    assert_eq!(base_of(&index, 30).await, None, "at the high watermark");
    assert_eq!(base_of(&index, -1).await, None, "before the log start");

    let found = index.lookup(15).await.unwrap().unwrap();
    let expected = segment(1);
    assert_eq!(found.last_offset, expected.last_offset);
    assert_eq!(found.size_bytes, expected.size_bytes);
    assert_eq!(&*found.object_key, expected.object_key);
    assert_eq!(found.min_timestamp_ms, expected.min_timestamp_ms);
    assert_eq!(found.max_timestamp_ms, expected.max_timestamp_ms);
}

#[tokio::test]
async fn offsets_in_a_gap_or_truncated_away_are_not_found() {
    let metadata = metadata().await;
    commit(&metadata, 0..4).await;
    metadata.truncate_before(TOPIC, 0, 10, 0).await.unwrap();
    let index = index(&metadata, SegmentIndexConfig::default());
    // Only this agent's view has a gap: segment 2 was never inserted locally.
    index.insert(&segment(1));
    index.insert(&segment(3));

    assert_eq!(index.lookup_cached(25), None, "gap in the local view");
    assert_eq!(
        base_of(&index, 25).await,
        Some(20),
        "gap filled by a refresh"
    );
    assert_eq!(base_of(&index, 5).await, None, "below the log start");
    assert_eq!(index.metadata_queries(), 2);
}

#[tokio::test]
async fn a_miss_refreshes_once_and_later_hits_need_no_query() {
    let metadata = metadata().await;
    commit(&metadata, 0..5).await;
    let index = index(&metadata, SegmentIndexConfig::default());
    assert_eq!(
        index.metadata_queries(),
        0,
        "nothing queried before a lookup"
    );

    assert_eq!(base_of(&index, 12).await, Some(10));
    assert_eq!(index.metadata_queries(), 1);
    for offset in 10..50 {
        assert!(index.lookup(offset).await.unwrap().is_some());
    }
    assert_eq!(
        index.metadata_queries(),
        1,
        "segments after the miss came along"
    );
    assert_eq!(
        index.len(),
        4,
        "the refresh lists from the missed offset on"
    );

    assert_eq!(base_of(&index, 3).await, Some(0));
    assert_eq!(index.metadata_queries(), 2);
}

#[tokio::test]
async fn concurrent_misses_share_one_query() {
    let metadata = metadata().await;
    commit(&metadata, 0..5).await;
    let index = index(&metadata, SegmentIndexConfig::default());

    let found = join_all((0..20).map(|i| index.lookup(i * 2))).await;
    assert!(found.into_iter().all(|r| r.unwrap().is_some()));
    assert_eq!(index.metadata_queries(), 1);
}

#[tokio::test]
async fn polling_past_the_end_does_not_hammer_the_metadata_store() {
    let metadata = metadata().await;
    commit(&metadata, 0..2).await;
    let index = index(&metadata, SegmentIndexConfig::default());

    for _ in 0..1000 {
        assert_eq!(base_of(&index, 20).await, None);
    }
    // Back-to-back misses within a few ms reuse the last answer; only a descheduled test thread
    // could make a handful more.
    assert!(
        index.metadata_queries() <= 10,
        "{} queries",
        index.metadata_queries()
    );
}

#[tokio::test]
async fn inserted_segments_are_found_without_a_query() {
    let metadata = metadata().await;
    let index = index(&metadata, SegmentIndexConfig::default());
    for n in 0..50 {
        let segment = segment(n);
        metadata.commit_segment(&segment, None).await.unwrap();
        index.insert(&segment);
        assert_eq!(
            base_of(&index, segment.last_offset).await,
            Some(segment.base_offset)
        );
    }
    assert_eq!(index.metadata_queries(), 0);
    assert_eq!(index.len(), 50);
}

#[tokio::test]
async fn a_stale_index_refreshes_and_drops_deleted_segments() {
    let metadata = metadata().await;
    commit(&metadata, 0..4).await;
    let config = SegmentIndexConfig {
        refresh_interval: Duration::from_secs(10),
        ..SegmentIndexConfig::default()
    };
    let index = index(&metadata, config);
    assert_eq!(base_of(&index, 0).await, Some(0));
    assert_eq!(base_of(&index, 35).await, Some(30));
    assert_eq!(index.metadata_queries(), 1, "fresh hits need no query");

    // Another agent's retention deletes the first two segments.
    metadata.truncate_before(TOPIC, 0, 20, 0).await.unwrap();
    // The index ages on tokio's clock, paused here so that it ages as advanced: the few ms of
    // real time since the refresh stay far inside the second of margin.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(
        base_of(&index, 5).await,
        Some(0),
        "fresh: answered from memory"
    );
    assert_eq!(index.metadata_queries(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    // SQLite answers on its own thread, which a paused clock would race (sqlx's pool timeout
    // fires at once): the refresh runs on the real clock again.
    tokio::time::resume();
    assert_eq!(base_of(&index, 5).await, None);
    assert_eq!(index.metadata_queries(), 2, "stale hit refreshed");
    assert_eq!(index.len(), 2);
}

#[tokio::test]
async fn remove_below_keeps_the_segment_holding_the_new_start() {
    let metadata = metadata().await;
    let index = index(&metadata, SegmentIndexConfig::default());
    for n in 0..5 {
        index.insert(&segment(n));
    }
    index.remove_below(25);
    assert_eq!(index.len(), 3);
    assert_eq!(index.lookup_cached(19), None);
    assert_eq!(index.lookup_cached(20).map(|s| s.base_offset), Some(20));
    index.remove_below(30);
    assert_eq!(index.len(), 2);
}

#[tokio::test]
async fn lookup_timestamp_returns_first_segment_reaching_the_time() {
    let metadata = metadata().await;
    commit(&metadata, 0..4).await;
    let index = index(&metadata, SegmentIndexConfig::default());
    let base = |ts| {
        let index = &index;
        async move {
            index
                .lookup_timestamp(ts)
                .await
                .unwrap()
                .map(|s| s.base_offset)
        }
    };
    assert_eq!(base(0).await, Some(0));
    assert_eq!(base(900).await, Some(0));
    assert_eq!(base(901).await, Some(10));
    assert_eq!(base(3900).await, Some(30));
    assert_eq!(base(3901).await, None);
}

#[tokio::test]
async fn eviction_keeps_the_bound_and_recently_used_segments() {
    const BOUND: usize = 64;
    let metadata = metadata().await;
    commit(&metadata, 0..96).await;
    let config = SegmentIndexConfig {
        max_segments: BOUND,
        ..SegmentIndexConfig::default()
    };
    let index = index(&metadata, config);
    for n in 0..BOUND as i64 {
        index.insert(&segment(n));
    }
    let hot = 0..8;
    for n in hot.clone() {
        assert!(index.lookup_cached(n * RECORDS_PER_SEGMENT).is_some());
    }
    for n in BOUND as i64..96 {
        index.insert(&segment(n));
        assert!(index.len() <= BOUND);
    }
    for n in hot {
        assert!(
            index.lookup_cached(n * RECORDS_PER_SEGMENT).is_some(),
            "recently used segment {n} was evicted"
        );
    }
    assert!(index.lookup_cached(95 * RECORDS_PER_SEGMENT).is_some());
    let evicted = (0..96)
        .find(|n| index.lookup_cached(n * RECORDS_PER_SEGMENT).is_none())
        .expect("something was evicted");
    assert_eq!(index.metadata_queries(), 0);

    assert_eq!(
        base_of(&index, evicted * RECORDS_PER_SEGMENT).await,
        Some(evicted * RECORDS_PER_SEGMENT),
        "evicted segments come back on a miss"
    );
    assert_eq!(index.metadata_queries(), 1);
    assert!(index.len() <= BOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_see_segments_committed_while_they_run() {
    const SEGMENTS: i64 = 200;
    let metadata = metadata().await;
    let index = Arc::new(index(&metadata, SegmentIndexConfig::default()));

    let readers: Vec<_> = (0..4)
        .map(|reader| {
            let (metadata, index) = (metadata.clone(), index.clone());
            tokio::spawn(async move { read_until_end(reader, &metadata, &index, SEGMENTS).await })
        })
        .collect();
    commit(&metadata, 0..SEGMENTS).await;
    for reader in readers {
        reader.await.unwrap();
    }
    // The writer of this test never called insert(), so every segment came from queries, and
    // far fewer of them than lookups.
    assert!(index.metadata_queries() > 0);
}

/// Looks up offsets below the high watermark the reader last saw until it reaches the end. A
/// miss may be served from a refresh finished a few ms earlier, so a `None` is retried once after
/// that window; then the segment must be there.
async fn read_until_end(
    reader: i64,
    metadata: &SqliteMetadataStore,
    index: &SegmentIndex,
    segments: i64,
) {
    let end = segments * RECORDS_PER_SEGMENT;
    let mut round = 0;
    loop {
        let high_watermark = metadata
            .get_partition(TOPIC, 0)
            .await
            .unwrap()
            .high_watermark;
        if high_watermark > 0 {
            let offset = (reader * 7919 + round * 104_729) % high_watermark;
            let found = match index.lookup(offset).await.unwrap() {
                Some(found) => found,
                None => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    index
                        .lookup(offset)
                        .await
                        .unwrap()
                        .expect("offset below HWM")
                }
            };
            assert!(found.contains(offset), "{found:?} lacks {offset}");
        }
        if high_watermark == end {
            return;
        }
        round += 1;
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn indexes_sharing_a_budget_stay_within_it_keeping_a_minimum_each() {
    use streamhouse_storage::{Budget, MIN_RETAINED};
    let metadata = metadata().await;
    let budget = Budget::new(40);
    let a = index(&metadata, SegmentIndexConfig::default()).with_budget(budget.clone());
    let b = index(&metadata, SegmentIndexConfig::default()).with_budget(budget.clone());
    (0..30).for_each(|n| a.insert(&segment(n)));
    assert_eq!((a.len(), budget.used()), (30, 30));
    // Past the budget, the growing index evicts its own oldest entries, never below the minimum.
    (0..30).for_each(|n| b.insert(&segment(n)));
    assert_eq!(b.len(), MIN_RETAINED);
    assert_eq!(budget.used(), 30 + MIN_RETAINED);
    assert!(
        b.lookup_cached(29 * RECORDS_PER_SEGMENT).is_some(),
        "the newest stays"
    );
    // The next index to grow brings the agent back under the budget.
    a.insert(&segment(30));
    assert_eq!(budget.used(), 40);
    assert_eq!(a.len(), 40 - MIN_RETAINED);
    assert!(a.lookup_cached(30 * RECORDS_PER_SEGMENT).is_some());
    assert!(
        a.lookup_cached(0).is_none(),
        "the least recently used went first"
    );
    drop(b);
    assert_eq!(
        budget.used(),
        40 - MIN_RETAINED,
        "a dropped index returns its share"
    );
}
