//! PartitionWriter: offsets, flushes, upload retries, failures and fencing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use streamhouse_metadata::prelude::*;
use streamhouse_metadata::LeaseFence;
use streamhouse_storage::{StorageError, WriterConfig};

use streamhouse_storage::testing::FaultPlan;

use crate::support::{flaky_store, object, plain, test_config, Env, TOPIC};

#[tokio::test]
async fn appends_get_consecutive_offsets_and_become_durable_on_flush() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let first = writer.append(vec![plain(3), plain(2)]).unwrap();
    let second = writer.append(vec![plain(5)]).unwrap();
    assert_eq!((first.base_offset, first.last_offset), (0, 4));
    assert_eq!((second.base_offset, second.last_offset), (5, 9));
    assert!(!first.durable.is_ready());
    assert_eq!(writer.high_watermark(), 0);
    assert!(writer.buffered_bytes() > 0);

    let info = writer.flush().await.unwrap().expect("a segment");
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (0, 9, 10)
    );
    // One shared object per flush, under a fresh key; the segment is its first part.
    assert!(info.object_key.starts_with("wal/"), "{}", info.object_key);
    assert_eq!(info.object_offset, 0);
    assert!(
        info.object_size > info.size_bytes,
        "the object ends with its index"
    );
    first.durable.wait().await.unwrap();
    second.durable.wait().await.unwrap();
    assert_eq!(writer.high_watermark(), 10);
    assert_eq!(writer.buffered_bytes(), 0);
    let stored = env.metadata.get_partition(TOPIC, 0).await.unwrap();
    assert_eq!(stored.high_watermark, 10);
    assert_eq!(
        object(&*env.store, &info.object_key).await.len() as u64,
        info.object_size
    );
    // Nothing left to flush.
    assert!(writer.flush().await.unwrap().is_none());
}

#[tokio::test]
async fn subscribers_see_the_high_watermark_advance() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let mut hw = writer.subscribe();
    let appended = writer.append(vec![plain(4)]).unwrap();
    writer.flush().await.unwrap();
    hw.changed().await.unwrap();
    assert_eq!(*hw.borrow(), 4);
    appended.durable.wait().await.unwrap();
}

#[tokio::test]
async fn a_full_segment_is_rolled_in_the_background() {
    let env = Env::in_memory().await;
    let config = WriterConfig {
        segment_max_bytes: 1,
        ..test_config()
    };
    let writer = env.writer(config, None).await.unwrap();
    let appended = writer.append(vec![plain(2)]).unwrap();
    // No explicit flush: the roll started by the append makes it durable.
    tokio::time::timeout(Duration::from_secs(10), appended.durable.wait())
        .await
        .expect("background roll")
        .unwrap();
    assert_eq!(writer.high_watermark(), 2);
}

#[tokio::test]
async fn failed_uploads_are_retried() {
    let flaky = flaky_store(2);
    let env = Env::new(flaky.clone()).await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let appended = writer.append(vec![plain(3)]).unwrap();
    writer.flush().await.unwrap().expect("a segment");
    appended.durable.wait().await.unwrap();
    assert_eq!(flaky.puts().requests(), 3);
    assert_eq!(writer.high_watermark(), 3);
}

#[tokio::test]
async fn an_exhausted_upload_fails_every_pending_record_and_nothing_becomes_visible() {
    let flaky = flaky_store(u32::MAX);
    let env = Env::new(flaky.clone()).await;
    let config = WriterConfig {
        upload_backoff: Duration::from_millis(20),
        upload_backoff_max: Duration::from_millis(20),
        ..test_config()
    };
    let writer = env.writer(config, None).await.unwrap();
    let sealed = writer.append(vec![plain(3)]).unwrap();
    let flush = tokio::spawn({
        let writer = writer.clone();
        async move { writer.flush().await }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Appended while the flush is retrying: its offsets follow the failing segment.
    let later = writer.append(vec![plain(2)]).unwrap();
    assert_eq!(later.base_offset, 3);

    let error = flush.await.unwrap().unwrap_err();
    assert!(
        matches!(error, StorageError::FlushFailed { from_offset: 0, .. }),
        "{error}"
    );
    assert_eq!(flaky.puts().requests(), 3);
    for ticket in [sealed.durable, later.durable] {
        assert!(matches!(
            ticket.wait().await,
            Err(StorageError::FlushFailed { .. })
        ));
    }
    assert_eq!(writer.high_watermark(), 0);
    assert_eq!(
        env.metadata
            .get_partition(TOPIC, 0)
            .await
            .unwrap()
            .high_watermark,
        0
    );
    assert!(env
        .metadata
        .list_segments(TOPIC, 0, 0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(writer.buffered_bytes(), 0);

    // The writer stays usable and starts again at the high watermark.
    flaky.set_puts(FaultPlan::default());
    let retry = writer.append(vec![plain(4)]).unwrap();
    assert_eq!((retry.base_offset, retry.last_offset), (0, 3));
    writer.flush().await.unwrap();
    retry.durable.wait().await.unwrap();
    assert_eq!(writer.high_watermark(), 4);
}

#[tokio::test]
async fn a_fenced_writer_fails_its_commit_and_stays_unusable() {
    let env = Env::in_memory().await;
    let lease = env
        .metadata
        .acquire_lease(TOPIC, 0, "agent-a", 60_000)
        .await
        .unwrap()
        .expect("free lease");
    let fence = LeaseFence {
        agent_id: "agent-a".into(),
        epoch: lease.epoch,
    };
    let writer = env.writer(test_config(), Some(fence)).await.unwrap();
    let first = writer.append(vec![plain(2)]).unwrap();
    let info = writer.flush().await.unwrap().unwrap();
    assert!(info.object_key.starts_with("wal/"));
    first.durable.wait().await.unwrap();

    // Agent B takes the lease over once it is free (released here; expiry works alike).
    env.metadata
        .release_lease(TOPIC, 0, "agent-a", lease.epoch)
        .await
        .unwrap();
    let stolen = env
        .metadata
        .acquire_lease(TOPIC, 0, "agent-b", 60_000)
        .await
        .unwrap()
        .expect("a released lease is free");
    assert!(stolen.epoch > lease.epoch);

    let zombie = writer.append(vec![plain(3)]).unwrap();
    let error = writer.flush().await.unwrap_err();
    assert!(error.is_fenced(), "{error}");
    assert!(zombie.durable.wait().await.unwrap_err().is_fenced());
    assert_eq!(
        env.metadata
            .get_partition(TOPIC, 0)
            .await
            .unwrap()
            .high_watermark,
        2
    );
    assert!(writer.is_fenced());
    assert!(matches!(
        writer.append(vec![plain(1)]),
        Err(StorageError::Fenced { .. })
    ));
    assert!(matches!(
        writer.flush().await,
        Err(StorageError::Fenced { .. })
    ));
}

#[tokio::test]
async fn a_second_writer_without_a_lease_is_refused_by_the_offset_check() {
    let env = Env::in_memory().await;
    let first = env.writer(test_config(), None).await.unwrap();
    let second = env.writer(test_config(), None).await.unwrap();
    let _a = first.append(vec![plain(1)]).unwrap();
    first.flush().await.unwrap();
    let _b = second.append(vec![plain(1)]).unwrap();
    assert!(second.flush().await.unwrap_err().is_fenced());
}

#[tokio::test]
async fn a_reopened_writer_continues_at_the_high_watermark() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let _durable = writer.append(vec![plain(7)]).unwrap();
    writer.flush().await.unwrap();
    // Appended but never flushed: lost with the "crash", never acknowledged.
    let lost = writer.append(vec![plain(3)]).unwrap();
    drop(writer);
    assert!(matches!(
        lost.durable.wait().await,
        Err(StorageError::WriterClosed { .. })
    ));

    let reopened = env.reopened_writer(test_config()).await;
    assert_eq!(reopened.high_watermark(), 7);
    let next = reopened.append(vec![plain(1)]).unwrap();
    assert_eq!(next.base_offset, 7);
    reopened.flush().await.unwrap();
    next.durable.wait().await.unwrap();
    let segments = env.metadata.list_segments(TOPIC, 0, 0).await.unwrap();
    assert_eq!(segments.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_producers_get_unique_consecutive_offsets() {
    let env = Env::in_memory().await;
    let config = WriterConfig {
        segment_max_bytes: 2048,
        ..test_config()
    };
    let writer = env.writer(config, None).await.unwrap();
    let producers = (0..8).map(|_| {
        let writer = writer.clone();
        tokio::spawn(async move {
            let mut ranges = Vec::new();
            for i in 0..50 {
                let appended = writer.append(vec![plain(1 + i % 3)]).unwrap();
                ranges.push((appended.base_offset, appended.last_offset));
                appended.durable.wait().await.unwrap();
            }
            ranges
        })
    });
    // Rolls happen by size in the background; this flusher covers the tail, as the agent's
    // periodic flusher does.
    let done = Arc::new(AtomicBool::new(false));
    let flusher = tokio::spawn({
        let writer = writer.clone();
        let done = done.clone();
        async move {
            while !done.load(Ordering::Acquire) {
                writer.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for producer in producers.collect::<Vec<_>>() {
        ranges.extend(producer.await.unwrap());
    }
    done.store(true, Ordering::Release);
    flusher.await.unwrap();
    ranges.sort_unstable();
    let mut next = 0;
    for (base, last) in &ranges {
        assert_eq!(*base, next, "gap or overlap at {base}");
        next = last + 1;
    }
    assert_eq!(writer.high_watermark(), next);
    let read = env.cold_reader().read(0, usize::MAX).await.unwrap();
    assert_eq!(read.next_offset, next);
    assert_eq!(read.batches.len(), ranges.len());
}
