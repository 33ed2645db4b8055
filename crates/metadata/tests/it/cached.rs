//! The write-through cache: conformance over SQLite, hit accounting, and that every write is
//! visible through the cache.

use std::sync::Arc;
use std::time::Duration;

use streamhouse_metadata::prelude::*;
use streamhouse_metadata::{
    conformance, now_ms, CacheConfig, CacheStats, CachedMetadataStore, MetadataError,
    MetadataStore, NewTopic, SegmentInfo, SqliteMetadataStore, TopicConfig,
};

async fn sqlite() -> Arc<SqliteMetadataStore> {
    Arc::new(SqliteMetadataStore::in_memory().await.unwrap())
}

async fn cached_with(config: CacheConfig) -> (Arc<SqliteMetadataStore>, CachedMetadataStore) {
    let inner = sqlite().await;
    let cached = CachedMetadataStore::new(inner.clone(), config);
    (inner, cached)
}

async fn create(store: &dyn MetadataStore, name: &str, partitions: u32) {
    store
        .create_topic(NewTopic {
            name: name.into(),
            partitions,
            config: TopicConfig::default(),
        })
        .await
        .unwrap();
}

fn segment(topic: &str, base: i64, last: i64) -> SegmentInfo {
    SegmentInfo {
        topic: topic.into(),
        partition: 0,
        base_offset: base,
        last_offset: last,
        record_count: last - base + 1,
        size_bytes: 10,
        object_offset: 0,
        object_size: 10,
        object_key: format!("{topic}/{base}"),
        min_timestamp_ms: 0,
        max_timestamp_ms: 0,
        created_at_ms: now_ms(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_sqlite_in_memory() {
    let cached = CachedMetadataStore::new(sqlite().await, CacheConfig::default());
    conformance::run_all(Arc::new(cached)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_sqlite_file_with_tiny_cache() {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteMetadataStore::open(&dir.path().join("meta.db"))
        .await
        .unwrap();
    let config = CacheConfig {
        max_topics: 2,
        max_partitions: 2,
        ttl: Duration::from_secs(60),
    };
    conformance::run_all(Arc::new(CachedMetadataStore::new(Arc::new(inner), config))).await;
}

#[tokio::test]
async fn repeated_lookups_hit_the_cache() {
    let (_, cached) = cached_with(CacheConfig::default()).await;
    create(&cached, "t", 2).await;
    assert_eq!(cached.stats(), CacheStats::default());

    cached.get_partition("t", 1).await.unwrap();
    cached.get_partition("t", 1).await.unwrap();
    assert_eq!(cached.stats(), CacheStats { hits: 1, misses: 1 });

    // create_topic primed the topic entry.
    cached.get_topic("t").await.unwrap().unwrap();
    assert_eq!(cached.stats(), CacheStats { hits: 2, misses: 1 });

    cached.list_topics().await.unwrap();
    cached.list_topics().await.unwrap();
    assert_eq!(cached.stats(), CacheStats { hits: 3, misses: 2 });

    assert!(cached.get_topic("absent").await.unwrap().is_none());
    assert!(cached.get_topic("absent").await.unwrap().is_none());
    assert_eq!(cached.stats().misses, 4, "absent topics are not cached");
}

#[tokio::test]
async fn partition_writes_update_cached_state() {
    let (inner, cached) = cached_with(CacheConfig::default()).await;
    create(&cached, "t", 1).await;
    cached.get_partition("t", 0).await.unwrap();

    cached
        .commit_segment(&segment("t", 0, 9), None)
        .await
        .unwrap();
    cached
        .commit_segment(&segment("t", 10, 19), None)
        .await
        .unwrap();
    let hits = cached.stats().hits;
    let state = cached.get_partition("t", 0).await.unwrap();
    assert_eq!(state.high_watermark, 20);
    assert_eq!(
        cached.stats().hits,
        hits + 1,
        "updated in place, not invalidated"
    );

    cached.truncate_before("t", 0, 15, 0).await.unwrap();
    assert_eq!(
        cached.get_partition("t", 0).await.unwrap().log_start_offset,
        15
    );
    cached.truncate_before("t", 0, 500, 0).await.unwrap();
    let state = cached.get_partition("t", 0).await.unwrap();
    assert_eq!(state, inner.get_partition("t", 0).await.unwrap());
    assert_eq!(state.log_start_offset, 20);
    assert_eq!(cached.stats().hits, hits + 3);
}

#[tokio::test]
async fn offset_conflict_refreshes_a_stale_high_watermark() {
    let (inner, cached) = cached_with(CacheConfig::default()).await;
    create(&cached, "t", 1).await;
    cached.get_partition("t", 0).await.unwrap();
    // Another agent commits behind the cache's back.
    inner
        .commit_segment(&segment("t", 0, 4), None)
        .await
        .unwrap();
    assert_eq!(
        cached.get_partition("t", 0).await.unwrap().high_watermark,
        0,
        "stale"
    );

    let error = cached
        .commit_segment(&segment("t", 0, 9), None)
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        MetadataError::OffsetConflict {
            high_watermark: 5,
            ..
        }
    ));
    assert_eq!(
        cached.get_partition("t", 0).await.unwrap().high_watermark,
        5
    );
}

#[tokio::test]
async fn topic_writes_are_visible_through_the_cache() {
    let (_, cached) = cached_with(CacheConfig::default()).await;
    create(&cached, "t", 1).await;
    assert_eq!(cached.list_topics().await.unwrap().len(), 1);

    create(&cached, "u", 1).await;
    assert_eq!(
        cached.list_topics().await.unwrap().len(),
        2,
        "create invalidates the list"
    );

    let config = TopicConfig {
        retention_ms: Some(1),
        ..TopicConfig::default()
    };
    let set = config.clone();
    cached
        .alter_topic_config("t", &move |_| Ok(set.clone()))
        .await
        .unwrap();
    assert_eq!(cached.get_topic("t").await.unwrap().unwrap().config, config);
    let listed = cached.list_topics().await.unwrap();
    assert_eq!(listed[0].config, config);

    cached.add_partitions("t", 4).await.unwrap();
    assert_eq!(cached.get_topic("t").await.unwrap().unwrap().partitions, 4);
    assert_eq!(cached.list_topics().await.unwrap()[0].partitions, 4);
    cached.get_partition("t", 3).await.unwrap();

    cached.delete_topic("t", 0).await.unwrap();
    assert!(cached.get_topic("t").await.unwrap().is_none());
    assert!(
        cached.get_partition("t", 3).await.is_err(),
        "partition entries dropped"
    );
    assert_eq!(cached.list_topics().await.unwrap().len(), 1);

    create(&cached, "t", 1).await;
    assert_eq!(
        cached.get_partition("t", 0).await.unwrap().high_watermark,
        0
    );
}

/// A cache (entries live `ttl`) holding partition `t`/0 at high watermark 0, after another
/// agent committed offsets 0..=9 to the database behind it.
async fn cache_behind_a_foreign_write(ttl: Duration) -> CachedMetadataStore {
    let (inner, cached) = cached_with(CacheConfig {
        ttl,
        ..CacheConfig::default()
    })
    .await;
    create(&cached, "t", 1).await;
    cached.get_partition("t", 0).await.unwrap();
    inner
        .commit_segment(&segment("t", 0, 9), None)
        .await
        .unwrap();
    cached
}

#[tokio::test]
async fn foreign_writes_show_up_after_the_ttl() {
    let ttl = Duration::from_millis(50);
    let cached = cache_behind_a_foreign_write(ttl).await;
    // Real time, not paused: the TTL runs on the cache's (moka's) own clock, not tokio's.
    tokio::time::sleep(ttl * 4).await;
    assert_eq!(
        cached.get_partition("t", 0).await.unwrap().high_watermark,
        10
    );
}

#[tokio::test]
async fn uncached_reads_see_foreign_writes_at_once() {
    let cached = cache_behind_a_foreign_write(Duration::from_secs(3600)).await;
    let high_watermark = |state: streamhouse_metadata::PartitionState| state.high_watermark;
    let cached_state = cached.get_partition("t", 0).await.unwrap();
    assert_eq!(high_watermark(cached_state), 0, "still the cached state");
    let stored = cached.get_partition_uncached("t", 0).await.unwrap();
    assert_eq!(high_watermark(stored), 10);
}
