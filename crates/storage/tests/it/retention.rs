//! Retention and truncation: time and size limits, log start propagation, deferred object
//! deletion, and reads racing a truncation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use streamhouse_metadata::prelude::*;
use streamhouse_metadata::{now_ms, SegmentInfo};
use streamhouse_storage::{
    LogTruncator, PartitionReader, PartitionWriter, ReaderConfig, RetentionPolicy, StorageError,
    TruncationTarget,
};

use crate::support::{batch, test_config, Env, TOPIC};

const HOUR_MS: i64 = 3_600_000;

/// Writes one segment per timestamp, `records` records each; returns the committed segments.
async fn write_segments(
    writer: &PartitionWriter,
    timestamps: &[i64],
    records: usize,
) -> Vec<SegmentInfo> {
    let mut segments = Vec::new();
    for &ts in timestamps {
        let appended = writer.append(vec![batch(records, 64, ts, None)]).unwrap();
        segments.push(writer.flush().await.unwrap().expect("a segment"));
        appended.durable.wait().await.unwrap();
    }
    segments
}

fn target<'a>(env: &'a Env, writer: &'a PartitionWriter) -> TruncationTarget<'a> {
    TruncationTarget {
        topic: TOPIC,
        partition: 0,
        index: &env.index,
        writer: Some(writer),
    }
}

fn truncator(env: &Env, grace: Duration) -> LogTruncator {
    LogTruncator::new(env.store.clone(), env.metadata(), grace)
}

async fn exists(store: &dyn ObjectStore, key: &str) -> bool {
    store.head(&Path::from(key)).await.is_ok()
}

/// Waits until none of `keys` exists any more.
async fn wait_deleted(store: &dyn ObjectStore, keys: &[&str]) {
    for _ in 0..200 {
        let mut any = false;
        for key in keys {
            any |= exists(store, key).await;
        }
        if !any {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("objects {keys:?} were never deleted");
}

fn assert_out_of_range<T: std::fmt::Debug>(result: Result<T, StorageError>, log_start: i64) {
    match result {
        Err(StorageError::OffsetOutOfRange { log_start: ls, .. }) => assert_eq!(ls, log_start),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
}

fn segment(base: i64, last: i64, size: u64, max_ts: i64) -> SegmentInfo {
    SegmentInfo {
        topic: TOPIC.into(),
        partition: 0,
        base_offset: base,
        last_offset: last,
        record_count: last - base + 1,
        size_bytes: size,
        object_offset: 0,
        object_size: size,
        object_key: format!("k{base}"),
        min_timestamp_ms: max_ts,
        max_timestamp_ms: max_ts,
        created_at_ms: max_ts,
    }
}

#[test]
fn policy_deletes_only_a_prefix_of_expired_or_excess_segments() {
    let now = 10 * HOUR_MS;
    // Expired, fresh, expired: the third is kept because the second is.
    let segments = [
        segment(0, 9, 100, 0),
        segment(10, 19, 100, now),
        segment(20, 29, 100, 0),
    ];
    let by_time = RetentionPolicy {
        retention_ms: Some(HOUR_MS),
        retention_bytes: None,
    };
    assert_eq!(by_time.new_log_start(&segments, now), Some(10));
    // 300 bytes over a 150 limit: dropping the first leaves 200 >= 150, the second would
    // leave 100 < 150, so only the first goes (a partition never drops below the limit).
    let by_size = RetentionPolicy {
        retention_ms: None,
        retention_bytes: Some(150),
    };
    assert_eq!(by_size.new_log_start(&segments, now), Some(10));
    let exact = RetentionPolicy {
        retention_ms: None,
        retention_bytes: Some(100),
    };
    assert_eq!(exact.new_log_start(&segments, now), Some(20));
    assert_eq!(
        RetentionPolicy::default().new_log_start(&segments, now),
        None
    );
    let unlimited = RetentionPolicy::from(&streamhouse_metadata::TopicConfig {
        retention_ms: Some(-1),
        retention_bytes: Some(-1),
        ..Default::default()
    });
    assert_eq!(unlimited, RetentionPolicy::default());
    // A compact-only topic is bounded by compaction, not retention; compact,delete by both.
    let with_policy = |policy: &str| {
        let mut config = streamhouse_metadata::TopicConfig {
            retention_ms: Some(1_000),
            ..Default::default()
        };
        config.extra.insert("cleanup.policy".into(), policy.into());
        RetentionPolicy::from(&config)
    };
    assert_eq!(with_policy("compact"), RetentionPolicy::default());
    assert_eq!(with_policy("compact,delete").retention_ms, Some(1_000));
    assert_eq!(with_policy("delete").retention_ms, Some(1_000));
}

#[tokio::test]
async fn time_retention_drops_expired_segments_then_their_objects() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let now = now_ms();
    let old = now - 3 * HOUR_MS;
    let segments = write_segments(&writer, &[old, old, now], 5).await;
    let reader = env.local_reader(&writer);
    reader.read(0, 1 << 20).await.unwrap(); // warms the cache and footers

    let policy = RetentionPolicy {
        retention_ms: Some(HOUR_MS),
        retention_bytes: None,
    };
    let grace = Duration::from_millis(200);
    let truncated = truncator(&env, grace)
        .enforce(target(&env, &writer), policy, now)
        .await
        .unwrap()
        .expect("two segments expired");
    assert_eq!(truncated.log_start, 10);
    assert_eq!(truncated.deleted, segments[..2].to_vec());
    assert_eq!(writer.log_start_offset(), 10);
    let stored = env.metadata.get_partition(TOPIC, 0).await.unwrap();
    assert_eq!((stored.log_start_offset, stored.high_watermark), (10, 15));

    // Objects survive the grace delay, then go; the live segment stays.
    assert!(exists(&*env.store, &segments[0].object_key).await);
    wait_deleted(
        &*env.store,
        &[&segments[0].object_key, &segments[1].object_key],
    )
    .await;
    assert!(exists(&*env.store, &segments[2].object_key).await);

    // Readers on this agent and on another one agree on the new log start.
    let cold = env.cold_reader();
    for reader in [&reader, &cold] {
        let read = reader.read(10, 1 << 20).await.unwrap();
        assert_eq!(read.batches[0].base_offset(), 10);
    }
    assert_out_of_range(cold.read(0, 1 << 20).await, 10);
    // Nothing more to do on a second pass.
    let again = truncator(&env, grace)
        .enforce(target(&env, &writer), policy, now)
        .await
        .unwrap();
    assert!(again.is_none());
}

#[tokio::test]
async fn size_retention_keeps_the_partition_at_or_above_the_limit() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let now = now_ms();
    let segments = write_segments(&writer, &[now; 5], 4).await;
    let size: i64 = segments.iter().map(|s| s.size_bytes as i64).sum();
    let limit = size - segments[0].size_bytes as i64 - segments[1].size_bytes as i64;
    let policy = RetentionPolicy {
        retention_ms: Some(HOUR_MS), // nothing is old: only the size limit applies
        retention_bytes: Some(limit),
    };
    let truncated = truncator(&env, Duration::ZERO)
        .enforce(target(&env, &writer), policy, now)
        .await
        .unwrap()
        .expect("over the size limit");
    assert_eq!(truncated.log_start, segments[2].base_offset);
    let kept: i64 = env
        .metadata
        .list_segments(TOPIC, 0, 0)
        .await
        .unwrap()
        .iter()
        .map(|s| s.size_bytes as i64)
        .sum();
    assert_eq!(kept, limit);
    wait_deleted(
        &*env.store,
        &[&segments[0].object_key, &segments[1].object_key],
    )
    .await;
    assert_out_of_range(
        env.local_reader(&writer).read(0, 1 << 20).await,
        segments[2].base_offset,
    );
}

#[tokio::test]
async fn truncation_is_clamped_and_appends_continue() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    write_segments(&writer, &[now_ms(); 2], 3).await;
    let truncator = truncator(&env, Duration::ZERO);
    // Past the high watermark: clamped to it, every segment dropped.
    let all = truncator
        .truncate(target(&env, &writer), 100)
        .await
        .unwrap();
    assert_eq!((all.log_start, all.deleted.len()), (6, 2));
    // Lowering is refused silently.
    let lower = truncator.truncate(target(&env, &writer), 2).await.unwrap();
    assert_eq!((lower.log_start, lower.deleted.len()), (6, 0));
    let reader = env.local_reader(&writer);
    assert!(reader.read(6, 1 << 20).await.unwrap().batches.is_empty());
    // The partition keeps going after being emptied.
    let more = write_segments(&writer, &[now_ms()], 2).await;
    assert_eq!(more[0].base_offset, 6);
    assert_eq!(reader.read(6, 1 << 20).await.unwrap().batches.len(), 1);
    // A restarted writer sees the durable log start.
    assert_eq!(
        env.reopened_writer(test_config()).await.log_start_offset(),
        6
    );
}

/// Readers loop over the whole partition while it is truncated segment by segment: every read
/// returns verified, consecutive batches at or past the requested offset, or OffsetOutOfRange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_truncation_get_data_or_out_of_range() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let segments = write_segments(&writer, &[now_ms(); 40], 10).await;
    let high_watermark = writer.high_watermark();
    let fast_bounds = ReaderConfig {
        bounds_refresh_interval: Duration::from_millis(2),
        ..ReaderConfig::default()
    };
    let readers = [
        Arc::new(env.local_reader(&writer)),
        Arc::new(env.cold_reader().with_config(fast_bounds)),
    ];
    let done = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = readers
        .iter()
        .map(|r| tokio::spawn(read_until(r.clone(), done.clone(), high_watermark)))
        .collect();
    // A grace of zero: even a reader whose object vanished must not see garbage.
    let truncator = truncator(&env, Duration::ZERO);
    for s in &segments[..30] {
        truncator
            .truncate(target(&env, &writer), s.last_offset + 1)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    done.store(true, Ordering::Release);
    let mut totals = (0, 0);
    for task in tasks {
        let (ok, out_of_range) = task.await.unwrap();
        totals = (totals.0 + ok, totals.1 + out_of_range);
    }
    assert!(totals.0 > 0, "no read returned data: {totals:?}");
    assert!(totals.1 > 0, "no read hit the moving log start: {totals:?}");
}

/// Reads from the lowest offset it believes retained until `done`; returns the number of
/// successful and out-of-range reads. Panics on anything else.
async fn read_until(
    reader: Arc<PartitionReader>,
    done: Arc<AtomicBool>,
    high_watermark: i64,
) -> (u32, u32) {
    let (mut ok, mut out_of_range) = (0, 0);
    let mut offset = 0;
    while !done.load(Ordering::Acquire) {
        match reader.read(offset, 2048).await {
            Ok(read) => {
                check_consecutive(&read.batches, offset);
                ok += 1;
                offset = if read.next_offset >= high_watermark {
                    read.log_start_offset
                } else {
                    read.next_offset
                };
            }
            Err(StorageError::OffsetOutOfRange { log_start, .. }) => {
                assert!(
                    offset < log_start,
                    "{offset} reported out of range at log start {log_start}"
                );
                out_of_range += 1;
                offset = log_start;
            }
            Err(other) => panic!("read at {offset} failed: {other}"),
        }
    }
    (ok, out_of_range)
}

fn check_consecutive(batches: &[streamhouse_segment::RecordBatch], from: i64) {
    let first = batches
        .first()
        .expect("a read below the high watermark returns data");
    assert!(first.base_offset() <= from && first.last_offset() >= from);
    for pair in batches.windows(2) {
        assert_eq!(pair[1].base_offset(), pair[0].last_offset() + 1);
    }
}

/// Retention reads a partition's segments from the metadata store only up to the first one it
/// keeps, a page at a time, not its whole history (which grows with retention): two expired
/// segments of 600 cost one page; a deletable prefix longer than a page is still found whole.
/// (Segments 10..300 are expired too, but a fresh one before them keeps them.)
#[tokio::test]
async fn retention_reads_only_the_deletable_prefix() {
    let env = Env::in_memory().await;
    let now = now_ms();
    let old = now - 3 * HOUR_MS;
    for i in 0..600 {
        let ts = if i < 2 || (10..300).contains(&i) {
            old
        } else {
            now
        };
        let seg = segment(i * 10, i * 10 + 9, 1_000, ts);
        env.metadata.commit_segment(&seg, None).await.unwrap();
    }
    let recorder = crate::support::ListingRecorder::over(env.metadata());
    let truncator = LogTruncator::new(env.store.clone(), recorder.clone(), Duration::ZERO);
    let target = TruncationTarget {
        topic: TOPIC,
        partition: 0,
        index: &env.index,
        writer: None,
    };
    let by_time = RetentionPolicy {
        retention_ms: Some(HOUR_MS),
        retention_bytes: None,
    };
    let truncated = truncator.enforce(target, by_time, now).await.unwrap();
    assert_eq!(truncated.map(|t| t.log_start), Some(20));
    assert!(
        recorder.rows_listed() <= 256,
        "listed {} rows for a 2-segment prefix",
        recorder.rows_listed()
    );

    // A prefix longer than a page: the newest 300 of the 598 segments left are kept.
    let by_size = RetentionPolicy {
        retention_ms: None,
        retention_bytes: Some(300_000),
    };
    let truncated = truncator.enforce(target, by_size, now).await.unwrap();
    assert_eq!(truncated.map(|t| t.log_start), Some(3_000));
    let left = env.metadata.segment_totals(TOPIC, 0).await.unwrap();
    assert_eq!((left.segments, left.bytes), (300, 300_000));
}
