//! SQLite backend: conformance on a file and in memory, plus durability across reopen.

use std::sync::Arc;

use streamhouse_metadata::prelude::*;
use streamhouse_metadata::{
    conformance, now_ms, NewTopic, SegmentInfo, SqliteMetadataStore, TopicConfig,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteMetadataStore::open(&dir.path().join("meta.db"))
        .await
        .unwrap();
    conformance::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    let store = SqliteMetadataStore::in_memory().await.unwrap();
    conformance::run_all(Arc::new(store)).await;
}

#[tokio::test]
async fn in_memory_stores_are_separate() {
    let first = SqliteMetadataStore::in_memory().await.unwrap();
    let second = SqliteMetadataStore::in_memory().await.unwrap();
    let topic = NewTopic {
        name: "only-in-first".into(),
        partitions: 1,
        config: TopicConfig::default(),
    };
    first.create_topic(topic).await.unwrap();
    assert!(second.get_topic("only-in-first").await.unwrap().is_none());
}

#[tokio::test]
async fn committed_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested-name.db");
    let segment = SegmentInfo {
        topic: "durable".into(),
        partition: 1,
        base_offset: 0,
        last_offset: 41,
        record_count: 42,
        size_bytes: 4_200,
        object_offset: 0,
        object_size: 4_200,
        object_key: "durable/1/0.seg".into(),
        min_timestamp_ms: 10,
        max_timestamp_ms: 20,
        created_at_ms: now_ms(),
    };
    let (topic, producer_id) = {
        let store = SqliteMetadataStore::open(&path).await.unwrap();
        let topic = store
            .create_topic(NewTopic {
                name: "durable".into(),
                partitions: 2,
                config: TopicConfig::default(),
            })
            .await
            .unwrap();
        store.commit_segment(&segment, None).await.unwrap();
        (topic, store.allocate_producer_id().await.unwrap())
    };

    let reopened = SqliteMetadataStore::open(&path).await.unwrap();
    assert_eq!(reopened.get_topic("durable").await.unwrap(), Some(topic));
    assert_eq!(
        reopened
            .get_partition("durable", 1)
            .await
            .unwrap()
            .high_watermark,
        42
    );
    assert_eq!(
        reopened.list_segments("durable", 1, 0).await.unwrap(),
        vec![segment]
    );
    assert!(
        reopened.allocate_producer_id().await.unwrap() > producer_id,
        "ids never reused"
    );
}
