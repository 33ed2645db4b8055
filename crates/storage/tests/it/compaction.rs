//! Compaction merges small segments without changing what any offset reads back.

use std::time::Duration;

use object_store::path::Path;
use object_store::ObjectStoreExt;
use streamhouse_metadata::MetadataStore;
use streamhouse_storage::{CompactionConfig, Compactor, PartitionReader};

use crate::support::{batch, test_config, Env, TOPIC};

fn config(target_bytes: u64) -> CompactionConfig {
    CompactionConfig {
        target_bytes,
        min_age: Duration::ZERO,
        delete_grace: Duration::ZERO,
    }
}

fn compactor(env: &Env) -> Compactor {
    Compactor::new(env.storage(), None)
}

/// Every offset's batch bytes, as read by `reader`.
async fn read_all(reader: &PartitionReader, high_watermark: i64) -> Vec<(i64, bytes::Bytes)> {
    let mut out = Vec::new();
    let mut next = 0;
    while next < high_watermark {
        let read = reader.read(next, 1).await.unwrap();
        let b = read
            .batches
            .first()
            .expect("a batch below the high watermark");
        out.push((b.base_offset(), b.bytes().clone()));
        next = b.last_offset() + 1;
    }
    out
}

#[tokio::test]
async fn merged_segments_read_back_identically_and_old_objects_go() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    for i in 0..12 {
        writer.append(vec![batch(3, 200, 1_000 * i, None)]).unwrap();
        writer.flush().await.unwrap();
    }
    let hw = writer.high_watermark();
    let before_segments = env.metadata.list_segments(TOPIC, 0, 0).await.unwrap();
    assert_eq!(before_segments.len(), 12);
    let before = read_all(&env.cold_reader(), hw).await;

    // Target fits about five of the small segments per merge.
    let target = before_segments[0].size_bytes * 5 + 10;
    let merges = compactor(&env).compact(&config(target), 100).await.unwrap();
    assert!(merges >= 2, "expected several merges, got {merges}");

    let after_segments = env.metadata.list_segments(TOPIC, 0, 0).await.unwrap();
    assert!(
        after_segments.len() < 12 / 2,
        "{} segments left",
        after_segments.len()
    );
    for pair in after_segments.windows(2) {
        assert_eq!(
            pair[1].base_offset,
            pair[0].last_offset + 1,
            "segments tile the log"
        );
    }
    assert_eq!(
        read_all(&env.cold_reader(), hw).await,
        before,
        "cold reader"
    );
    assert_eq!(
        read_all(&env.local_reader(&writer), hw).await,
        before,
        "reader on the writer's index"
    );

    // Replaced objects are deleted after the (zero) grace; merged ones are kept.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live: Vec<String> = after_segments
        .iter()
        .map(|s| s.object_key.clone())
        .collect();
    for old in before_segments
        .iter()
        .filter(|s| !live.contains(&s.object_key))
    {
        let gone = env.store.head(&Path::from(old.object_key.as_str())).await;
        assert!(
            matches!(gone, Err(object_store::Error::NotFound { .. })),
            "{}",
            old.object_key
        );
    }
    for key in &live {
        env.store.head(&Path::from(key.as_str())).await.unwrap();
    }

    // The writer keeps appending after compaction.
    writer.append(vec![batch(2, 10, 99_000, None)]).unwrap();
    writer.flush().await.unwrap();
    assert_eq!(writer.high_watermark(), hw + 2);
}

#[tokio::test]
async fn young_or_large_segments_are_left_alone() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    for i in 0..4 {
        writer.append(vec![batch(2, 100, i, None)]).unwrap();
        writer.flush().await.unwrap();
    }
    let young = CompactionConfig {
        min_age: Duration::from_secs(3600),
        ..config(1 << 20)
    };
    assert_eq!(compactor(&env).compact(&young, 10).await.unwrap(), 0);
    // Each segment is at least half of a tiny target: nothing is small enough to merge.
    assert_eq!(compactor(&env).compact(&config(64), 10).await.unwrap(), 0);
    assert_eq!(
        env.metadata.list_segments(TOPIC, 0, 0).await.unwrap().len(),
        4
    );
}

#[tokio::test]
async fn a_corrupt_source_segment_stops_the_merge() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    for i in 0..3 {
        writer.append(vec![batch(2, 100, i, None)]).unwrap();
        writer.flush().await.unwrap();
    }
    let segments = env.metadata.list_segments(TOPIC, 0, 0).await.unwrap();
    let path = Path::from(segments[1].object_key.as_str());
    let mut bytes = env
        .store
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    env.store.put(&path, bytes.into()).await.unwrap();

    let err = compactor(&env)
        .compact(&config(1 << 20), 10)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&segments[1].object_key), "{err}");
    assert_eq!(
        env.metadata.list_segments(TOPIC, 0, 0).await.unwrap(),
        segments,
        "nothing replaced"
    );
}
